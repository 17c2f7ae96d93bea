package io.vblk.vring;

import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;

import org.agrona.UnsafeApi;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import io.vblk.hostmem.GuestRegion;

/**
 * A guest that rewrites its rings while the device reads them: one thread scribbles descriptors,
 * indirect tables, ring entries and avail.idx with values that are valid most of the time, the
 * device pops as fast as it can. Double fetches would let a value change between check and use;
 * this test sees that as a segment outside guest memory, or as a crash (guard pages around every
 * region). Quarantines are expected: the device resets and goes on.
 */
class HostileGuestTest {
    private static final int SIZE = 16;

    @Test
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    @DisplayName("rings rewritten concurrently: every popped segment stays inside guest memory")
    void concurrentScribbling() throws Exception {
        try (Rig rig = Rig.create(SIZE, true, true)) {
            long table = rig.driver.allocate(16 * 16, 16);
            long descHost = rig.mem.hostAddress(rig.driver.descGpa(), 16 * SIZE, true);
            long availHost = rig.mem.hostAddress(rig.driver.availGpa(), 6 + 2 * SIZE, true);
            long tableHost = rig.mem.hostAddress(table, 16 * 16, true);
            AtomicBoolean stop = new AtomicBoolean();
            AtomicReference<Throwable> failure = new AtomicReference<>();
            // next_avail as the device last resumed or popped: the guest offers at most a queue's
            // worth beyond it, as a driver does, so every ring entry is walked whether the two
            // threads run together or take turns on one CPU (then an idx run far ahead made nearly
            // every turn of the device one AVAIL_INDEX_AHEAD and no pop). Indices out of range
            // still come, for a while (wildIdx), and are taken back.
            AtomicInteger consumed = new AtomicInteger();
            Thread guest = new Thread(() -> {
                SplittableRandom r = new SplittableRandom(42);
                int restoreIdx = 0;
                int wildLeft = 0; // idx writes until the wild avail.idx is taken back
                while (!stop.get()) {
                    int which = r.nextInt(10);
                    if (which < 5) {
                        scribbleDescriptor(r, descHost + 16L * r.nextInt(SIZE), table);
                    } else if (which < 8) {
                        scribbleDescriptor(r, tableHost + 16L * r.nextInt(16), table);
                    } else if (which < 9) {
                        UnsafeApi.putShort(availHost + 4 + 2L * r.nextInt(SIZE), (short) r.nextInt(SIZE + 1));
                    } else {
                        int idx = UnsafeApi.getShort(availHost + 2) & 0xffff;
                        if (wildLeft > 0) {
                            if (--wildLeft == 0) {
                                idx = restoreIdx; // a decrement, for a device that took the wild value
                            }
                            Thread.yield(); // let the device meet it, should they share a CPU
                        } else if (r.nextInt(64) == 0) {
                            restoreIdx = idx;
                            idx = wildIdx(r, idx);
                            wildLeft = 1 + r.nextInt(64);
                        } else if (EventIndex.distance(consumed.get(), idx) <= SIZE - 3) {
                            idx += r.nextInt(4);
                        } else {
                            Thread.yield(); // the device's turn, should they share a CPU
                        }
                        UnsafeApi.putShortVolatile(null, availHost + 2, (short) idx);
                    }
                }
            }, "hostile-guest");
            guest.start();
            long pops = 0;
            long quarantines = 0;
            long indexQuarantines = 0;
            long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(1500);
            // Both outcomes come within the 1.5 s even with the two threads taking turns on one CPU
            // (the guest paces avail.idx, above); the bound (40 s) stays as a safeguard.
            long cap = System.nanoTime() + TimeUnit.SECONDS.toNanos(40);
            try {
                while (System.nanoTime() < deadline
                        || (!(pops > 1000 && quarantines > 100) && System.nanoTime() < cap)) {
                    int rc = rig.pop();
                    if (rc == 0) {
                        Thread.yield(); // the guest's turn, should they share a CPU
                    } else if (rc == 1) {
                        pops++;
                        checkInsideGuestMemory(rig);
                        consumed.set(rig.queue.nextAvail());
                    } else if (rc < 0) {
                        quarantines++;
                        // resume past the entry that failed, or at avail.idx after a bad index
                        boolean badIndex = rc == QueueError.AVAIL_INDEX_AHEAD.code();
                        indexQuarantines += badIndex ? 1 : 0;
                        int resumeAt = badIndex ? UnsafeApi.getShortVolatile(null, availHost + 2) & 0xffff
                                : rig.queue.nextAvail() + 1;
                        rig.queue.activate(rig.mem, SIZE, rig.driver.descGpa(), rig.driver.availGpa(),
                                rig.driver.usedGpa(), true, true);
                        rig.queue.setNextAvail(resumeAt);
                        consumed.set(rig.queue.nextAvail());
                    }
                }
            } catch (Throwable t) {
                failure.set(t);
            } finally {
                stop.set(true);
                guest.join();
            }
            System.out.printf("hostile guest: %d chains popped, %d quarantines (%d of avail.idx)%n", pops, quarantines,
                    indexQuarantines);
            assertNull(failure.get());
            assertTrue(pops > 1000 && quarantines > 100, "both outcomes must be exercised");
        }
    }

    /** An avail.idx more than a queue's worth ahead of {@code idx}, or behind it (2.7.6.1). */
    private static int wildIdx(SplittableRandom r, int idx) {
        return idx + SIZE + 1 + r.nextInt(0x10000 - SIZE - 1);
    }

    private static void scribbleDescriptor(SplittableRandom r, long d, long table) {
        int flags = switch (r.nextInt(8)) {
            case 0, 1, 2 -> VirtqDescriptor.F_NEXT;
            case 3, 4 -> VirtqDescriptor.F_WRITE | (r.nextBoolean() ? VirtqDescriptor.F_NEXT : 0);
            case 5 -> VirtqDescriptor.F_INDIRECT;
            case 6 -> 0;
            default -> r.nextInt(0x10000);
        };
        long addr = (flags & VirtqDescriptor.F_INDIRECT) != 0 ? table : switch (r.nextInt(6)) {
            case 0 -> Rig.REGION1 - r.nextInt(4096);
            case 1 -> Rig.HOLE - r.nextInt(128);
            case 2 -> Rig.READ_ONLY + r.nextInt(0x10000);
            case 3 -> r.nextLong();
            default -> 0x20000 + r.nextInt(0x80000);
        };
        int len = (flags & VirtqDescriptor.F_INDIRECT) != 0 ? 16 * (1 + r.nextInt(16)) : r.nextInt(8) == 0 ? r.nextInt()
                : r.nextInt(8192);
        // two stores, not one: the device may see any mix of old and new fields
        UnsafeApi.putLong(d, addr);
        UnsafeApi.putLong(d + 8, (len & 0xffff_ffffL) | ((long) flags << 32) | ((long) r.nextInt(SIZE + 2) << 48));
    }

    private static void checkInsideGuestMemory(Rig rig) {
        DescriptorChain c = rig.chain;
        for (int i = 0; i < c.segmentCount(); i++) {
            boolean inside = false;
            for (int k = 0; k < rig.mem.regionCount(); k++) {
                GuestRegion region = rig.mem.region(k);
                long offset = c.address(i) - region.hostAddress();
                if (offset >= 0 && offset < region.size() && c.length(i) <= region.size() - offset
                        && !(c.writable(i) && region.readOnly())) {
                    inside = true;
                }
            }
            if (!inside) {
                throw new AssertionError("segment " + i + " outside guest memory: " + c);
            }
        }
    }
}
