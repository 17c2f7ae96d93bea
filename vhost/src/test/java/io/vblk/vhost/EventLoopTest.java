package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import org.junit.jupiter.api.Test;

import io.vblk.sys.EventFd;

/**
 * {@link EventLoop} on real eventfds: one-shot dispatch until re-armed, a bounded pool whatever
 * the number of descriptors, a blocked handler that holds only its own pool thread, and cancel.
 */
class EventLoopTest {
    private static final List<String> LOG = new ArrayList<>();
    private static final Log QUIET = Log.to(line -> {
        synchronized (LOG) {
            LOG.add(line);
        }
    });

    @Test
    void aHandlerRunsOncePerArmingAndAgainAfterRearm() throws Exception {
        EventLoop loop = EventLoop.start("test-loop", QUIET);
        ExecutorService pool = EventLoop.pool("test-h", 2, 5);
        try (EventFd fd = EventFd.create(true)) {
            AtomicInteger runs = new AtomicInteger();
            CountDownLatch twice = new CountDownLatch(2);
            EventLoop.Registration[] r = new EventLoop.Registration[1];
            CountDownLatch registered = new CountDownLatch(1);
            r[0] = loop.register(fd.fd(), pool, () -> {
                await(registered);
                // Level-triggered and never read: only the one-shot arming keeps this from running again at once.
                if (runs.incrementAndGet() == 1) {
                    r[0].rearm();
                }
                twice.countDown();
            });
            registered.countDown();
            fd.signal();
            assertTrue(twice.await(10, TimeUnit.SECONDS), "ran, was re-armed, ran again");
            // A third run would need a second rearm: a round trip through the loop with another descriptor shows none came.
            try (EventFd other = EventFd.create(true)) {
                CountDownLatch otherRan = new CountDownLatch(1);
                EventLoop.Registration o = loop.register(other.fd(), pool, otherRan::countDown);
                other.signal();
                assertTrue(otherRan.await(10, TimeUnit.SECONDS));
                o.cancel();
            }
            pool.shutdown();
            assertTrue(pool.awaitTermination(10, TimeUnit.SECONDS));
            assertEquals(2, runs.get());
            r[0].cancel();
        } finally {
            pool.shutdownNow();
            loop.close();
        }
    }

    @Test
    void manyDescriptorsFewThreadsAndABlockedHandlerHoldsOnlyItsOwn() throws Exception {
        // This pool's threads are told from the other tests' "test-h" pools by identity: a pool
        // they shut down may still have threads ending (shutdownNow interrupts, it does not wait).
        java.util.Set<Thread> earlier = java.util.Set.copyOf(Thread.getAllStackTraces().keySet());
        EventLoop loop = EventLoop.start("test-loop", QUIET);
        ExecutorService pool = EventLoop.pool("test-h", 2, 5);
        List<EventFd> fds = new ArrayList<>();
        try {
            CountDownLatch release = new CountDownLatch(1);
            CountDownLatch blockedStarted = new CountDownLatch(1);
            EventFd blocked = EventFd.create(true);
            fds.add(blocked);
            loop.register(blocked.fd(), pool, () -> {
                blockedStarted.countDown();
                await(release); // a drain that takes its time
            });
            blocked.signal();
            assertTrue(blockedStarted.await(10, TimeUnit.SECONDS));

            int n = 50;
            AtomicInteger running = new AtomicInteger();
            AtomicInteger most = new AtomicInteger();
            CountDownLatch all = new CountDownLatch(n);
            for (int i = 0; i < n; i++) {
                EventFd fd = EventFd.create(true);
                fds.add(fd);
                loop.register(fd.fd(), pool, () -> {
                    most.accumulateAndGet(running.incrementAndGet(), Math::max);
                    fd.read();
                    running.decrementAndGet();
                    all.countDown();
                });
                fd.signal();
            }
            assertTrue(all.await(30, TimeUnit.SECONDS), "every descriptor served while one handler is blocked");
            assertEquals(1, most.get(), "one pool thread left for the 50 others");
            long poolThreads = Thread.getAllStackTraces().keySet().stream()
                    .filter(t -> t.getName().startsWith("test-h-") && !earlier.contains(t)).count();
            assertTrue(poolThreads <= 2, "threads of the pool of 2: " + poolThreads);
            release.countDown();
        } finally {
            pool.shutdownNow();
            loop.close();
            for (EventFd fd : fds) {
                fd.close();
            }
        }
    }

    @Test
    void aCancelledRegistrationNeverRuns() throws Exception {
        EventLoop loop = EventLoop.start("test-loop", QUIET);
        ExecutorService pool = EventLoop.pool("test-h", 1, 5);
        try (EventFd fd = EventFd.create(true); EventFd marker = EventFd.create(true)) {
            AtomicInteger runs = new AtomicInteger();
            EventLoop.Registration r = loop.register(fd.fd(), pool, runs::incrementAndGet);
            r.cancel();
            fd.signal();
            CountDownLatch markerRan = new CountDownLatch(1);
            loop.register(marker.fd(), pool, markerRan::countDown);
            marker.signal();
            assertTrue(markerRan.await(10, TimeUnit.SECONDS));
            pool.shutdown();
            assertTrue(pool.awaitTermination(10, TimeUnit.SECONDS));
            assertEquals(0, runs.get());
        } finally {
            pool.shutdownNow();
            loop.close();
        }
    }

    private static void await(CountDownLatch latch) {
        try {
            latch.await();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
