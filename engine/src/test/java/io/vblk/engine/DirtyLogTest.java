package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.S_IOERR;
import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static io.vblk.engine.BlkRequestDescriptor.S_UNSUPP;
import static io.vblk.engine.BlkRequestDescriptor.T_DISCARD;
import static io.vblk.engine.BlkRequestDescriptor.T_FLUSH;
import static io.vblk.engine.BlkRequestDescriptor.T_GET_ID;
import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static io.vblk.engine.BlkRequestDescriptor.T_OUT;
import static io.vblk.engine.BlkRequestDescriptor.T_WRITE_ZEROES;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;
import java.util.Random;

import org.agrona.UnsafeApi;
import org.agrona.concurrent.UnsafeBuffer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import io.vblk.aio.BackendKind;
import io.vblk.hostmem.DirtyLog;
import io.vblk.testkit.SplitQueueDriver;
import io.vblk.vring.UsedRingDescriptor;

/**
 * Dirty logging catches every write of the device into guest memory: for every request type,
 * on every back end and through bounce buffers, the guest pages that changed between a snapshot
 * taken before the request and one taken after (the device drained) must all be marked in the
 * log; and the log marks nothing the request could not have written (data, status, used ring),
 * so a log that marks everything fails too.
 */
class DirtyLogTest {
    private static final long PAGE = DirtyLog.PAGE_SIZE;

    @TempDir
    Path dir;

    /** A request as the test sends it. */
    private record Req(String name, int type, long sector, long dataGpa, int dataLength, boolean writable, byte status) {
    }

    @ParameterizedTest
    @EnumSource(BackendKind.class)
    void everyGuestMemoryWriteOfEveryRequestTypeIsLogged(BackendKind kind) throws Exception {
        Path image = Files.createTempFile(dir, "random", ".raw");
        byte[] bytes = new byte[8 << 20];
        new Random(7).nextBytes(bytes);
        Files.write(image, bytes);
        try (DeviceRig rig = DeviceRig.builder(dir, kind).image(image).config(b -> b.serial("dirty-log-test")).build()) {
            long memBytes = DeviceRig.QUEUE_AREA + DeviceRig.BUFFERS;
            UnsafeBuffer bitmap = new UnsafeBuffer(new byte[(int) DirtyLog.bitmapBytes(memBytes)]);
            DirtyLog log = rig.device.startDirtyLog(bitmap);
            SplitQueueDriver d = rig.driver(0);

            long big = rig.buffer(0, 64 * 1024);
            // Not 512-byte aligned: every real back end bounces it (O_DIRECT), crossing 4 pages.
            long unaligned = rig.buffer(0, 4 * PAGE) + 8;
            long id = rig.buffer(0, PAGE) + PAGE - 10; // GET_ID's 20 bytes straddle two pages
            long segment = rig.buffer(0, 16);
            long out = rig.buffer(0, 8192);
            UnsafeApi.setMemory(rig.host(out, 8192), 8192, (byte) 0x3c);
            long capacity = bytes.length / 512;
            Req[] requests = {
                new Req("IN 64 KiB", T_IN, 8, big, 64 * 1024, true, S_OK),
                new Req("IN unaligned (bounced)", T_IN, 100, unaligned, 3 * 4096, true, S_OK),
                new Req("OUT", T_OUT, 4096, out, 8192, false, S_OK),
                new Req("IN of what OUT wrote", T_IN, 4096, big, 8192, true, S_OK),
                new Req("FLUSH", T_FLUSH, 0, 0, 0, false, S_OK),
                new Req("GET_ID", T_GET_ID, 0, id, 20, true, S_OK),
                new Req("DISCARD", T_DISCARD, 0, segment, 16, false, S_OK),
                new Req("WRITE_ZEROES", T_WRITE_ZEROES, 0, segment, 16, false, S_OK),
                new Req("unknown type", 99, 0, big, 512, true, S_UNSUPP),
                new Req("IN past the end", T_IN, capacity, big, 512, true, S_IOERR),
            };
            int[] usedPages = pagesOf(d.usedGpa(), UsedRingDescriptor.bytes(d.size()));
            int firstDriverPage = (int) (d.descGpa() / PAGE);
            int lastDriverPage = (int) ((d.usedGpa() - 1) / PAGE); // descriptor table and avail ring: the driver's
            assertTrue(usedPages[0] > lastDriverPage, "used ring on its own pages");
            for (Req r : requests) {
                if (r.type == T_DISCARD || r.type == T_WRITE_ZEROES) {
                    long h = rig.host(segment, 16);
                    UnsafeApi.putLong(h, 2048);
                    UnsafeApi.putInt(h + 8, 16);
                    UnsafeApi.putInt(h + 12, 0);
                }
                if (r.writable && r.dataLength > 0) {
                    UnsafeApi.setMemory(rig.host(r.dataGpa, r.dataLength), r.dataLength, (byte) 0xa5);
                }
                // Stopped while the driver adds the request, so the "before" snapshot cannot miss
                // the device's work; starting the queue makes it look at the ring.
                rig.device.stopQueue(0);
                bitmap.setMemory(0, bitmap.capacity(), (byte) 0);
                int head = rig.add(0, r.type, r.sector, r.dataGpa, r.dataLength, r.writable);
                d.publishAvail();
                long[] before = snapshot(rig, memBytes);
                rig.device.startQueue(0);
                assertEquals(head, rig.awaitUsed(0, 10_000), r.name);
                rig.device.stopQueue(0); // drained: every write and every mark is done
                long[] after = snapshot(rig, memBytes);
                byte status = rig.status(0, head);
                boolean discardLike = r.type == T_DISCARD || r.type == T_WRITE_ZEROES;
                assertTrue(status == r.status || (discardLike && status == S_UNSUPP) || (kind == BackendKind.NULL
                        && r.type == T_IN && r.sector == capacity && status == S_IOERR), r.name + ": status " + status);

                BitSet changed = new BitSet();
                for (int page = 0; page < memBytes / PAGE; page++) {
                    if (page >= firstDriverPage && page <= lastDriverPage) {
                        continue; // the driver writes avail.idx / used_event here while it waits
                    }
                    for (int w = 0; w < PAGE / 8; w++) {
                        int i = (int) (page * PAGE / 8) + w;
                        if (before[i] != after[i]) {
                            changed.set(page);
                            break;
                        }
                    }
                }
                BitSet logged = new BitSet();
                for (int page = 0; page < memBytes / PAGE; page++) {
                    if (log.isDirty(page * PAGE)) {
                        logged.set(page);
                    }
                }
                BitSet missed = (BitSet) changed.clone();
                missed.andNot(logged);
                assertTrue(missed.isEmpty(), kind + " " + r.name + ": pages written but not logged: " + missed
                        + " (written " + changed + ", logged " + logged + ")");

                BitSet allowed = new BitSet();
                for (int p : usedPages) {
                    allowed.set(p);
                }
                long statusGpa = statusGpaOf(rig, head);
                allowed.set((int) (statusGpa / PAGE));
                if (r.writable && r.dataLength > 0) {
                    for (int p : pagesOf(r.dataGpa, r.dataLength)) {
                        allowed.set(p);
                    }
                }
                BitSet extra = (BitSet) logged.clone();
                extra.andNot(allowed);
                assertTrue(extra.isEmpty(), kind + " " + r.name + ": pages logged the request cannot write: " + extra);
                assertTrue(logged.get(usedPages[0]) || usedPages.length > 1, r.name + ": used ring logged");
                assertTrue(changed.get((int) (statusGpa / PAGE)), r.name + ": the status byte changed");
                rig.device.startQueue(0);
            }
            assertEquals(0, log.outOfRange());
            rig.device.stopDirtyLog();
            assertNull(rig.device.dirtyLog());
        }
    }

    /**
     * Without logging nothing is marked, and a log that is switched off mid-run stops growing;
     * the used ring can be logged at another address (vhost-user's log_guest_addr) or not at all.
     */
    @Test
    void usedRingIsLoggedWhereTheOwnerSaysAndLoggingOffMarksNothing() throws Exception {
        try (DeviceRig rig = DeviceRig.builder(dir, BackendKind.NULL).build()) {
            long memBytes = DeviceRig.QUEUE_AREA + DeviceRig.BUFFERS;
            UnsafeBuffer bitmap = new UnsafeBuffer(new byte[(int) DirtyLog.bitmapBytes(memBytes) * 2]);
            long buf = rig.buffer(0, 4096);
            assertEquals(S_OK, rig.roundTrip(0, T_IN, 0, buf, 4096, true));
            DirtyLog log = new DirtyLog(bitmap);
            long elsewhere = memBytes + 64 * PAGE; // beyond guest memory, inside the log
            rig.device.setUsedRingLog(0, elsewhere);
            rig.device.startDirtyLog(log);
            assertEquals(S_OK, rig.roundTrip(0, T_IN, 0, buf, 4096, true));
            rig.device.stopQueue(0);
            SplitQueueDriver d = rig.driver(0);
            assertTrue(log.isDirty(elsewhere), "used ring logged at the address given");
            assertTrue(!log.isDirty(d.usedGpa()), "and not at its own");
            assertTrue(log.isDirty(buf), "data logged");

            // Changed and cleared while the queue is stopped: the round that a restart's kick
            // runs must not race the clearing (it marked the used ring after it, now and then).
            rig.device.setUsedRingLog(0, BlockDevice.USED_LOG_OFF);
            bitmap.setMemory(0, bitmap.capacity(), (byte) 0);
            rig.device.startQueue(0);
            assertEquals(S_OK, rig.roundTrip(0, T_IN, 0, buf, 4096, true));
            rig.device.stopQueue(0);
            assertTrue(!log.isDirty(elsewhere) && !log.isDirty(d.usedGpa()), "used ring not logged");
            assertTrue(log.isDirty(buf), "data still logged");

            rig.device.stopDirtyLog();
            bitmap.setMemory(0, bitmap.capacity(), (byte) 0);
            rig.device.startQueue(0);
            assertEquals(S_OK, rig.roundTrip(0, T_IN, 0, buf, 4096, true));
            rig.device.stopQueue(0);
            for (int i = 0; i < bitmap.capacity(); i += 8) {
                assertEquals(0, bitmap.getLong(i), "logging off marks nothing");
            }
        }
    }

    private static long statusGpaOf(DeviceRig rig, int head) {
        // The rig lays the status byte in its scratch area; find it through the descriptor table.
        SplitQueueDriver d = rig.driver(0);
        long desc = rig.host(d.descGpa(), 16L * d.size());
        int index = head;
        while (true) {
            long base = desc + 16L * index;
            int flags = UnsafeApi.getShort(base + 12) & 0xffff;
            if ((flags & 1) == 0) {
                return UnsafeApi.getLong(base) + UnsafeApi.getInt(base + 8) - 1;
            }
            index = UnsafeApi.getShort(base + 14) & 0xffff;
        }
    }

    private static int[] pagesOf(long gpa, long length) {
        List<Integer> pages = new ArrayList<>();
        for (long p = gpa / PAGE; p <= (gpa + length - 1) / PAGE; p++) {
            pages.add((int) p);
        }
        return pages.stream().mapToInt(Integer::intValue).toArray();
    }

    private static long[] snapshot(DeviceRig rig, long bytes) {
        long[] copy = new long[(int) (bytes / 8)];
        UnsafeApi.copyMemory(null, rig.host(0, bytes), copy, UnsafeApi.arrayBaseOffset(long[].class), bytes);
        return copy;
    }
}
