package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.sys.NativeBuffer;

/**
 * The qcow2 driver passes the I/O thread's {@code rearmCompletions} on to its back ends, the
 * image's and every backing level's: the kernel raises a back end's completion eventfd for every
 * completion it posts, so after rounds that reaped a lump of completions without sleeping the
 * eventfds stay readable and the next sleep woke at once to nothing. The driver took the
 * interface's default (nothing reset), so every qcow2 disk paid that wake-up after each lump.
 * The eventfds' counters are read from /proc (fdinfo), which changes nothing.
 */
class Qcow2RearmCompletionsTest {
    @TempDir
    Path dir;

    @Test
    void rearmResetsTheImagesAndTheBackingLevelsEventfds() throws Exception {
        Path base = DriverRig.create(dir, "base.qcow2", "8M");
        var w = DriverRig.run("qemu-io", "-f", "qcow2", "-c", "write -P 0x3c 0 1M", base.toString());
        assertEquals(0, w.code(), w.output());
        Path top = dir.resolve("top.qcow2");
        DriverRig.qemuImg("create", "-q", "-f", "qcow2", "-b", base.getFileName().toString(), "-F", "qcow2",
                top.toString());
        try (Qcow2Driver d = Qcow2.open(top, BackendKind.IO_URING, 8, Qcow2Options.defaults())) {
            assertEquals(2, d.completionSources(), "the image's back end and the backing level's");
            DriverRig rig = new DriverRig(d);
            NativeBuffer buf = DriverRig.buffer(65536);
            byte[] want = new byte[65536];
            Arrays.fill(want, (byte) 0x3c);
            for (int i = 0; i < 4; i++) {
                // Polled to completion, never slept on: as the I/O thread's busy rounds do.
                assertEquals(65536, rig.one(rig.read((long) i * 65536, buf, 65536)), "read through to the backing file");
                assertArrayEquals(want, DriverRig.bytes(buf, 65536));
                assertEquals(65536, rig.one(rig.write(2L << 20 | (long) i * 65536, buf, 65536)), "allocating write");
            }
            for (int i = 0; i < d.completionSources(); i++) {
                assertTrue(eventfdCount(d.completionFd(i)) > 0, "source " + i + " was raised by the completions reaped");
            }
            assertFalse(d.rearmCompletions(), "nothing is left to poll");
            for (int i = 0; i < d.completionSources(); i++) {
                assertEquals(0, eventfdCount(d.completionFd(i)),
                        "source " + i + " still readable after the rearm: the sleep would wake at once to nothing");
            }
            assertEquals(65536, rig.one(rig.read(0, buf, 65536)), "the next completion still arrives");
        }
    }

    /** The counter of eventfd {@code fd} of this process, read from its fdinfo (nothing consumed). */
    static long eventfdCount(int fd) throws IOException {
        for (String line : Files.readAllLines(Path.of("/proc/self/fdinfo/" + fd))) {
            if (line.startsWith("eventfd-count:")) {
                return Long.parseLong(line.substring("eventfd-count:".length()).trim(), 16);
            }
        }
        throw new AssertionError("fd " + fd + " is not an eventfd");
    }
}
