package io.vblk.testkit;

import java.lang.invoke.VarHandle;
import java.util.Objects;

import org.agrona.UnsafeApi;

import io.vblk.hostmem.GuestMemory;
import io.vblk.sys.EventFd;
import io.vblk.vring.AvailRingDescriptor;
import io.vblk.vring.EventIndex;
import io.vblk.vring.SplitQueue;
import io.vblk.vring.UsedRingDescriptor;
import io.vblk.vring.VirtqDescriptor;

/**
 * The driver side of a split virtqueue, as a guest driver sees it, in guest memory: lays out and
 * initialises the rings, adds chains (direct, indirect, or direct followed by one indirect table)
 * for given buffers, publishes them with one avail.idx store per batch, kicks only when the device
 * asks (EVENT_IDX aware), and reaps used elements. Tests, the soak, benchmarks and the vhost-user
 * load generator drive real devices with it (the test kit: never in a production jar).
 *
 * <p>It trusts nothing the device writes: descriptor bookkeeping (free list, chain order) lives
 * in private arrays, never in guest memory, and a used element whose id is not an outstanding
 * head is reported ({@link #BAD_USED_ID}), not followed.
 *
 * <p>Single-threaded: one thread adds, publishes and reaps. Allocation-free after
 * {@link Builder#build()}.
 *
 * <p>Rings corrupted on purpose are built with a {@link RingTamperer}, which writes them verbatim
 * and bypasses this driver's bookkeeping; the readers here ({@link #usedIdx()},
 * {@link #usedId(int)}, ...) only look.
 */
public final class SplitQueueDriver {
    /** {@link #add} result: not enough free descriptors. */
    public static final int NO_SPACE = -1;
    /** {@link #reap} result: no used element. */
    public static final int NONE = -1;
    /** {@link #reap} result: the device returned an id that is not an outstanding head. */
    public static final int BAD_USED_ID = -2;
    /** {@link #reap} result: used.idx is more than queue size ahead of what was reaped. */
    public static final int BAD_USED_INDEX = -3;
    /** Alignment of the used ring in {@link Builder#area} layouts (the legacy layout's page). */
    public static final int LAYOUT_ALIGNMENT = 4096;

    private final GuestMemory memory;
    private final int size;
    private final int mask;
    private final boolean eventIdx;
    private final long descGpa;
    private final long availGpa;
    private final long usedGpa;
    private final long desc;
    private final long avail;
    private final long used;
    private final long usedEventAddress;
    private final long availEventAddress;
    private final int indirectEntries;
    private final long indirectGpa;
    private final long indirectHost;
    private final int[] link;
    private final int[] chainLength;
    private int freeHead;
    private int numFree;
    private int availIdx;
    private int publishedAvail;
    private int lastUsed;
    private int usedIdxShadow;
    private int lastLength;
    private int availFlags;
    /** With EVENT_IDX while interrupts are suppressed: the lastUsed at which used_event is parked again; -1 otherwise. */
    private int usedEventReparkAt = NOT_PARKED;
    private boolean exposeEachAdd;
    private long heapNext;
    private final long heapEnd;

    private SplitQueueDriver(Builder b, long indirectGpa, long heapGpa, long heapBytes) {
        memory = b.memory;
        size = b.size;
        mask = size - 1;
        eventIdx = b.eventIdx;
        descGpa = b.descGpa;
        availGpa = b.availGpa;
        usedGpa = b.usedGpa;
        desc = hostOf(memory, descGpa, VirtqDescriptor.tableBytes(size), "descriptor table");
        avail = hostOf(memory, availGpa, AvailRingDescriptor.bytes(size), "available ring");
        used = hostOf(memory, usedGpa, UsedRingDescriptor.bytes(size), "used ring");
        usedEventAddress = avail + AvailRingDescriptor.usedEventOffset(size);
        availEventAddress = used + UsedRingDescriptor.availEventOffset(size);
        indirectEntries = b.indirectEntries;
        this.indirectGpa = indirectGpa;
        indirectHost = indirectEntries == 0 ? 0
                : hostOf(memory, indirectGpa, (long) size * indirectEntries * VirtqDescriptor.LENGTH, "indirect tables");
        heapNext = heapGpa;
        heapEnd = heapGpa + heapBytes;
        if (heapBytes > 0) {
            hostOf(memory, heapGpa, heapBytes, "buffer heap");
        }
        link = new int[size];
        chainLength = new int[size];
        initialise();
    }

    private static long hostOf(GuestMemory memory, long gpa, long bytes, String what) {
        long host = memory.hostAddress(gpa, bytes, true);
        if (host == GuestMemory.NO_ADDRESS) {
            throw new IllegalArgumentException(String.format("%s at gpa 0x%x (%d bytes) is not inside one writable region of %s",
                    what, gpa, bytes, memory));
        }
        return host;
    }

    /** Starts a driver over {@code memory}. */
    public static Builder builder(GuestMemory memory) {
        return new Builder(memory);
    }

    /** Zeroes the rings and frees every descriptor, as a driver does at queue set-up (2.7.10.1). */
    public void initialise() {
        UnsafeApi.setMemory(desc, VirtqDescriptor.tableBytes(size), (byte) 0);
        UnsafeApi.setMemory(avail, AvailRingDescriptor.bytes(size), (byte) 0);
        UnsafeApi.setMemory(used, UsedRingDescriptor.bytes(size), (byte) 0);
        for (int i = 0; i < size; i++) {
            link[i] = i + 1;
            chainLength[i] = 0;
        }
        freeHead = 0;
        numFree = size;
        availIdx = 0;
        publishedAvail = 0;
        lastUsed = 0;
        usedIdxShadow = 0;
        availFlags = 0;
        usedEventReparkAt = NOT_PARKED;
        VarHandle.fullFence();
    }

    // ---------------------------------------------------------------- adding buffers

    /** Adds a chain of direct descriptors; see {@link #add}. */
    public int addDirect(long[] gpas, int[] lengths, boolean[] writable, int count) {
        return add(gpas, lengths, writable, count, count);
    }

    /** Adds a chain held entirely in one indirect table; see {@link #add}. */
    public int addIndirect(long[] gpas, int[] lengths, boolean[] writable, int count) {
        return add(gpas, lengths, writable, count, 0);
    }

    /**
     * Adds a chain of {@code count} buffers {@code (gpas[i], lengths[i], writable[i])}, device-
     * readable ones first: the first {@code directCount} as direct descriptors, the rest in one
     * indirect table that a final direct descriptor points to (2.7.5.3.2). The chain is placed in
     * the available ring but invisible to the device until {@link #publishAvail()}, unless
     * {@link #exposeEachAdd(boolean)} is on.
     *
     * @return the head descriptor index, or {@link #NO_SPACE} when too few descriptors are free
     * @throws IllegalArgumentException for counts the layout cannot hold (a caller bug)
     */
    public int add(long[] gpas, int[] lengths, boolean[] writable, int count, int directCount) {
        int indirectCount = count - directCount;
        if (count < 1 || directCount < 0 || indirectCount < 0 || indirectCount > indirectEntries
                || count > gpas.length || count > lengths.length || count > writable.length) {
            throw new IllegalArgumentException("bad chain: count " + count + ", direct " + directCount
                    + ", indirect table entries " + indirectEntries);
        }
        int needed = directCount + (indirectCount > 0 ? 1 : 0);
        if (needed > numFree) {
            return NO_SPACE;
        }
        int head = freeHead;
        int d = head;
        for (int i = 0; i < directCount; i++) {
            boolean last = i == needed - 1;
            int flags = (writable[i] ? VirtqDescriptor.F_WRITE : 0) | (last ? 0 : VirtqDescriptor.F_NEXT);
            putDescriptor(desc, d, gpas[i], lengths[i], flags, last ? 0 : link[d]);
            if (!last) {
                d = link[d];
            }
        }
        if (indirectCount > 0) {
            long offset = (long) d * indirectEntries * VirtqDescriptor.LENGTH;
            for (int j = 0; j < indirectCount; j++) {
                boolean last = j == indirectCount - 1;
                int i = directCount + j;
                int flags = (writable[i] ? VirtqDescriptor.F_WRITE : 0) | (last ? 0 : VirtqDescriptor.F_NEXT);
                putDescriptor(indirectHost + offset, j, gpas[i], lengths[i], flags, last ? 0 : j + 1);
            }
            putDescriptor(desc, d, indirectGpa + offset, indirectCount * VirtqDescriptor.LENGTH,
                    VirtqDescriptor.F_INDIRECT, 0);
        }
        freeHead = link[d];
        numFree -= needed;
        chainLength[head] = needed;
        UnsafeApi.putShort(avail + AvailRingDescriptor.entryOffset(availIdx & mask), (short) head);
        availIdx = (availIdx + 1) & 0xffff;
        if (exposeEachAdd) {
            // Release: the chain's descriptors and ring entry before the idx that exposes it
            // (2.7.13.3.1), as Linux's virtqueue_add_split does with virtio_wmb before its store.
            VarHandle.releaseFence();
            UnsafeApi.putShort(avail + AvailRingDescriptor.IDX_OFFSET, (short) availIdx);
        }
        return head;
    }

    /**
     * Whether each added chain becomes visible to the device at once (one avail.idx store per
     * add, as a Linux guest's {@code virtqueue_add_split} does) instead of at the next
     * {@link #publishAvail()}. Either way {@link #publishAvail()} decides the kick once for every
     * chain added since its last call (Linux's {@code virtqueue_kick_prepare} over
     * {@code num_added}), so a device that polls the ring can start on the first chains while
     * the driver is still adding the rest, and the kicks are the same. Off by default.
     */
    public void exposeEachAdd(boolean value) {
        exposeEachAdd = value;
    }

    /**
     * Makes every chain added since the last publish visible with ONE avail.idx store (already
     * done per chain under {@link #exposeEachAdd(boolean)}), and says whether the device wants a
     * kick for them (2.7.10): with EVENT_IDX, if avail.idx passed avail_event anywhere in that
     * window; otherwise unless used.flags has NO_NOTIFY.
     *
     * @return true if the caller should kick the device
     */
    public boolean publishAvail() {
        int newIdx = availIdx;
        int oldIdx = publishedAvail;
        if (newIdx == oldIdx) {
            return false;
        }
        // Release: descriptors and ring entries before the idx that exposes them (2.7.13.3.1).
        // Pairs with the device's acquire read of avail.idx.
        VarHandle.releaseFence();
        UnsafeApi.putShort(avail + AvailRingDescriptor.IDX_OFFSET, (short) newIdx);
        publishedAvail = newIdx;
        // Full fence: idx visible before reading avail_event / used.flags (2.7.13.4.1). Pairs
        // with the device's fence between writing avail_event (or clearing NO_NOTIFY) and
        // re-reading avail.idx in enableNotifications.
        VarHandle.fullFence();
        if (eventIdx) {
            int availEvent = UnsafeApi.getShort(availEventAddress) & 0xffff;
            return EventIndex.needEvent(availEvent, newIdx, oldIdx);
        }
        return (UnsafeApi.getShort(used + UsedRingDescriptor.FLAGS_OFFSET) & UsedRingDescriptor.F_NO_NOTIFY) == 0;
    }

    // ---------------------------------------------------------------- reaping

    /**
     * Takes the next used element, frees its chain's descriptors, and returns its id (the head);
     * {@link #lastUsedLength()} is its len.
     *
     * @return the head, {@link #NONE}, {@link #BAD_USED_ID} or {@link #BAD_USED_INDEX}
     */
    public int reap() {
        if (lastUsed == usedEventReparkAt) {
            parkUsedEvent();
        }
        if (lastUsed == usedIdxShadow) {
            // acquire: pairs with the device's release fence before its used.idx store
            int idx = UnsafeApi.getShortVolatile(null, used + UsedRingDescriptor.IDX_OFFSET) & 0xffff;
            if (EventIndex.distance(lastUsed, idx) > size) {
                return BAD_USED_INDEX;
            }
            usedIdxShadow = idx;
            if (idx == lastUsed) {
                return NONE;
            }
        }
        long element = UnsafeApi.getLong(used + UsedRingDescriptor.elementOffset(lastUsed & mask));
        lastUsed = (lastUsed + 1) & 0xffff;
        int id = UsedRingDescriptor.id(element);
        lastLength = UsedRingDescriptor.len(element);
        if (id < 0 || id >= size || chainLength[id] == 0) {
            return BAD_USED_ID;
        }
        free(id);
        return id;
    }

    private void free(int head) {
        int tail = head;
        for (int i = chainLength[head]; i > 1; i--) {
            tail = link[tail];
        }
        link[tail] = freeHead;
        freeHead = head;
        numFree += chainLength[head];
        chainLength[head] = 0;
    }

    /**
     * Takes the next used element, sleeping on {@code call} (the device's interrupt) between
     * tries with interrupts enabled, as a guest driver does.
     *
     * @return the head, {@link #BAD_USED_ID} or {@link #BAD_USED_INDEX}
     * @throws AssertionError if nothing was used within {@code timeoutMs}
     */
    public int awaitUsed(EventFd call, int timeoutMs) {
        long deadline = System.nanoTime() + timeoutMs * 1_000_000L;
        int got;
        while ((got = reap()) == NONE) {
            if (!enableInterrupts()) {
                call.await(10);
                call.read();
            }
            if (System.nanoTime() - deadline > 0) {
                throw new AssertionError("no used element within " + timeoutMs + " ms");
            }
        }
        return got;
    }

    /** len of the element {@link #reap()} returned last. */
    public int lastUsedLength() {
        return lastLength;
    }

    /**
     * Asks the device not to interrupt: NO_INTERRUPT, or with EVENT_IDX used_event parked one
     * behind the next element to reap, the index the device's used.idx is furthest from reaching
     * ({@link #reap()} parks it again every 16,384 elements). Left where {@link #enableInterrupts()}
     * put it, the device's used.idx would pass it again after 65,536 elements: a spurious
     * interrupt every wrap. (Linux writes used_event = 0 here, which only moves that wrap.)
     */
    public void disableInterrupts() {
        if (eventIdx) {
            if (usedEventReparkAt == NOT_PARKED) {
                parkUsedEvent();
            }
            return;
        }
        availFlags |= AvailRingDescriptor.F_NO_INTERRUPT;
        UnsafeApi.putShort(avail + AvailRingDescriptor.FLAGS_OFFSET, (short) availFlags);
    }

    /** Elements reaped between two parks of used_event (see SplitQueue's avail_event twin). */
    private static final int USED_EVENT_REPARK = 16384;
    private static final int NOT_PARKED = -1;

    private void parkUsedEvent() {
        UnsafeApi.putShort(usedEventAddress, (short) (lastUsed - 1));
        usedEventReparkAt = (lastUsed + USED_EVENT_REPARK) & 0xffff;
    }

    /**
     * Asks the device to interrupt again (clears NO_INTERRUPT, or with EVENT_IDX sets used_event
     * to the next element to reap), then re-reads used.idx.
     *
     * @return true if used elements are waiting: reap them before sleeping
     */
    public boolean enableInterrupts() {
        if (eventIdx) {
            usedEventReparkAt = NOT_PARKED;
            UnsafeApi.putShort(usedEventAddress, (short) lastUsed);
        } else {
            availFlags &= ~AvailRingDescriptor.F_NO_INTERRUPT;
            UnsafeApi.putShort(avail + AvailRingDescriptor.FLAGS_OFFSET, (short) availFlags);
        }
        // Full fence: pairs with the device's fence between its used.idx store and its read of
        // used_event / avail.flags (SplitQueue.publishUsed)
        VarHandle.fullFence();
        return (UnsafeApi.getShortVolatile(null, used + UsedRingDescriptor.IDX_OFFSET) & 0xffff) != lastUsed;
    }

    // ---------------------------------------------------------------- buffers

    /**
     * Carves {@code bytes} from the buffer heap, aligned to {@code alignment} (a power of 2), and
     * returns its guest address. For set-up: buffers are never given back.
     *
     * @throws IllegalStateException when the heap is exhausted
     */
    public long allocate(long bytes, int alignment) {
        if (bytes <= 0 || alignment <= 0 || (alignment & (alignment - 1)) != 0) {
            throw new IllegalArgumentException("bad allocation: " + bytes + " bytes aligned " + alignment);
        }
        long start = (heapNext + alignment - 1) & -(long) alignment;
        if (start + bytes > heapEnd || start < heapNext) {
            throw new IllegalStateException("buffer heap exhausted: " + bytes + " bytes asked, "
                    + (heapEnd - heapNext) + " left");
        }
        heapNext = start + bytes;
        return start;
    }

    /** The host address of {@code [gpa, gpa + bytes)}, which must lie in one writable region. */
    public long hostAddress(long gpa, long bytes) {
        return hostOf(memory, gpa, bytes, "buffer");
    }

    // ---------------------------------------------------------------- what the device wrote

    /** used.idx in guest memory (acquire). */
    public int usedIdx() {
        return UnsafeApi.getShortVolatile(null, used + UsedRingDescriptor.IDX_OFFSET) & 0xffff;
    }

    /** used.flags in guest memory. */
    public int usedFlags() {
        return UnsafeApi.getShortVolatile(null, used + UsedRingDescriptor.FLAGS_OFFSET) & 0xffff;
    }

    /** avail_event in guest memory. */
    public int availEvent() {
        return UnsafeApi.getShortVolatile(null, availEventAddress) & 0xffff;
    }

    /** id of used.ring[idx % size] in guest memory. */
    public int usedId(int idx) {
        return UnsafeApi.getInt(used + UsedRingDescriptor.elementOffset(idx & mask) + UsedRingDescriptor.ID_OFFSET);
    }

    /** len of used.ring[idx % size] in guest memory. */
    public int usedLength(int idx) {
        return UnsafeApi.getInt(used + UsedRingDescriptor.elementOffset(idx & mask) + UsedRingDescriptor.LEN_OFFSET);
    }

    // ---------------------------------------------------------------- state

    /** The driver's next avail.idx (chains added, published or not). */
    public int availIdx() {
        return availIdx;
    }

    /** The next used index to reap. */
    public int lastUsed() {
        return lastUsed;
    }

    /** Free descriptors. */
    public int freeDescriptors() {
        return numFree;
    }

    /** Chains added and not yet reaped. */
    public int outstanding() {
        int n = 0;
        for (int len : chainLength) {
            n += len == 0 ? 0 : 1;
        }
        return n;
    }

    /** The queue size. */
    public int size() {
        return size;
    }

    /** Whether VIRTIO_F_EVENT_IDX is in use. */
    public boolean eventIdx() {
        return eventIdx;
    }

    /** Entries of each indirect table, 0 if indirect chains are not supported. */
    public int indirectEntries() {
        return indirectEntries;
    }

    /** Guest address of the descriptor table. */
    public long descGpa() {
        return descGpa;
    }

    /** Guest address of the available ring. */
    public long availGpa() {
        return availGpa;
    }

    /** Guest address of the used ring. */
    public long usedGpa() {
        return usedGpa;
    }

    /** The guest memory the rings live in. */
    public GuestMemory memory() {
        return memory;
    }

    // ---------------------------------------------------------------- hooks for RingTamperer

    /** Writes descriptor {@code index} of the table at host address {@code table} verbatim. */
    static void putDescriptor(long table, int index, long addr, int len, int flags, int next) {
        long d = table + VirtqDescriptor.offset(index);
        UnsafeApi.putLong(d + VirtqDescriptor.ADDR_OFFSET, addr);
        UnsafeApi.putInt(d + VirtqDescriptor.LEN_OFFSET, len);
        UnsafeApi.putInt(d + VirtqDescriptor.FLAGS_OFFSET, (flags & 0xffff) | (next << 16));
    }

    long descHost() {
        return desc;
    }

    long availHost() {
        return avail;
    }

    long usedEventHost() {
        return usedEventAddress;
    }

    long hostOf(long gpa, long bytes, String what) {
        return hostOf(memory, gpa, bytes, what);
    }

    /** Takes {@code idx} as the next avail index (chains offered without bookkeeping). */
    void takeAvailIdx(int idx) {
        availIdx = idx & 0xffff;
    }

    /** Takes {@code idx} as published (avail.idx stored verbatim). */
    void takePublished(int idx) {
        availIdx = idx & 0xffff;
        publishedAvail = availIdx;
    }

    void takeAvailFlags(int flags) {
        availFlags = flags & 0xffff;
    }

    @Override
    public String toString() {
        return String.format("SplitQueueDriver[size %d, desc 0x%x, avail 0x%x, used 0x%x, avail_idx %d, last_used %d, free %d%s]",
                size, descGpa, availGpa, usedGpa, availIdx, lastUsed, numFree, eventIdx ? ", event_idx" : "");
    }

    /**
     * Where the rings, indirect tables and buffer heap go. Either give the rings' addresses with
     * {@link #rings}, or let {@link #area} lay them out (descriptor table, available ring, used
     * ring on the next 4 KiB boundary as the legacy layout has it); the indirect tables and the
     * heap are carved from the area after the rings.
     */
    public static final class Builder {
        private final GuestMemory memory;
        private int size = 256;
        private boolean eventIdx;
        private int indirectEntries;
        private boolean ringsGiven;
        private long descGpa;
        private long availGpa;
        private long usedGpa;
        private long areaGpa;
        private long areaBytes;

        private Builder(GuestMemory memory) {
            this.memory = Objects.requireNonNull(memory, "memory");
        }

        /** Queue size, a power of 2 up to 32768 (default 256). */
        public Builder size(int size) {
            this.size = size;
            return this;
        }

        /** Whether VIRTIO_F_EVENT_IDX was negotiated. */
        public Builder eventIdx(boolean eventIdx) {
            this.eventIdx = eventIdx;
            return this;
        }

        /** Entries per indirect table (one table per descriptor); 0 = no indirect chains. */
        public Builder indirectEntries(int entries) {
            this.indirectEntries = entries;
            return this;
        }

        /** Places the rings at these guest addresses. */
        public Builder rings(long descGpa, long availGpa, long usedGpa) {
            this.ringsGiven = true;
            this.descGpa = descGpa;
            this.availGpa = availGpa;
            this.usedGpa = usedGpa;
            return this;
        }

        /** Guest memory for the rings (unless {@link #rings} placed them), indirect tables and heap. */
        public Builder area(long gpa, long bytes) {
            this.areaGpa = gpa;
            this.areaBytes = bytes;
            return this;
        }

        /** The bytes the rings of a queue of {@code size} take in an {@link #area} layout. */
        public static long ringBytes(int size) {
            long usedOffset = align(VirtqDescriptor.tableBytes(size) + AvailRingDescriptor.bytes(size), LAYOUT_ALIGNMENT);
            return usedOffset + UsedRingDescriptor.bytes(size);
        }

        /**
         * Lays out, checks and initialises the queue.
         *
         * @throws IllegalArgumentException naming what does not fit or is misaligned
         */
        public SplitQueueDriver build() {
            if (size < 1 || size > SplitQueue.MAX_QUEUE_SIZE || (size & (size - 1)) != 0 || indirectEntries < 0
                    || indirectEntries > SplitQueue.MAX_QUEUE_SIZE) {
                throw new IllegalArgumentException("bad queue size " + size + " or indirect entries " + indirectEntries);
            }
            long cursor = align(areaGpa, VirtqDescriptor.ALIGNMENT);
            if (!ringsGiven) {
                cursor = align(areaGpa, LAYOUT_ALIGNMENT);
                descGpa = cursor;
                availGpa = descGpa + VirtqDescriptor.tableBytes(size);
                usedGpa = align(availGpa + AvailRingDescriptor.bytes(size), LAYOUT_ALIGNMENT);
                cursor = usedGpa + UsedRingDescriptor.bytes(size);
            }
            if ((descGpa & 15) != 0 || (availGpa & 1) != 0 || (usedGpa & 3) != 0) {
                throw new IllegalArgumentException(String.format(
                        "misaligned rings (2.7.1): desc 0x%x (16), avail 0x%x (2), used 0x%x (4)", descGpa, availGpa, usedGpa));
            }
            long indirectGpa = align(cursor, 64);
            long tablesBytes = (long) size * indirectEntries * VirtqDescriptor.LENGTH;
            long heapGpa = align(indirectGpa + tablesBytes, 64);
            long heapBytes = areaGpa + areaBytes - heapGpa;
            if (heapBytes < 0 || (!ringsGiven && areaBytes == 0)) {
                throw new IllegalArgumentException(String.format("area at 0x%x (%d bytes) cannot hold the rings "
                        + "and %d bytes of indirect tables for size %d", areaGpa, areaBytes, tablesBytes, size));
            }
            return new SplitQueueDriver(this, indirectGpa, heapGpa, heapBytes);
        }

        private static long align(long value, long alignment) {
            return (value + alignment - 1) & -alignment;
        }
    }
}
