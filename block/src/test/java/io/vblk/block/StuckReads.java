package io.vblk.block;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.fail;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

import io.vblk.aio.IoBackend;
import io.vblk.aio.IoVector;
import io.vblk.sys.Mapping;
import io.vblk.testkit.TestFuse;

/**
 * The pieces of the undrained-close tests: a FUSE file whose server holds every read (a hung
 * FUSE, NFS or iSCSI device, {@link TestFuse#holdReads}), a read the kernel cannot finish until
 * the test lets the server answer, and a closer thread whose hang is reported with its stack.
 * Each test sets {@value #CLOSE_DRAIN_PROPERTY} and clears it after.
 */
final class StuckReads {
    static final int BLOCK = 4096;
    static final byte FILL = 0x5a;
    static final String CLOSE_DRAIN_PROPERTY = "vblk.aio.closeDrainMs";

    private StuckReads() {
    }

    /**
     * Mounts under {@code dir} a 1 MiB file of {@link #FILL} whose reads its server holds, and
     * sets the back ends' close wait to {@code closeDrainMs}; skips the test where FUSE cannot
     * be mounted (no /dev/fuse or no CAP_SYS_ADMIN).
     */
    static TestFuse mount(Path dir, int closeDrainMs) throws IOException {
        return mount(dir, closeDrainMs, 1 << 20);
    }

    /** As {@link #mount(Path, int)}, the file {@code size} bytes. */
    static TestFuse mount(Path dir, int closeDrainMs, long size) throws IOException {
        TestFuse fs = TestFuse.stalling(Files.createDirectory(dir.resolve("mnt")), size);
        assumeTrue(fs != null, "FUSE cannot be mounted here (no /dev/fuse or no CAP_SYS_ADMIN)");
        fs.fill(FILL);
        fs.holdReads(true);
        System.setProperty(CLOSE_DRAIN_PROPERTY, Integer.toString(closeDrainMs));
        return fs;
    }

    /** Submits a read of {@link #BLOCK} bytes at {@code offset} into {@code into}, tagged {@code tag}. */
    static void read(IoBackend io, Mapping into, long offset, long tag) {
        IoVector v = new IoVector(1);
        v.add(into.address(), BLOCK);
        assertEquals(0, io.prepareRead(offset, v, tag));
        assertEquals(1, io.submit());
    }

    /** {@link #read} at offset 0, then waits until the FUSE server holds it: the kernel has it and cannot finish it. */
    static void stuckRead(IoBackend io, TestFuse fs, Mapping into) throws InterruptedException {
        read(io, into, 0, 7);
        assertEquals(1, fs.awaitHeld(1, 30_000), "the read reached the FUSE server");
    }

    /** Runs {@code close} on a daemon thread named "closer". */
    static Thread startCloser(Runnable close) {
        Thread closer = new Thread(close, "closer");
        closer.setDaemon(true);
        closer.start();
        return closer;
    }

    /** Fails, with where the closer waits, unless it ends within 20 s (a hang guard, not a timed assertion). */
    static void assertCloserEnds(Thread closer, String what) throws InterruptedException {
        closer.join(20_000);
        if (closer.isAlive()) {
            StringBuilder where = new StringBuilder();
            for (StackTraceElement s : closer.getStackTrace()) {
                where.append("\n  at ").append(s);
            }
            fail(what + " still waits after 20 s:" + where);
        }
    }
}
