package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;

import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

/**
 * Each {@link CompletionRoute}, with rounds driven by the test: the inline route finishes
 * requests inside the round, the dedicated one on its own thread (started here), which survives
 * a completion that throws.
 */
class CompletionRouteTest {
    /** An unsupported request type: the parser refuses it, nothing reaches the back end. */
    private static final int T_BOGUS = 0x7fff;

    private static Tuning mode(ThreadingMode mode) {
        return Tuning.builder().threadingMode(mode).build();
    }

    /** Runs rounds until {@code done} holds; fails after 10 s (a hang, not a slow machine). */
    private static void roundsUntil(RoundRig rig, BooleanSupplier done, String what) {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (!done.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                fail("never: " + what);
            }
            rig.thread.doWork();
            Thread.onSpinWait();
        }
    }

    @Test
    @DisplayName("inline: an immediate completion is finished and published within the round that popped it")
    void inlineFinishesInTheRound() {
        try (RoundRig rig = new RoundRig(mode(ThreadingMode.SHARED), null)) {
            CompletionRoute route = rig.thread.route();
            assertInstanceOf(InlineCompletionRoute.class, route);
            assertFalse(route.ownsThread());
            assertTrue(route.passed(route.fence()), "nothing to wait for inline");
            rig.add(T_BOGUS, 0);
            rig.driver.publishAvail();
            assertEquals(1, rig.thread.doWork());
            assertEquals(BlkRequestDescriptor.S_UNSUPP, rig.status(0), "status written in the same round");
            assertEquals(1, rig.reapAll(), "and used.idx published");
            assertEquals(0, rig.queue.inflight, "and the slot is back");
            assertFalse(route.hasReturns());
        }
    }

    @Test
    @DisplayName("dedicated: its thread finishes and publishes; the I/O thread's rounds take the requests back")
    void dedicatedFinishesOnItsThread() {
        try (RoundRig rig = new RoundRig(mode(ThreadingMode.DEDICATED), null)) {
            CompletionRoute route = rig.thread.route();
            assertInstanceOf(DedicatedCompletionRoute.class, route);
            assertTrue(route.ownsThread());
            route.start("route-test");
            rig.offerReads(3);
            rig.add(T_BOGUS, 0);
            rig.driver.publishAvail();
            assertEquals(4, rig.thread.doWork(), "four popped; the refused one went to the completion thread");
            roundsUntil(rig, () -> rig.queue.inflight == 0, "every request back in the pool");
            // A slot can come back before the completion thread's batch publishes used.idx (it
            // publishes once per batch, at its end): the fence says that batch has ended.
            long fence = route.fence();
            roundsUntil(rig, () -> route.passed(fence), "the fence passed");
            assertEquals(4, rig.reapAll());
            assertEquals(BlkRequestDescriptor.S_OK, rig.status(0));
            assertEquals(BlkRequestDescriptor.S_UNSUPP, rig.status(3));
            assertFalse(route.hasReturns());
        }
    }

    @Test
    @DisplayName("dedicated: a completion that throws quarantines the queues, and the completion thread lives on and drains")
    void dedicatedSurvivesAThrowingCompletion() {
        try (RoundRig rig = new RoundRig(mode(ThreadingMode.DEDICATED), null)) {
            DedicatedCompletionRoute route = (DedicatedCompletionRoute) rig.thread.route();
            route.start("route-test");
            rig.offerReads(1);
            assertEquals(1, rig.thread.doWork());
            // A back end reporting a slot that was never handed out: finishing it throws on the
            // completion thread (the Disruptor's default handler would end that thread here).
            int neverClaimed = rig.thread.backend().depth() - 1;
            route.complete(neverClaimed, 4096);
            roundsUntil(rig, () -> rig.queue.faultReason != null, "the fault seen");
            assertTrue(rig.queue.faultReason.startsWith("completion thread: "), rig.queue.faultReason);
            roundsUntil(rig, () -> rig.queue.inflight == 0, "the real read still comes back");
            assertEquals(QueueLifecycle.BROKEN, rig.queue.state, "quarantined by the next round");
            assertEquals(1, rig.broken.size());
            long fence = route.fence();
            roundsUntil(rig, () -> route.passed(fence), "a later fence passed");
            assertTrue(route.threadAlive(), "the completion thread survived");
            assertNotNull(rig.queue.brokenReason);
        }
    }

    @Test
    @DisplayName("dedicated: a Throwable that escapes the processor itself (here: its handler throws too) runs the processor again")
    void dedicatedRunsAgainWhenAThrowableEscapesTheProcessor() {
        try (RoundRig rig = new RoundRig(mode(ThreadingMode.DEDICATED), null)) {
            DedicatedCompletionRoute route = (DedicatedCompletionRoute) rig.thread.route();
            route.start("route-test");
            rig.offerReads(1);
            assertEquals(1, rig.thread.doWork());
            // A slot outside the pool: finishing it throws, and so does the handler that looks
            // the request up: the Throwable leaves the Disruptor's processor (as a late
            // guest-memory fault outside its try does). Before, that ended the completion thread.
            route.complete(1 << 20, 4096);
            roundsUntil(rig, () -> rig.queue.faultReason != null, "the fault seen");
            roundsUntil(rig, () -> rig.queue.inflight == 0, "the real read still comes back");
            assertEquals(QueueLifecycle.BROKEN, rig.queue.state, "quarantined by the next round");
            long fence = route.fence();
            roundsUntil(rig, () -> route.passed(fence), "a later fence passed: the processor runs again");
            assertTrue(route.threadAlive(), "the completion thread survived");
        }
    }
}
