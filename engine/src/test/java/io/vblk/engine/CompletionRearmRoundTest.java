package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;

import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoBackends;

/**
 * The completion eventfd around a sleep, in rounds driven directly over io_uring on a real file
 * (epoll sleep): the kernel signals the eventfd for every completion it posts, and a round that
 * reaps the ring from user space leaves it raised. Before, the next sleep then woke at once and
 * the round after it found no work (one such wake-up per lump of completions at depth 128); the
 * sleep now resets the eventfd and looks at the ring again, and a completion that lands after
 * that still wakes it.
 */
class CompletionRearmRoundTest {
    @TempDir
    Path dir;

    private static Tuning tuning() {
        return Tuning.builder().threadingMode(ThreadingMode.SHARED).ringSleep(false).build();
    }

    @Test
    @DisplayName("after rounds that reaped a lump, the sleep does not wake at once to a round with no work")
    void noWakeUpToNothingAfterALump() throws Exception {
        Path p = DeviceRig.createImage(dir, RoundRig.CAPACITY);
        try (Image img = Image.open(p, ImageOptions.defaults())) {
            IoBackend io = IoBackends.open(BackendKind.IO_URING, img, 64);
            try (RoundRig rig = new RoundRig(tuning(), null, io)) {
                int sleeps = 0;
                int wokeToNothing = 0;
                for (int lump = 0; lump < 8; lump++) {
                    rig.offerReads(16);
                    // A polling thread: rounds until every completion is published, never sleeping,
                    // so the ring is reaped from user space and the eventfd is never read.
                    int published = 0;
                    while (published < 16) {
                        rig.thread.doWork();
                        published += rig.reapAll();
                    }
                    // Then the thread goes to sleep, as its idle strategy would once the guest is quiet.
                    int timeout = rig.thread.prepareSleep();
                    if (timeout != IoThread.WAKE_NOW) {
                        sleeps++;
                        // Readable now: epoll_wait would return at once. Collect it as the wait would.
                        boolean wakesAtOnce = io.completionEvent().await(0) == 1;
                        rig.thread.awaitEvents(0);
                        rig.thread.finishSleep();
                        if (wakesAtOnce && rig.thread.doWork() == 0) {
                            wokeToNothing++;
                        }
                    } else {
                        rig.thread.finishSleep();
                    }
                }
                assertEquals(8, sleeps, "every lump reaped, nothing else to do: each ends in a sleep");
                assertEquals(0, wokeToNothing, "sleeps woken at once by completions already reaped");
                assertEquals(8 * 16, rig.queue.counters.get(QueueCounters.COMPLETIONS));
            }
        }
    }

    @Test
    @Timeout(60) // guards against a lost wake-up (the sleep would then never end)
    @DisplayName("a completion that lands after the sleep reset the eventfd still wakes the sleep")
    void aLateCompletionStillWakes() throws Exception {
        Path p = DeviceRig.createImage(dir, RoundRig.CAPACITY);
        try (Image img = Image.open(p, ImageOptions.defaults())) {
            IoBackend io = IoBackends.open(BackendKind.IO_URING, img, 64);
            try (RoundRig rig = new RoundRig(tuning(), null, io)) {
                int slept = 0;
                for (int i = 0; i < 200; i++) {
                    // One read per pass: popped and submitted by a round that also reaped the
                    // previous one, so the eventfd is raised and reset on every pass while the new
                    // read is in flight (it may complete before the reset, between the reset and
                    // the look, or after both).
                    rig.offerReads(1);
                    int published = 0;
                    while (published < 1) {
                        rig.thread.doWork();
                        published += rig.reapAll();
                        if (published == 0) {
                            int timeout = rig.thread.prepareSleep();
                            if (timeout != IoThread.WAKE_NOW) {
                                slept++;
                                rig.thread.awaitEvents(-1); // only the read's completion can end it
                            }
                            rig.thread.finishSleep();
                        }
                    }
                }
                assertEquals(200, rig.queue.counters.get(QueueCounters.COMPLETIONS));
                assertTrue(slept > 0, "some passes slept for their read (else nothing was tested)");
            }
        }
    }
}
