package io.vblk.vhost;

import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import io.vblk.aio.BackendKind;
import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.engine.BlkConfig;
import io.vblk.engine.Tuning;
import io.vblk.sys.Errno;
import io.vblk.sys.NativeException;

/**
 * {@code vblk serve}: checks the arguments, opens the image, builds the device and serves it
 * until SIGINT or SIGTERM. Every problem with an argument (a missing image, a size that is not a
 * multiple of 512, a missing socket directory, a bad number) is one line on stderr and exit
 * status 2.
 */
final class ServeCommand {
    /** Largest queue size a frontend may ask for (QEMU's queue-size limit). */
    static final int MAX_QUEUE_SIZE = 1024;
    /**
     * Segments per request offered (SEG_MAX): QEMU's default, and within what the back ends
     * preallocate per operation.
     */
    static final int SEG_MAX = 254;
    private static final long SHUTDOWN_WAIT_SECONDS = 30;

    private final PrintStream out;
    private final PrintStream err;
    private final Log log;

    ServeCommand(PrintStream out, PrintStream err) {
        this.out = out;
        this.err = err;
        this.log = Log.to(err);
    }

    /**
     * Runs the command with {@code args} (after "serve"); returns the exit status. With
     * {@code signals} a shutdown hook turns SIGINT and SIGTERM into a drain and exit status 0.
     */
    int run(String[] args, boolean signals) {
        ServeOptions options;
        try {
            options = ServeOptions.parse(args);
        } catch (UsageError e) {
            return usageError(e.getMessage());
        }
        if (options.help) {
            out.print(ServeOptions.USAGE);
            out.flush();
            return 0;
        }
        Image image = null;
        VhostUserServer server;
        BackendChoice backends;
        try {
            BackendKind kind = options.aio != null ? options.aio : BackendKind.IO_URING;
            io.vblk.block.NetworkDisk network = options.network == null ? null : openNetwork(options);
            if (network != null) {
                options.readOnly = network.readOnly();
            }
            FormatChoice format = network != null || options.format == io.vblk.block.ImageFormat.RAW ? null
                    : FormatChoice.open(options.image, options.format, kind, options.readOnly, options.direct, log);
            image = options.image == null || format != null ? null : openImage(options, log);
            long sizeBytes = network != null ? network.sizeBytes() : format != null ? format.sizeBytes() : image == null ? options.nullSizeBytes : image.sizeBytes();
            backends = new BackendChoice(kind, image, log);
            BlkConfig config = config(options, image, sizeBytes, network == null ? 0 : network.blockSizeBytes());
            VhostUserServer.Builder builder = VhostUserServer.builder(options.socket, config, backends)
                    .tuning(tuning(options)).log(log).socketMode(options.socketMode);
            if (format != null) {
                builder.drivers(format);
            }
            if (network != null) {
                builder.drivers(network);
            }
            if (options.socketGroup != null) {
                builder.socketGroup(options.socketGroup);
            }
            if (options.allowUids != null) {
                builder.allowUids(options.allowUids);
            }
            server = builder.build();
        } catch (UsageError e) {
            closeQuietly(image);
            return usageError(e.getMessage());
        } catch (IllegalArgumentException e) {
            closeQuietly(image);
            return usageError(e.getMessage());
        } catch (UncheckedIOException e) {
            closeQuietly(image);
            return usageError("cannot listen on " + options.socket + ": " + e.getCause().getMessage());
        } catch (RuntimeException e) {
            closeQuietly(image);
            err.println("vblk serve: cannot start: " + e);
            return 1;
        }
        out.println("vblk: serving " + describe(options, server, backends) + " on " + server.socketPath());
        out.flush();
        return serve(server, image, signals);
    }

    private int usageError(String message) {
        err.println("vblk serve: " + message + " (see vblk serve --help)");
        err.flush();
        return 2;
    }

    /** Connects to a network disk; a bad address or an unreachable server is one line, as a missing file is. */
    private static io.vblk.block.NetworkDisk openNetwork(ServeOptions o) {
        try {
            return io.vblk.block.NetworkDisk.open(o.network, o.readOnly);
        } catch (RuntimeException e) {
            throw new UsageError("cannot open " + o.network + ": " + e.getMessage());
        }
    }

    /** Opens the image after checking what it is, so each mistake gets its own message. */
    private static Image openImage(ServeOptions o, Log log) {
        Path path = o.image;
        if (!Files.exists(path)) {
            throw new UsageError("image not found: " + path);
        }
        if (Files.isDirectory(path)) {
            throw new UsageError("image is a directory: " + path);
        }
        Image image;
        try {
            image = Image.open(path, ImageOptions.defaults().readOnly(o.readOnly).direct(o.direct));
        } catch (NativeException e) {
            String hint = e.errno() == Errno.EINVAL && o.direct ? "; the filesystem may refuse O_DIRECT, try --cache writeback" : "";
            throw new UsageError("cannot open image " + path + ": " + e.getMessage() + hint);
        } catch (RuntimeException e) {
            throw new UsageError("cannot open image " + path + ": " + e.getMessage());
        }
        FormatChoice.warnIfLooksLikeQcow2(path, log);
        long size = image.sizeBytes();
        if (size == 0 || size % 512 != 0) {
            image.close();
            throw new UsageError("image " + path + " is " + size + " bytes, "
                    + (size == 0 ? "empty" : "not a multiple of 512"));
        }
        return image;
    }

    private static BlkConfig config(ServeOptions o, Image image, long sizeBytes, int networkBlockSize) {
        BlkConfig.Builder b = BlkConfig.builder(sizeBytes).numQueues(o.queues).queueSize(MAX_QUEUE_SIZE).segMax(SEG_MAX)
                .readOnly(o.readOnly).serial(o.serial);
        if (image != null && sizeBytes % image.logicalBlockSize() == 0) {
            // O_DIRECT's alignment: a guest that respects the block size never needs a bounce.
            b.blockSize(image.logicalBlockSize());
        }
        if (networkBlockSize > 512 && networkBlockSize <= 4096 && sizeBytes % networkBlockSize == 0) {
            b.blockSize(networkBlockSize); // the NBD server's minimum block size
        }
        return b.build();
    }

    private static Tuning tuning(ServeOptions o) {
        return Tuning.builder().waitStrategy(o.wait).iopsLimit(o.iopsLimit).bytesPerSecondLimit(o.bpsLimit).build();
    }

    private static String describe(ServeOptions o, VhostUserServer server, BackendChoice backends) {
        BlkConfig c = server.device().config();
        long bytes = c.capacitySectors() * 512;
        String format = o.network != null ? (o.network.startsWith("rbd:") ? "rbd" : "nbd") + ", "
                : o.format == io.vblk.block.ImageFormat.RAW ? "" : o.format + ", ";
        return o.imageName() + " (" + format + bytes + " bytes, " + (o.readOnly ? "read-only" : "read-write") + ", "
                + (o.network == null ? backends.inEffect() : "network") + (o.image != null ? ", cache " + (o.direct ? "none" : "writeback") : "")
                + ", wait " + o.wait.cliName() + ", " + o.queues + (o.queues == 1 ? " queue" : " queues")
                + (o.iopsLimit > 0 ? ", iops limit " + o.iopsLimit : "") + (o.bpsLimit > 0 ? ", bps limit " + o.bpsLimit : "")
                + ")";
    }

    /**
     * Serves until stopped. The shutdown hook (SIGINT, SIGTERM) stops the server and waits for
     * this thread to drain and clean up, then ends the JVM with status 0: a requested shutdown
     * that drained cleanly is a success, as it is for qemu-storage-daemon.
     */
    private int serve(VhostUserServer server, Image image, boolean signals) {
        CountDownLatch cleanedUp = new CountDownLatch(1);
        Thread hook = null;
        if (signals) {
            hook = new Thread(() -> {
                log.info("shutting down: draining and closing");
                server.stop();
                boolean clean = awaitQuietly(cleanedUp);
                err.flush();
                out.flush();
                Runtime.getRuntime().halt(clean ? 0 : 1);
            }, "vblk-shutdown");
            Runtime.getRuntime().addShutdownHook(hook);
        }
        int status = 0;
        try {
            server.serve();
        } catch (RuntimeException e) {
            log.info("serving failed: " + e);
            status = 1;
        } finally {
            server.close();
            closeQuietly(image);
            cleanedUp.countDown();
        }
        if (hook != null && status != 0) {
            // Not a signal: let the JVM exit with our status instead of the hook's.
            try {
                Runtime.getRuntime().removeShutdownHook(hook);
            } catch (IllegalStateException e) {
                // Shutdown already in progress: the hook decides.
            }
        }
        return status;
    }

    private static boolean awaitQuietly(CountDownLatch latch) {
        try {
            return latch.await(SHUTDOWN_WAIT_SECONDS, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            return false;
        }
    }

    private static void closeQuietly(Image image) {
        if (image != null) {
            image.close();
        }
    }
}
