package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import io.vblk.aio.BackendKind;
import io.vblk.aio.IoBackends;
import io.vblk.testkit.ForwardingBackend;

/**
 * Regression (review 9a): when {@link IoThread#shutdown()} gives up waiting for a dedicated
 * thread whose round is stuck in a back-end call, it must not close the back end under that
 * round (an io_uring back end unmaps its rings in close: the round's next access would crash
 * the JVM). The thread closes it itself when the round ends.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS) // a hang guard, not a timed assertion
class ShutdownStalledRoundTest {
    @Test
    void aRoundStuckInTheBackEndClosesItOnlyWhenItEnds() throws Exception {
        CountDownLatch inSubmit = new CountDownLatch(1);
        CountDownLatch release = new CountDownLatch(1);
        CountDownLatch closed = new CountDownLatch(1);
        boolean[] closedDuringSubmit = new boolean[1];
        boolean[] submitting = new boolean[1];
        ForwardingBackend io = new ForwardingBackend(IoBackends.open(BackendKind.NULL, null, 64)) {
            @Override
            public int submit() {
                synchronized (submitting) {
                    submitting[0] = true;
                }
                inSubmit.countDown();
                try {
                    release.await();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
                synchronized (submitting) {
                    submitting[0] = false;
                }
                return super.submit();
            }

            @Override
            public void close() {
                synchronized (submitting) {
                    closedDuringSubmit[0] |= submitting[0];
                }
                super.close();
                closed.countDown();
            }
        };
        RoundRig rig = new RoundRig(Tuning.builder().build(), null, io);
        try {
            rig.thread.start("stalled-round");
            rig.offerReads(1);
            rig.thread.kick(0);
            assertTrue(inSubmit.await(30, TimeUnit.SECONDS), "the round reached the back end");
            rig.thread.end().shutdownWaitMs = 100;
            rig.thread.shutdown(); // gives up after 100 ms: the round is still in submit
            assertFalse(closedDuringSubmit[0], "the back end was closed under the round that uses it");
            assertTrue(closed.getCount() == 1, "closed before the round ended");
            release.countDown();
            assertTrue(closed.await(30, TimeUnit.SECONDS), "the thread closed its back end when the round ended");
            assertFalse(closedDuringSubmit[0]);
        } finally {
            release.countDown();
            for (RoundRig.Lane lane : rig.lanes) {
                lane.interrupt.close();
            }
            rig.memory.close();
        }
    }
}
