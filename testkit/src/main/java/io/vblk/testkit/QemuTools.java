package io.vblk.testkit;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.IntPredicate;
import java.util.function.Supplier;

import io.vblk.sys.ImageLock;
import io.vblk.sys.OfdLock;
import io.vblk.sys.PosixFile;

/**
 * The real QEMU tools (qemu-io, qemu-img) and the image-lock probes the lock tests share: run a
 * tool to its end, ask whether QEMU was refused a lock, read which of QEMU's lock bytes another
 * open file description sees held, and wait for a lock state or a log line. Test support only;
 * the tools come from qemu-utils (installed by {@code .ci/run}): callers skip with
 * {@code assumeTrue(QemuTools.installed("qemu-io"), ...)} where they are missing.
 */
public final class QemuTools {
    /** What {@link #run} saw: the exit status and the output (stdout and stderr merged). */
    public record Run(int code, String output) {
        /** Whether QEMU said it could not take the write permission's lock (as file-posix words it). */
        public boolean writeLockRefused() {
            return output.contains("Failed to get \"write\" lock");
        }

        @Override
        public String toString() {
            return code + ": " + output;
        }
    }

    /** Lock mask bits ({@link #heldLockBytes}): bit i for byte 100+i, bit 4+i for byte 200+i. */
    public static final int INACTIVE_BYTES = 0x01; // 100 only: a consistent reader sharing everything
    /** A writer's set: bytes 100, 101, 103, 201, 203 (what qemu-io and qemu-storage-daemon hold writing). */
    public static final int WRITER_BYTES = 0x01 | 0x02 | 0x08 | 0x20 | 0x80;
    private static final int PERM_COUNT = 4;
    private static final long TOOL_TIMEOUT_SECONDS = 60;

    private QemuTools() {
    }

    /** Whether {@code /usr/bin/TOOL} is there to run (qemu-io, qemu-img, qemu-storage-daemon). */
    public static boolean installed(String tool) {
        return Files.isExecutable(Path.of("/usr/bin", tool));
    }

    /** Runs {@code cmd} to its end (at most 60 s, else an AssertionError): status and merged output. */
    public static Run run(String... cmd) {
        try {
            Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
            String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
            if (!p.waitFor(TOOL_TIMEOUT_SECONDS, TimeUnit.SECONDS)) {
                p.destroyForcibly();
                throw new AssertionError(String.join(" ", cmd) + " did not end within " + TOOL_TIMEOUT_SECONDS + " s");
            }
            return new Run(p.exitValue(), out);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new AssertionError("interrupted running " + String.join(" ", cmd), e);
        }
    }

    /** {@code qemu-io ARGS}. */
    public static Run qemuIo(String... args) {
        return run(prepend("qemu-io", args));
    }

    /** {@code qemu-img ARGS}. */
    public static Run qemuImg(String... args) {
        return run(prepend("qemu-img", args));
    }

    /** {@code qemu-io -f raw -c "write 0 512" IMAGE}: a third writer, refused while someone writes the image. */
    public static Run qemuIoWrite(Path image) {
        return qemuIo("-f", "raw", "-c", "write 0 512", image.toString());
    }

    /**
     * Starts {@code qemu-storage-daemon} exporting the raw file {@code image} writable as a
     * vhost-user-blk device on {@code socket}, its output to {@code log}: a QEMU writer holding
     * the image's locks. The caller destroys it.
     */
    public static Process storageDaemon(Path image, Path socket, Path log) {
        try {
            return new ProcessBuilder("qemu-storage-daemon",
                    "--blockdev", "driver=file,node-name=f0,filename=" + image,
                    "--export", "type=vhost-user-blk,id=e0,node-name=f0,addr.type=unix,addr.path=" + socket + ",writable=on")
                    .redirectErrorStream(true).redirectOutput(log.toFile()).start();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    private static String[] prepend(String tool, String[] args) {
        String[] cmd = new String[args.length + 1];
        cmd[0] = tool;
        System.arraycopy(args, 0, cmd, 1, args.length);
        return cmd;
    }

    /**
     * QEMU's lock bytes 100..103 and 200..203 that another open file description sees held on
     * {@code image}, as a mask (bit i: 100+i, bit 4+i: 200+i). Read with F_OFD_GETLK from a
     * description of its own, which takes no lock.
     */
    public static int heldLockBytes(Path image) {
        int mask = 0;
        try (PosixFile f = PosixFile.open(image, true, false)) {
            for (int i = 0; i < PERM_COUNT; i++) {
                if (OfdLock.test(f.fd(), ImageLock.PERM_BASE + i, 1) != OfdLock.F_UNLCK) {
                    mask |= 1 << i;
                }
                if (OfdLock.test(f.fd(), ImageLock.SHARED_BASE + i, 1) != OfdLock.F_UNLCK) {
                    mask |= 1 << (PERM_COUNT + i);
                }
            }
        }
        return mask;
    }

    /**
     * Waits (up to {@code seconds}) until {@link #heldLockBytes} of {@code image} satisfies
     * {@code wanted} (a process that starts, a close that lets go); returns the mask seen, or
     * throws an AssertionError naming the last mask. A hang guard, not a timed assertion.
     */
    public static int awaitLockBytes(Path image, IntPredicate wanted, int seconds) {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
        while (true) {
            int mask = heldLockBytes(image);
            if (wanted.test(mask)) {
                return mask;
            }
            if (System.nanoTime() > deadline) {
                throw new AssertionError("the locks of " + image + " never reached the state wanted: held 0x"
                        + Integer.toHexString(mask));
            }
            pause();
        }
    }

    /**
     * Ends a server process a test started (qemu-nbd, nbdkit, qemu-storage-daemon): SIGTERM, up
     * to 10 s to exit, then SIGKILL. A bare {@code destroy(); waitFor()} hung a test run for good
     * when a qemu-nbd did not act on SIGTERM.
     */
    public static void stop(Process p) {
        p.destroy();
        try {
            if (!p.waitFor(10, TimeUnit.SECONDS)) {
                p.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
            }
        } catch (InterruptedException e) {
            p.destroyForcibly();
            Thread.currentThread().interrupt();
        }
    }

    /**
     * Waits (up to 60 s: a QEMU process's start took seconds on a loaded CI machine) until
     * someone holds byte 100 of {@code image} (a QEMU process that has opened it).
     */
    public static void awaitLocked(Path image) {
        awaitLockBytes(image, m -> (m & INACTIVE_BYTES) != 0, 60);
    }

    /**
     * Waits (up to {@code seconds}) until {@code output} has {@code count} lines containing
     * {@code text}; returns the count-th, or throws an AssertionError with the whole output.
     */
    public static String awaitLine(Supplier<String> output, String text, int count, int seconds) {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
        while (true) {
            String all = output.get();
            List<String> lines = all.lines().filter(l -> l.contains(text)).toList();
            if (lines.size() >= count) {
                return lines.get(count - 1);
            }
            if (System.nanoTime() > deadline) {
                throw new AssertionError("fewer than " + count + " lines with '" + text + "' in:\n" + all);
            }
            pause();
        }
    }

    private static void pause() {
        try {
            Thread.sleep(10);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new AssertionError("interrupted", e);
        }
    }
}
