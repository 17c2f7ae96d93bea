package io.vblk.vhost;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.Predicate;
import java.util.function.UnaryOperator;

import io.vblk.aio.BackendKind;
import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.engine.BackendFactory;
import io.vblk.engine.BlkConfig;
import io.vblk.engine.Tuning;
import io.vblk.testkit.VhostUserFrontend;

/**
 * A vhost-user-blk server under test: a real image file (written, so every block is allocated),
 * the default back end (io_uring, or Linux AIO where io_uring is refused), a real socket, and
 * {@link VhostUserServer#serve()} on its own thread. Log lines are collected for assertions.
 */
final class ServerRig implements AutoCloseable {
    static final long IMAGE_BYTES = 16L << 20;
    static final String SERIAL = "rig-serial";

    final Path socket;
    final Image image;
    final VhostUserServer server;
    private final Thread thread;
    private final List<String> lines = new ArrayList<>();

    /** The image's hand-over (locked as QEMU does), or null for a rig without image locking. */
    final io.vblk.block.ImageActivation activation;

    private ServerRig(Path dir, int queues, boolean readOnly, UnaryOperator<BackendFactory> backends)
            throws IOException {
        this(dir, queues, readOnly, backends, null);
    }

    /**
     * {@code incoming}: null for no image locking; else the image is locked as vblk serve locks it,
     * inactive until its device starts when true.
     */
    private ServerRig(Path dir, int queues, boolean readOnly, UnaryOperator<BackendFactory> backends, Boolean incoming)
            throws IOException {
        this(dir, queues, readOnly, backends, incoming, null, 0);
    }

    /** A server whose queues run on {@code shared} (as `vblk daemon` exports with iothreads). */
    static ServerRig startShared(Path dir, io.vblk.engine.SharedIoThread shared) throws IOException {
        return new ServerRig(dir, 1, false, UnaryOperator.identity(), null, shared, 0);
    }

    /** A server whose frontends' memory tables may map up to {@code maxGuestBytes} (VhostUserServer.Builder.maxGuestMemory). */
    static ServerRig startWithGuestMemoryCap(Path dir, long maxGuestBytes) throws IOException {
        return new ServerRig(dir, 1, false, UnaryOperator.identity(), null, null, maxGuestBytes);
    }

    /** As {@link #startShared(Path, io.vblk.engine.SharedIoThread)}, back ends wrapped by {@code backends}. */
    static ServerRig startShared(Path dir, io.vblk.engine.SharedIoThread shared, UnaryOperator<BackendFactory> backends)
            throws IOException {
        return new ServerRig(dir, 1, false, backends, null, shared, 0);
    }

    /** {@code maxGuestBytes}: the server's guest-memory cap, 0 for the default. */
    private ServerRig(Path dir, int queues, boolean readOnly, UnaryOperator<BackendFactory> backends, Boolean incoming,
            io.vblk.engine.SharedIoThread shared, long maxGuestBytes) throws IOException {
        Path imagePath = dir.resolve("disk.img");
        if (!Files.exists(imagePath)) {
            Files.write(imagePath, new byte[(int) IMAGE_BYTES]);
        }
        socket = dir.resolve("vhost.sock");
        image = Image.open(imagePath, ImageOptions.defaults().readOnly(readOnly));
        activation = incoming == null ? null
                : io.vblk.block.ImageActivation.lock(image, io.vblk.sys.ImageLock.Locking.ON, incoming, s -> { });
        Log log = Log.to(line -> {
            synchronized (lines) {
                lines.add(line);
                lines.notifyAll();
            }
        });
        BlkConfig config = BlkConfig.builder(IMAGE_BYTES).numQueues(queues).queueSize(1024)
                .segMax(254).readOnly(readOnly).serial(SERIAL).build();
        BackendFactory real = new BackendChoice(BackendKind.IO_URING, image, log);
        VhostUserServer.Builder b = VhostUserServer.builder(socket, config, backends.apply(real))
                .tuning(Tuning.defaults()).log(log).name("rig")
                .connectionLinesPerMinute(Integer.MAX_VALUE); // tests wait for each frontend's last line (awaitGone)
        if (activation != null) {
            b.activation(activation);
        }
        if (shared != null) {
            b.ioThreads(shared);
        }
        if (maxGuestBytes > 0) {
            b.maxGuestMemory(maxGuestBytes);
        }
        server = b.build();
        thread = new Thread(server::serve, "rig-server");
        thread.start();
    }

    static ServerRig start(Path dir, int queues) throws IOException {
        return new ServerRig(dir, queues, false, UnaryOperator.identity());
    }

    /** A server whose back ends are {@code backends} applied to the default ones (to hold or count I/O). */
    static ServerRig start(Path dir, int queues, UnaryOperator<BackendFactory> backends) throws IOException {
        return new ServerRig(dir, queues, false, backends);
    }

    /** A server whose image is locked as QEMU does; {@code incoming}: inactive until the device starts. */
    static ServerRig startLocked(Path dir, boolean incoming) throws IOException {
        return new ServerRig(dir, 1, false, UnaryOperator.identity(), incoming);
    }

    static ServerRig startReadOnly(Path dir) throws IOException {
        return new ServerRig(dir, 1, true, UnaryOperator.identity());
    }

    VhostUserFrontend connect() {
        return VhostUserFrontend.connect(socket);
    }

    /** The log so far. */
    List<String> lines() {
        synchronized (lines) {
            return new ArrayList<>(lines);
        }
    }

    /** Waits (up to 30 s, a hang guard sized for a loaded CI machine) for a log line matching {@code p} and returns it. */
    String awaitLine(Predicate<String> p) {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        synchronized (lines) {
            while (true) {
                for (String l : lines) {
                    if (p.test(l)) {
                        return l;
                    }
                }
                long left = deadline - System.nanoTime();
                if (left <= 0) {
                    throw new AssertionError("no matching log line in " + lines);
                }
                try {
                    lines.wait(Math.max(1, TimeUnit.NANOSECONDS.toMillis(left)));
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new AssertionError(e);
                }
            }
        }
    }

    /** Waits until the server has finished with the frontend numbered {@code id}. */
    void awaitGone(int id) {
        awaitLine(l -> l.startsWith("frontend " + id + " disconnected")
                || l.startsWith("frontend " + id + ": connection closed"));
    }

    /** The lines that report a refused request or a connection closed for an error, of frontend {@code id}. */
    List<String> complaints(int id) {
        List<String> found = new ArrayList<>();
        for (String l : lines()) {
            if (l.startsWith("frontend " + id + ": ") && (l.contains(" refused ") || l.contains("connection closed"))) {
                found.add(l);
            }
        }
        return found;
    }

    /** Whether the server thread is still serving. */
    boolean serving() {
        return thread.isAlive();
    }

    @Override
    public void close() {
        server.close();
        // For the report of a failed test (surefire keeps a test's output in a file).
        lines().forEach(l -> System.out.println("server: " + l));
        try {
            thread.join(10_000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        image.close();
    }
}
