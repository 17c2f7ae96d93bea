package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.HashSet;
import java.util.Set;

import org.agrona.UnsafeApi;

import io.vblk.sys.Mapping;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import net.jqwik.api.constraints.Size;

/** {@link InflightRecovery} on regions of random bytes: the frontend may have written anything. */
class InflightRecoveryPropertyTest {
    static final int SIZE = 8;
    static final int REGION_BYTES = 16 + 16 * SIZE;

    /**
     * Whatever a frontend writes into the region and whatever the ring indices say, recovery
     * ends (no loop), throws nothing but a refusal, and what it accepts is consistent.
     */
    @Property(tries = 1000)
    void anyRegionIsEitherRecoveredConsistentlyOrRefused(@ForAll @Size(REGION_BYTES) byte[] bytes,
            @ForAll @IntRange(min = 1, max = SIZE) int ringSize, @ForAll @IntRange(max = 0xffff) int usedIdx,
            @ForAll @IntRange(max = 0xffff) int availIdx, @ForAll boolean plausibleHeader) {
        try (Mapping m = Mapping.anonymous(4096, false)) {
            long a = m.address();
            UnsafeApi.copyMemory(bytes, UnsafeApi.arrayBaseOffset(byte[].class), null, a, REGION_BYTES);
            if (plausibleHeader) {
                // Most random headers fail the first checks; these reach the list walk and the scan.
                UnsafeApi.putShort(a + 8, (short) 1);
                UnsafeApi.putShort(a + 10, (short) SIZE);
                for (int h = 0; h < SIZE; h++) {
                    UnsafeApi.putByte(a + 16 + 16L * h, (byte) (UnsafeApi.getByte(a + 16 + 16L * h) & 1));
                }
            }
            InflightRegion r = new InflightRegion(a, SIZE);
            InflightRecovery.Result result;
            try {
                result = InflightRecovery.recover(r, ringSize, usedIdx, availIdx, usedIdx);
            } catch (ProtocolError e) {
                return;
            }
            Set<Integer> distinct = new HashSet<>();
            for (int head : result.heads()) {
                assertTrue(head >= 0 && head < ringSize, "head " + head);
                assertTrue(distinct.add(head), "head " + head + " twice");
            }
            assertTrue(result.heads().length <= ((availIdx - usedIdx) & 0xffff));
            if (!result.initialised()) {
                assertEquals((usedIdx + result.heads().length) & 0xffff, result.nextAvail());
                assertEquals(usedIdx, UnsafeApi.getShort(a + 14) & 0xffff);
            }
        }
    }
}
