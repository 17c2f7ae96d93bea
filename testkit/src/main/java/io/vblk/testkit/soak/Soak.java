package io.vblk.testkit.soak;

import java.io.IOException;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.TimeUnit;

import io.vblk.testkit.JvmFlags;

/**
 * The soak (issue 7, item 6): {@code vblk serve} on a file image, driven for a chosen time by a
 * frontend that keeps tagged reads and writes in flight, stops and resumes the queue every second
 * (GET_VRING_BASE, then the ring set up again from that base, as QEMU does) and drops the
 * connection and starts over every ten seconds (as a restarted frontend does), checking every
 * completion. At the end every block is read back through the device, the daemon is stopped with
 * SIGTERM, and every block is checked once more in the image file itself.
 *
 * <pre>{@code
 * scripts/soak                 # 2 minutes
 * scripts/soak --minutes 30
 * }</pre>
 *
 * Prints one line of figures; exit status 0 when nothing was lost and no request failed.
 */
public final class Soak {
    /** What a soak measured. */
    public record Report(double minutes, long readsVerified, long writesCompleted, long blocksVerifiedAtEnd,
                         long blocksVerifiedOnDisk, long stopResumes, long reconnects, long lost, long errors) {
        /** Requests checked: reads compared with their block's last tag, writes completed OK, the final read-back. */
        public long requestsVerified() {
            return readsVerified + writesCompleted + blocksVerifiedAtEnd;
        }

        /** Whether nothing was lost and nothing failed. */
        public boolean clean() {
            return lost == 0 && errors == 0;
        }

        @Override
        public String toString() {
            return String.format(Locale.ROOT, "soak: %.2f minutes, %d requests verified (%d reads checked against their block's"
                    + " last write, %d writes, %d blocks read back at the end, %d blocks checked in the image file),"
                    + " %d stop/resumes, %d reconnects, lost %d, failed requests %d", minutes, requestsVerified(), readsVerified,
                    writesCompleted, blocksVerifiedAtEnd, blocksVerifiedOnDisk, stopResumes, reconnects, lost, errors);
        }
    }

    static final String USAGE = String.join("\n",
            "Usage: soak [--minutes N | --seconds N] [--size BYTES] [--dir DIR] [--aio KIND] [--depth N] [--seed N]",
            "",
            "Runs vblk serve on a new image file in DIR (default: a temporary directory under /var/tmp)",
            "and drives it with mixed tagged reads and writes, a queue stop/resume every second and a",
            "frontend reconnect every 10 s; then reads every block back and checks the image file.",
            "",
            "  --minutes N   how long (default 2; fractions allowed)",
            "  --seconds N   how long, in seconds",
            "  --size BYTES  image size, a multiple of 4096 (default 67108864)",
            "  --aio KIND    the daemon's back end (default: its own default)",
            "  --depth N     requests in flight, 1 to 128 (default 32)",
            "  --seed N      the workload's random seed (default 1)",
            "");

    private static final long STOP_EVERY_NS = TimeUnit.SECONDS.toNanos(1);
    private static final long RECONNECT_EVERY_NS = TimeUnit.SECONDS.toNanos(10);

    private Soak() {
    }

    /** Runs the soak from the command line; exits 0 when nothing was lost. */
    public static void main(String[] args) throws Exception {
        long durationNs = TimeUnit.MINUTES.toNanos(2);
        long sizeBytes = 64L << 20;
        Path dir = null;
        String aio = null;
        int depth = 32;
        long seed = 1;
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (a.equals("-h") || a.equals("--help")) {
                System.out.print(USAGE);
                return;
            }
            if (i + 1 >= args.length) {
                usage("unknown option or missing value: " + a);
            }
            String v = args[++i];
            try {
                switch (a) {
                    case "--minutes" -> durationNs = (long) (Double.parseDouble(v) * 60e9);
                    case "--seconds" -> durationNs = (long) (Double.parseDouble(v) * 1e9);
                    case "--size" -> sizeBytes = Long.parseLong(v);
                    case "--dir" -> dir = Path.of(v);
                    case "--aio" -> aio = v;
                    case "--depth" -> depth = Integer.parseInt(v);
                    case "--seed" -> seed = Long.parseLong(v);
                    default -> usage("unknown option " + a);
                }
            } catch (NumberFormatException e) {
                usage(a + " expects a number, got '" + v + "'");
            }
        }
        if (sizeBytes <= 0 || sizeBytes % SoakGuest.BLOCK_BYTES != 0 || depth < 1 || depth > 128 || durationNs <= 0) {
            usage("bad --size, --depth or duration");
        }
        Path work = dir != null ? Files.createDirectories(dir) : Files.createTempDirectory(Path.of("/var/tmp"), "vblk-soak");
        Report r = run(work, durationNs, sizeBytes, aio, depth, seed, System.out);
        System.out.println(r);
        if (r.clean() && dir == null) {
            // Nothing to look at: the image and the daemon's logs go. A failed soak keeps them.
            for (String name : List.of("soak.img", "soak.sock", "serve.out", "serve.err")) {
                Files.deleteIfExists(work.resolve(name));
            }
            Files.deleteIfExists(work);
        } else if (!r.clean()) {
            System.out.println("soak: the image and the daemon's output are in " + work);
        }
        System.exit(r.clean() ? 0 : 1);
    }

    private static void usage(String problem) {
        System.err.println("soak: " + problem);
        System.err.print(USAGE);
        System.exit(2);
    }

    /**
     * Runs a soak of {@code durationNs} against a {@code vblk serve} it starts in {@code dir}
     * (the image, socket and the daemon's output go there); progress lines go to {@code out}.
     */
    public static Report run(Path dir, long durationNs, long sizeBytes, String aio, int depth, long seed, PrintStream out)
            throws IOException, InterruptedException {
        Path image = dir.resolve("soak.img");
        Path socket = dir.resolve("soak.sock");
        Files.deleteIfExists(image);
        try (RandomAccessFile f = new RandomAccessFile(image.toFile(), "rw")) {
            f.setLength(sizeBytes); // zeros: every block starts at tag 0
        }
        Process daemon = startDaemon(dir, image, socket, aio);
        try (SoakWorkload w = new SoakWorkload(socket, sizeBytes / SoakGuest.BLOCK_BYTES, depth, seed, out)) {
            long start = System.nanoTime();
            w.connect();
            long nextStop = start + STOP_EVERY_NS;
            long nextReconnect = start + RECONNECT_EVERY_NS;
            long nextProgress = start + TimeUnit.SECONDS.toNanos(30);
            long now;
            while ((now = System.nanoTime()) - start < durationNs) {
                w.submit();
                w.reap(1);
                if (now - nextReconnect >= 0) {
                    w.reconnect();
                    nextReconnect += RECONNECT_EVERY_NS;
                    nextStop = now + STOP_EVERY_NS;
                } else if (now - nextStop >= 0) {
                    w.stopAndResume();
                    nextStop += STOP_EVERY_NS;
                }
                if (now - nextProgress >= 0) {
                    out.printf(Locale.ROOT, "soak: %.1f min, %d reads checked, %d writes, %d stop/resumes, %d reconnects, lost %d%n",
                            (now - start) / 60e9, w.readsVerified, w.writesCompleted, w.stopResumes, w.reconnects, w.lost);
                    nextProgress += TimeUnit.SECONDS.toNanos(30);
                }
                if (!daemon.isAlive()) {
                    throw new IllegalStateException("vblk serve exited with " + daemon.exitValue() + "; see " + dir);
                }
            }
            double minutes = (System.nanoTime() - start) / 60e9;
            w.verifyEveryBlock();
            w.stop();
            int status = stopDaemon(daemon);
            if (status != 0) {
                throw new IllegalStateException("vblk serve exited with " + status + " after SIGTERM; see " + dir);
            }
            long[] onDisk = checkImage(image, w);
            return new Report(minutes, w.readsVerified, w.writesCompleted, w.blocksVerifiedAtEnd, onDisk[0], w.stopResumes,
                    w.reconnects, w.lost + onDisk[1], w.errors);
        } finally {
            daemon.destroyForcibly();
        }
    }

    /** {@code vblk serve} as its own JVM, from the classpath this one runs on. */
    private static Process startDaemon(Path dir, Path image, Path socket, String aio) throws IOException {
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        List<String> cmd = new ArrayList<>(List.of(java));
        cmd.addAll(JvmFlags.list());
        // io.vblk.daemon.Main is on the class path at run time (scripts/soak puts vblk.jar there,
        // the daemon module's SoakTest its own classes): the test kit does not depend on it.
        cmd.addAll(List.of("-Xmx512m", "-cp", System.getProperty("java.class.path"), "io.vblk.daemon.Main",
                "serve", "--image", image.toString(), "--socket", socket.toString()));
        if (aio != null) {
            cmd.addAll(List.of("--aio", aio));
        }
        return new ProcessBuilder(cmd).redirectOutput(dir.resolve("serve.out").toFile())
                .redirectError(dir.resolve("serve.err").toFile()).start();
    }

    private static int stopDaemon(Process daemon) throws InterruptedException {
        daemon.destroy(); // SIGTERM: drain and exit 0
        if (!daemon.waitFor(60, TimeUnit.SECONDS)) {
            daemon.destroyForcibly();
            return -1;
        }
        return daemon.exitValue();
    }

    /** Checks every block of the image file against its last tag: {blocks that match, blocks that do not}. */
    private static long[] checkImage(Path image, SoakWorkload w) {
        ByteBuffer block = ByteBuffer.allocate(SoakGuest.BLOCK_BYTES).order(ByteOrder.LITTLE_ENDIAN);
        long good = 0;
        long bad = 0;
        try (FileChannel ch = FileChannel.open(image, StandardOpenOption.READ)) {
            for (long b = 0; b < w.blocks(); b++) {
                block.clear();
                while (block.hasRemaining() && ch.read(block, b * SoakGuest.BLOCK_BYTES + block.position()) > 0) {
                    continue;
                }
                boolean match = !block.hasRemaining();
                long tag = w.expectedTag(b);
                for (int i = 0; match && i < SoakGuest.BLOCK_BYTES / Long.BYTES; i++) {
                    match = block.getLong(8 * i) == SoakGuest.word(b, tag, i);
                }
                if (match) {
                    good++;
                } else {
                    bad++;
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException("cannot check " + image, e);
        }
        return new long[] {good, bad};
    }
}
