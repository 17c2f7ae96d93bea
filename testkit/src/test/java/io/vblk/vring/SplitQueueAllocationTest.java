package io.vblk.vring;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.management.ManagementFactory;

import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

/** The data path allocates nothing: pop, addUsed, publishUsed, notifications, and the driver's add/publish/reap. */
class SplitQueueAllocationTest {
    private static final com.sun.management.ThreadMXBean THREADS =
            (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();

    @Test
    @DisplayName("200k requests through both sides allocate no bytes on the calling thread")
    void steadyStateAllocatesNothing() {
        try (Rig rig = Rig.create(64, true, true)) {
            long hdr = rig.driver.allocate(16, 16);
            long data = Rig.REGION1 - 2048; // crosses into region 1: the translate slow path too
            long status = rig.driver.allocate(1, 1);
            long[] gpas = {hdr, data, status};
            int[] lens = {16, 4096, 1};
            boolean[] wr = {false, true, true};
            run(rig, gpas, lens, wr, 50_000); // warm up: let the JIT compile everything
            long tid = Thread.currentThread().getId();
            long before = THREADS.getThreadAllocatedBytes(tid);
            long done = run(rig, gpas, lens, wr, 200_000);
            long allocated = THREADS.getThreadAllocatedBytes(tid) - before;
            assertEquals(200_000, done);
            assertTrue(allocated < 1024, "allocated " + allocated + " bytes for 200k requests");
        }
    }

    private static long run(Rig rig, long[] gpas, int[] lens, boolean[] wr, int requests) {
        long done = 0;
        int sent = 0;
        while (done < requests) {
            for (int i = 0; i < 8 && sent < requests; i++, sent++) {
                int head = (sent & 1) == 0 ? rig.driver.addDirect(gpas, lens, wr, 3) : rig.driver.addIndirect(gpas, lens, wr, 3);
                if (head < 0) {
                    throw new AssertionError("ring full");
                }
            }
            rig.driver.publishAvail();
            rig.queue.disableNotifications();
            while (rig.pop() == 1) {
                rig.queue.addUsed(rig.chain.head(), 4097);
            }
            rig.queue.enableNotifications();
            rig.queue.publishUsed();
            while (rig.driver.reap() >= 0) {
                done++;
            }
            rig.driver.enableInterrupts();
        }
        return done;
    }
}
