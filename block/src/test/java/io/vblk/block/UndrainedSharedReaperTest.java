package io.vblk.block;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import org.agrona.UnsafeApi;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoBackends;
import io.vblk.sys.Mapping;
import io.vblk.testkit.TestFuse;

/**
 * Review of session 12: every back end closed undrained got a reaper thread of its own, so a hung
 * FUSE or NFS file that stranded many back ends (every export on it, every reconnect) cost as
 * many threads, without bound. Now one shared reaper waits for them all. Many back ends of every
 * kind, each with a read the kernel holds, are closed undrained: the reaper threads alive then
 * are counted by identity (one), and each back end's {@link IoBackend#whenDrained} action runs
 * only once the server answered and the reaper released it (what the engine and vhost hang the
 * guest memory's unmapping on). Real parts: a FUSE mount served from this JVM, the kernel's
 * io_uring and AIO, the thread back end's workers.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS) // a hang guard
class UndrainedSharedReaperTest {
    private static final int PER_KIND = 3;
    private static final int SPACING = 1 << 20;

    @TempDir
    Path dir;

    @AfterEach
    void clear() {
        System.clearProperty(StuckReads.CLOSE_DRAIN_PROPERTY);
    }

    private static Set<Thread> reaperThreads() {
        Set<Thread> found = Collections.newSetFromMap(new IdentityHashMap<>());
        for (Thread t : Thread.getAllStackTraces().keySet()) {
            if (t.isAlive() && t.getName().startsWith("vblk-aio-undrained")) {
                found.add(t);
            }
        }
        return found;
    }

    @Test
    void oneReaperThreadWaitsForEveryUndrainedBackEndAndRunsTheirDrainedActionsOnlyOnRelease() throws Exception {
        // Reads 1 MiB apart: no read waits behind another's readahead without reaching the server.
        try (TestFuse fs = StuckReads.mount(dir, 100, (long) SPACING * 3 * PER_KIND)) {
            Image image = Image.open(fs.file(), ImageOptions.defaults().readOnly(true));
            List<IoBackend> backends = new ArrayList<>();
            List<Mapping> buffers = new ArrayList<>();
            int undrainedBefore = IoBackends.undrainedBackends();
            AtomicInteger drainedActions = new AtomicInteger();
            try {
                for (BackendKind kind : new BackendKind[] {BackendKind.IO_URING, BackendKind.LINUX_AIO, BackendKind.THREADS}) {
                    for (int i = 0; i < PER_KIND; i++) {
                        IoBackend io = IoBackends.open(kind, image, 8);
                        Mapping buffer = Mapping.anonymous(StuckReads.BLOCK, false);
                        backends.add(io);
                        buffers.add(buffer);
                        StuckReads.read(io, buffer, (long) (backends.size() - 1) * SPACING, 7);
                        assertEquals(backends.size(), fs.awaitHeld(backends.size(), 30_000), kind + ": the read reached the FUSE server");
                    }
                }
                for (IoBackend io : backends) {
                    Thread closer = StuckReads.startCloser(io::close);
                    StuckReads.assertCloserEnds(closer, io + ": a close with a read the kernel never finishes");
                    assertFalse(io.closedDrained(), "the read is still with the kernel: " + io);
                    io.whenDrained(drainedActions::incrementAndGet);
                }
                assertEquals(undrainedBefore + backends.size(), IoBackends.undrainedBackends(), "counted undrained");
                assertEquals(1, reaperThreads().size(), "reaper threads for " + backends.size() + " undrained back ends: "
                        + reaperThreads());
                assertEquals(0, drainedActions.get(), "an action ran while the kernel still holds the reads");
            } finally {
                fs.answerHeld(); // the kernel completes the reads
            }
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            for (int i = 0; i < backends.size(); i++) {
                long at = buffers.get(i).address();
                while (UnsafeApi.getByte(at) != StuckReads.FILL) {
                    assertTrue(System.nanoTime() < deadline, "the kernel never completed read " + i);
                    Thread.sleep(5);
                }
            }
            while (drainedActions.get() < backends.size() || IoBackends.undrainedBackends() != undrainedBefore) {
                assertTrue(System.nanoTime() < deadline, "the reaper released " + drainedActions.get() + " of "
                        + backends.size() + " back ends");
                Thread.sleep(5);
            }
            for (IoBackend io : backends) {
                assertTrue(io.closedDrained(), io.toString());
            }
            assertEquals(backends.size(), drainedActions.get(), "each action ran once");
            image.close();
            for (Mapping b : buffers) {
                b.close();
            }
        }
    }
}
