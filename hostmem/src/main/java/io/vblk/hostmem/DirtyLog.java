package io.vblk.hostmem;

import java.util.concurrent.atomic.AtomicLong;

import org.agrona.concurrent.AtomicBuffer;
import org.agrona.concurrent.UnsafeBuffer;

/**
 * A dirty log: one bit per 4 KiB guest-physical page, set when the device writes into that page
 * while a migration copies guest memory (vhost-user.rst, "Migration"; the same layout a VMM keeps
 * for KVM's dirty log).
 *
 * <pre>
 *  page = gpa &gt;&gt; 12
 *  byte page / 8, bit page % 8          (vhost-user's definition)
 *  = le64 word page / 64, bit page % 64 (how this class stores it: one CAS marks up to 64 pages)
 * </pre>
 *
 * <p>Bits are only ever set, atomically (a compare-and-set on the 64-bit word, skipped when the
 * bits are already set), because the frontend or VMM reads and clears the same memory
 * concurrently. Marks beyond the bitmap are dropped and counted ({@link #outOfRange()}): the
 * frontend sizes the log and may size it wrong; a mark never writes outside it.
 *
 * <p>The device marks a page after its bytes were written; whoever syncs the log clears a bit
 * before copying the page, so a write racing with the copy leaves the bit set for the next pass.
 * Once the device's queues are stopped (which drains them) every write has been marked.
 */
public final class DirtyLog {
    /** log2 of the page size the log tracks (vhost-user's VHOST_LOG_PAGE, 4 KiB). */
    public static final int PAGE_SHIFT = 12;
    /** The page size the log tracks. */
    public static final long PAGE_SIZE = 1L << PAGE_SHIFT;

    private final AtomicBuffer bitmap;
    private final long words;
    private final AtomicLong outOfRange = new AtomicLong();

    /**
     * A log over {@code bitmap}, which the caller owns and keeps alive (and mapped) for as long as
     * the device may use the log.
     *
     * @throws IllegalArgumentException when the bitmap is empty, not a whole number of 64-bit
     *         words, or not 8-byte aligned
     */
    public DirtyLog(AtomicBuffer bitmap) {
        if (bitmap == null || bitmap.capacity() == 0 || (bitmap.capacity() & (Long.BYTES - 1)) != 0) {
            throw new IllegalArgumentException("dirty log bitmap must be a non-empty multiple of 8 bytes: "
                    + (bitmap == null ? "null" : bitmap.capacity() + " bytes"));
        }
        try {
            bitmap.verifyAlignment();
        } catch (IllegalStateException e) {
            throw new IllegalArgumentException("dirty log bitmap is not 8-byte aligned: " + e.getMessage(), e);
        }
        // verifyAlignment lets a view into a byte[] at an odd offset through; a 64-bit CAS there
        // would not be atomic (or would fault).
        if ((bitmap.addressOffset() & (Long.BYTES - 1)) != 0) {
            throw new IllegalArgumentException("dirty log bitmap is not 8-byte aligned: address offset "
                    + bitmap.addressOffset());
        }
        this.bitmap = bitmap;
        this.words = bitmap.capacity() >>> 3;
    }

    /** A log over {@code lengthBytes} of native memory at {@code address} (a mapping the caller owns). */
    public static DirtyLog atAddress(long address, long lengthBytes) {
        if (lengthBytes <= 0 || lengthBytes > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("dirty log of " + lengthBytes + " bytes: 1 to 2^31-1 expected");
        }
        return new DirtyLog(new UnsafeBuffer(address, (int) lengthBytes));
    }

    /** The bitmap bytes that cover guest-physical addresses {@code [0, guestBytes)}, in whole 64-bit words. */
    public static long bitmapBytes(long guestBytes) {
        long pages = (guestBytes + PAGE_SIZE - 1) >>> PAGE_SHIFT;
        return ((pages + 63) >>> 6) << 3;
    }

    /** Pages the bitmap covers (from guest-physical address 0). */
    public long pages() {
        return words << 6;
    }

    /** The bitmap itself. */
    public AtomicBuffer bitmap() {
        return bitmap;
    }

    /**
     * Marks every page {@code [gpa, gpa + length)} touches. Nothing when {@code length <= 0}; a
     * range that runs past the bitmap marks what it covers and counts one {@link #outOfRange()}.
     */
    public void mark(long gpa, long length) {
        if (length <= 0) {
            return;
        }
        long end = gpa + (length - 1);
        if (Long.compareUnsigned(end, gpa) < 0) {
            end = -1L; // wrapped past 2^64: clamp, the tail is out of range anyway
        }
        long firstPage = gpa >>> PAGE_SHIFT;
        long lastPage = end >>> PAGE_SHIFT;
        long lastWord = lastPage >>> 6;
        for (long word = firstPage >>> 6; word <= lastWord; word++) {
            if (word >= words) {
                outOfRange.incrementAndGet();
                return;
            }
            int lo = word == firstPage >>> 6 ? (int) (firstPage & 63) : 0;
            int hi = word == lastWord ? (int) (lastPage & 63) : 63;
            long mask = hi - lo == 63 ? -1L : ((1L << (hi - lo + 1)) - 1) << lo;
            or((int) (word << 3), mask);
        }
    }

    /**
     * Marks the pages behind {@code length} bytes the device wrote at host address
     * {@code hostAddress} of {@code memory} (a buffer from one translated segment, which never
     * crosses a region). Counts one {@link #outOfRange()} when the address is in no region.
     */
    public void markHost(GuestMemory memory, long hostAddress, long length) {
        long gpa = memory == null ? -1 : memory.hostToGuest(hostAddress);
        if (gpa == -1) {
            outOfRange.incrementAndGet();
            return;
        }
        mark(gpa, length);
    }

    private void or(int index, long mask) {
        long old = bitmap.getLongVolatile(index);
        while ((old & mask) != mask) {
            if (bitmap.compareAndSetLong(index, old, old | mask)) {
                return;
            }
            old = bitmap.getLongVolatile(index);
        }
    }

    /** Whether the page holding {@code gpa} is marked (false beyond the bitmap). */
    public boolean isDirty(long gpa) {
        long page = gpa >>> PAGE_SHIFT;
        long word = page >>> 6;
        return word < words && (bitmap.getLongVolatile((int) (word << 3)) & (1L << (page & 63))) != 0;
    }

    /** Marks that fell (partly) beyond the bitmap since construction. */
    public long outOfRange() {
        return outOfRange.get();
    }

    @Override
    public String toString() {
        return "DirtyLog[" + pages() + " pages, " + bitmap.capacity() + " bytes]";
    }
}
