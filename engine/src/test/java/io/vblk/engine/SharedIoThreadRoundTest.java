package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;

import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * A {@link SharedIoThread}'s rounds driven directly, as {@link IoThreadRoundTest} drives an
 * {@link IoThread}'s: the shared thread is built unstarted (the test thread owns it) over two
 * {@link RoundRig} members and an injected clock, and the test calls its {@code doWork()},
 * {@code sleep()} and idle strategy itself. A broken sleep veto would block in epoll: the
 * timeout runs the test on a thread of its own so that it fails instead.
 */
@Timeout(value = 60, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class SharedIoThreadRoundTest {
    private static final long POLL_NS = 50_000;

    private static Tuning shared() {
        return Tuning.builder().threadingMode(ThreadingMode.SHARED).build();
    }

    private static SharedIoThread unstarted(WaitStrategy wait, RoundRig.SteppingClock clock) {
        return new SharedIoThread("shared-round-test", wait, POLL_NS, null, 0, clock, false);
    }

    @Test
    void oneRoundServesEveryMemberAndASleepWithChainsWaitingReturnsAtOnce() {
        RoundRig.SteppingClock clock = new RoundRig.SteppingClock();
        try (SharedIoThread thread = unstarted(WaitStrategy.BLOCKING, clock);
             RoundRig a = new RoundRig(shared(), null);
             RoundRig b = new RoundRig(shared(), null)) {
            a.thread.startOn(thread);
            b.thread.startOn(thread);
            assertEquals(2, thread.memberCount(), "attached at once: the test thread owns it");
            a.offerReads(3);
            b.offerReads(5);
            assertEquals(8, thread.doWork(), "one round pops both members' chains");
            assertEquals(8, thread.doWork(), "the next one reaps and publishes them");
            assertEquals(3, a.reapAll());
            assertEquals(5, b.reapAll());
            assertEquals(0, thread.doWork(), "nothing left: an idle round");

            b.addRead(0);
            b.driver.publishAvail();
            thread.sleep(); // b's re-check after re-enabling its notifications vetoes the epoll wait
            assertFalse(thread.isSleeping());
            assertEquals(1, thread.doWork(), "the chain that vetoed the sleep is popped by the next round");
        }
    }

    @Test
    void theAdaptivePollWindowRunsOnTheInjectedClock() throws Exception {
        RoundRig.SteppingClock clock = new RoundRig.SteppingClock();
        clock.update(TimeUnit.SECONDS.toNanos(100));
        try (SharedIoThread thread = unstarted(WaitStrategy.ADAPTIVE, clock);
             RoundRig a = new RoundRig(shared(), null)) {
            a.thread.startOn(thread);
            AdaptivePollIdleStrategy idle = (AdaptivePollIdleStrategy) thread.idleStrategy();
            a.offerReads(2);
            idle.idle(thread.doWork());
            idle.idle(thread.doWork()); // reaped: nothing in flight, so a wait polls first
            assertEquals(2, a.reapAll());
            a.addRead(0);
            a.driver.publishAvail(); // work for the sleep's re-check to find, so no sleep blocks
            for (int i = 0; i < 3; i++) {
                idle.idle(0);
                Thread.sleep(2); // far past the 50 us window in real time, not on the injected clock
            }
            assertEquals(0, idle.sleeps(), "the window is open while the injected clock stands still");
            clock.advance(POLL_NS);
            idle.idle(0);
            assertEquals(1, idle.sleeps(), "the window closed on the injected clock: it went to sleep");
            assertFalse(thread.isSleeping(), "the member's waiting chain vetoed the wait");
            assertEquals(1, thread.doWork());
        }
    }
}
