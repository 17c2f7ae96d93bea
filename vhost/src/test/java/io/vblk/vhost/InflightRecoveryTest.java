package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.HashSet;
import java.util.Set;

import org.agrona.UnsafeApi;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import io.vblk.sys.Mapping;

/**
 * {@link InflightRegion} and {@link InflightRecovery} on a region in plain memory: the stores of
 * the data path, the reconnect algorithm at every point a backend can die, and regions a hostile
 * frontend wrote ({@link InflightRecoveryPropertyTest} tries random ones). The layout is written
 * out from vhost-user.rst, independently of {@link InflightDescriptor}.
 */
class InflightRecoveryTest {
    static final int SIZE = 8;
    static final int REGION_BYTES = 16 + 16 * SIZE;

    private final Mapping memory = Mapping.anonymous(4096, true);
    private final long base = memory.address();
    private final InflightRegion region = new InflightRegion(base, SIZE);

    @AfterEach
    void unmap() {
        memory.close();
    }

    // ---------------------------------------------------------------- raw layout, from the spec

    private int version() {
        return UnsafeApi.getShort(base + 8) & 0xffff;
    }

    private int descNum() {
        return UnsafeApi.getShort(base + 10) & 0xffff;
    }

    private int lastBatchHead() {
        return UnsafeApi.getShort(base + 12) & 0xffff;
    }

    private int usedIdx() {
        return UnsafeApi.getShort(base + 14) & 0xffff;
    }

    private int inflight(int head) {
        return UnsafeApi.getByte(base + 16 + 16L * head) & 0xff;
    }

    private int next(int head) {
        return UnsafeApi.getShort(base + 16 + 16L * head + 6) & 0xffff;
    }

    private long counter(int head) {
        return UnsafeApi.getLong(base + 16 + 16L * head + 8);
    }

    private void header(int version, int descNum, int lastBatchHead, int usedIdx) {
        UnsafeApi.putShort(base + 8, (short) version);
        UnsafeApi.putShort(base + 10, (short) descNum);
        UnsafeApi.putShort(base + 12, (short) lastBatchHead);
        UnsafeApi.putShort(base + 14, (short) usedIdx);
    }

    private void entry(int head, int inflight, int next, long counter) {
        long e = base + 16 + 16L * head;
        UnsafeApi.putByte(e, (byte) inflight);
        UnsafeApi.putShort(e + 6, (short) next);
        UnsafeApi.putLong(e + 8, counter);
    }

    private byte[] snapshot() {
        byte[] b = new byte[REGION_BYTES];
        UnsafeApi.copyMemory(null, base, b, UnsafeApi.arrayBaseOffset(byte[].class), REGION_BYTES);
        return b;
    }

    /** A fresh region recovered at used.idx {@code usedIdx}, as the first start does. */
    private void started(int usedIdx) {
        InflightRecovery.Result r = InflightRecovery.recover(region, SIZE, usedIdx, usedIdx, usedIdx);
        region.resume(r.nextCounter(), r.lastBatchHead());
    }

    // ---------------------------------------------------------------- layout and data path

    @Test
    void regionSizesAreSixtyFourByteAligned() {
        assertEquals(64, InflightDescriptor.regionBytes(1));
        assertEquals(64, InflightDescriptor.regionBytes(3));
        assertEquals(2112, InflightDescriptor.regionBytes(128));
        assertEquals(16448, InflightDescriptor.regionBytes(1024), "16 + 16 x 1024 rounded up");
        assertEquals(2 * 2112, InflightDescriptor.bufferBytes(2, 128));
    }

    @Test
    void aFreshRegionIsInitialisedAndResumesAtTheFrontendsBase() {
        InflightRecovery.Result r = InflightRecovery.recover(region, SIZE, 7, 9, 7);
        assertTrue(r.initialised());
        assertEquals(0, r.heads().length);
        assertEquals(7, r.nextAvail());
        assertEquals(1, version());
        assertEquals(SIZE, descNum());
        assertEquals(7, usedIdx());
    }

    @Test
    void theDataPathRecordsPopsBatchesAndPublishes() {
        started(0);
        region.popped(3);
        region.popped(5);
        region.popped(1);
        assertEquals(1, inflight(3));
        assertEquals(1, inflight(5));
        assertEquals(1, inflight(1));
        assertEquals(0, counter(3));
        assertEquals(1, counter(5));
        assertEquals(2, counter(1));

        region.used(5);
        region.used(1);
        assertEquals(1, lastBatchHead());
        assertEquals(5, next(1));
        assertEquals(1, inflight(5), "flags stay set until the batch is published");
        region.published(2);
        assertEquals(0, inflight(5));
        assertEquals(0, inflight(1));
        assertEquals(1, inflight(3));
        assertEquals(2, usedIdx());

        region.used(3);
        assertEquals(1, next(3), "the next batch links on to the last one");
        region.published(3);
        assertEquals(0, inflight(3));
        assertEquals(3, usedIdx());
    }

    @Test
    void headsOutsideTheRegionAreIgnoredNotStored() {
        started(0);
        byte[] before = snapshot();
        region.popped(SIZE);
        region.popped(-1);
        region.used(SIZE);
        region.used(70000);
        assertArrayEquals(before, snapshot());
    }

    // ---------------------------------------------------------------- dying at every point

    /**
     * A backend runs pops, completions and publishes and is "killed" after each single step; a
     * new backend recovers from the region and the ring indices as they were at that moment.
     * It must resubmit exactly the requests the guest has not seen completed, in pop order.
     */
    @Test
    void recoveryAfterDeathAtEveryStepResubmitsExactlyWhatTheGuestHasNotSeen() {
        // pop 0..5; batch {4, 1}; pop 6; batch {0, 6, 2}; batch {5}
        String[] script = {"p0", "p1", "p2", "p3", "p4", "p5", "u4", "u1", "P", "p6", "u0", "u6", "u2", "P", "u5", "P"};
        for (int dieAfter = 0; dieAfter <= script.length * 3; dieAfter++) {
            UnsafeApi.setMemory(base, 4096, (byte) 0);
            InflightRegion live = new InflightRegion(base, SIZE);
            InflightRecovery.Result first = InflightRecovery.recover(live, SIZE, 0, 0, 0);
            live.resume(first.nextCounter(), first.lastBatchHead());
            int popped = 0;
            int usedIdx = 0;
            Set<Integer> guestSeen = new HashSet<>();
            Set<Integer> pendingBatch = new HashSet<>();
            int steps = 0;
            // Each script entry is up to three steps: for "P" the used.idx store, the flag
            // clearing and the used_idx store can each be cut by death (modelled by doing them
            // by hand in the engine's order).
            stepping:
            for (String s : script) {
                char op = s.charAt(0);
                if (op == 'p') {
                    if (steps++ == dieAfter) {
                        break;
                    }
                    live.popped(s.charAt(1) - '0');
                    popped++;
                } else if (op == 'u') {
                    if (steps++ == dieAfter) {
                        break;
                    }
                    live.used(s.charAt(1) - '0');
                    pendingBatch.add(s.charAt(1) - '0');
                } else {
                    if (steps++ == dieAfter) {
                        break;
                    }
                    usedIdx += pendingBatch.size(); // the device's used.idx store: the guest sees the batch
                    guestSeen.addAll(pendingBatch);
                    if (steps++ == dieAfter) {
                        break stepping;
                    }
                    for (int head : pendingBatch) {
                        UnsafeApi.putByte(base + 16 + 16L * head, (byte) 0); // half of published()
                        if (steps++ == dieAfter) {
                            break stepping;
                        }
                    }
                    live.published(usedIdx);
                    pendingBatch.clear();
                }
            }
            Set<Integer> expected = new HashSet<>();
            for (String s : script) {
                if (s.charAt(0) == 'p') {
                    expected.add(s.charAt(1) - '0');
                }
            }
            // what was popped and not seen by the guest, in pop order
            InflightRegion next = new InflightRegion(base, SIZE);
            InflightRecovery.Result r = InflightRecovery.recover(next, SIZE, usedIdx, 7, usedIdx);
            int[] heads = r.heads();
            Set<Integer> got = new HashSet<>();
            for (int head : heads) {
                got.add(head);
            }
            Set<Integer> want = new HashSet<>();
            int seenPops = 0;
            for (String s : script) {
                if (s.charAt(0) == 'p' && seenPops++ < popped && !guestSeen.contains(s.charAt(1) - '0')) {
                    want.add(s.charAt(1) - '0');
                }
            }
            assertEquals(want, got, "died after step " + dieAfter);
            for (int i = 1; i < heads.length; i++) {
                assertTrue(counter(heads[i - 1]) < counter(heads[i]), "pop order after step " + dieAfter);
            }
            assertEquals((usedIdx + heads.length) & 0xffff, r.nextAvail());
            assertEquals(popped, r.nextAvail(), "every popped request is either used or resubmitted");
            assertEquals(usedIdx, usedIdx());
            assertTrue(expected.containsAll(got));
        }
    }

    @Test
    void theCounterContinuesPastTheResubmittedRequests() {
        header(1, SIZE, 0, 4);
        entry(2, 1, 0, 41);
        entry(6, 1, 0, 40);
        entry(3, 0, 0, 99); // stale: not in flight, does not matter
        InflightRecovery.Result r = InflightRecovery.recover(region, SIZE, 4, 6, 4);
        assertArrayEquals(new int[] {6, 2}, r.heads());
        assertEquals(42, r.nextCounter());
        assertEquals(6, r.nextAvail());
        region.resume(r.nextCounter(), r.lastBatchHead());
        region.popped(5);
        assertEquals(42, counter(5));
    }

    @Test
    void usedIndicesWrapAround() {
        header(1, SIZE, 3, 0xfffe);
        entry(3, 1, 4, 7);
        entry(4, 1, 0, 6);
        entry(5, 1, 0, 8);
        InflightRecovery.Result r = InflightRecovery.recover(region, SIZE, 0, 3, 0);
        assertArrayEquals(new int[] {5}, r.heads());
        assertEquals(2, r.lastBatchCleared());
        assertEquals(1, r.nextAvail());
        assertEquals(0, usedIdx());
    }

    // ---------------------------------------------------------------- hostile regions

    private void assertRefused(String because, int ringSize, int usedIdx, int availIdx) {
        byte[] before = snapshot();
        ProtocolError e = assertThrows(ProtocolError.class,
                () -> InflightRecovery.recover(region, ringSize, usedIdx, availIdx, usedIdx));
        assertFalse(e.fatal());
        assertTrue(e.getMessage().contains(because), e.getMessage());
        assertArrayEquals(before, snapshot(), "a refused region is left as it was");
    }

    @Test
    void anUnknownVersionIsRefused() {
        header(2, SIZE, 0, 0);
        assertRefused("version 2", SIZE, 0, 0);
    }

    @Test
    void aDescNumOtherThanTheAnnouncedQueueSizeIsRefused() {
        header(1, SIZE * 2, 0, 0);
        assertRefused("desc_num 16", SIZE, 0, 0);
    }

    @Test
    void aRingLargerThanTheRegionIsRefused() {
        assertRefused("the ring has 16 entries, the region only 8", SIZE * 2, 0, 0);
    }

    @Test
    void aLastBatchLargerThanTheRingIsRefused() {
        header(1, SIZE, 0, 0);
        assertRefused("more than the ring's 8 entries", SIZE, SIZE + 1, SIZE + 1);
    }

    @Test
    void aLastBatchListThatLoopsIsRefused() {
        header(1, SIZE, 2, 0);
        entry(2, 1, 5, 0);
        entry(5, 1, 2, 1);
        assertRefused("loops back to head 2", SIZE, 3, 3);
    }

    @Test
    void aLastBatchListLeavingTheRingIsRefused() {
        header(1, SIZE, 2, 0);
        entry(2, 1, 6, 0);
        assertRefused("head 6, outside the ring of 4", 4, 2, 2);
        header(1, SIZE, 0xffff, 0);
        assertRefused("head 65535", SIZE, 1, 1);
    }

    @Test
    void aFlagOtherThanZeroOrOneIsRefused() {
        header(1, SIZE, 0, 0);
        entry(3, 2, 0, 0);
        assertRefused("desc[3].inflight is 2", SIZE, 0, 1);
    }

    @Test
    void aFlaggedHeadOutsideTheRingIsRefused() {
        header(1, SIZE, 0, 0);
        entry(6, 1, 0, 0);
        assertRefused("head 6 is marked in flight, outside the ring of 4", 4, 0, 1);
    }

    @Test
    void moreInFlightThanTheDriverMadeAvailableIsRefused() {
        header(1, SIZE, 0, 5);
        entry(1, 1, 0, 0);
        entry(2, 1, 0, 1);
        assertRefused("2 requests are marked in flight, but the driver made only 1", SIZE, 5, 6);
    }
}
