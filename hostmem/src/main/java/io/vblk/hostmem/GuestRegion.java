package io.vblk.hostmem;

/**
 * One contiguous range of guest-physical memory and where it lives in this process: a mapping
 * of {@link #fd()} at {@link #fdOffset()}, or memory an embedding VMM mapped itself.
 *
 * <p>Immutable. Guest addresses are unsigned 64-bit values held in a {@code long}; the region
 * covers {@code [guestAddress, guestAddress + size)} and never wraps past 2<sup>64</sup>.
 */
public final class GuestRegion {
    private final long guestAddress;
    private final long size;
    private final long hostAddress;
    private final boolean readOnly;
    private final long userAddress;
    private final int fd;
    private final long fdOffset;

    GuestRegion(long guestAddress, long size, long hostAddress, boolean readOnly, long userAddress, int fd,
            long fdOffset) {
        this.guestAddress = guestAddress;
        this.size = size;
        this.hostAddress = hostAddress;
        this.readOnly = readOnly;
        this.userAddress = userAddress;
        this.fd = fd;
        this.fdOffset = fdOffset;
    }

    /** The first guest-physical address (unsigned). */
    public long guestAddress() {
        return guestAddress;
    }

    /** The size in bytes (positive). */
    public long size() {
        return size;
    }

    /** The last guest-physical address inside the region (unsigned, inclusive). */
    public long lastGuestAddress() {
        return guestAddress + size - 1;
    }

    /** Where {@link #guestAddress()} is mapped in this process. */
    public long hostAddress() {
        return hostAddress;
    }

    /** Whether the device may only read this region. */
    public boolean readOnly() {
        return readOnly;
    }

    /**
     * The frontend's virtual address of {@link #guestAddress()} (vhost-user ring addresses are
     * given in it), or 0 when there is no frontend.
     */
    public long userAddress() {
        return userAddress;
    }

    /** The descriptor the region was mapped from, or -1 for memory mapped by someone else. */
    public int fd() {
        return fd;
    }

    /** The offset of {@link #guestAddress()} in {@link #fd()}. */
    public long fdOffset() {
        return fdOffset;
    }

    /** Whether {@code gpa} (unsigned) lies in this region. */
    public boolean contains(long gpa) {
        return Long.compareUnsigned(gpa, guestAddress) >= 0 && Long.compareUnsigned(gpa, lastGuestAddress()) <= 0;
    }

    @Override
    public String toString() {
        return String.format("GuestRegion[gpa 0x%x, %d bytes, host 0x%x%s, user 0x%x, fd %d @0x%x]", guestAddress, size,
                hostAddress, readOnly ? ", ro" : "", userAddress, fd, fdOffset);
    }
}
