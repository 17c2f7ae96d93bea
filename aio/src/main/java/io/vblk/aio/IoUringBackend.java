package io.vblk.aio;

import static io.vblk.aio.IoUringDescriptor.CQE_LENGTH;
import static io.vblk.aio.IoUringDescriptor.CQE_RES_OFFSET;
import static io.vblk.aio.IoUringDescriptor.CQE_USER_DATA_OFFSET;
import static io.vblk.aio.IoUringDescriptor.SQE_ADDR_OFFSET;
import static io.vblk.aio.IoUringDescriptor.SQE_LENGTH;
import static io.vblk.aio.IoUringDescriptor.SQE_LEN_OFFSET;
import static io.vblk.aio.IoUringDescriptor.SQE_OFF_OFFSET;
import static io.vblk.aio.IoUringDescriptor.SQE_OPCODE_OFFSET;
import static io.vblk.aio.IoUringDescriptor.SQE_OP_FLAGS_OFFSET;

import java.util.concurrent.TimeUnit;

import org.agrona.BitUtil;
import org.agrona.concurrent.UnsafeBuffer;

import io.vblk.sys.Errno;
import io.vblk.sys.Linux;
import io.vblk.sys.Mapping;
import io.vblk.sys.Native;
import io.vblk.sys.NativeBuffer;
import io.vblk.sys.NativeException;

/**
 * io_uring through raw syscalls, its rings mapped into {@link UnsafeBuffer}s: READ/WRITE for one
 * segment (READ_FIXED/WRITE_FIXED when it lies in memory registered with {@link
 * #registerBuffers}), READV/WRITEV for more,
 * FSYNC with DATASYNC, FALLOCATE; one {@code io_uring_enter} per batch; completions read from
 * the CQ ring without a syscall and announced on a registered eventfd.
 *
 * <p>The ring runs completions cooperatively where the kernel can (COOP_TASKRUN with
 * TASKRUN_FLAG, Linux 5.19): what finishes while the submitting thread runs in user space is
 * posted when that thread next enters the kernel (its next submit, or an enter a poll makes when
 * the SQ flags say completions wait), not forced in with an inter-processor interrupt per batch.
 * In this 2-vCPU VM those interrupts and their task work were about a tenth of the I/O thread's
 * time at depth 128, an exit on both the sending and the receiving vCPU. A sleeping thread is
 * still woken by a completion.
 *
 * <p>Each slot owns the SQE with its own index, so the fields that never change (fd, user data)
 * are written once; preparing writes the rest and puts the slot's index in the SQ array. The SQ
 * tail is published (release) only at {@link #submit()}; what the kernel did not consume stays
 * between its head and our tail for the next enter, which is how a partial submission or EAGAIN
 * loses nothing. The number taken is read back from the SQ head, not trusted from the return
 * value.
 *
 * <p>A FALLOCATE the filesystem refuses (EOPNOTSUPP) is handed by the reaping thread to the back
 * end's helper thread ({@link Offload}), which finishes it with the image's fallback (another
 * mode, or written zeros in bounded chunks); the refusal is remembered so later zeroings go
 * straight to the helper at submit. Neither the submitting nor the reaping thread writes zeros.
 *
 * <p>The image is the ring's registered file where the kernel allows (the ring then holds its
 * own reference to the file); else each SQE carries the descriptor's number, written once at
 * setup. Either way the back end holds its image from creation to a drained close (or the
 * reaper's release), so an embedder's {@link Image#close()} meanwhile is deferred and the number
 * never names a file the process opens after that close.
 */
final class IoUringBackend extends SlottedBackend {
    private final int ringFd;
    private final Mapping sqRingMap;
    private final Mapping cqRingMap;
    private final Mapping sqeMap;
    private final UnsafeBuffer sq;
    private final UnsafeBuffer cq;
    private final UnsafeBuffer sqes;

    private final int sqHead;
    private final int sqTail;
    private final int sqFlags;
    private final int sqArray;
    private final int sqMask;
    private final int cqHead;
    private final int cqTail;
    private final int cqMask;
    private final int cqes;

    /** Our SQ tail: prepared entries up to here, published at submit. */
    private int localTail;
    /** Our CQ head (only we write it). */
    private int localCqHead;
    /** Caps to_submit, so tests can make the kernel take batches partly. */
    private int submitLimit = Integer.MAX_VALUE;
    /**
     * The image is the ring's registered file 0 (IORING_REGISTER_FILES), so each SQE names it by
     * index with IOSQE_FIXED_FILE and the kernel skips the descriptor-table lookup and the
     * reference count per operation (fget/fput, about 2% of the I/O thread at depth 128); false
     * if the kernel refused the registration, and SQEs then carry the descriptor.
     */
    private final boolean registeredFile;
    /**
     * The kernel has IORING_OP_READ/WRITE (Linux 5.6, told by its FEAT_RW_CUR_POS): a transfer of
     * one segment (a 4 KiB read from a Linux guest) goes as a plain read or write of that buffer,
     * so the kernel neither copies nor checks an iovec array for it (fio's io_uring engine does
     * the same unless told {@code nonvectored=0}).
     */
    private final boolean plainReadWrite;
    /**
     * {@link IoUringDescriptor#SQ_TASKRUN} when the ring runs completions cooperatively (else 0):
     * the kernel then posts what finished while this thread ran in user space only when it next
     * enters the kernel, instead of interrupting it with an inter-processor interrupt per batch
     * (in a VM an exit on both sides), and sets this SQ flag so that a poll that finds the CQ
     * empty knows to enter for them.
     */
    private final int taskRunFlag;
    /** The ring set-up flags to try, newest kernel first. */
    /**
     * The most GETEVENTS enters one poll makes to have waiting completions posted: 20 a time on a
     * deferred-task-work ring, so 16 cover a depth of 320 in one round; what is left waits for the
     * next round, whose poll enters again.
     */
    private static final int MAX_GETEVENTS_ENTERS = 16;

    private static final int[] SETUP_FLAGS = {
        IoUringDescriptor.SETUP_SUBMIT_ALL | IoUringDescriptor.SETUP_COOP_TASKRUN | IoUringDescriptor.SETUP_TASKRUN_FLAG,
        IoUringDescriptor.SETUP_SUBMIT_ALL,
        0,
    };
    /**
     * Tried first when {@link BackendOptions#singleIssuer()} asks: fio's ring (SINGLE_ISSUER,
     * DEFER_TASKRUN, COOP_TASKRUN), started disabled so that the thread that first enters it, not
     * the one that builds the back end, becomes its issuer (IORING_REGISTER_ENABLE_RINGS).
     */
    private static final int SINGLE_ISSUER_FLAGS = SETUP_FLAGS[0] | IoUringDescriptor.SETUP_SINGLE_ISSUER
            | IoUringDescriptor.SETUP_DEFER_TASKRUN | IoUringDescriptor.SETUP_R_DISABLED;
    /**
     * The ring is SINGLE_ISSUER with DEFER_TASKRUN: completions are posted only when its owner
     * enters with GETEVENTS, and registrations from another thread are refused (EEXIST) once it
     * is enabled, so they go through a staging ring ({@link #registerBuffers}).
     */
    private final boolean singleIssuer;
    /** Whether the disabled ring was enabled (by its owner's first enter); submitting thread. */
    private boolean enabled;
    /** The thread that enabled a single-issuer ring (null before): it alone may enter or register. */
    private volatile Thread owner;
    /**
     * A fixed-buffer table registered by another thread than the owner into a staging ring,
     * waiting for the owner to clone it into this ring at its next poll; null when none.
     */
    private final java.util.concurrent.atomic.AtomicReference<StagedBuffers> staged;
    /** SQEs beyond the slots' own, for a ring sleep's polls (0 at the largest depths: no ring sleep). */
    private final int spareSqes;
    /** Guest memory registered as fixed buffers, and the lookup per transfer (submitting thread). */
    private FixedBuffers fixedBuffers;
    /**
     * The owner's IORING_REGISTER_CLONE_BUFFERS argument ({@link #adoptStaged}), taken at open:
     * direct memory, which every disk shares, may be used up when a table is adopted at a poll,
     * and an OutOfMemoryError there would leave the staging ring open and escape the round.
     */
    private final NativeBuffer cloneArg;
    /**
     * A single-issuer ring's exit watch, or -1: the read end of a pipe whose write end only the
     * ring holds (its registered file 1). A close by another thread than the owner cannot wait
     * for the kernel (EEXIST) and closes the ring with operations in flight; the kernel's exit
     * work finishes them, then frees the ring and drops its files: the write end's last
     * reference goes, and this end reads end of file (POLLHUP). Only then is nothing of the ring
     * left that could write into the slots' buffers or the guest's memory.
     */
    private int exitWatchFd = -1;
    /** Set before the rings are unmapped: {@link #kernelInFlight} then reads nothing from them. */
    private volatile boolean ringsReleased;
    /** The kernel has what {@link RingPolls} needs: multishot poll (5.13) and EXT_ARG (5.11). */
    private final boolean ringSleepSupported;
    /** The thread's sleep in this ring, once {@link #sleepInRing()} switched it on; else null. */
    private RingPolls polls;
    /** Poll SQEs ({@link RingPolls}) the kernel took: not I/O, so not in flight. */
    private volatile int extraSqesTaken;
    /** Poll CQEs reaped: not I/O either. */
    private volatile int extraCqesReaped;

    IoUringBackend(Image image, BackendOptions options) {
        this(image, options, true);
    }

    /**
     * As {@link #IoUringBackend(Image, BackendOptions)}; {@code registerFiles} false (tests)
     * leaves the image unregistered, as a kernel that refuses IORING_REGISTER_FILES does: SQEs
     * then carry the descriptor's number (and a single-issuer ring has no exit watch).
     */
    IoUringBackend(Image image, BackendOptions options, boolean registerFiles) {
        super(image, options, CompletionSignal.overEventFd());
        // The image is held from here: whatever fails below (an OutOfMemoryError too: direct
        // memory is every disk's) frees what was made and gives the hold back, once.
        int fd = -1;
        Mapping sqMap = null;
        Mapping cqMap = null;
        Mapping sqeMem = null;
        try {
            setupStep("io_uring start");
            if (image.portable() || options.depth() > IoUringDescriptor.MAX_ENTRIES) {
                throw new IllegalArgumentException(image.portable() ? "io_uring needs a native image, not " + image
                        : "io_uring depth " + options.depth() + " above " + IoUringDescriptor.MAX_ENTRIES
                        + " (the most SQ entries io_uring_setup accepts)");
            }
            this.staged = new java.util.concurrent.atomic.AtomicReference<>();
            this.fixedBuffers = new FixedBuffers();
            this.cloneArg = new NativeBuffer(IoUringDescriptor.CLONE_BUFFERS_LENGTH);
            // Spare entries beyond the slots' own: the SQEs of a ring sleep's polls (RingPolls). At
            // the largest depths there is no room for them, and the thread keeps epoll.
            int spares = options.depth() <= IoUringDescriptor.MAX_ENTRIES - RingPolls.SPARE_SQES ? RingPolls.SPARE_SQES : 0;
            this.spareSqes = spares;
            int entries = BitUtil.findNextPositivePowerOfTwo(options.depth() + spares);
            UnsafeBuffer params = new NativeBuffer(IoUringDescriptor.PARAMS_LENGTH).buffer();
            fd = setup(entries, params, options.singleIssuer() ? SINGLE_ISSUER_FLAGS : 0);
            this.singleIssuer = (params.getInt(IoUringDescriptor.PARAMS_FLAGS_OFFSET) & IoUringDescriptor.SETUP_SINGLE_ISSUER) != 0;
            boolean coopTaskRun = (params.getInt(IoUringDescriptor.PARAMS_FLAGS_OFFSET) & IoUringDescriptor.SETUP_TASKRUN_FLAG) != 0;
            int features = params.getInt(IoUringDescriptor.PARAMS_FEATURES_OFFSET);
            this.ringSleepSupported = (features & IoUringDescriptor.FEAT_EXT_ARG) != 0
                    && (features & IoUringDescriptor.FEAT_RSRC_TAGS) != 0;
            boolean plain = (features & IoUringDescriptor.FEAT_RW_CUR_POS) != 0;
            int sqEntries = params.getInt(IoUringDescriptor.PARAMS_SQ_ENTRIES_OFFSET);
            int cqEntries = params.getInt(IoUringDescriptor.PARAMS_CQ_ENTRIES_OFFSET);
            int sqOff = IoUringDescriptor.PARAMS_SQ_OFF_OFFSET;
            int cqOff = IoUringDescriptor.PARAMS_CQ_OFF_OFFSET;
            long sqBytes = params.getInt(sqOff + IoUringDescriptor.SQ_OFF_ARRAY) + (long) sqEntries * Integer.BYTES;
            long cqBytes = params.getInt(cqOff + IoUringDescriptor.CQ_OFF_CQES) + (long) cqEntries * CQE_LENGTH;
            if ((features & IoUringDescriptor.FEAT_SINGLE_MMAP) != 0) {
                sqMap = Mapping.map(fd, IoUringDescriptor.OFF_SQ_RING, Math.max(sqBytes, cqBytes), false, false);
                cqMap = sqMap;
            } else {
                sqMap = Mapping.map(fd, IoUringDescriptor.OFF_SQ_RING, sqBytes, false, false);
                cqMap = Mapping.map(fd, IoUringDescriptor.OFF_CQ_RING, cqBytes, false, false);
            }
            sqeMem = Mapping.map(fd, IoUringDescriptor.OFF_SQES, (long) sqEntries * SQE_LENGTH, false, false);
            registerEventFd(fd, signal.eventFd().fd());
            int imageFd = image.fd(); // ours while the back end holds the image
            int watch = singleIssuer && registerFiles ? exitWatch(fd, imageFd) : -1;
            exitWatchFd = watch;
            boolean fixed = watch >= 0 || (registerFiles && registerFile(fd, imageFd));
            this.ringFd = fd;
            this.taskRunFlag = coopTaskRun ? IoUringDescriptor.SQ_TASKRUN : 0;
            this.registeredFile = fixed;
            this.plainReadWrite = plain;
            this.sqRingMap = sqMap;
            this.cqRingMap = cqMap;
            this.sqeMap = sqeMem;
            this.sq = new UnsafeBuffer(sqMap.address(), Math.toIntExact(sqMap.length()));
            this.cq = new UnsafeBuffer(cqMap.address(), Math.toIntExact(cqMap.length()));
            this.sqes = new UnsafeBuffer(sqeMem.address(), Math.toIntExact(sqeMem.length()));
            this.sqHead = params.getInt(sqOff + IoUringDescriptor.SQ_OFF_HEAD);
            this.sqTail = params.getInt(sqOff + IoUringDescriptor.SQ_OFF_TAIL);
            this.sqFlags = params.getInt(sqOff + IoUringDescriptor.SQ_OFF_FLAGS);
            this.sqArray = params.getInt(sqOff + IoUringDescriptor.SQ_OFF_ARRAY);
            this.sqMask = sq.getInt(params.getInt(sqOff + IoUringDescriptor.SQ_OFF_RING_MASK));
            this.cqHead = params.getInt(cqOff + IoUringDescriptor.CQ_OFF_HEAD);
            this.cqTail = params.getInt(cqOff + IoUringDescriptor.CQ_OFF_TAIL);
            this.cqMask = cq.getInt(params.getInt(cqOff + IoUringDescriptor.CQ_OFF_RING_MASK));
            this.cqes = params.getInt(cqOff + IoUringDescriptor.CQ_OFF_CQES);
            this.localTail = sq.getInt(sqTail);
            this.localCqHead = cq.getInt(cqHead);
            sqes.setMemory(0, sqes.capacity(), (byte) 0);
            for (int slot = 0; slot < options.depth(); slot++) {
                // Only the fields that never change for a slot are written here; the rest stay zero
                // unless an opcode sets them.
                int sqe = slot * SQE_LENGTH;
                sqes.putByte(sqe + IoUringDescriptor.SQE_FLAGS_OFFSET, slotFlags(fixed, ASYNC));
                sqes.putInt(sqe + IoUringDescriptor.SQE_FD_OFFSET, fixed ? 0 : imageFd);
                sqes.putLong(sqe + IoUringDescriptor.SQE_USER_DATA_OFFSET, slot);
            }
            setupStep("io_uring end");
        } catch (Throwable t) {
            // Nothing was submitted: closing the ring leaves nothing in flight.
            closeQuietly(sqeMem);
            if (cqMap != sqMap) {
                closeQuietly(cqMap);
            }
            closeQuietly(sqMap);
            if (fd >= 0) {
                Native.libc().close(fd);
            }
            closeExitWatch();
            signal.close();
            slots.close();
            setupFailed();
            throw t;
        }
    }

    /**
     * Sets the ring up with {@code firstFlags} if not 0 and the kernel takes them (the
     * single-issuer ring), else with the newest flags the kernel knows: cooperative task running
     * (5.19) and SUBMIT_ALL (5.18), else SUBMIT_ALL, else none.
     */
    static int setup(int entries, UnsafeBuffer params, int firstFlags) {
        long fd = -Errno.EINVAL;
        if (firstFlags != 0) {
            // The single-issuer ring: before 6.1 (no DEFER_TASKRUN) EINVAL, and the usual ring below.
            fd = trySetup(entries, params, firstFlags);
        }
        // A kernel that does not know a flag answers EINVAL: before 5.19 no cooperative task
        // running; before 5.18 no SUBMIT_ALL either, and submission then stops at a failed SQE,
        // which is also handled (the rest stays queued).
        for (int i = 0; i < SETUP_FLAGS.length && fd == -Errno.EINVAL; i++) {
            fd = trySetup(entries, params, SETUP_FLAGS[i]);
        }
        if (fd < 0) {
            throw new NativeException((int) -fd, "io_uring_setup", entries, "params");
        }
        return (int) fd;
    }

    private static long trySetup(int entries, UnsafeBuffer params, int flags) {
        params.setMemory(0, IoUringDescriptor.PARAMS_LENGTH, (byte) 0);
        params.putInt(IoUringDescriptor.PARAMS_FLAGS_OFFSET, flags);
        return Native.syscall(Linux.SYS_IO_URING_SETUP, entries, params.addressOffset(), 0, 0, 0);
    }

    /**
     * Before any enter: a disabled single-issuer ring is enabled by the calling thread, which
     * becomes its issuer (the kernel takes the enabling task as submitter). A plain field read
     * per enter otherwise.
     */
    private void ensureEnabled() {
        if (!enabled) {
            enable();
        }
    }

    private void enable() {
        if (singleIssuer) {
            // The owner is named before the kernel makes it so: another thread registering in
            // between then stages its table (taken at our next poll) instead of going direct and
            // meeting EEXIST from the ring just enabled (review 9a).
            owner = Thread.currentThread();
            long rc = Native.syscall(Linux.SYS_IO_URING_REGISTER, ringFd, IoUringDescriptor.REGISTER_ENABLE_RINGS, 0, 0, 0);
            if (rc < 0) {
                owner = null;
                throw new NativeException((int) -rc, "io_uring_register", ringFd, "IORING_REGISTER_ENABLE_RINGS", 0, 0);
            }
        }
        enabled = true;
    }

    @Override
    public boolean registrationPending() {
        return staged.get() != null;
    }

    @Override
    public boolean singleIssuer() {
        return singleIssuer;
    }

    /** The thread that owns a single-issuer ring, or null (not single-issuer, or not yet entered; for tests). */
    Thread owner() {
        return owner;
    }

    /** The spare SQEs beyond the slots' own, for a ring sleep's polls (0: none, no ring sleep; for tests). */
    int spareSqes() {
        return spareSqes;
    }

    private static void registerEventFd(int ringFd, int eventFd) {
        NativeBuffer arg = new NativeBuffer(Integer.BYTES);
        arg.buffer().putInt(0, eventFd);
        long rc = Native.syscall(Linux.SYS_IO_URING_REGISTER, ringFd, IoUringDescriptor.REGISTER_EVENTFD,
                arg.address(), 1, 0);
        if (rc < 0) {
            throw new NativeException((int) -rc, "io_uring_register", ringFd, "IORING_REGISTER_EVENTFD", eventFd, 1);
        }
    }

    /**
     * Registers {@code fileFd} as the ring's file 0; false if the kernel refuses (the SQEs then
     * carry the descriptor itself). The ring holds its own reference to the file until it is
     * closed, which {@link #release()} does before the image may close its descriptor.
     */
    private static boolean registerFile(int ringFd, int fileFd) {
        NativeBuffer arg = new NativeBuffer(Integer.BYTES);
        arg.buffer().putInt(0, fileFd);
        long rc = Native.syscall(Linux.SYS_IO_URING_REGISTER, ringFd, IoUringDescriptor.REGISTER_FILES, arg.address(), 1, 0);
        // The kernel reads arg during the call: a collector that saw it unreachable after
        // address() could free it under the syscall.
        java.lang.ref.Reference.reachabilityFence(arg);
        return rc >= 0;
    }

    private static final long SYS_PIPE2 = 293; // x86_64

    /**
     * Registers the image as the ring's file 0 and the write end of a fresh pipe as its file 1,
     * closes that write end (the ring's reference is then its only one) and returns the read
     * end: the {@link #exitWatchFd}. -1 when the kernel refuses (nothing registered then).
     */
    private static int exitWatch(int ringFd, int imageFd) {
        NativeBuffer ends = new NativeBuffer(2 * Integer.BYTES);
        NativeBuffer arg = new NativeBuffer(2 * Integer.BYTES); // before the pipe: an allocation failing then leaks no end
        long rc = Native.syscall(SYS_PIPE2, ends.address(), Linux.O_CLOEXEC | Linux.O_NONBLOCK, 0, 0, 0);
        if (rc < 0) {
            return -1;
        }
        int read = ends.buffer().getInt(0);
        int write = ends.buffer().getInt(Integer.BYTES);
        arg.buffer().putInt(0, imageFd);
        arg.buffer().putInt(Integer.BYTES, write);
        rc = Native.syscall(Linux.SYS_IO_URING_REGISTER, ringFd, IoUringDescriptor.REGISTER_FILES, arg.address(), 2, 0);
        java.lang.ref.Reference.reachabilityFence(arg);
        Native.libc().close(write);
        if (rc < 0) {
            Native.libc().close(read);
            return -1;
        }
        return read;
    }

    private void closeExitWatch() {
        int fd = exitWatchFd;
        exitWatchFd = -1;
        if (fd >= 0) {
            Native.libc().close(fd);
        }
    }

    @Override
    boolean watchesRingExit() {
        return exitWatchFd >= 0;
    }

    /** Scratch pollfd of {@link #ringExited} (the reaper only). */
    private NativeBuffer exitPoll;

    /**
     * After {@link #release()} with operations in flight: whether the kernel has since freed the
     * ring (the exit watch reads end of file), waiting at most {@code timeoutNs}; then the watch
     * is closed.
     */
    @Override
    boolean ringExited(long timeoutNs) {
        if (exitWatchFd < 0) {
            return false;
        }
        if (exitPoll == null) {
            exitPoll = new NativeBuffer(8);
        }
        exitPoll.buffer().putInt(0, exitWatchFd);
        exitPoll.buffer().putShort(4, Linux.POLLIN);
        exitPoll.buffer().putShort(6, (short) 0);
        int ms = (int) Math.min(Integer.MAX_VALUE, Math.max(0, TimeUnit.NANOSECONDS.toMillis(timeoutNs)));
        int ready = Native.libc().poll(exitPoll.address(), 1, ms);
        if (ready <= 0 || (exitPoll.buffer().getShort(6) & (Linux.POLLHUP | Linux.POLLIN)) == 0) {
            return false;
        }
        closeExitWatch(); // nothing is ever written: readable means end of file
        return true;
    }

    /** Whether the ring runs completions cooperatively (Linux 5.19; for tests). */
    boolean cooperative() {
        return taskRunFlag != 0;
    }

    /** Whether completions wait for this thread to enter the kernel (cooperative task running). */
    boolean completionsAwaitEntry() {
        return (sq.getIntVolatile(sqFlags) & taskRunFlag) != 0;
    }

    /** Whether the CQ holds completions not yet reaped. */
    boolean completionsPosted() {
        return localCqHead != cq.getIntVolatile(cqTail);
    }

    /** Whether SQEs name the image as registered file 0 (for tests). */
    boolean registeredFile() {
        return registeredFile;
    }

    /**
     * Whether every SQE carries IOSQE_ASYNC ({@code -Dvblk.uring.async=true}, off): the kernel
     * hands each operation to its io-wq workers instead of issuing it inside {@code
     * io_uring_enter}, so a submission of a lump of ~85 reads returns at once instead of after
     * 110-130 us of block-layer work on the I/O thread (this VM's virtio disk), at the cost of
     * worker threads that compete for the same CPUs. An experiment for the fio ratio (README).
     */
    static final boolean ASYNC = Boolean.getBoolean("vblk.uring.async");

    /** The flags byte every SQE of a slot carries: the registered file's, and IOSQE_ASYNC when {@code async}. */
    static byte slotFlags(boolean fixedFile, boolean async) {
        return (byte) ((fixedFile ? IoUringDescriptor.SQE_FIXED_FILE : 0) | (async ? IoUringDescriptor.SQE_ASYNC : 0));
    }

    /** The flags byte of {@code slot}'s SQE (for tests). */
    int sqeFlags(int slot) {
        return sqes.getByte(slot * SQE_LENGTH + IoUringDescriptor.SQE_FLAGS_OFFSET);
    }

    /** The fd field of {@code slot}'s SQE: the registered index or the descriptor (for tests). */
    int sqeFd(int slot) {
        return sqes.getInt(slot * SQE_LENGTH + IoUringDescriptor.SQE_FD_OFFSET);
    }

    private static void closeQuietly(Mapping mapping) {
        if (mapping != null) {
            mapping.close();
        }
    }

    /** Test hook: the most SQEs one enter may take. */
    void submitLimit(int limit) {
        submitLimit = limit;
    }

    /** The opcode of {@code slot}'s SQE (for tests). */
    int sqeOpcode(int slot) {
        return sqes.getByte(slot * SQE_LENGTH + SQE_OPCODE_OFFSET);
    }

    @Override
    void enqueueTransfer(int slot, boolean isWrite, int plan) {
        int sqe = slot * SQE_LENGTH;
        int count = slots.submissionIovecCount(slot);
        int buffer = count == 1 ? fixedBuffers.indexOf(slots.submissionAddress(slot, 0), slots.submissionLength(slot, 0)) : -1;
        if (buffer >= 0) {
            // Inside registered buffer `buffer` (guest memory, not a bounce buffer): the kernel
            // uses the pages it pinned at registration; addr stays the absolute address.
            sqes.putByte(sqe + SQE_OPCODE_OFFSET, isWrite ? IoUringDescriptor.OP_WRITE_FIXED : IoUringDescriptor.OP_READ_FIXED);
            sqes.putLong(sqe + SQE_ADDR_OFFSET, slots.submissionAddress(slot, 0));
            sqes.putInt(sqe + SQE_LEN_OFFSET, (int) slots.submissionLength(slot, 0));
        } else if (count == 1 && plainReadWrite) {
            // The one segment's buffer itself (already checked against guest memory and
            // MAX_TRANSFER_BYTES at prepare, so its length fits len's 32 bits).
            sqes.putByte(sqe + SQE_OPCODE_OFFSET, isWrite ? IoUringDescriptor.OP_WRITE : IoUringDescriptor.OP_READ);
            sqes.putLong(sqe + SQE_ADDR_OFFSET, slots.submissionAddress(slot, 0));
            sqes.putInt(sqe + SQE_LEN_OFFSET, (int) slots.submissionLength(slot, 0));
        } else {
            sqes.putByte(sqe + SQE_OPCODE_OFFSET, isWrite ? IoUringDescriptor.OP_WRITEV : IoUringDescriptor.OP_READV);
            sqes.putLong(sqe + SQE_ADDR_OFFSET, slots.submissionIovecs(slot));
            sqes.putInt(sqe + SQE_LEN_OFFSET, count);
        }
        sqes.putLong(sqe + SQE_OFF_OFFSET, slots.offset(slot));
        sqes.putInt(sqe + SQE_OP_FLAGS_OFFSET, 0);
        bufIndex(sqe, Math.max(buffer, 0));
        enqueue(slot);
    }

    /**
     * Writes {@code slot}'s buf_index. Every opcode writes it (0 when it names no buffer): a slot's
     * SQE is reused, and FSYNC, FALLOCATE and READV refuse a stale non-zero index with EINVAL, so
     * a flush after a fixed read of buffer 1 on the same slot would fail.
     */
    private void bufIndex(int sqe, int index) {
        sqes.putShort(sqe + IoUringDescriptor.SQE_BUF_INDEX_OFFSET, (short) index);
    }

    /**
     * Registers the ranges as the ring's fixed buffers ({@link FixedBuffers}). SQEs prepared and
     * not yet submitted that name a buffer become READV/WRITEV of their one iovec first: the
     * index they carry would mean nothing (or another range) in the new table.
     */
    @Override
    public int registerBuffers(long[] addresses, long[] lengths) {
        if (closed) {
            return -Errno.EBADF;
        }
        if (foreignToOwner()) {
            return stageBuffers(addresses, lengths);
        }
        unfixQueued();
        return fixedBuffers.register(ringFd, addresses, lengths);
    }

    @Override
    public void unregisterBuffers() {
        if (closed) {
            return;
        }
        if (foreignToOwner()) {
            stageBuffers(null, null);
            return;
        }
        unfixQueued();
        fixedBuffers.unregister(ringFd);
    }

    /** Whether the caller is not the owner of an enabled single-issuer ring, which refuses its registrations. */
    private boolean foreignToOwner() {
        Thread t = owner;
        return t != null && t != Thread.currentThread();
    }

    /**
     * Another thread than a single-issuer ring's owner registers (the engine's control thread,
     * which pins a table outside the I/O thread because that takes seconds): the pages are pinned
     * here, into a small staging ring of our own, and the owner clones that table into its ring
     * (IORING_REGISTER_CLONE_BUFFERS: the same pinned pages, no second pinning) at its next poll.
     * Lookups miss from now on until then, so no transfer names a buffer of the old table (whose
     * mapping may be going) or of the new one before the ring holds it. Null ranges: only drop
     * the old table. Returns the pieces staged, or {@code -errno}.
     */
    private int stageBuffers(long[] addresses, long[] lengths) {
        // The submitting thread prepares nothing meanwhile (registerBuffers' contract).
        fixedBuffers.suspend();
        StagedBuffers next;
        int rc = 0;
        if (addresses == null) {
            next = new StagedBuffers(null, -1);
            stagingRefusal = null;
        } else {
            long fd;
            try {
                fd = trySetup(1, new NativeBuffer(IoUringDescriptor.PARAMS_LENGTH).buffer(), 0);
            } catch (OutOfMemoryError e) { // direct memory, shared by every disk, used up: a refusal
                fd = -Errno.ENOMEM;
                stagingRefusal = "not registered: no direct memory for the staging ring (" + e.getMessage() + ")";
            }
            if (fd < 0) {
                next = new StagedBuffers(null, -1);
                rc = (int) fd;
            } else {
                FixedBuffers table = new FixedBuffers();
                rc = table.register((int) fd, addresses, lengths);
                next = rc > 0 ? new StagedBuffers(table, (int) fd) : new StagedBuffers(null, -1);
                if (rc <= 0) {
                    Native.libc().close((int) fd);
                    stagingRefusal = table.toString();
                }
            }
        }
        StagedBuffers old = staged.getAndSet(next);
        if (old != null) {
            old.discard();
        }
        return rc;
    }

    /** Why the last staged table was refused, for {@link #bufferRegistration()}. */
    private volatile String stagingRefusal;

    /**
     * Owner, at each poll: takes a table another thread staged. The old table goes first (every
     * queued SQE that names one of its buffers becomes READV/WRITEV), then the staged one is
     * cloned in and the staging ring closed. A kernel without cloning (before 6.12) leaves the
     * ring without fixed buffers: transfers go unregistered, as with any refusal.
     */
    private void adoptStaged() {
        StagedBuffers s = staged.getAndSet(null);
        if (s == null) {
            return;
        }
        unfixQueued();
        fixedBuffers.unregister(ringFd);
        if (s.table == null) {
            return;
        }
        NativeBuffer arg = cloneArg;
        arg.buffer().setMemory(0, IoUringDescriptor.CLONE_BUFFERS_LENGTH, (byte) 0);
        arg.buffer().putInt(0, s.stagingFd); // src_fd; flags, offsets and nr 0: the whole table
        long rc = Native.syscall(Linux.SYS_IO_URING_REGISTER, ringFd, IoUringDescriptor.REGISTER_CLONE_BUFFERS, arg.address(), 1, 0);
        java.lang.ref.Reference.reachabilityFence(arg);
        Native.libc().close(s.stagingFd); // the ring keeps the cloned pages pinned
        if (rc < 0) {
            stagingRefusal = "not registered: the kernel refused cloning the staged table into the single-issuer ring: "
                    + Errno.describe((int) -rc);
            return;
        }
        fixedBuffers = s.table;
        stagingRefusal = null;
    }

    /** A fixed-buffer table pinned in a staging ring by another thread, for the owner to clone. */
    private static final class StagedBuffers {
        final FixedBuffers table;
        final int stagingFd;

        StagedBuffers(FixedBuffers table, int stagingFd) {
            this.table = table;
            this.stagingFd = stagingFd;
        }

        /** Replaced before the owner took it, or closing: the staging ring (and its pins) goes. */
        void discard() {
            if (stagingFd >= 0) {
                Native.libc().close(stagingFd);
            }
        }
    }

    /** Turns queued READ_FIXED/WRITE_FIXED SQEs into READV/WRITEV of the slot's one iovec. */
    private void unfixQueued() {
        for (int i = sq.getIntVolatile(sqHead); i != localTail; i++) {
            int slot = sq.getInt(sqArray + (i & sqMask) * Integer.BYTES);
            int sqe = slot * SQE_LENGTH;
            byte op = sqes.getByte(sqe + SQE_OPCODE_OFFSET);
            if (op == IoUringDescriptor.OP_READ_FIXED || op == IoUringDescriptor.OP_WRITE_FIXED) {
                sqes.putByte(sqe + SQE_OPCODE_OFFSET, op == IoUringDescriptor.OP_READ_FIXED ? IoUringDescriptor.OP_READV
                        : IoUringDescriptor.OP_WRITEV);
                sqes.putLong(sqe + SQE_ADDR_OFFSET, slots.submissionIovecs(slot));
                sqes.putInt(sqe + SQE_LEN_OFFSET, 1);
                bufIndex(sqe, 0);
            }
        }
    }

    @Override
    public String bufferRegistration() {
        StagedBuffers s = staged.get();
        if (s != null) {
            return s.table == null ? "none registered (the old table goes at the ring owner's next round)"
                    : s.table + " (staged: the ring's owner takes it at its next round)";
        }
        String refusal = stagingRefusal;
        return refusal != null && fixedBuffers.count() == 0 ? refusal : fixedBuffers.toString();
    }

    /** The buf_index field of {@code slot}'s SQE (for tests). */
    int sqeBufIndex(int slot) {
        return sqes.getShort(slot * SQE_LENGTH + IoUringDescriptor.SQE_BUF_INDEX_OFFSET) & 0xffff;
    }

    /** Fixed buffers registered now (for tests). */
    int fixedBufferCount() {
        return fixedBuffers.count();
    }

    @Override
    void enqueueFlush(int slot) {
        int sqe = slot * SQE_LENGTH;
        sqes.putByte(sqe + SQE_OPCODE_OFFSET, IoUringDescriptor.OP_FSYNC);
        sqes.putLong(sqe + SQE_OFF_OFFSET, 0);
        sqes.putLong(sqe + SQE_ADDR_OFFSET, 0);
        sqes.putInt(sqe + SQE_LEN_OFFSET, 0);
        sqes.putInt(sqe + SQE_OP_FLAGS_OFFSET, IoUringDescriptor.FSYNC_DATASYNC);
        bufIndex(sqe, 0);
        enqueue(slot);
    }

    @Override
    void enqueueZeroing(int slot) {
        int op = slots.op(slot);
        int mode = op == SlotTable.OP_DISCARD ? image.discardMode()
                : image.writeZeroesMode(op == SlotTable.OP_WRITE_ZEROES_UNMAP);
        if (mode == 0) {
            queueOffloaded(slot);
            return;
        }
        int sqe = slot * SQE_LENGTH;
        sqes.putByte(sqe + SQE_OPCODE_OFFSET, IoUringDescriptor.OP_FALLOCATE);
        sqes.putLong(sqe + SQE_OFF_OFFSET, slots.offset(slot));
        // FALLOCATE carries the length in addr and the mode in len.
        sqes.putLong(sqe + SQE_ADDR_OFFSET, slots.length(slot));
        sqes.putInt(sqe + SQE_LEN_OFFSET, mode);
        sqes.putInt(sqe + SQE_OP_FLAGS_OFFSET, 0);
        bufIndex(sqe, 0);
        enqueue(slot);
    }

    private void enqueue(int slot) {
        sq.putInt(sqArray + (localTail & sqMask) * Integer.BYTES, slot);
        localTail++;
    }

    @Override
    int queuedCount() {
        return localTail - sq.getIntVolatile(sqHead);
    }

    /**
     * The kernel's truth: SQEs it consumed (its SQ head) minus CQEs we took (our CQ head); every
     * consumed SQE yields exactly one CQE. Neither index is ours to miscount: an exception
     * between the enter and anything after it changes neither.
     */
    @Override
    int kernelInFlight() {
        // After close nothing is in flight (close waited) and the ring is gone. A reader on
        // another thread than the closing one must not race close (as with any other call).
        // Poll SQEs and CQEs of a ring sleep are not I/O: taken out (each counter is raised
        // before the index it corrects, so another thread may see one too many, never too few).
        return ringsReleased ? 0 : (sq.getIntVolatile(sqHead) - extraSqesTaken) - (localCqHead - extraCqesReaped);
    }

    @Override
    int submitQueued() {
        ensureEnabled();
        int head = sq.getIntVolatile(sqHead);
        int toSubmit = Math.min(localTail - head, submitLimit);
        // Release: the SQEs and array entries written since the last submit are visible to the
        // kernel before the tail that covers them.
        sq.putIntOrdered(sqTail, localTail);
        long rc = Native.syscall(Linux.SYS_IO_URING_ENTER, ringFd, toSubmit, 0, 0, 0);
        io.vblk.sys.FaultPoints.at(io.vblk.sys.FaultPoints.SUBMIT_RETURNED); // tests only: see FaultPoints
        // Trust the head, not the return value: every consumed SQE yields exactly one CQE (an
        // SQE that failed at submission gets an error CQE).
        int consumed = sq.getIntVolatile(sqHead) - head;
        if (consumed > 0) {
            return consumed;
        }
        return rc < 0 ? (int) rc : -Errno.EAGAIN;
    }

    @Override
    int reapQueued(CompletionSink sink, int max) {
        if (staged.get() != null) {
            adoptStaged();
        }
        int head = localCqHead;
        // Completions wait for us to enter the kernel. On a single-issuer (DEFER_TASKRUN) ring an
        // enter without a wait posts only a few (Linux 6.13+ runs 20 deferred items per enter and
        // sets the flag again): enter again while the flag stays up and fewer than max are posted,
        // a bounded number of times, so that one round takes a whole batch (review 9a).
        for (int enters = 0; enters < MAX_GETEVENTS_ENTERS && completionsAwaitEntry()
                && cq.getIntVolatile(cqTail) - head < max; enters++) {
            Native.syscall(Linux.SYS_IO_URING_ENTER, ringFd, 0, 0, IoUringDescriptor.ENTER_GETEVENTS, 0);
        }
        // Acquire: pairs with the kernel's release of the tail after it wrote the CQEs.
        int tail = cq.getIntVolatile(cqTail);
        if (head == tail) {
            flushOverflow();
            return 0;
        }
        int n = 0;
        while (n < max && head != tail) {
            int cqe = cqes + (head & cqMask) * CQE_LENGTH;
            long userData = cq.getLong(cqe + CQE_USER_DATA_OFFSET);
            if (userData < 0) {
                head = takePollCqe(cqe, head);
                continue; // a ring sleep's poll (RingPolls): never a request's completion
            }
            int slot = (int) userData;
            long result = cq.getInt(cqe + CQE_RES_OFFSET);
            head++;
            // Taken (one store: what kernelInFlight counts), then released to the kernel.
            localCqHead = head;
            // Release: the CQE is read before the kernel may overwrite it. Per entry, so a sink
            // that throws cannot cause a completion to be delivered twice.
            cq.putIntOrdered(cqHead, head);
            io.vblk.sys.FaultPoints.at(io.vblk.sys.FaultPoints.REAP_TAKEN); // tests only: see FaultPoints
            if (Image.isRefusal(result) && isZeroing(slots.op(slot))) {
                // Still in flight: it completes later, from the helper thread.
                image.refused(sqes.getInt(slot * SQE_LENGTH + SQE_LEN_OFFSET));
                reOffload(slot);
                continue;
            }
            complete(slot, result, sink);
            n++;
        }
        return n;
    }

    private static boolean isZeroing(int op) {
        return op == SlotTable.OP_DISCARD || op == SlotTable.OP_WRITE_ZEROES || op == SlotTable.OP_WRITE_ZEROES_UNMAP;
    }

    private void flushOverflow() {
        // The slots alone cannot fill the CQ (twice the SQ), but with the ring sleep's multishot
        // polls a flood of kicks can post more CQEs than it holds; the kernel then parks them on
        // its overflow list, and only an enter with GETEVENTS moves them to the ring.
        if ((sq.getIntVolatile(sqFlags) & IoUringDescriptor.SQ_CQ_OVERFLOW) != 0) {
            Native.syscall(Linux.SYS_IO_URING_ENTER, ringFd, 0, 0, IoUringDescriptor.ENTER_GETEVENTS, 0);
        }
    }

    /**
     * Takes the poll CQE at {@code head} (user data with the sign bit: {@link RingPolls}) and
     * returns the next head. Counted as not I/O before the head moves past it.
     */
    private int takePollCqe(int cqe, int head) {
        long userData = cq.getLong(cqe + CQE_USER_DATA_OFFSET);
        int result = cq.getInt(cqe + CQE_RES_OFFSET);
        int flags = cq.getInt(cqe + IoUringDescriptor.CQE_FLAGS_OFFSET);
        extraCqesReaped = extraCqesReaped + 1;
        int next = head + 1;
        localCqHead = next;
        cq.putIntOrdered(cqHead, next);
        RingPolls p = polls;
        if (p != null) {
            p.onCqe(userData, result, flags);
        }
        return next;
    }

    /**
     * Switches this ring to {@link RingSleep}: the kernel stops signalling the completion eventfd
     * (IORING_UNREGISTER_EVENTFD), which stays for user-space signals (the helper thread, a poll
     * that stopped at its maximum) and is itself watched by a poll in the ring. Null when the
     * kernel lacks multishot poll or EXT_ARG (before 5.13) or refuses; the caller then keeps epoll.
     * Submitting thread, before it sleeps (or before that thread starts).
     */
    @Override
    public RingSleep sleepInRing() {
        if (polls != null) {
            return polls;
        }
        if (!ringSleepSupported || signal.eventFd() == null || spareSqes == 0) {
            return null;
        }
        long rc = Native.syscall(Linux.SYS_IO_URING_REGISTER, ringFd, IoUringDescriptor.UNREGISTER_EVENTFD, 0, 0, 0);
        if (rc < 0) {
            return null;
        }
        RingPolls p = new RingPolls(this, sqes, slots.depth());
        p.watch(signal.eventFd().fd(), RingPolls.COMPLETION_TAG);
        polls = p;
        return p;
    }

    /** Once the ring sleeps: the kernel's completions no longer reach the eventfd, so wait in the ring. */
    @Override
    int awaitSignal(int timeoutMs) {
        RingPolls p = polls;
        return p == null ? super.awaitSignal(timeoutMs) : p.await(timeoutMs);
    }

    /** Queues SQE {@code index} (a {@link RingPolls} spare) at the SQ tail. Submitting thread. */
    void enqueueSqe(int index) {
        enqueue(index);
    }

    /**
     * {@link RingPolls}' enter: submits the {@code toSubmit} poll SQEs queued last (nothing else
     * is queued then), waits for {@code minComplete} CQEs, and takes back what the kernel did not
     * consume, so a later I/O submission never carries one. Returns how many it took.
     */
    int enterExtras(int toSubmit, int minComplete, int flags, long arg) {
        ensureEnabled();
        int head = sq.getIntVolatile(sqHead);
        if (toSubmit > 0) {
            sq.putIntOrdered(sqTail, localTail);
        }
        long rc;
        if ((flags & IoUringDescriptor.ENTER_EXT_ARG) != 0) {
            // Six arguments: the sixth (the argument's size) only survives jnr-ffi's slow path.
            rc = Native.syscall6(Linux.SYS_IO_URING_ENTER, ringFd, toSubmit, minComplete, flags, arg,
                    IoUringDescriptor.GETEVENTS_ARG_LENGTH);
        } else {
            rc = Native.syscall(Linux.SYS_IO_URING_ENTER, ringFd, toSubmit, minComplete, flags, 0);
        }
        int taken = sq.getIntVolatile(sqHead) - head;
        extraSqesTaken = extraSqesTaken + taken;
        if (localTail - head > taken) {
            // Only our enters consume SQEs (no SQPOLL), so the untaken tail can be withdrawn.
            localTail = head + taken;
            sq.putIntOrdered(sqTail, localTail);
        }
        return taken;
    }

    /** Waits in the ring for a CQE without touching the SQ (a drain on any reaping thread). */
    void enterWait(int flags, long arg) {
        ensureEnabled();
        if ((flags & IoUringDescriptor.ENTER_EXT_ARG) != 0) {
            Native.syscall6(Linux.SYS_IO_URING_ENTER, ringFd, 0, 1, flags, arg, IoUringDescriptor.GETEVENTS_ARG_LENGTH);
        } else {
            Native.syscall(Linux.SYS_IO_URING_ENTER, ringFd, 0, 1, flags, 0);
        }
    }

    @Override
    boolean hasQueuedCompletions() {
        return completionsPosted() || completionsAwaitEntry();
    }

    @Override
    int awaitQueued(long timeoutNs) {
        long deadline = System.nanoTime() + timeoutNs;
        while (kernelInFlight() > 0) {
            if (!completionsPosted()) {
                long left = timeoutNs < 0 ? -1 : deadline - System.nanoTime();
                if (timeoutNs >= 0 && left <= 0) {
                    // Past the deadline, one enter that does not wait still posts what the kernel
                    // finished (task work, the overflow list): a deadline used up elsewhere must
                    // not make a drained back end look undrained.
                    Native.syscall(Linux.SYS_IO_URING_ENTER, ringFd, 0, 0, IoUringDescriptor.ENTER_GETEVENTS, 0);
                    if (!completionsPosted()) {
                        return TIMED_OUT;
                    }
                    continue;
                }
                // Also runs completions waiting for this thread (cooperative task running).
                flushOverflow();
                long rc = awaitCqe(left);
                // EEXIST: a single-issuer ring closed by another thread than its owner while
                // operations were in flight (a drain gave them up): only the owner can have their
                // completions posted. The close then leaves their slots allocated (see close).
                if (rc < 0 && rc != -Errno.EINTR && rc != -Errno.EAGAIN && rc != -Errno.EBUSY && rc != -Errno.ETIME) {
                    return REFUSED;
                }
            }
            int tail = cq.getIntVolatile(cqTail);
            while (localCqHead != tail) {
                int cqe = cqes + (localCqHead & cqMask) * CQE_LENGTH;
                long userData = cq.getLong(cqe + CQE_USER_DATA_OFFSET);
                if (userData < 0) {
                    takePollCqe(cqe, localCqHead);
                    continue;
                }
                int slot = (int) userData;
                localCqHead++;
                cq.putIntOrdered(cqHead, localCqHead);
                dropCompletion(slot);
            }
        }
        return AWAITED;
    }

    /** Close's wait argument (EXT_ARG with a timeout), made on the first bounded wait. */
    private NativeBuffer closeWaitArg;

    /**
     * Close and its reaper: waits for a CQE, at most {@code timeoutNs} (negative: without
     * limit), in the ring when the kernel takes a timeout there (EXT_ARG), else by entering
     * without waiting (which posts what waits for this thread) and sleeping a slice. Returns
     * the enter's result.
     */
    private long awaitCqe(long timeoutNs) {
        if (timeoutNs < 0) {
            return Native.syscall(Linux.SYS_IO_URING_ENTER, ringFd, 0, 1, IoUringDescriptor.ENTER_GETEVENTS, 0);
        }
        if (ringSleepSupported) {
            if (closeWaitArg == null) {
                closeWaitArg = RingPolls.newGetEventsArg();
            }
            long arg = RingPolls.timeout(closeWaitArg, timeoutNs);
            long rc = Native.syscall6(Linux.SYS_IO_URING_ENTER, ringFd, 0, 1,
                    IoUringDescriptor.ENTER_GETEVENTS | IoUringDescriptor.ENTER_EXT_ARG, arg, IoUringDescriptor.GETEVENTS_ARG_LENGTH);
            java.lang.ref.Reference.reachabilityFence(closeWaitArg);
            return rc;
        }
        long rc = Native.syscall(Linux.SYS_IO_URING_ENTER, ringFd, 0, 0, IoUringDescriptor.ENTER_GETEVENTS, 0);
        if (rc >= 0 && !completionsPosted()) {
            java.util.concurrent.locks.LockSupport.parkNanos(Math.min(timeoutNs, CLOSE_WAIT_SLICE_NS));
        }
        return rc;
    }

    /** The longest sleep between looks of a bounded close wait on a kernel without EXT_ARG. */
    private static final long CLOSE_WAIT_SLICE_NS = 10_000_000L;

    @Override
    void release() {
        StagedBuffers s = staged.getAndSet(null);
        if (s != null) {
            s.discard();
        }
        boolean idle = kernelInFlight() == 0;
        ringsReleased = true;
        sqeMap.close();
        if (cqRingMap != sqRingMap) {
            cqRingMap.close();
        }
        sqRingMap.close();
        // Closing the ring cancels nothing here when awaitQueued left nothing in flight; after a
        // refused wait (a single-issuer ring's non-owner) the kernel's exit work cancels and waits
        // for the rest with its own references to the ring, while the slots stay allocated.
        Native.libc().close(ringFd);
        if (idle) {
            closeExitWatch(); // nothing left for the kernel: no exit to watch for
        }
    }
}
