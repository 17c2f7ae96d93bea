package io.vblk.perf.load;

import org.HdrHistogram.Histogram;
import org.agrona.UnsafeApi;

import io.vblk.engine.BlkRequestDescriptor;
import io.vblk.hostmem.GuestMemory;
import io.vblk.testkit.SplitQueueDriver;

/**
 * One virtqueue as the benchmark's guest drives it: a {@link SplitQueueDriver} in guest memory
 * and {@code depth} preallocated request slots (a 16-byte header, a data buffer, a status byte),
 * each re-issued at a fresh offset as soon as it completes. Allocation-free after construction;
 * used by one thread.
 *
 * <pre>
 *  slot s:  header (16 B, device-readable) -> data (block size; writable for IN) -> status (1 B, writable)
 * </pre>
 */
public final class GuestQueue {
    /** Latencies above this are recorded as this (one minute, in ns). */
    public static final long MAX_LATENCY_NS = 60_000_000_000L;
    private static final byte STATUS_UNSET = (byte) 0xff;

    private final int index;
    private final SplitQueueDriver driver;
    private final boolean indirect;
    private final int depth;
    private final int blockSize;
    private final int readThreshold;
    private final boolean random;
    private final long blocks;
    private final long[] headerGpa;
    private final long[] headerHost;
    private final long[] dataGpa;
    private final long[] statusGpa;
    private final long[] statusHost;
    private final long[] issuedAt;
    private final boolean[] isRead;
    private final int[] slotOfHead;
    private final long[] gpas = new long[Workload.SEGMENTS];
    private final int[] lengths = new int[Workload.SEGMENTS];
    private final boolean[] writable = new boolean[Workload.SEGMENTS];
    private long seed;
    private long nextSequential;
    private boolean reissue = true;
    private boolean openLoop;
    private final int[] freeSlots;
    private int freeCount;
    private int inFlight;
    private long errors;
    private long readsCompleted;
    private long writesCompleted;

    /**
     * Lays the queue out in {@code memory} from {@code areaGpa} ({@code areaBytes} long, see
     * {@link Workload#guestBytesPerQueue()}) for {@code w}, addressing the first
     * {@code deviceBytes} of the device (already clipped to {@link Workload#rangeBytes()}).
     */
    public GuestQueue(int index, GuestMemory memory, long areaGpa, long areaBytes, Workload w, long deviceBytes) {
        this.index = index;
        this.indirect = w.indirect();
        this.depth = w.depth();
        this.blockSize = w.blockSize();
        this.readThreshold = w.effectiveReadPercent();
        this.random = w.rw().random();
        this.blocks = deviceBytes / blockSize;
        if (blocks < 1) {
            throw new IllegalArgumentException("the device (" + deviceBytes + " bytes) is smaller than one block of " + blockSize);
        }
        this.driver = SplitQueueDriver.builder(memory).size(w.queueSize()).eventIdx(w.eventIdx())
                .indirectEntries(indirect ? Workload.SEGMENTS : 0).area(areaGpa, areaBytes).build();
        headerGpa = new long[depth];
        headerHost = new long[depth];
        dataGpa = new long[depth];
        statusGpa = new long[depth];
        statusHost = new long[depth];
        issuedAt = new long[depth];
        isRead = new boolean[depth];
        slotOfHead = new int[driver.size()];
        freeSlots = new int[depth];
        seed = 0x9E3779B97F4A7C15L * (index + 1);
        nextSequential = blocks / w.queues() * index;
        for (int s = 0; s < depth; s++) {
            headerGpa[s] = driver.allocate(BlkRequestDescriptor.HEADER_LENGTH, 16);
            headerHost[s] = driver.hostAddress(headerGpa[s], BlkRequestDescriptor.HEADER_LENGTH);
            statusGpa[s] = driver.allocate(1, 1);
            statusHost[s] = driver.hostAddress(statusGpa[s], 1);
            dataGpa[s] = driver.allocate(blockSize, 4096);
            long data = driver.hostAddress(dataGpa[s], blockSize);
            for (int i = 0; i < blockSize; i += Long.BYTES) {
                UnsafeApi.putLong(data + i, nextRandom());
            }
        }
        lengths[0] = BlkRequestDescriptor.HEADER_LENGTH;
        lengths[1] = blockSize;
        lengths[2] = 1;
        writable[0] = false;
        writable[2] = true;
    }

    /** The queue's index on the device. */
    public int index() {
        return index;
    }

    /** The ring the device is told about. */
    public SplitQueueDriver driver() {
        return driver;
    }

    /**
     * Open loop: completed slots wait in a free list for {@link #issueDue} instead of being
     * re-issued at once. Set before {@link #fill}.
     */
    public void openLoop(boolean value) {
        openLoop = value;
    }

    /** Closed loop: issues every slot (not yet published). Open loop: frees every slot. */
    public void fill(long nowNs) {
        for (int s = 0; s < depth; s++) {
            if (openLoop) {
                freeSlots[freeCount++] = s;
            } else {
                issue(s, nowNs);
            }
        }
    }

    /**
     * Open loop: issues a request that was due at {@code dueNs} (its latency counts from then)
     * in a free slot. Not yet published.
     *
     * @return false when every slot is in flight
     */
    public boolean issueDue(long dueNs) {
        if (freeCount == 0) {
            return false;
        }
        issue(freeSlots[--freeCount], dueNs);
        return true;
    }

    /**
     * Reaps every used element, records each latency (completion seen at {@code nowNs}) into
     * {@code latency} when not null, and re-issues the slots (closed loop, unless draining) or
     * frees them (open loop). Does not publish.
     *
     * @return the number reaped
     * @throws IllegalStateException when the device corrupted the used ring
     */
    public int reap(long nowNs, Histogram latency) {
        int n = 0;
        int head;
        while ((head = driver.reap()) >= 0) {
            int s = slotOfHead[head];
            if (UnsafeApi.getByte(statusHost[s]) != BlkRequestDescriptor.S_OK) {
                errors++;
            }
            if (isRead[s]) {
                readsCompleted++;
            } else {
                writesCompleted++;
            }
            if (latency != null) {
                latency.recordValue(Math.min(Math.max(0, nowNs - issuedAt[s]), MAX_LATENCY_NS));
            }
            inFlight--;
            if (openLoop) {
                freeSlots[freeCount++] = s;
            } else if (reissue) {
                issue(s, nowNs);
            }
            n++;
        }
        if (head != SplitQueueDriver.NONE) {
            throw new IllegalStateException("queue " + index + ": the device corrupted the used ring (" + head + "): " + driver);
        }
        return n;
    }

    /** Publishes what was issued since the last publish; true if the device asked for a kick. */
    public boolean publish() {
        return driver.publishAvail();
    }

    /** Stops re-issuing completed slots (to drain before stopping the device). */
    public void stopReissuing() {
        reissue = false;
    }

    /** Open loop: slots free for {@link #issueDue}. */
    public int freeSlots() {
        return freeCount;
    }

    /** Requests issued and not yet reaped. */
    public int inFlight() {
        return inFlight;
    }

    /** Requests that completed with a status other than OK. */
    public long errors() {
        return errors;
    }

    /** Reads completed. */
    public long readsCompleted() {
        return readsCompleted;
    }

    /** Writes completed. */
    public long writesCompleted() {
        return writesCompleted;
    }

    private void issue(int s, long issuedAtNs) {
        boolean read = readThreshold == 100 || (readThreshold > 0 && (int) ((nextRandom() >>> 33) % 100) < readThreshold);
        long block;
        if (random) {
            block = uniform(nextRandom(), blocks);
        } else {
            block = nextSequential;
            nextSequential = nextSequential + 1 == blocks ? 0 : nextSequential + 1;
        }
        long header = headerHost[s];
        UnsafeApi.putInt(header + BlkRequestDescriptor.TYPE_OFFSET, read ? BlkRequestDescriptor.T_IN : BlkRequestDescriptor.T_OUT);
        UnsafeApi.putInt(header + BlkRequestDescriptor.RESERVED_OFFSET, 0);
        UnsafeApi.putLong(header + BlkRequestDescriptor.SECTOR_OFFSET, block * (blockSize >>> BlkRequestDescriptor.SECTOR_SHIFT));
        UnsafeApi.putByte(statusHost[s], STATUS_UNSET);
        gpas[0] = headerGpa[s];
        gpas[1] = dataGpa[s];
        gpas[2] = statusGpa[s];
        writable[1] = read;
        int head = indirect ? driver.addIndirect(gpas, lengths, writable, Workload.SEGMENTS)
                : driver.addDirect(gpas, lengths, writable, Workload.SEGMENTS);
        if (head < 0) {
            throw new IllegalStateException("queue " + index + " full: depth " + depth + " in " + driver);
        }
        slotOfHead[head] = s;
        issuedAt[s] = issuedAtNs;
        isRead[s] = read;
        inFlight++;
    }

    /** A uniform value in [0, bound): a multiply-shift when bound fits 32 bits, else a remainder. */
    private static long uniform(long random, long bound) {
        if (bound <= 0xffff_ffffL) {
            return ((random >>> 32) * bound) >>> 32;
        }
        return Long.remainderUnsigned(random, bound);
    }

    private long nextRandom() {
        long x = seed;
        x ^= x << 13;
        x ^= x >>> 7;
        x ^= x << 17;
        seed = x;
        return x;
    }
}
