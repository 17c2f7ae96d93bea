package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * A device's {@link Throttle} is shared by its queues: a round pops its queues in order, and the
 * first queue with chains took everything the throttle admitted, so the throttle was closed by
 * the time a later queue's turn came. A round's order moved only when the round's chain budget
 * ran out (off by default), so a busy queue 0 kept a light queue 1 waiting for ever, one
 * throttle interval after another (s17e). Now the round after the one the throttle closed in
 * starts at the queue after the one that took its last admission: the throttle's admissions go
 * round the queues with chains waiting, whatever the pop-and-submit policy.
 *
 * <p>Rounds are driven directly ({@link RoundRig}) on the injected clock: one throttle
 * interval is one millisecond of it, and bounds are counted in intervals, not wall-clock time.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS) // a hang guard
class ThrottleFairnessTest {
    private static final long INTERVAL_NS = TimeUnit.MILLISECONDS.toNanos(1);

    private static Tuning.Builder inline() {
        return Tuning.builder().threadingMode(ThreadingMode.SHARED);
    }

    /** Every pop-and-submit policy (SubmitPolicy's four), since each pops a queue its own way. */
    static Stream<Arguments> policies() {
        return Stream.of(
                Arguments.of("whole round", inline().build()),
                Arguments.of("sub-batches", inline().subBatch(2).build()),
                Arguments.of("chunks", inline().submitChunk(2).build()),
                Arguments.of("early signal", inline().earlySignal(2).build()));
    }

    /**
     * One request a millisecond; every queue but the last one kept full, the last one given one
     * read: it is served within as many intervals as there are queues (its turn comes once each
     * queue before it had one), and the busy queues are served meanwhile too. It was never served
     * before, however long the rounds went on.
     */
    @ParameterizedTest(name = "{0}, {2} queues")
    @MethodSource("lightQueueCases")
    void aLightQueueIsServedWithinOneTurnOfEachQueueBesideFullOnes(String name, Tuning tuning, int queues) {
        Throttle throttle = new Throttle(1_000, 0, 0);
        try (RoundRig rig = new RoundRig(tuning, throttle, false, queues)) {
            RoundRig.Lane light = rig.lanes[queues - 1];
            rig.clock.update(TimeUnit.SECONDS.toNanos(1));
            for (int q = 0; q < queues - 1; q++) {
                rig.lanes[q].offerReads(16);
            }
            light.offerReads(1);
            int intervals = 0;
            while (light.queue.counters.get(QueueCounters.REQUESTS) == 0 && intervals < 100) {
                rig.thread.doWork();
                keepFull(rig, queues - 1);
                rig.clock.advance(INTERVAL_NS);
                intervals++;
            }
            assertEquals(1, light.queue.counters.get(QueueCounters.REQUESTS),
                    "the light queue's read was never popped in " + intervals + " intervals");
            assertTrue(intervals <= queues, "served after " + intervals + " intervals, " + queues + " queues");
            for (int round = 0; round < 3; round++) {
                rig.clock.advance(INTERVAL_NS);
                rig.thread.doWork();
            }
            assertEquals(1, drain(light), "the light queue's read completed");
            assertEquals(0, light.status(0), "its status");
            for (int q = 0; q < queues - 1; q++) {
                assertTrue(rig.lanes[q].queue.counters.get(QueueCounters.REQUESTS) > 0, "busy queue " + q + " served too");
            }
            assertTrue(rig.broken.isEmpty(), "quarantined: " + rig.broken);
        }
    }

    static Stream<Arguments> lightQueueCases() {
        return policies().flatMap(a -> Stream.of(
                Arguments.of(a.get()[0], a.get()[1], 2),
                Arguments.of(a.get()[0], a.get()[1], 3)));
    }

    /**
     * Two queues kept full under one request a millisecond (by operations, then by bytes: one
     * 4 KiB read's worth a millisecond): over 40 intervals the admissions alternate, each queue
     * gets half. Queue 1 got none before.
     */
    @ParameterizedTest(name = "{0}")
    @MethodSource("policies")
    void twoBusyQueuesShareTheThrottleHalfAndHalf(String name, Tuning tuning) {
        shareHalfAndHalf(tuning, new Throttle(1_000, 0, 0));
        shareHalfAndHalf(tuning, new Throttle(0, 4096L * 1000, 0));
    }

    private static void shareHalfAndHalf(Tuning tuning, Throttle throttle) {
        try (RoundRig rig = new RoundRig(tuning, throttle, false, 2)) {
            rig.clock.update(TimeUnit.SECONDS.toNanos(1));
            rig.lanes[0].offerReads(16);
            rig.lanes[1].offerReads(16);
            for (int i = 0; i < 40; i++) {
                rig.thread.doWork();
                keepFull(rig, 2);
                rig.clock.advance(INTERVAL_NS);
            }
            long first = rig.lanes[0].queue.counters.get(QueueCounters.REQUESTS);
            long second = rig.lanes[1].queue.counters.get(QueueCounters.REQUESTS);
            assertTrue(first + second >= 39 && first + second <= 41, "the throttle's rate: " + (first + second));
            assertTrue(Math.abs(first - second) <= 1, "queue 0 got " + first + ", queue 1 " + second);
            assertTrue(rig.broken.isEmpty(), "quarantined: " + rig.broken);
        }
    }

    /** Reaps what the first {@code count} queues' guests got back and posts as many reads again, keeping their rings full. */
    private static void keepFull(RoundRig rig, int count) {
        for (int q = 0; q < count; q++) {
            int reaped = drain(rig.lanes[q]);
            if (reaped > 0) {
                rig.lanes[q].offerReads(reaped);
            }
        }
    }

    private static int drain(RoundRig.Lane lane) {
        int n = 0;
        while (lane.driver.reap() >= 0) {
            n++;
        }
        return n;
    }
}
