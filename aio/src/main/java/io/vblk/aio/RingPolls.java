package io.vblk.aio;

import java.util.Arrays;

import org.agrona.concurrent.UnsafeBuffer;

import io.vblk.sys.Errno;
import io.vblk.sys.NativeBuffer;

/**
 * The {@link RingSleep} of an {@link IoUringBackend}: multishot IORING_OP_POLL_ADD requests on
 * the watched descriptors, sharing the ring (and its SQ and CQ) with the I/O.
 *
 * <p>Their SQEs use the ring's spare entries (indices {@code depth} and up, which no I/O slot
 * owns), are queued only when no I/O is waiting to be submitted, and are submitted by the sleep's
 * own enter; entries the kernel did not take are taken back at once and armed by the next sleep,
 * so an I/O submission never carries one (the back end counts in-flight I/O as SQEs taken minus
 * CQEs reaped, less these). Their user data has the sign bit set, which no slot index has, plus
 * a generation, so the CQE of a poll that was since removed or re-armed is told apart and
 * ignored. A multishot poll that ends (no {@link IoUringDescriptor#CQE_F_MORE}: removed, the CQ
 * overflowed, an error) is re-armed by the next sleep; re-arming a readable descriptor fires at
 * once, so no wake-up is lost in between.
 *
 * <p>Polls belong to the thread that armed them (the kernel cancels them when it exits), so they
 * are armed by {@link #sleep}, on the sleeping thread, never by {@link #watch}.
 *
 * <p>Watched descriptors are never read here: a kick eventfd shares its open file description
 * with the frontend and may block, and a multishot poll fires per write (per wake-up of the
 * eventfd's wait queue), whether or not the counter was read, as an edge-triggered epoll does.
 */
final class RingPolls implements RingSleep {
    /** User data of every poll request and its CQEs: the sign bit, which no slot index has. */
    static final long POLL_BIT = 1L << 63;
    /** The tag of the back end's own completion eventfd (signalled from user space only). */
    static final int COMPLETION_TAG = Integer.MIN_VALUE;
    /** Spare SQEs this sleeper may queue before one enter (the ring has them beyond the slots). */
    static final int SPARE_SQES = 8;
    /** Ring-sleep failures (a refused poll) after which sleeps are bounded, never a hang. */
    private static final int FAILURES_TO_BOUND = 3;
    private static final long BOUNDED_SLEEP_NS = 1_000_000;

    private final IoUringBackend ring;
    private final UnsafeBuffer sqes;
    private final int firstSpare;
    /** struct io_uring_getevents_arg at 0, its struct __kernel_timespec after it: the sleeping thread's. */
    private final NativeBuffer arg = newGetEventsArg();
    /** The same for {@link #await}, which another thread (a drain) may call while this one sleeps. */
    private final NativeBuffer awaitArg = newGetEventsArg();

    // Watched descriptors, by entry: fd (-1: free), tag, the armed poll's user data (0: not armed).
    private int[] fds = new int[4];
    private int[] tags = new int[4];
    private long[] armed = new long[4];
    private int entries;
    /** Polls to remove (their user data), queued by {@link #unwatch}. */
    private long[] removals = new long[4];
    private int removalCount;
    /** What each spare SQE queued for this enter carries: entry index, or -1 - removal's index. */
    private final int[] queuedFor = new int[SPARE_SQES];
    private final long[] queuedRemoval = new long[SPARE_SQES];
    private int generation;
    private int failures;
    private RingSleep.Woken listener = tag -> { };

    RingPolls(IoUringBackend ring, UnsafeBuffer sqes, int firstSpare) {
        this.ring = ring;
        this.sqes = sqes;
        this.firstSpare = firstSpare;
        Arrays.fill(fds, -1);
    }

    static NativeBuffer newGetEventsArg() {
        NativeBuffer b = new NativeBuffer(IoUringDescriptor.GETEVENTS_ARG_LENGTH + 16, 8);
        b.buffer().putLong(IoUringDescriptor.GETEVENTS_ARG_TS_OFFSET, b.address() + IoUringDescriptor.GETEVENTS_ARG_LENGTH);
        return b;
    }

    /** Writes a timeout of {@code ns} into {@code a}'s timespec; returns {@code a}'s address for EXT_ARG. */
    static long timeout(NativeBuffer a, long ns) {
        UnsafeBuffer b = a.buffer();
        int ts = IoUringDescriptor.GETEVENTS_ARG_LENGTH;
        b.putLong(ts, ns / 1_000_000_000L);
        b.putLong(ts + 8, ns % 1_000_000_000L);
        return a.address();
    }

    @Override
    public void onWake(RingSleep.Woken value) {
        listener = value;
    }

    @Override
    public void watch(int fd, int tag) {
        unwatch(tag);
        int e = 0;
        while (e < entries && fds[e] >= 0) {
            e++;
        }
        if (e == fds.length) {
            fds = Arrays.copyOf(fds, e * 2);
            Arrays.fill(fds, e, fds.length, -1);
            tags = Arrays.copyOf(tags, e * 2);
            armed = Arrays.copyOf(armed, e * 2);
        }
        fds[e] = fd;
        tags[e] = tag;
        armed[e] = 0;
        entries = Math.max(entries, e + 1);
    }

    @Override
    public void unwatch(int tag) {
        for (int e = 0; e < entries; e++) {
            if (fds[e] >= 0 && tags[e] == tag) {
                if (armed[e] != 0) {
                    queueRemoval(armed[e]);
                }
                fds[e] = -1;
                armed[e] = 0;
            }
        }
    }

    private void queueRemoval(long userData) {
        if (removalCount == removals.length) {
            removals = Arrays.copyOf(removals, removalCount * 2);
        }
        removals[removalCount++] = userData;
    }

    @Override
    public void sleep(long timeoutNs) {
        if (ring.queuedCount() > 0) {
            return; // I/O prepared and not submitted: the caller has work (and our SQEs may not mix in)
        }
        int queued = queueRequests();
        long bound = failures >= FAILURES_TO_BOUND ? BOUNDED_SLEEP_NS : -1;
        long ns = timeoutNs < 0 ? bound : bound < 0 ? timeoutNs : Math.min(timeoutNs, bound);
        int flags = IoUringDescriptor.ENTER_GETEVENTS;
        long argAddress = 0;
        if (ns >= 0) {
            flags |= IoUringDescriptor.ENTER_EXT_ARG;
            argAddress = timeout(arg, ns);
        }
        settle(queued, ring.enterExtras(queued, 1, flags, argAddress));
    }

    /**
     * Waits (drain, tests: any thread that may reap) up to {@code timeoutMs} (-1: no limit) for a
     * CQE; queues nothing. 1 when the CQ holds something, else 0.
     */
    int await(int timeoutMs) {
        int flags = IoUringDescriptor.ENTER_GETEVENTS;
        long argAddress = 0;
        if (timeoutMs >= 0) {
            flags |= IoUringDescriptor.ENTER_EXT_ARG;
            argAddress = timeout(awaitArg, timeoutMs * 1_000_000L);
        }
        ring.enterWait(flags, argAddress);
        return ring.completionsPosted() ? 1 : 0;
    }

    /** Queues the pending removals and arms, flushing by a plain submit when the spares run out. */
    private int queueRequests() {
        int n = 0;
        // What settle() queues again lands at indices already read (it re-queues at most as many
        // as were taken from the front): they wait for the next sleep, never loop here.
        int toRemove = removalCount;
        removalCount = 0;
        for (int r = 0; r < toRemove; r++) {
            if (n == SPARE_SQES) {
                settle(n, ring.enterExtras(n, 0, 0, 0));
                n = 0;
            }
            long userData = removals[r];
            prepare(n, IoUringDescriptor.OP_POLL_REMOVE, -1, userData, 0, 0, POLL_BIT);
            queuedFor[n] = -1;
            queuedRemoval[n] = userData;
            n++;
        }
        for (int e = 0; e < entries; e++) {
            if (fds[e] < 0 || armed[e] != 0) {
                continue;
            }
            if (n == SPARE_SQES) {
                settle(n, ring.enterExtras(n, 0, 0, 0));
                n = 0;
            }
            generation = (generation + 1) & 0x7fffffff;
            long userData = POLL_BIT | ((long) generation << 32) | (tags[e] & 0xffffffffL);
            prepare(n, IoUringDescriptor.OP_POLL_ADD, fds[e], 0, IoUringDescriptor.POLL_ADD_MULTI,
                    IoUringDescriptor.POLLIN, userData);
            armed[e] = userData;
            queuedFor[n] = e;
            n++;
        }
        return n;
    }

    private void prepare(int spare, byte opcode, int fd, long addr, int len, int opFlags, long userData) {
        int index = firstSpare + spare;
        int sqe = index * IoUringDescriptor.SQE_LENGTH;
        sqes.setMemory(sqe, IoUringDescriptor.SQE_LENGTH, (byte) 0);
        sqes.putByte(sqe + IoUringDescriptor.SQE_OPCODE_OFFSET, opcode);
        sqes.putInt(sqe + IoUringDescriptor.SQE_FD_OFFSET, fd);
        sqes.putLong(sqe + IoUringDescriptor.SQE_ADDR_OFFSET, addr);
        sqes.putInt(sqe + IoUringDescriptor.SQE_LEN_OFFSET, len);
        sqes.putInt(sqe + IoUringDescriptor.SQE_OP_FLAGS_OFFSET, opFlags);
        sqes.putLong(sqe + IoUringDescriptor.SQE_USER_DATA_OFFSET, userData);
        ring.enqueueSqe(index);
    }

    /** What the kernel did not take was taken back by the enter: queue it again for the next sleep. */
    private void settle(int queued, int taken) {
        for (int i = Math.max(0, taken); i < queued; i++) {
            int e = queuedFor[i];
            if (e >= 0) {
                armed[e] = 0;
            } else {
                queueRemoval(queuedRemoval[i]);
            }
        }
    }

    /**
     * A CQE with {@link #POLL_BIT} (reaping thread): a wake-up of a watched descriptor, or the end
     * of a poll (removed, cancelled, refused), or a removal's own answer.
     */
    void onCqe(long userData, int result, int flags) {
        for (int e = 0; e < entries; e++) {
            if (armed[e] != userData || fds[e] < 0) {
                continue;
            }
            if ((flags & IoUringDescriptor.CQE_F_MORE) == 0) {
                armed[e] = 0; // ended: the next sleep arms it again
                // ECANCELED: the thread that armed it exited (the kernel cancels a task's polls
                // then), or it was removed; anything else is a refusal, and repeated ones bound
                // the sleeps so that a thread never sleeps on a poll that cannot fire.
                if (result < 0 && result != -Errno.ECANCELED) {
                    failures++;
                }
            }
            if (result > 0) {
                failures = 0; // a poll that fires shows polls work: stray refusals do not bound sleeps for good
                if (tags[e] != COMPLETION_TAG) {
                    listener.woken(tags[e]);
                }
            }
            return;
        }
        // A removed or re-armed poll's last CQE, or a POLL_REMOVE's answer: nothing to do.
    }

    /** Whether sleeps are bounded because polls were refused (tests). */
    boolean bounded() {
        return failures >= FAILURES_TO_BOUND;
    }
}
