package io.vblk.hostmem;

/**
 * Receives the host segments of a translated guest range, in guest-address order.
 *
 * <p>Implementations sit on the hot path: they must not allocate or block.
 */
@FunctionalInterface
public interface SegmentSink {
    /**
     * Takes one host segment.
     *
     * @param hostAddress the first byte in this process's address space
     * @param length      the segment length in bytes, 1 to {@link GuestMemory#MAX_SEGMENT_BYTES}
     * @return {@code true} to go on, {@code false} to stop the translation (too many segments)
     */
    boolean segment(long hostAddress, int length);
}
