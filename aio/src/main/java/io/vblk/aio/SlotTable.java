package io.vblk.aio;

import org.agrona.BitUtil;
import org.agrona.concurrent.UnsafeBuffer;

import io.vblk.sys.NativeException;

/**
 * The preallocated in-flight slots of a back end, indexed by the slot number the kernel carries
 * as user data: what each operation is, whose it is, and where its buffers are.
 *
 * <p>Each slot owns a run of iovecs in native memory, {@code maxSegments + 1} long: the guest
 * segments, then one spare entry that points at the slot's bounce buffer when the guest buffers
 * do not meet O_DIRECT's alignment. Bounce buffers are page-aligned off-heap regions. A slot
 * keeps one of at most {@link #RETAINED_BOUNCE_BYTES}, made the first time it needs one and grown
 * (to a power of two) up to that size, so small unaligned operations allocate nothing in steady
 * state; a larger operation borrows a buffer of its own size from the device's
 * {@link BounceBudget} and gives it back at {@link #release} (see there for the policy).
 *
 * <pre>
 *  iovecs: | slot 0: iov[0] .. iov[maxSegments-1] | bounce iov | slot 1: ... |
 * </pre>
 *
 * <p>Free slots travel from the reaping thread back to the submitting thread through an SPSC
 * ring; a slot's fields are written by the submitter before the operation is handed over (a
 * syscall, or a release store) and read by the reaper after it is reaped.
 */
final class SlotTable implements AutoCloseable {
    static final int OP_READ = 1;
    static final int OP_WRITE = 2;
    static final int OP_FLUSH = 3;
    static final int OP_DISCARD = 4;
    static final int OP_WRITE_ZEROES = 5;
    static final int OP_WRITE_ZEROES_UNMAP = 6;
    /** Completes with the result already stored in the slot (failed before reaching the kernel). */
    static final int OP_FAILED = 7;

    /** Smallest bounce buffer made, so that small unaligned operations do not regrow it often. */
    static final int MIN_BOUNCE_BYTES = 16 * 1024;
    /** The most bounce memory a slot keeps between operations; larger ones borrow from the budget. */
    static final int RETAINED_BOUNCE_BYTES = 64 * 1024;

    /** {@link #stageBounce}: the bounce buffer is ready (a write's data copied in). */
    static final int STAGED = 0;
    /** {@link #stageBounce}: the budget cannot cover the operation now; try again later. */
    static final int NO_BUDGET = 1;
    /** {@link #stageBounce}: mapping the buffer failed (out of memory). */
    static final int NO_MEMORY = 2;

    private final int depth;
    private final int maxSegments;
    private final int iovStride;
    private final OffHeap iovecs;
    private final UnsafeBuffer iov;
    private final SpscIntRing free;

    private final long[] userData;
    private final long[] offset;
    private final long[] length;
    private final long[] result;
    private final int[] op;
    private final int[] guestSegments;
    private final boolean[] bounced;
    /** The slot's retained buffer (at most {@link #RETAINED_BOUNCE_BYTES}). */
    private final OffHeap[] bounce;
    /** The buffer the slot borrowed for its operation in flight, or null. */
    private final OffHeap[] borrowed;
    private final long[] borrowedBytes;
    private final BounceBudget budget;

    SlotTable(int depth, int maxSegments) {
        this(depth, maxSegments, null);
    }

    /** {@code budget} null: borrowing is unlimited (tests, the null back end without an image). */
    SlotTable(int depth, int maxSegments, BounceBudget budget) {
        if (depth <= 0 || maxSegments <= 0 || maxSegments > IovecDescriptor.MAX_IOVECS) {
            throw new IllegalArgumentException("bad slot table: depth " + depth + ", maxSegments " + maxSegments
                    + " (both positive, maxSegments at most " + IovecDescriptor.MAX_IOVECS + ")");
        }
        this.depth = depth;
        this.maxSegments = maxSegments;
        this.iovStride = (maxSegments + 1) * IovecDescriptor.LENGTH;
        this.iovecs = OffHeap.allocate((long) depth * iovStride);
        this.iov = new UnsafeBuffer(iovecs.address(), Math.toIntExact(iovecs.length()));
        this.free = new SpscIntRing(depth);
        this.userData = new long[depth];
        this.offset = new long[depth];
        this.length = new long[depth];
        this.result = new long[depth];
        this.op = new int[depth];
        this.guestSegments = new int[depth];
        this.bounced = new boolean[depth];
        this.bounce = new OffHeap[depth];
        this.borrowed = new OffHeap[depth];
        this.borrowedBytes = new long[depth];
        this.budget = budget;
        for (int slot = 0; slot < depth; slot++) {
            free.offer(slot);
        }
    }

    int depth() {
        return depth;
    }

    int maxSegments() {
        return maxSegments;
    }

    /** Submitter: takes a free slot, or returns -1. */
    int acquire() {
        return free.poll();
    }

    /** Reaper: returns a slot to the free list, and a borrowed bounce buffer to the budget (unmapped). */
    void release(int slot) {
        OffHeap loan = borrowed[slot];
        if (loan != null) {
            borrowed[slot] = null;
            long bytes = borrowedBytes[slot];
            loan.close();
            if (budget != null) {
                budget.give(bytes);
            }
        }
        free.offer(slot);
    }

    /**
     * Gives back every slot not in the free list; returns how many. Only when nothing can be in
     * flight, on the one thread that both takes and frees slots (the back end's reclaim of
     * completions lost to an exception). Allocates: off the data path.
     */
    int reclaimTaken() {
        int freeNow = free.size();
        if (freeNow == depth) {
            return 0;
        }
        boolean[] isFree = new boolean[depth];
        for (int i = 0; i < freeNow; i++) {
            int slot = free.poll();
            isFree[slot] = true;
            free.offer(slot);
        }
        int reclaimed = 0;
        for (int slot = 0; slot < depth; slot++) {
            if (!isFree[slot]) {
                release(slot);
                reclaimed++;
            }
        }
        return reclaimed;
    }

    /** Free slots as the submitter sees them. */
    int freeCount() {
        return free.size();
    }

    /** Submitter: records what the operation in {@code slot} is. */
    void begin(int slot, int opCode, long userValue, long offsetBytes, long lengthBytes) {
        op[slot] = opCode;
        userData[slot] = userValue;
        offset[slot] = offsetBytes;
        length[slot] = lengthBytes;
        bounced[slot] = false;
        guestSegments[slot] = 0;
        result[slot] = 0;
    }

    /** Submitter: records the guest segments of a read or write (the transfer goes as they are). */
    void stageSegments(int slot, IoVector buffers) {
        int count = buffers.count();
        int base = slot * iovStride;
        for (int i = 0; i < count; i++) {
            int entry = base + i * IovecDescriptor.LENGTH;
            iov.putLong(entry + IovecDescriptor.BASE_OFFSET, buffers.address(i));
            iov.putLong(entry + IovecDescriptor.LENGTH_OFFSET, buffers.length(i));
        }
        guestSegments[slot] = count;
    }

    /**
     * Submitter, after {@link #stageSegments}: routes the transfer through a bounce buffer (the
     * retained one, or one borrowed from the budget). Returns {@link #STAGED}, {@link #NO_BUDGET}
     * (nothing changed: call again later) or {@link #NO_MEMORY}. Copies nothing: a write's data
     * goes in with the rest of its batch ({@link BounceCopier}).
     */
    int stageBounce(int slot) {
        long total = length[slot];
        OffHeap buffer;
        if (total <= RETAINED_BOUNCE_BYTES) {
            buffer = ensureRetained(slot, total);
        } else {
            long size = (total + PAGE - 1) & -PAGE;
            if (budget != null && !budget.tryTake(size)) {
                return NO_BUDGET;
            }
            buffer = allocateOrNull(size);
            if (buffer == null && budget != null) {
                budget.give(size);
            }
            borrowed[slot] = buffer;
            borrowedBytes[slot] = size;
        }
        if (buffer == null) {
            return NO_MEMORY;
        }
        bounced[slot] = true;
        int base = slot * iovStride;
        int spare = base + maxSegments * IovecDescriptor.LENGTH;
        iov.putLong(spare + IovecDescriptor.BASE_OFFSET, buffer.address());
        iov.putLong(spare + IovecDescriptor.LENGTH_OFFSET, total);
        return STAGED;
    }

    private static final long PAGE = io.vblk.sys.Linux.PAGE_SIZE;

    private OffHeap ensureRetained(int slot, long total) {
        OffHeap current = bounce[slot];
        if (current != null && current.length() >= total) {
            return current;
        }
        long size = Math.min(RETAINED_BOUNCE_BYTES, BitUtil.findNextPositivePowerOfTwo(Math.max(MIN_BOUNCE_BYTES, total)));
        OffHeap grown = allocateOrNull(size);
        if (grown != null) {
            if (current != null) {
                current.close();
            }
            bounce[slot] = grown;
        }
        return grown;
    }

    private static OffHeap allocateOrNull(long size) {
        try {
            return OffHeap.allocate(size);
        } catch (NativeException | OutOfMemoryError e) {
            // Out of memory for this operation only: it completes with ENOMEM.
            return null;
        }
    }

    /** The address of the buffer a bounced operation in {@code slot} uses. */
    long bounceAddress(int slot) {
        OffHeap loan = borrowed[slot];
        return loan != null ? loan.address() : bounce[slot].address();
    }

    /** How many guest segments {@code slot}'s read or write has. */
    int guestSegments(int slot) {
        return guestSegments[slot];
    }

    /** The address of guest segment {@code i} of {@code slot}. */
    long guestAddress(int slot, int i) {
        return iov.getLong(slot * iovStride + i * IovecDescriptor.LENGTH + IovecDescriptor.BASE_OFFSET);
    }

    /** The length of guest segment {@code i} of {@code slot}. */
    long guestLength(int slot, int i) {
        return iov.getLong(slot * iovStride + i * IovecDescriptor.LENGTH + IovecDescriptor.LENGTH_OFFSET);
    }

    /** The address of the iovecs the kernel should use for {@code slot}'s transfer. */
    long submissionIovecs(int slot) {
        int base = slot * iovStride;
        return iovecs.address() + (bounced[slot] ? base + (long) maxSegments * IovecDescriptor.LENGTH : base);
    }

    /** How many iovecs {@link #submissionIovecs(int)} holds. */
    int submissionIovecCount(int slot) {
        return bounced[slot] ? 1 : guestSegments[slot];
    }

    /** The address of iovec {@code i} of the transfer (for back ends that go segment by segment). */
    long submissionAddress(int slot, int i) {
        return iov.getLong((int) (submissionIovecs(slot) - iovecs.address()) + i * IovecDescriptor.LENGTH
                + IovecDescriptor.BASE_OFFSET);
    }

    /** The length of iovec {@code i} of the transfer. */
    long submissionLength(int slot, int i) {
        return iov.getLong((int) (submissionIovecs(slot) - iovecs.address()) + i * IovecDescriptor.LENGTH
                + IovecDescriptor.LENGTH_OFFSET);
    }

    int op(int slot) {
        return op[slot];
    }

    void op(int slot, int opCode) {
        op[slot] = opCode;
    }

    long userData(int slot) {
        return userData[slot];
    }

    long offset(int slot) {
        return offset[slot];
    }

    long length(int slot) {
        return length[slot];
    }

    boolean bounced(int slot) {
        return bounced[slot];
    }

    long result(int slot) {
        return result[slot];
    }

    void result(int slot, long value) {
        result[slot] = value;
    }

    /** Unmaps the iovecs and bounce buffers; nothing may be in flight. */
    @Override
    public void close() {
        iovecs.close();
        for (int slot = 0; slot < depth; slot++) {
            if (bounce[slot] != null) {
                bounce[slot].close();
                bounce[slot] = null;
            }
            if (borrowed[slot] != null) {
                long bytes = borrowedBytes[slot];
                borrowed[slot].close();
                borrowed[slot] = null;
                if (budget != null) {
                    budget.give(bytes);
                }
            }
        }
    }
}
