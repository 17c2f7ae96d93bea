package io.vblk.vring;

import java.lang.invoke.VarHandle;
import java.nio.ByteOrder;
import java.util.Objects;

import org.agrona.UnsafeApi;

import io.vblk.hostmem.DirtyLog;
import io.vblk.hostmem.GuestMemory;

/**
 * The device side of a split virtqueue (virtio 1.2 2.7) in guest memory: pops descriptor chains
 * the driver made available, pushes used elements back, and suppresses notifications both ways.
 *
 * <h2>Trust</h2>
 * Everything in guest memory is hostile and may change while it is read. Each guest value
 * (avail.idx, a ring entry, a descriptor field) is loaded exactly once into a local, checked,
 * then used; indices are masked or range-checked before they address anything; every buffer is
 * checked against the {@link GuestMemory} region table (a descriptor whose range is not wholly in
 * guest memory corrupts the ring, {@link QueueError#BUFFER_NOT_MAPPED}). A violated rule never
 * throws: the queue is <em>quarantined</em> (sticky until {@link #reset()}), {@link #pop} returns
 * the error's negative code, the {@link QueueErrorListener} is told once, and the queue stops
 * touching guest memory (virtio 1.2 2.1.2: DEVICE_NEEDS_RESET, stop using the queue).
 *
 * <h2>Choices where the spec leaves room</h2>
 * <ul>
 * <li>Zero-length descriptors are allowed and skipped: they count toward the chain length and the
 * readable/writable order but produce no segment and no address check (they address nothing).
 * <li>An indirect table must lie in one region (QEMU's rule); its entries may be up to 32768, and
 * a chain inside it is bounded by its entry count. The direct part of a chain, the descriptor
 * pointing to the table included, is bounded by the queue size.
 * <li>A buffer may cross from one region into the adjacent one: it becomes several segments.
 * <li>The same head may be offered again while still in flight (a buggy or hostile driver); the
 * queue does not track heads, so owners must not index in-flight state by head alone.
 * </ul>
 *
 * <h2>Threads</h2>
 * {@link #pop}, {@link #disableNotifications} and {@link #enableNotifications} belong to one
 * thread (the request side); {@link #addUsed} and {@link #publishUsed} to one thread (the
 * completion side), which may be the same or another. Their state sits on separate cache lines.
 * Set-up ({@link #activate}, {@link #remap}, {@link #reset}, the index setters) happens while
 * neither side runs, and the owner hands the queue over with a happens-before edge (thread start,
 * a lock, a volatile).
 *
 * <h2>Batching and the no-lost-kick pattern</h2>
 * <pre>
 *  on kick:  queue.disableNotifications();
 *            do { while (queue.pop(chain) == 1) { submit(chain); } }
 *            while (queue.enableNotifications());   // full fence + re-check avail.idx
 *  on completions: for each: queue.addUsed(head, written);
 *            if (queue.publishUsed()) { interrupt(); }  // one used.idx store per batch
 * </pre>
 * Start-up and resume: run that kick pass once after {@link #activate} (and the index setters):
 * buffers may already be available and their kick may have gone out before anyone listened. Never
 * go to sleep on the kick source unless {@link #enableNotifications()} has just returned false.
 *
 * <p>Little-endian host assumed (x86-64), as virtio 1.x rings are little-endian.
 */
public final class SplitQueue extends SplitQueueUsedSide {
    /** The largest queue size (virtio 1.2 2.7). */
    public static final int MAX_QUEUE_SIZE = 32768;
    /** Segments a chain view holds beyond the queue size, for buffers split across regions. */
    public static final int CHAIN_SLACK_SEGMENTS = 16;

    static {
        if (ByteOrder.nativeOrder() != ByteOrder.LITTLE_ENDIAN) {
            throw new ExceptionInInitializerError("virtio rings are little-endian; this host is " + ByteOrder.nativeOrder());
        }
        // Initialised now, with the queue, never first on the error path: a guest-memory fault
        // (SIGBUS) that Java 17 delivers late, at a safepoint inside a class's static
        // initialiser, fails that initialisation for the life of the JVM. Found by the frontend
        // fuzzer (issue 10): QueueError was first used by a quarantine after a truncated memfd
        // faulted, and every later quarantine then threw NoClassDefFoundError.
        QueueError.values();
    }

    @SuppressWarnings("unused")
    private long p20, p21, p22, p23, p24, p25, p26, p27;

    /**
     * A queue that reports quarantines nowhere.
     *
     * @param index            the queue's index on its device (for errors and counters)
     * @param maxChainSegments the segments a {@link #newChain()} view holds at least
     */
    public SplitQueue(int index, int maxChainSegments) {
        this(index, maxChainSegments, QueueErrorListener.NONE);
    }

    /** A queue that tells {@code listener} when it is quarantined. */
    public SplitQueue(int index, int maxChainSegments, QueueErrorListener listener) {
        super(index, maxChainSegments, listener);
        if (index < 0 || maxChainSegments < 1) {
            throw new IllegalArgumentException("bad queue: index " + index + ", maxChainSegments " + maxChainSegments);
        }
    }

    /**
     * Sets the queue up from the driver's size and ring addresses (guest-physical), checking the
     * size and alignment rules (2.7, 2.7.1) and translating each ring ONCE: each must lie in one
     * region, the used ring in a writable one. Indices start at 0; notifications start enabled.
     *
     * @return 0, or the negative code of the {@link QueueError}; the queue is then quarantined
     *         (without calling the listener: the caller has the code) until {@link #reset()}
     */
    public int activate(GuestMemory mem, int size, long descGpa, long availGpa, long usedGpa, boolean eventIdx,
            boolean indirect) {
        Objects.requireNonNull(mem, "mem");
        reset();
        QueueError e = checkLayout(size, descGpa, availGpa, usedGpa);
        if (e != null) {
            return failSetUp(e);
        }
        this.size = size;
        this.mask = size - 1;
        this.descGpa = descGpa;
        this.availGpa = availGpa;
        this.usedGpa = usedGpa;
        this.eventIdx = eventIdx;
        this.indirectEnabled = indirect;
        e = translateRings(mem);
        if (e != null) {
            return failSetUp(e);
        }
        forceInterrupt = 1;
        active = true;
        return 0;
    }

    private static QueueError checkLayout(int size, long descGpa, long availGpa, long usedGpa) {
        if (size < 1 || size > MAX_QUEUE_SIZE || (size & (size - 1)) != 0) {
            return QueueError.QUEUE_SIZE_INVALID;
        }
        if ((descGpa & (VirtqDescriptor.ALIGNMENT - 1)) != 0) {
            return QueueError.DESCRIPTOR_TABLE_MISALIGNED;
        }
        if ((availGpa & (AvailRingDescriptor.ALIGNMENT - 1)) != 0) {
            return QueueError.AVAIL_RING_MISALIGNED;
        }
        if ((usedGpa & (UsedRingDescriptor.ALIGNMENT - 1)) != 0) {
            return QueueError.USED_RING_MISALIGNED;
        }
        return null;
    }

    private QueueError translateRings(GuestMemory mem) {
        long desc = mem.hostAddress(descGpa, VirtqDescriptor.tableBytes(size), false);
        long avail = mem.hostAddress(availGpa, AvailRingDescriptor.bytes(size), false);
        long used = mem.hostAddress(usedGpa, UsedRingDescriptor.bytes(size), true);
        if (desc == GuestMemory.NO_ADDRESS) {
            return QueueError.DESCRIPTOR_TABLE_NOT_MAPPED;
        }
        if (avail == GuestMemory.NO_ADDRESS) {
            return QueueError.AVAIL_RING_NOT_MAPPED;
        }
        if (used == GuestMemory.NO_ADDRESS) {
            return QueueError.USED_RING_NOT_MAPPED;
        }
        memory = mem;
        descTable = desc;
        availRing = avail;
        usedRing = used;
        usedEventAddress = avail + AvailRingDescriptor.usedEventOffset(size);
        availEventAddress = used + UsedRingDescriptor.availEventOffset(size);
        return null;
    }

    private int failSetUp(QueueError e) {
        error = e;
        quarantined = true;
        return e.code();
    }

    /**
     * Re-translates the rings against a new table with the same guest addresses (memory table
     * replaced while the queue is set up; see {@link io.vblk.hostmem.MemoryMap}). Indices stay.
     *
     * @return 0, or a negative code: the queue is quarantined and the listener told
     */
    public int remap(GuestMemory mem) {
        Objects.requireNonNull(mem, "mem");
        if (quarantined || !active) {
            return quarantined ? error.code() : 0;
        }
        QueueError e = translateRings(mem);
        return e == null ? 0 : quarantine(e);
    }

    /** Deactivates the queue and clears a quarantine; indices return to 0. */
    public void reset() {
        active = false;
        quarantined = false;
        error = null;
        memory = null;
        size = 0;
        mask = 0;
        descTable = 0;
        availRing = 0;
        usedRing = 0;
        usedEventAddress = 0;
        availEventAddress = 0;
        nextAvail = 0;
        shadowAvailIdx = 0;
        availEventReparkAt = NOT_PARKED;
        nextUsed = 0;
        publishedUsed = 0;
        forceInterrupt = 1;
    }

    /** A chain view sized for this queue: {@code max(maxChainSegments, size + 16)} segments. */
    public DescriptorChain newChain() {
        return new DescriptorChain(chainCapacity());
    }

    /** The capacity {@link #newChain()} gives. */
    public int chainCapacity() {
        return Math.max(maxChainSegments, size + CHAIN_SLACK_SEGMENTS);
    }

    // ---------------------------------------------------------------- request side

    /**
     * Pops the next available chain into {@code chain}.
     *
     * @return 1 when {@code chain} holds a chain; 0 when none is available (or the queue is not
     *         active); a negative {@link QueueError} code when the ring is corrupt: the queue is
     *         then quarantined, and stays so (every later call returns the same code)
     */
    public int pop(DescriptorChain chain) {
        if (quarantined) {
            return error.code();
        }
        if (!active) {
            return 0;
        }
        int next = (int) nextAvail;
        if (next == availEventReparkAt) {
            parkAvailEvent(next); // kicks suppressed with EVENT_IDX: keep avail_event out of reach
        }
        if (next == (int) shadowAvailIdx) {
            int idx = availIdxAcquire();
            // 2.7.13: at most size chains can be outstanding; a larger distance is a corrupt or
            // decremented idx (2.7.6.1)
            if (EventIndex.distance(next, idx) > size) {
                return quarantine(QueueError.AVAIL_INDEX_AHEAD);
            }
            shadowAvailIdx = idx;
            if (idx == next) {
                return 0;
            }
        }
        int head = UnsafeApi.getShort(availRing + AvailRingDescriptor.entryOffset(next & mask)) & 0xffff;
        if (head >= size) {
            return quarantine(QueueError.HEAD_OUT_OF_RANGE);
        }
        QueueError e = walk(head, chain);
        if (e != null) {
            return quarantine(e);
        }
        nextAvail = (next + 1) & 0xffff;
        return 1;
    }

    /**
     * Reads the chain at descriptor {@code head} into {@code chain} without consuming an
     * available-ring entry: for resubmitting requests that were in flight when a previous
     * backend died (vhost-user inflight tracking), whose avail entries lie behind next_avail.
     * Same checks, and the same quarantine on a corrupt chain, as {@link #pop}.
     *
     * @return 1 when {@code chain} holds the chain, 0 if the queue is not active, or a negative
     *         {@link QueueError} code (the queue is then quarantined)
     */
    public int popHead(int head, DescriptorChain chain) {
        if (quarantined) {
            return error.code();
        }
        if (!active) {
            return 0;
        }
        if (head < 0 || head >= size) {
            return quarantine(QueueError.HEAD_OUT_OF_RANGE);
        }
        QueueError e = walk(head, chain);
        return e != null ? quarantine(e) : 1;
    }

    /**
     * Acquire read of avail.idx: pairs with the driver's write barrier before its idx store
     * (2.7.13.3.1), so the ring entries and descriptors it published are visible to the plain
     * reads that follow.
     */
    private int availIdxAcquire() {
        return UnsafeApi.getShortVolatile(null, availRing + AvailRingDescriptor.IDX_OFFSET) & 0xffff;
    }

    /** Walks the chain at {@code head}: direct descriptors, then optionally one indirect table. */
    private QueueError walk(int head, DescriptorChain chain) {
        chain.reset(head);
        long table = descTable;
        int entries = size;
        int ttl = size; // 2.7.5.3.1: no chain is longer than the queue size
        boolean inIndirect = false;
        boolean seenWritable = false;
        int index = head;
        while (true) {
            if (ttl-- == 0) {
                return inIndirect ? QueueError.INDIRECT_CHAIN_TOO_LONG : QueueError.CHAIN_TOO_LONG;
            }
            // each field is loaded once; the guest may be rewriting them as we read
            long d = table + VirtqDescriptor.offset(index);
            long addr = UnsafeApi.getLong(d + VirtqDescriptor.ADDR_OFFSET);
            int len = UnsafeApi.getInt(d + VirtqDescriptor.LEN_OFFSET);
            int flagsAndNext = UnsafeApi.getInt(d + VirtqDescriptor.FLAGS_OFFSET);
            int flags = VirtqDescriptor.flags(flagsAndNext);
            if ((flags & VirtqDescriptor.F_INDIRECT) != 0) {
                QueueError e = checkIndirect(flags, len, inIndirect);
                if (e != null) {
                    return e;
                }
                // 2.7.5.3.2: the WRITE flag of the pointing descriptor is ignored
                long host = memory.hostAddress(addr, len & 0xffff_ffffL, false);
                if (host == GuestMemory.NO_ADDRESS) {
                    return QueueError.INDIRECT_TABLE_NOT_MAPPED;
                }
                chain.markIndirect();
                table = host;
                entries = len >>> 4;
                ttl = entries;
                inIndirect = true;
                index = 0; // 2.7.5.3: the chain starts at entry 0
                continue;
            }
            boolean writable = (flags & VirtqDescriptor.F_WRITE) != 0;
            if (!writable && seenWritable) {
                return QueueError.READABLE_AFTER_WRITABLE; // 2.7.4.2
            }
            seenWritable = writable;
            chain.countDescriptor();
            QueueError e = addBuffer(chain, addr, len, writable);
            if (e != null) {
                return e;
            }
            if ((flags & VirtqDescriptor.F_NEXT) == 0) {
                return null;
            }
            index = VirtqDescriptor.next(flagsAndNext);
            if (index >= entries) {
                return inIndirect ? QueueError.INDIRECT_NEXT_OUT_OF_RANGE : QueueError.NEXT_OUT_OF_RANGE;
            }
        }
    }

    private QueueError checkIndirect(int flags, int len, boolean inIndirect) {
        if (inIndirect) {
            return QueueError.INDIRECT_NESTED; // 2.7.5.3.1
        }
        if (!indirectEnabled) {
            return QueueError.INDIRECT_NOT_NEGOTIATED; // 2.7.5.3.1
        }
        if ((flags & VirtqDescriptor.F_NEXT) != 0) {
            return QueueError.INDIRECT_WITH_NEXT; // 2.7.5.3.1
        }
        if (len == 0 || (len & (VirtqDescriptor.LENGTH - 1)) != 0) {
            return QueueError.INDIRECT_BAD_LENGTH; // 2.7.5.3: len / 16 entries
        }
        if (Integer.compareUnsigned(len, MAX_QUEUE_SIZE * VirtqDescriptor.LENGTH) > 0) {
            return QueueError.INDIRECT_TOO_LARGE;
        }
        return null;
    }

    /** Translates one buffer into the chain; zero-length buffers are skipped (class comment). */
    private QueueError addBuffer(DescriptorChain chain, long gpa, int len, boolean writable) {
        long length = len & 0xffff_ffffL;
        if (length == 0) {
            return null;
        }
        if (length <= GuestMemory.MAX_SEGMENT_BYTES) {
            long host = memory.hostAddress(gpa, length, writable);
            if (host != GuestMemory.NO_ADDRESS) {
                chain.add(host, (int) length, writable);
                return null;
            }
        }
        chain.nextWritable(writable); // slow path: split across regions, or refused
        int rc = memory.translate(gpa, length, writable, chain.sink);
        if (rc >= 0) {
            return null;
        }
        return rc == GuestMemory.READ_ONLY ? QueueError.BUFFER_READ_ONLY : QueueError.BUFFER_NOT_MAPPED;
    }

    private int quarantine(QueueError e) {
        error = e;
        quarantined = true;
        listener.onQueueError(index, e);
        return e.code();
    }

    /**
     * Asks the driver not to kick (2.7.10): sets used.flags NO_NOTIFY, or with EVENT_IDX
     * <em>parks</em> avail_event one behind next_avail, the index the driver's avail.idx is
     * furthest from reaching. Left where {@link #enableNotifications()} put it, avail_event would
     * fall behind while the device polls, and after 65,536 entries the driver's
     * {@code vring_need_event} window would pass it again: a spurious kick every wrap (vhost's
     * way). {@link #pop} re-parks it every {@value #AVAIL_EVENT_REPARK} chains, one store, so it
     * never comes within reach. A hint: kicks may still arrive and are harmless.
     */
    public void disableNotifications() {
        if (!active || quarantined) {
            return;
        }
        if (eventIdx) {
            if (availEventReparkAt == NOT_PARKED) {
                parkAvailEvent((int) nextAvail);
            }
            return;
        }
        UnsafeApi.putShort(usedRing + UsedRingDescriptor.FLAGS_OFFSET, (short) UsedRingDescriptor.F_NO_NOTIFY);
        RingLog log = usedLog;
        if (log != null) {
            log.mark(UsedRingDescriptor.FLAGS_OFFSET, Short.BYTES);
        }
    }

    /**
     * Chains popped between two parks of avail_event while kicks are suppressed. The driver's
     * avail.idx is at most a queue size (32,768) ahead of next_avail, so avail_event parked at
     * {@code p - 1} stays out of its window while next_avail is less than 65,535 - 32,768 past
     * {@code p}; half of that leaves room.
     */
    static final int AVAIL_EVENT_REPARK = 16384;

    /**
     * Writes avail_event = {@code next - 1}: behind every index the driver can publish next, so
     * no window of its {@code vring_need_event} contains it for the next 32,767 chains.
     */
    private void parkAvailEvent(int next) {
        UnsafeApi.putShort(availEventAddress, (short) (next - 1));
        availEventReparkAt = (next + AVAIL_EVENT_REPARK) & 0xffff;
        RingLog log = usedLog;
        if (log != null) {
            log.mark(UsedRingDescriptor.availEventOffset(size), Short.BYTES);
        }
    }

    /**
     * Asks the driver to kick again (clears NO_NOTIFY, or with EVENT_IDX writes avail_event =
     * next_avail: kick me when you publish the entry I will pop next), then re-reads avail.idx.
     *
     * @return true if buffers are available: pop them before sleeping, or a kick may be lost
     */
    public boolean enableNotifications() {
        if (!active || quarantined) {
            return false;
        }
        int next = (int) nextAvail;
        if (eventIdx) {
            availEventReparkAt = NOT_PARKED;
            UnsafeApi.putShort(availEventAddress, (short) next);
        } else {
            UnsafeApi.putShort(usedRing + UsedRingDescriptor.FLAGS_OFFSET, (short) 0);
        }
        RingLog log = usedLog;
        if (log != null) {
            log.mark(eventIdx ? UsedRingDescriptor.availEventOffset(size) : UsedRingDescriptor.FLAGS_OFFSET, Short.BYTES);
        }
        // Full fence: the store above must be globally visible before avail.idx is re-read.
        // Pairs with the driver's barrier between its avail.idx store and its read of
        // used.flags / avail_event (2.7.13.4.1). Without it, each side can read the other's old
        // value: the driver skips the kick and we sleep on buffers already published.
        VarHandle.fullFence();
        return availIdxAcquire() != next;
    }

    // ---------------------------------------------------------------- completion side

    /**
     * Writes the used element {@code (head, writtenLength)} (plain store, one le64); invisible to
     * the driver until {@link #publishUsed()}. At most queue-size elements between publishes.
     * A no-op on a quarantined or inactive queue.
     *
     * @param writtenLength bytes written into the chain's device-writable buffers (2.7.8)
     */
    public void addUsed(int head, int writtenLength) {
        if (quarantined || !active) {
            return;
        }
        int slot = (int) nextUsed & mask;
        UnsafeApi.putLong(usedRing + UsedRingDescriptor.elementOffset(slot), UsedRingDescriptor.element(head, writtenLength));
        RingLog log = usedLog;
        if (log != null) {
            log.mark(UsedRingDescriptor.elementOffset(slot), UsedRingDescriptor.ELEMENT_LENGTH);
        }
        nextUsed = (nextUsed + 1) & 0xffff;
    }

    /**
     * Publishes every element added since the last publish with ONE used.idx store, and says
     * whether the driver wants a used-buffer notification for them (2.7.7.2): with EVENT_IDX, if
     * used.idx passed used_event; otherwise unless avail.flags has NO_INTERRUPT. The first
     * publish after set-up always notifies.
     *
     * @return true if the owner should interrupt the driver
     */
    public boolean publishUsed() {
        if (quarantined || !active) {
            return false;
        }
        int newIdx = (int) nextUsed;
        int oldIdx = (int) publishedUsed;
        if (newIdx == oldIdx) {
            return false;
        }
        // Release: the used elements, and the data and status bytes written into the chains'
        // buffers, become visible before the idx that exposes them (2.7.8.2). Pairs with the
        // driver's read barrier after it reads used.idx.
        VarHandle.releaseFence();
        UnsafeApi.putShort(usedRing + UsedRingDescriptor.IDX_OFFSET, (short) newIdx);
        RingLog log = usedLog;
        if (log != null) {
            log.mark(UsedRingDescriptor.IDX_OFFSET, Short.BYTES);
        }
        publishedUsed = newIdx;
        // Full fence: used.idx must be visible before used_event / avail.flags is read. Pairs
        // with the driver's barrier between writing used_event (or clearing NO_INTERRUPT) and
        // re-reading used.idx; without it an interrupt can be lost.
        VarHandle.fullFence();
        boolean force = forceInterrupt != 0;
        forceInterrupt = 0;
        if (eventIdx) {
            int usedEvent = UnsafeApi.getShort(usedEventAddress) & 0xffff;
            return force || EventIndex.needEvent(usedEvent, newIdx, oldIdx);
        }
        int flags = UnsafeApi.getShort(availRing + AvailRingDescriptor.FLAGS_OFFSET);
        return force || (flags & AvailRingDescriptor.F_NO_INTERRUPT) == 0;
    }

    /**
     * Whether the driver asks to be notified of the very next used buffer published: with
     * EVENT_IDX, used_event equals used.idx as last published (a driver that re-armed before
     * sleeping); without, NO_INTERRUPT is clear; and after set-up, always. A hint for when
     * publishing early pays (one read of the driver's field, no fence): any value a hostile
     * driver writes there only changes when the device publishes, never what it publishes, and
     * {@link #publishUsed()} still decides each notification. False on a quarantined or inactive queue.
     */
    public boolean driverAwaitsNextUsed() {
        if (quarantined || !active) {
            return false;
        }
        if (forceInterrupt != 0) {
            return true;
        }
        if (eventIdx) {
            return (UnsafeApi.getShortVolatile(null, usedEventAddress) & 0xffff) == (int) publishedUsed;
        }
        return (UnsafeApi.getShortVolatile(null, availRing + AvailRingDescriptor.FLAGS_OFFSET)
                & AvailRingDescriptor.F_NO_INTERRUPT) == 0;
    }

    // ---------------------------------------------------------------- dirty logging

    /**
     * Logs every write of the device into the used ring (flags, elements, {@code idx},
     * {@code avail_event}) into {@code log}, at {@code logGuestAddress} plus the offset in the
     * ring: the used ring's own guest address, or vhost-user's {@code log_guest_addr}
     * (VHOST_VRING_F_LOG). {@code null} stops logging. Safe while the queue runs (one volatile
     * reference); off, each ring write costs one load and a not-taken branch.
     */
    public void logUsedRing(DirtyLog log, long logGuestAddress) {
        usedLog = log == null ? null : new RingLog(log, logGuestAddress);
    }

    /** The log used-ring writes go to, or null. */
    public DirtyLog usedRingLog() {
        RingLog log = usedLog;
        return log == null ? null : log.log;
    }

    /** Where logging is on: the log and the guest address ring offsets are logged from. */
    static final class RingLog {
        final DirtyLog log;
        final long base;

        RingLog(DirtyLog log, long base) {
            this.log = log;
            this.base = base;
        }

        void mark(int offsetInRing, int length) {
            log.mark(base + offsetInRing, length);
        }
    }

    // ---------------------------------------------------------------- state

    /**
     * Where the device has got to, with the ring layout: what a stop hands to whoever resumes
     * the queue (another engine, a restarted backend, the other end of a migration). Null
     * before activation.
     */
    public QueueState state() {
        if (!active) {
            return null;
        }
        return new QueueState(size, descGpa, availGpa, usedGpa, nextAvail(), nextUsed());
    }

    /**
     * Activates the queue from {@code state} (see {@link #activate}) and resumes at its indices;
     * {@link QueueState#USED_FROM_RING} takes the next used index from {@code used.idx} in guest
     * memory (a restarted backend never resumes from 0).
     *
     * @return 0, or the negative code of the {@link QueueError} that refused the layout
     */
    public int restore(GuestMemory mem, QueueState state, boolean eventIdx, boolean indirect) {
        int rc = activate(mem, state.size(), state.descAddress(), state.availAddress(), state.usedAddress(),
                eventIdx, indirect);
        if (rc != 0) {
            return rc;
        }
        setNextAvail(state.nextAvail());
        setNextUsed(state.nextUsed() == QueueState.USED_FROM_RING ? usedIndexInRing() : state.nextUsed());
        return 0;
    }


    /** The next available-ring index to pop (u16): what vhost-user GET_VRING_BASE returns. */
    public int nextAvail() {
        return (int) nextAvail;
    }

    /** Sets the next available-ring index to pop (resume; vhost-user SET_VRING_BASE). */
    public void setNextAvail(int next) {
        nextAvail = next & 0xffff;
        shadowAvailIdx = nextAvail;
        availEventReparkAt = NOT_PARKED; // a park belongs to the old index: the next disable parks anew
    }

    /** The next used-ring index to fill (u16). */
    public int nextUsed() {
        return (int) nextUsed;
    }

    /**
     * Sets the next used-ring index to fill, dropping unpublished elements; the next publish
     * notifies. On resume take it from guest memory: {@code setNextUsed(usedIndexInRing())}.
     */
    public void setNextUsed(int next) {
        nextUsed = next & 0xffff;
        publishedUsed = nextUsed;
        forceInterrupt = 1;
    }

    /** used.idx as it is in guest memory (set-up: a restarted backend resumes from it). */
    public int usedIndexInRing() {
        return active ? UnsafeApi.getShortVolatile(null, usedRing + UsedRingDescriptor.IDX_OFFSET) & 0xffff : 0;
    }

    /** avail.idx as it is in guest memory (acquire read). */
    public int availIndexInRing() {
        return active ? availIdxAcquire() : 0;
    }

    /** Whether a ring error stopped the queue; sticky until {@link #reset()}. */
    public boolean quarantined() {
        return quarantined;
    }

    /** Why the queue is quarantined, or null. */
    public QueueError error() {
        return error;
    }

    /** Whether {@link #activate} succeeded and no {@link #reset()} followed. */
    public boolean active() {
        return active;
    }

    /** The queue's index on its device. */
    public int index() {
        return index;
    }

    /** The queue size, 0 before activation. */
    public int size() {
        return size;
    }

    /** Whether VIRTIO_F_EVENT_IDX is in use. */
    public boolean eventIdx() {
        return eventIdx;
    }

    /** Whether VIRTIO_F_INDIRECT_DESC is in use. */
    public boolean indirectEnabled() {
        return indirectEnabled;
    }

    /** The table the rings were translated with. */
    public GuestMemory memory() {
        return memory;
    }

    /** Guest-physical address of the descriptor table. */
    public long descGpa() {
        return descGpa;
    }

    /** Guest-physical address of the available ring. */
    public long availGpa() {
        return availGpa;
    }

    /** Guest-physical address of the used ring. */
    public long usedGpa() {
        return usedGpa;
    }

    @Override
    public String toString() {
        return String.format("SplitQueue[%d, size %d, desc 0x%x, avail 0x%x, used 0x%x, next_avail %d, next_used %d%s%s%s]",
                index, size, descGpa, availGpa, usedGpa, nextAvail, nextUsed, eventIdx ? ", event_idx" : "",
                indirectEnabled ? ", indirect" : "", quarantined ? ", QUARANTINED " + error : "");
    }
}

/**
 * Configuration: written at set-up, read by both sides. Layout (Disruptor style): configuration,
 * padding, request-side state, padding, completion-side state, padding. The hot state is all
 * {@code long}s so the JVM cannot slip it into a gap of the classes above.
 */
abstract class SplitQueueConfig {
    final int index;
    final int maxChainSegments;
    final QueueErrorListener listener;
    GuestMemory memory;
    int size;
    int mask;
    long descGpa;
    long availGpa;
    long usedGpa;
    /** Host addresses of the rings, translated once at activation. */
    long descTable;
    long availRing;
    long usedRing;
    long usedEventAddress;
    long availEventAddress;
    boolean eventIdx;
    boolean indirectEnabled;
    boolean active;
    QueueError error;
    /** Written by the request side on corruption, read by the completion side. */
    volatile boolean quarantined;
    /** Where used-ring writes are logged while a migration runs, or null (the usual case). */
    volatile SplitQueue.RingLog usedLog;

    SplitQueueConfig(int index, int maxChainSegments, QueueErrorListener listener) {
        this.index = index;
        this.maxChainSegments = maxChainSegments;
        this.listener = Objects.requireNonNull(listener, "listener");
    }
}

abstract class SplitQueueRequestPad extends SplitQueueConfig {
    @SuppressWarnings("unused")
    private long p00, p01, p02, p03, p04, p05, p06, p07;

    SplitQueueRequestPad(int index, int maxChainSegments, QueueErrorListener listener) {
        super(index, maxChainSegments, listener);
    }
}

/** Request-side state: owned by the thread that pops. */
abstract class SplitQueueRequestSide extends SplitQueueRequestPad {
    /** next_avail: the available-ring index to pop next (u16). */
    long nextAvail;
    /** The last avail.idx read; re-read only when next_avail catches up with it. */
    long shadowAvailIdx;
    /**
     * With EVENT_IDX while kicks are suppressed: the next_avail at which avail_event is parked
     * again ({@code SplitQueue.parkAvailEvent}); {@link #NOT_PARKED} (never equal to a u16) while
     * kicks are wanted or without EVENT_IDX. One compare per pop.
     */
    long availEventReparkAt = NOT_PARKED;

    static final long NOT_PARKED = -1;

    SplitQueueRequestSide(int index, int maxChainSegments, QueueErrorListener listener) {
        super(index, maxChainSegments, listener);
    }
}

abstract class SplitQueueUsedPad extends SplitQueueRequestSide {
    @SuppressWarnings("unused")
    private long p10, p11, p12, p13, p14, p15, p16, p17;

    SplitQueueUsedPad(int index, int maxChainSegments, QueueErrorListener listener) {
        super(index, maxChainSegments, listener);
    }
}

/** Completion-side state: owned by the thread that pushes used elements. */
abstract class SplitQueueUsedSide extends SplitQueueUsedPad {
    /** The used-ring index to fill next (u16). */
    long nextUsed;
    /** used.idx as last published (u16): "old" for the EVENT_IDX decision. */
    long publishedUsed;
    /** 1 when the next publish must notify whatever the driver asked (after set-up). */
    long forceInterrupt;

    SplitQueueUsedSide(int index, int maxChainSegments, QueueErrorListener listener) {
        super(index, maxChainSegments, listener);
    }
}
