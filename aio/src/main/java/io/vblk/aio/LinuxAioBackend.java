package io.vblk.aio;

import static io.vblk.aio.LinuxAioDescriptor.EVENT_DATA_OFFSET;
import static io.vblk.aio.LinuxAioDescriptor.EVENT_LENGTH;
import static io.vblk.aio.LinuxAioDescriptor.EVENT_RES_OFFSET;
import static io.vblk.aio.LinuxAioDescriptor.IOCB_BUF_OFFSET;
import static io.vblk.aio.LinuxAioDescriptor.IOCB_DATA_OFFSET;
import static io.vblk.aio.LinuxAioDescriptor.IOCB_FILDES_OFFSET;
import static io.vblk.aio.LinuxAioDescriptor.IOCB_FLAGS_OFFSET;
import static io.vblk.aio.LinuxAioDescriptor.IOCB_KEY_OFFSET;
import static io.vblk.aio.LinuxAioDescriptor.IOCB_LENGTH;
import static io.vblk.aio.LinuxAioDescriptor.IOCB_NBYTES_OFFSET;
import static io.vblk.aio.LinuxAioDescriptor.IOCB_OFFSET_OFFSET;
import static io.vblk.aio.LinuxAioDescriptor.IOCB_OPCODE_OFFSET;
import static io.vblk.aio.LinuxAioDescriptor.IOCB_RESFD_OFFSET;

import org.agrona.UnsafeApi;
import org.agrona.concurrent.UnsafeBuffer;

import io.vblk.sys.Errno;
import io.vblk.sys.Linux;
import io.vblk.sys.Mapping;
import io.vblk.sys.Native;
import io.vblk.sys.NativeBuffer;
import io.vblk.sys.NativeException;

/**
 * Linux native AIO through raw syscalls: one iocb per slot, one {@code io_submit} per batch,
 * completions signalled on an eventfd (IOCB_FLAG_RESFD) and reaped straight from the completion
 * ring the kernel maps into the process (no syscall), or with a non-blocking {@code io_getevents}
 * when the ring's header is not one this code knows.
 *
 * <p>{@code io_submit} may take only the first part of a batch, or refuse with EAGAIN: the rest
 * stays queued, in order, for the next {@link #submit()}. When it refuses the first iocb with
 * another error, that operation alone completes with the error (through {@link #poll}, like any
 * other) and the rest are submitted. Flush is IOCB_CMD_FDSYNC (the kernel takes it where the
 * filesystem has an fsync operation: ext4, xfs, btrfs, tmpfs here); if the kernel refuses it
 * (EINVAL: before 4.18, or a file without one), flushes become fdatasync calls on the back end's
 * helper thread ({@link Offload}). AIO has no discard or write-zeroes: those go to the helper
 * thread too (fallocate, or written zeros, in bounded chunks), never run on the I/O thread, and
 * complete through {@link #poll} like every other operation.
 *
 * <p>In flight is {@code taken - reaped}, kept by this code, since AIO shows no count of what it
 * holds. A batch is removed from the queue and counted before {@code io_submit} (the kernel
 * takes whole batches: the ring has room for every slot), and what the kernel did not take is
 * put back after it. An exception the JVM throws on the way back from the call (a guest-memory
 * fault delivered late, engine GuestFaults) therefore neither submits a batch twice nor leaves it
 * uncounted. If the kernel took only part of a batch (EAGAIN midway, rare) and the exception
 * lands right then, the answer is recovered from the iocbs (the kernel writes each one's key as
 * it takes it, see {@link #resolveCall}) before anything else is queued or counted: the untaken
 * operations are submitted again, not left counted (their queue's drain used to wait for ever).
 * Reaped is one store per event, and the ring's head is derived from it, so an event is never
 * taken twice nor left counted.
 *
 * <p>Every iocb carries the image's descriptor by number, written once at setup: the back end
 * holds its image from creation to a drained close (or the reaper's release), so an embedder's
 * {@link Image#close()} meanwhile is deferred and the number keeps naming the image, never a
 * file the process opens after that close.
 */
final class LinuxAioBackend extends SlottedBackend {
    /** The io_submit call, replaceable so tests can make the kernel take batches partly. */
    interface SubmitCall {
        /** Submits {@code count} iocbs listed at {@code iocbArray}: number taken, or -errno. */
        long submit(long context, int count, long iocbArray);
    }

    static final SubmitCall IO_SUBMIT = (context, count, iocbArray) ->
            Native.syscall(Linux.SYS_IO_SUBMIT, context, count, iocbArray, 0, 0);

    private final SubmitCall submitCall;
    private final long context;
    private final Mapping iocbMemory;
    private final UnsafeBuffer iocbs;
    /** The iocb pointers handed to io_submit, in preparation order; [0, queued) are pending. */
    private final UnsafeBuffer queue;
    private int queued;
    /**
     * The iocb pointers of the batch handed to the last io_submit, kept until its answer is
     * applied ({@link #applyCall}); [0, inCallCount) while unresolved, else inCallCount is 0.
     */
    private final UnsafeBuffer inCall;
    private int inCallCount;
    /** {@link #taken} before the unresolved call counted its batch. */
    private long takenBeforeCall;
    private boolean kernelFdsync = true;
    /** iocbs counted as taken by the kernel (submitter; release store, read anywhere). */
    private long taken;
    /** Events taken from the kernel (reaper; release store, read anywhere). */
    private long reaped;
    /** The ring's head when this back end started: the head is {@code (headBase + reaped) mod entries}. */
    private final int headBase;

    private static final java.lang.invoke.VarHandle TAKEN;
    private static final java.lang.invoke.VarHandle REAPED;

    static {
        try {
            java.lang.invoke.MethodHandles.Lookup lookup = java.lang.invoke.MethodHandles.lookup();
            TAKEN = lookup.findVarHandle(LinuxAioBackend.class, "taken", long.class);
            REAPED = lookup.findVarHandle(LinuxAioBackend.class, "reaped", long.class);
        } catch (ReflectiveOperationException e) {
            throw new ExceptionInInitializerError(e);
        }
    }

    /** The kernel's completion ring, or null to reap with io_getevents. */
    private final UnsafeBuffer ring;
    private final int ringEntries;
    private final UnsafeBuffer events;
    private final UnsafeBuffer zeroTimeout;
    private final UnsafeBuffer closeTimeout;

    LinuxAioBackend(Image image, BackendOptions options) {
        this(image, options, IO_SUBMIT, true);
    }

    LinuxAioBackend(Image image, BackendOptions options, SubmitCall submitCall, boolean userSpaceReaping) {
        super(image, options, CompletionSignal.overEventFd());
        // The image is held from here: whatever fails below (an OutOfMemoryError too: direct
        // memory is every disk's) frees what was made and gives the hold back, once.
        long ctx = 0;
        Mapping iocbMem = null;
        try {
            setupStep("linux-aio start");
            if (image.portable()) {
                throw new IllegalArgumentException("linux-aio needs a native image, not " + image);
            }
            this.submitCall = submitCall;
            int depth = options.depth();
            NativeBuffer contextOut = new NativeBuffer(8);
            long rc = Native.syscall(Linux.SYS_IO_SETUP, depth, contextOut.address(), 0, 0, 0);
            if (rc < 0) {
                throw new NativeException((int) -rc, "io_setup", depth, "ctxp");
            }
            ctx = contextOut.buffer().getLong(0);
            this.context = ctx;
            iocbMem = Mapping.anonymous((long) depth * IOCB_LENGTH, false);
            this.iocbMemory = iocbMem;
            this.iocbs = new UnsafeBuffer(iocbMem.address(), depth * IOCB_LENGTH);
            this.queue = new NativeBuffer(depth * Long.BYTES).buffer();
            this.inCall = new NativeBuffer(depth * Long.BYTES).buffer();
            this.events = new NativeBuffer(depth * EVENT_LENGTH).buffer();
            this.zeroTimeout = new NativeBuffer(LinuxAioDescriptor.TIMESPEC_LENGTH).buffer();
            this.closeTimeout = new NativeBuffer(LinuxAioDescriptor.TIMESPEC_LENGTH).buffer();
            int eventFd = signal.eventFd().fd();
            int imageFd = image.fd(); // ours while the back end holds the image
            for (int slot = 0; slot < depth; slot++) {
                // The fields that never change for a slot are written once, here.
                int iocb = slot * IOCB_LENGTH;
                iocbs.putLong(IOCB_DATA_OFFSET + iocb, slot);
                iocbs.putInt(IOCB_FILDES_OFFSET + iocb, imageFd);
                iocbs.putInt(IOCB_FLAGS_OFFSET + iocb, LinuxAioDescriptor.IOCB_FLAG_RESFD);
                iocbs.putInt(IOCB_RESFD_OFFSET + iocb, eventFd);
            }
            UnsafeBuffer mapped = userSpaceReaping ? mapRing(ctx) : null;
            this.ring = mapped;
            this.ringEntries = mapped == null ? 0 : mapped.getInt(LinuxAioDescriptor.RING_NR_OFFSET);
            this.headBase = mapped == null ? 0 : mapped.getInt(LinuxAioDescriptor.RING_HEAD_OFFSET);
            setupStep("linux-aio end");
        } catch (Throwable t) {
            // Nothing was submitted: destroying the context waits for nothing.
            if (ctx != 0) {
                Native.syscall(Linux.SYS_IO_DESTROY, ctx, 0, 0, 0, 0);
            }
            if (iocbMem != null) {
                iocbMem.close();
            }
            signal.close();
            slots.close();
            setupFailed();
            throw t;
        }
    }

    @Override
    int kernelInFlight() {
        return (int) ((long) TAKEN.getAcquire(this) - (long) REAPED.getAcquire(this));
    }

    private void countTaken(int n) {
        TAKEN.setRelease(this, (long) TAKEN.getOpaque(this) + n);
    }

    private void countReaped(long n) {
        REAPED.setRelease(this, (long) REAPED.getOpaque(this) + n);
    }

    /** The ring index of the next event to reap. */
    private int ringHead() {
        return (int) ((headBase + (long) REAPED.getOpaque(this)) % ringEntries);
    }

    /** The completion ring at the context address, if its header is one we can safely read. */
    private static UnsafeBuffer mapRing(long context) {
        if (UnsafeApi.getInt(null, context + LinuxAioDescriptor.RING_MAGIC_OFFSET) != LinuxAioDescriptor.RING_MAGIC
                || UnsafeApi.getInt(null, context + LinuxAioDescriptor.RING_INCOMPAT_OFFSET) != 0
                || UnsafeApi.getInt(null, context + LinuxAioDescriptor.RING_HEADER_LENGTH_OFFSET)
                        != LinuxAioDescriptor.RING_HEADER_LENGTH) {
            return null;
        }
        int nr = UnsafeApi.getInt(null, context + LinuxAioDescriptor.RING_NR_OFFSET);
        return new UnsafeBuffer(context, LinuxAioDescriptor.RING_HEADER_LENGTH + nr * EVENT_LENGTH);
    }

    /** Whether completions are read from the mapped ring (else io_getevents). */
    boolean userSpaceReaping() {
        return ring != null;
    }

    @Override
    void enqueueTransfer(int slot, boolean isWrite, int plan) {
        int iocb = slot * IOCB_LENGTH;
        iocbs.putShort(IOCB_OPCODE_OFFSET + iocb,
                isWrite ? LinuxAioDescriptor.IOCB_CMD_PWRITEV : LinuxAioDescriptor.IOCB_CMD_PREADV);
        iocbs.putLong(IOCB_BUF_OFFSET + iocb, slots.submissionIovecs(slot));
        iocbs.putLong(IOCB_NBYTES_OFFSET + iocb, slots.submissionIovecCount(slot));
        iocbs.putLong(IOCB_OFFSET_OFFSET + iocb, slots.offset(slot));
        enqueue(iocb);
    }

    @Override
    void enqueueFlush(int slot) {
        if (!kernelFdsync) {
            queueOffloaded(slot);
            return;
        }
        int iocb = slot * IOCB_LENGTH;
        iocbs.putShort(IOCB_OPCODE_OFFSET + iocb, LinuxAioDescriptor.IOCB_CMD_FDSYNC);
        iocbs.putLong(IOCB_BUF_OFFSET + iocb, 0);
        iocbs.putLong(IOCB_NBYTES_OFFSET + iocb, 0);
        iocbs.putLong(IOCB_OFFSET_OFFSET + iocb, 0);
        enqueue(iocb);
    }

    @Override
    void enqueueZeroing(int slot) {
        queueOffloaded(slot);
    }

    /** Whether flushes go to the kernel as IOCB_CMD_FDSYNC (false once it refused one). */
    boolean kernelFdsync() {
        return kernelFdsync;
    }

    private void enqueue(int iocbOffset) {
        if (inCallCount != 0) {
            resolveCall();
        }
        // The kernel overwrites the key with 0 (KIOCB_KEY) when it takes the iocb: how an
        // answer lost to an exception is recovered (resolveCall).
        iocbs.putInt(IOCB_KEY_OFFSET + iocbOffset, KEY_NOT_TAKEN);
        queue.putLong(queued * Long.BYTES, iocbMemory.address() + iocbOffset);
        queued++;
    }

    @Override
    int queuedCount() {
        if (inCallCount != 0) {
            resolveCall(); // pendingSubmit(): the submitting thread asks every round
        }
        return queued;
    }

    @Override
    int submitQueued() {
        if (inCallCount != 0) {
            resolveCall();
        }
        int submitted = 0;
        boolean deferredAny = false;
        long rc = 0;
        while (queued > 0) {
            int count = queued;
            // Removed, then counted, before the call (see the class comment): inFlight() never
            // reads low while the kernel already completes, and nothing is submitted twice. The
            // batch is kept in inCall until the answer is applied.
            UnsafeApi.copyMemory(queue.addressOffset(), inCall.addressOffset(), (long) count * Long.BYTES);
            takenBeforeCall = (long) TAKEN.getOpaque(this);
            inCallCount = count;
            queued = 0;
            countTaken(count);
            rc = submitCall.submit(context, count, inCall.addressOffset());
            io.vblk.sys.FaultPoints.at(io.vblk.sys.FaultPoints.SUBMIT_RETURNED); // tests only: see FaultPoints
            int accepted = rc > 0 ? (int) Math.min(rc, count) : 0;
            applyCall(accepted);
            if (rc > 0) {
                submitted += accepted;
                continue;
            }
            if (rc == 0 || rc == -Errno.EAGAIN || rc == -Errno.EINTR) {
                break;
            }
            // The first queued iocb was refused: it alone completes with the error.
            int slot = (int) UnsafeApi.getLong(null, queue.getLong(0) + IOCB_DATA_OFFSET);
            dropFront(1);
            if (rc == -Errno.EINVAL && slots.op(slot) == SlotTable.OP_FLUSH) {
                // No FDSYNC here: this flush and every later one go to the helper thread
                // (handed over and counted by submit(), right after this returns).
                kernelFdsync = false;
                queueOffloaded(slot);
                continue;
            }
            slots.result(slot, rc);
            deferCompletion(slot);
            deferredAny = true;
            submitted++;
        }
        if (deferredAny) {
            signalCompletions();
        }
        return submitted > 0 || queued == 0 ? submitted : (int) (rc == 0 ? -Errno.EAGAIN : rc);
    }

    /**
     * The kernel took [0, accepted) of the unresolved call's batch: counts exactly those taken
     * and queues the rest again, in order, at the front. Idempotent (absolute stores, the batch
     * read from inCall), so an exception anywhere in it is repaired by {@link #resolveCall}.
     */
    private void applyCall(int accepted) {
        int count = inCallCount;
        TAKEN.setRelease(this, takenBeforeCall + accepted);
        if (accepted < count) {
            UnsafeApi.copyMemory(inCall.addressOffset() + (long) accepted * Long.BYTES, queue.addressOffset(),
                    (long) (count - accepted) * Long.BYTES);
            // The kernel may have written the key of the iocb it refused (it writes the key before
            // it dispatches the opcode): queued again, its key must say "not taken", or a later
            // call's lost answer would count it taken for ever (irev2 AioKeyRecoveryAttackTest).
            for (int i = accepted; i < count; i++) {
                UnsafeApi.putInt(null, inCall.getLong(i * Long.BYTES) + IOCB_KEY_OFFSET, KEY_NOT_TAKEN);
            }
        }
        queued = count - accepted;
        inCallCount = 0;
    }

    /**
     * An exception (a guest-memory fault the JVM delivers late, engine GuestFaults) cut an
     * io_submit's answer off: recovers it from the iocbs themselves. The kernel takes a batch in
     * order and writes each iocb's key (0) as it takes it, so the taken ones are the leading
     * iocbs whose key is 0; the rest are queued again and submitted as usual, not left counted
     * (the drain of their queue waited for ever before). One case stays ambiguous: the kernel
     * writes the key and can then still refuse that last iocb synchronously (IOCB_CMD_FDSYNC on
     * a file without fsync: the back end's first flush there; or its own ENOMEM). It is counted
     * taken, never given up while it may run: a flush waits, the safe side.
     */
    private void resolveCall() {
        int count = inCallCount;
        int reached = 0;
        while (reached < count
                && UnsafeApi.getInt(null, inCall.getLong(reached * Long.BYTES) + IOCB_KEY_OFFSET) != KEY_NOT_TAKEN) {
            reached++;
        }
        applyCall(reached);
    }

    /** A key the kernel never writes (it writes KIOCB_KEY, 0, into every iocb it takes). */
    private static final int KEY_NOT_TAKEN = 0x7ab1e;

    private void dropFront(int n) {
        queued -= n;
        if (queued > 0) {
            // Rare (partial submission): keep the rest in order at the front.
            UnsafeApi.copyMemory(queue.addressOffset() + (long) n * Long.BYTES, queue.addressOffset(),
                    (long) queued * Long.BYTES);
        }
    }

    @Override
    int reapQueued(CompletionSink sink, int max) {
        return ring != null ? reapRing(sink, max) : reapSyscall(sink, max, zeroTimeout, 0);
    }

    private int reapRing(CompletionSink sink, int max) {
        int head = ringHead();
        // Acquire: pairs with the kernel's write barrier between writing an event and the tail.
        int tail = ring.getIntVolatile(LinuxAioDescriptor.RING_TAIL_OFFSET);
        int n = 0;
        while (n < max && head != tail) {
            int event = LinuxAioDescriptor.RING_HEADER_LENGTH + head * EVENT_LENGTH;
            int slot = (int) ring.getLong(event + EVENT_DATA_OFFSET);
            long result = ring.getLong(event + EVENT_RES_OFFSET);
            // Taken: one store, from which the head is derived.
            countReaped(1);
            head = ringHead();
            // Release: the event is read before the kernel may reuse its entry. Published per
            // event, so a sink that throws cannot cause an event to be delivered twice.
            ring.putIntOrdered(LinuxAioDescriptor.RING_HEAD_OFFSET, head);
            io.vblk.sys.FaultPoints.at(io.vblk.sys.FaultPoints.REAP_TAKEN); // tests only: see FaultPoints
            complete(slot, result, sink);
            n++;
        }
        return n;
    }

    private int reapSyscall(CompletionSink sink, int max, UnsafeBuffer timeout, int minEvents) {
        int wanted = Math.min(max, depth());
        long rc = Native.syscall(Linux.SYS_IO_GETEVENTS, context, minEvents, wanted, events.addressOffset(),
                timeout.addressOffset());
        if (rc <= 0) {
            return 0;
        }
        // The kernel moved the ring's head by rc (the one window AIO leaves: an exception right
        // after the call would leave these counted in flight; only without the mapped ring, and at close).
        countReaped(rc);
        for (int i = 0; i < rc; i++) {
            int event = i * EVENT_LENGTH;
            int slot = (int) events.getLong(event + EVENT_DATA_OFFSET);
            if (sink == null) {
                dropCompletion(slot);
            } else {
                complete(slot, events.getLong(event + EVENT_RES_OFFSET), sink);
            }
        }
        return (int) rc;
    }

    @Override
    boolean hasQueuedCompletions() {
        return ring != null && ringHead() != ring.getIntVolatile(LinuxAioDescriptor.RING_TAIL_OFFSET);
    }

    @Override
    int awaitQueued(long timeoutNs) {
        if (inCallCount != 0) {
            resolveCall(); // what the kernel never took is not waited for
        }
        // io_getevents also reads the mapped ring (under the kernel's lock), so it is safe here
        // where nobody else reaps. Bounded waits: io_destroy (release) must never be what waits
        // for a stuck device, since it waits in the kernel, uninterruptibly and without limit.
        long deadline = System.nanoTime() + timeoutNs;
        while (kernelInFlight() > 0) {
            long left = timeoutNs < 0 ? CLOSE_WAIT_SLICE_NS : deadline - System.nanoTime();
            // Past the deadline one look without waiting still takes what the kernel finished:
            // a deadline used up elsewhere must not make a drained back end look undrained.
            long slice = Math.max(0, Math.min(left, CLOSE_WAIT_SLICE_NS));
            closeTimeout.putLong(LinuxAioDescriptor.TIMESPEC_SEC_OFFSET, slice / 1_000_000_000L);
            closeTimeout.putLong(LinuxAioDescriptor.TIMESPEC_NSEC_OFFSET, slice % 1_000_000_000L);
            reapSyscall(null, depth(), closeTimeout, 1);
            if (left <= 0 && kernelInFlight() > 0) {
                return TIMED_OUT;
            }
        }
        return AWAITED;
    }

    /** The longest single io_getevents wait at close and in its reaper (it rechecks between). */
    private static final long CLOSE_WAIT_SLICE_NS = 1_000_000_000L;

    @Override
    void release() {
        // Only once nothing is in flight (awaitQueued said so), or the wait would be here.
        Native.syscall(Linux.SYS_IO_DESTROY, context, 0, 0, 0, 0);
        iocbMemory.close();
    }
}
