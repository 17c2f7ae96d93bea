package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import org.junit.jupiter.api.Test;

/**
 * {@link ControlThreads#elasticPool}: tasks that block each get a thread up to the maximum, the
 * next ones wait their turn, and tasks one after another stay on the few core threads.
 */
class ElasticPoolTest {
    @Test
    void blockedTasksGetThreadsOfTheirOwnUpToTheMaximum() throws Exception {
        ExecutorService pool = ControlThreads.elasticPool("elastic-test", 4, 30);
        CountDownLatch release = new CountDownLatch(1);
        CountDownLatch started = new CountDownLatch(4);
        AtomicInteger ran = new AtomicInteger();
        try {
            for (int i = 0; i < 6; i++) {
                pool.execute(() -> {
                    started.countDown();
                    try {
                        release.await();
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    }
                    ran.incrementAndGet();
                });
            }
            assertTrue(started.await(10, TimeUnit.SECONDS), "four blocked tasks run at once");
            Thread.sleep(100);
            assertEquals(0, ran.get());
            release.countDown();
            pool.shutdown();
            assertTrue(pool.awaitTermination(10, TimeUnit.SECONDS));
            assertEquals(6, ran.get(), "the two beyond the maximum ran once threads were free");
        } finally {
            release.countDown();
            pool.shutdownNow();
        }
    }

    @Test
    void tasksOneAfterAnotherStayOnTheCoreThreads() throws Exception {
        ExecutorService pool = ControlThreads.elasticPool("elastic-test", 32, 30);
        Set<String> threads = ConcurrentHashMap.newKeySet();
        try {
            ThreadPoolExecutor p = (ThreadPoolExecutor) pool;
            for (int i = 0; i < 50; i++) {
                pool.submit(() -> threads.add(Thread.currentThread().getName())).get(10, TimeUnit.SECONDS);
                // Its thread is idle once the task has wholly ended.
                while (p.getActiveCount() > 0) {
                    Thread.sleep(1);
                }
            }
            assertTrue(threads.size() <= ControlThreads.CORE_THREADS, "idle threads take the next tasks: " + threads);
        } finally {
            pool.shutdownNow();
        }
    }
}
