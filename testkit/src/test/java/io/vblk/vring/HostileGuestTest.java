package io.vblk.vring;

import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
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
            Thread guest = new Thread(() -> {
                SplittableRandom r = new SplittableRandom(42);
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
                        UnsafeApi.putShortVolatile(null, availHost + 2, (short) (idx + r.nextInt(4)));
                    }
                }
            }, "hostile-guest");
            guest.start();
            long pops = 0;
            long quarantines = 0;
            long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(1500);
            // On a loaded machine the two threads may barely overlap in 1.5 s: go on (up to 40 s)
            // until both outcomes were seen, so the assertion below tests the ring, not the scheduler.
            long cap = System.nanoTime() + TimeUnit.SECONDS.toNanos(40);
            try {
                while (System.nanoTime() < deadline
                        || (!(pops > 1000 && quarantines > 100) && System.nanoTime() < cap)) {
                    int rc = rig.pop();
                    if (rc == 1) {
                        pops++;
                        checkInsideGuestMemory(rig);
                    } else if (rc < 0) {
                        quarantines++;
                        rig.queue.activate(rig.mem, SIZE, rig.driver.descGpa(), rig.driver.availGpa(),
                                rig.driver.usedGpa(), true, true);
                        rig.queue.setNextAvail(UnsafeApi.getShortVolatile(null, availHost + 2) & 0xffff);
                    }
                }
            } catch (Throwable t) {
                failure.set(t);
            } finally {
                stop.set(true);
                guest.join();
            }
            System.out.printf("hostile guest: %d chains popped, %d quarantines%n", pops, quarantines);
            assertNull(failure.get());
            assertTrue(pops > 1000 && quarantines > 100, "both outcomes must be exercised");
        }
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
