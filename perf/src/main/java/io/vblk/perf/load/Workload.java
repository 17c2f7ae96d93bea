package io.vblk.perf.load;

import java.util.Objects;

/**
 * What the benchmark's guest does: the access pattern, request size, requests in flight per
 * queue, how many queues, which part of the device it addresses, how long it runs, and how it
 * waits for completions.
 *
 * @param rw            the access pattern
 * @param readPercent   percentage of reads for {@link RwMode#RANDRW} (ignored otherwise)
 * @param blockSize     bytes per request, a multiple of 512
 * @param depth         requests kept in flight on each queue (closed loop)
 * @param queues        virtqueues driven, all by one guest thread
 * @param rangeBytes    bytes of the device addressed from offset 0; 0 for all of it
 * @param warmupNs      unmeasured time before the measured window
 * @param runtimeNs     the measured window
 * @param guestPolls    whether the guest spins on the used ring (true) or sleeps until the
 *                      device interrupts it (false, the way a Linux guest's driver works)
 * @param eventIdx      whether VIRTIO_F_RING_EVENT_IDX is negotiated
 * @param indirect      whether each request is one indirect descriptor (as Linux guests send
 *                      them) rather than a chain of three direct ones
 * @param rateIops      0 for a closed loop; else an open loop issuing this many requests per
 *                      second in all, with {@code depth} slots per queue
 */
public record Workload(RwMode rw, int readPercent, int blockSize, int depth, int queues, long rangeBytes,
                       long warmupNs, long runtimeNs, boolean guestPolls, boolean eventIdx, boolean indirect,
                       long rateIops) {
    /** Descriptors per request as this guest lays them out: header, data, status. */
    public static final int SEGMENTS = 3;

    /** Checks the values (the options parser reports them to the user first). */
    public Workload {
        Objects.requireNonNull(rw, "rw");
        if (readPercent < 0 || readPercent > 100 || blockSize < 512 || blockSize % 512 != 0 || depth < 1
                || queues < 1 || rangeBytes < 0 || warmupNs < 0 || runtimeNs <= 0 || rateIops < 0) {
            throw new IllegalArgumentException("bad workload: " + rw + " read% " + readPercent + " bs " + blockSize
                    + " depth " + depth + " queues " + queues + " range " + rangeBytes + " runtime " + runtimeNs);
        }
    }

    /** A closed-loop workload: 4 KiB random reads on one queue, the guest sleeping, EVENT_IDX on. */
    public static Workload randomReads(int depth, long warmupNs, long runtimeNs) {
        return new Workload(RwMode.RANDREAD, 100, 4096, depth, 1, 0, warmupNs, runtimeNs, false, true, false, 0);
    }

    /** The percentage of requests that read. */
    public int effectiveReadPercent() {
        return rw == RwMode.RANDRW ? readPercent : rw.reads() ? 100 : 0;
    }

    /** The same workload at another depth. */
    public Workload withDepth(int value) {
        return new Workload(rw, readPercent, blockSize, value, queues, rangeBytes, warmupNs, runtimeNs, guestPolls, eventIdx,
                indirect, rateIops);
    }

    /** The same workload with the guest polling or sleeping. */
    public Workload withGuestPolls(boolean value) {
        return new Workload(rw, readPercent, blockSize, depth, queues, rangeBytes, warmupNs, runtimeNs, value, eventIdx,
                indirect, rateIops);
    }

    /**
     * The queue size this guest asks for: room for {@code depth} chains (three descriptors each,
     * or one when indirect), a power of 2, at least 256 (what Linux and QEMU use).
     */
    public int queueSize() {
        int descriptors = indirect ? depth : depth * SEGMENTS;
        return Math.max(256, Integer.highestOneBit(Math.max(1, descriptors - 1)) << 1);
    }

    /** Guest memory one queue needs: rings, indirect tables, and each slot's buffers. */
    public long guestBytesPerQueue() {
        long rings = 64L * 1024 + 16L * queueSize() * 2 + (indirect ? 64L * queueSize() : 0);
        long slots = (long) depth * (align(blockSize, 4096) + 64 + 64);
        return align(rings + slots + 64 * 1024, 2L << 20);
    }

    private static long align(long value, long alignment) {
        return (value + alignment - 1) / alignment * alignment;
    }
}
