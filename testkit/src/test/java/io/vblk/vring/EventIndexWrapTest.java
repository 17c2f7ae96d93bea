package io.vblk.vring;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import io.vblk.hostmem.GuestMemory;
import io.vblk.sys.EventFd;
import io.vblk.testkit.SplitQueueDriver;

/**
 * With EVENT_IDX, a side that suppressed notifications must not be notified after its event
 * index wraps. Before, the device left avail_event where it last enabled kicks and the driver
 * left used_event where it last enabled interrupts; 65,536 entries later the other side's
 * {@code vring_need_event} window passed the stale index again, and sent one kick and one
 * interrupt nobody asked for every wrap (3 each in 200,000 requests). Now each parks its index
 * one behind its own position and re-parks it every 16,384 entries.
 *
 * <p>A driver and a device on one queue, both suppressed after a first round trip, move 200,000
 * requests in batches; kicks and interrupts are eventfd writes made only when a publish asks
 * for one, and both eventfds must stay at 0. Then both re-enable, and the next publish each way
 * must notify (parking loses no wake-up).
 */
class EventIndexWrapTest {
    private static final int REQUESTS = 200_000;

    @ParameterizedTest(name = "queue size {0}, driver batches of {1}")
    @CsvSource({"64, 7", "256, 1", "32768, 32768"})
    void suppressedSidesAreNeverNotifiedAcrossWraps(int size, int batch) {
        try (GuestMemory mem = GuestMemory.builder().guarded(true).addMemfd(0, 4 << 20).build();
                EventFd kick = EventFd.create(true);
                EventFd call = EventFd.create(true)) {
            SplitQueueDriver driver = SplitQueueDriver.builder(mem).size(size).eventIdx(true).area(0, 4 << 20).build();
            SplitQueue queue = new SplitQueue(0, 4);
            assertEquals(0, queue.activate(mem, size, driver.descGpa(), driver.availGpa(), driver.usedGpa(), true, false));
            DescriptorChain chain = queue.newChain();
            long[] buffer = {driver.allocate(64, 64)};
            int[] length = {1};
            boolean[] writable = {true};

            // A first round trip with both sides asking: it notifies each way (the first publish
            // after set-up always interrupts); drained, so the eventfds count only what follows.
            driver.addDirect(buffer, length, writable, 1);
            assertTrue(driver.publishAvail(), "notifications enabled: kick");
            assertEquals(1, queue.pop(chain));
            queue.addUsed(chain.head(), 1);
            assertTrue(queue.publishUsed(), "first publish after set-up: interrupt");
            assertTrue(driver.reap() >= 0);

            queue.disableNotifications(); // the device polls
            driver.disableInterrupts(); // the driver polls
            long done = 1;
            while (done < REQUESTS + 1) {
                int added = 0;
                while (added < batch && done + added < REQUESTS + 1 && driver.addDirect(buffer, length, writable, 1) >= 0) {
                    added++;
                }
                if (driver.publishAvail()) {
                    kick.signal();
                }
                while (queue.pop(chain) == 1) {
                    queue.addUsed(chain.head(), 1);
                }
                assertFalse(queue.quarantined(), () -> "ring corrupt: " + queue.error());
                if (queue.publishUsed()) {
                    call.signal();
                }
                int head;
                while ((head = driver.reap()) >= 0) {
                    done++;
                }
                assertEquals(SplitQueueDriver.NONE, head);
            }
            assertEquals(0, count(kick), "kicks sent to a device that suppressed them");
            assertEquals(0, count(call), "interrupts sent to a driver that suppressed them");

            // Both ask again: the next publish each way notifies.
            assertFalse(queue.enableNotifications(), "nothing pending");
            driver.addDirect(buffer, length, writable, 1);
            assertTrue(driver.publishAvail(), "the device re-enabled kicks: kick");
            assertFalse(driver.enableInterrupts(), "nothing used");
            assertEquals(1, queue.pop(chain));
            queue.addUsed(chain.head(), 1);
            assertTrue(queue.publishUsed(), "the driver re-enabled interrupts: interrupt");
        }
    }

    /** What an eventfd counted since it was last read: 0 when a read finds nothing (EAGAIN). */
    private static long count(EventFd e) {
        long n = e.read();
        return n < 0 ? 0 : n;
    }
}
