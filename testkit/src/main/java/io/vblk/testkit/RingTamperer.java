package io.vblk.testkit;

import java.lang.invoke.VarHandle;
import java.util.Objects;

import org.agrona.UnsafeApi;

import io.vblk.vring.AvailRingDescriptor;
import io.vblk.vring.VirtqDescriptor;

/**
 * Test support that corrupts a queue on purpose: writes a {@link SplitQueueDriver}'s rings
 * verbatim, bypassing the driver's bookkeeping, so tests can offer a device the rings a hostile
 * or buggy guest would (loops, wild indexes, heads never added, avail.idx jumps). Do not mix it
 * with {@link SplitQueueDriver#add} on the same descriptors. Never used by a working guest.
 */
public final class RingTamperer {
    private final SplitQueueDriver driver;

    private RingTamperer(SplitQueueDriver driver) {
        this.driver = Objects.requireNonNull(driver, "driver");
    }

    /** A tamperer of {@code driver}'s rings. */
    public static RingTamperer of(SplitQueueDriver driver) {
        return new RingTamperer(driver);
    }

    /** Writes descriptor {@code index} of the table verbatim. */
    public void writeDescriptor(int index, long addr, int len, int flags, int next) {
        Objects.checkIndex(index, driver.size());
        SplitQueueDriver.putDescriptor(driver.descHost(), index, addr, len, flags, next);
    }

    /** Writes entry {@code entry} of a table at {@code tableGpa} (an indirect table) verbatim. */
    public void writeTableDescriptor(long tableGpa, int entry, long addr, int len, int flags, int next) {
        long host = driver.hostOf(tableGpa + (long) entry * VirtqDescriptor.LENGTH, VirtqDescriptor.LENGTH, "descriptor");
        SplitQueueDriver.putDescriptor(host, 0, addr, len, flags, next);
    }

    /** Writes avail.ring[idx % size] verbatim. */
    public void writeAvailRing(int idx, int head) {
        UnsafeApi.putShort(driver.availHost() + AvailRingDescriptor.entryOffset(idx & (driver.size() - 1)), (short) head);
    }

    /** Offers {@code head} at the next ring slot without bookkeeping (publish with {@link SplitQueueDriver#publishAvail()}). */
    public void offerRaw(int head) {
        int idx = driver.availIdx();
        writeAvailRing(idx, head);
        driver.takeAvailIdx(idx + 1);
    }

    /** Stores avail.idx verbatim (release), and makes the driver take it as its own. */
    public void writeAvailIdx(int idx) {
        VarHandle.releaseFence();
        UnsafeApi.putShort(driver.availHost() + AvailRingDescriptor.IDX_OFFSET, (short) idx);
        driver.takePublished(idx);
    }

    /** Stores avail.flags verbatim. */
    public void writeAvailFlags(int flags) {
        driver.takeAvailFlags(flags);
        UnsafeApi.putShort(driver.availHost() + AvailRingDescriptor.FLAGS_OFFSET, (short) flags);
    }

    /** Stores used_event verbatim. */
    public void writeUsedEvent(int idx) {
        UnsafeApi.putShort(driver.usedEventHost(), (short) idx);
    }
}
