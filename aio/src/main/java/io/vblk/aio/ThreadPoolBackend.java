package io.vblk.aio;

import java.io.IOException;
import java.lang.invoke.VarHandle;
import java.nio.ByteBuffer;
import java.nio.channels.ClosedChannelException;
import java.nio.channels.FileChannel;
import java.nio.channels.NonWritableChannelException;
import java.nio.file.Files;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.LockSupport;

import org.agrona.BufferUtil;
import org.agrona.concurrent.ManyToManyConcurrentArrayQueue;
import org.agrona.concurrent.ManyToOneConcurrentArrayQueue;

import io.vblk.sys.Errno;
import io.vblk.sys.Linux;

/**
 * Positional {@link FileChannel} I/O on a small pool of worker threads: the portable back end.
 * It needs nothing but {@code java.nio} (on Linux it uses fallocate for discard and an eventfd
 * to signal), so it runs on any OS.
 *
 * <p>{@link #submit()} moves the prepared operations onto a lock-free work queue and unparks as
 * many idle workers as there are operations; a worker performs one operation at a time with
 * blocking positional reads and writes (segment by segment: FileChannel has no positional
 * vectored I/O), stores the result in the slot, queues the slot for the reaper and raises the
 * completion signal (at most once per poll). Nothing is allocated per operation: slot numbers
 * travel as preallocated boxes and each worker owns a {@link NativeWindow} onto guest memory.
 *
 * <p>O_DIRECT through {@code ExtendedOpenOption.DIRECT}: Java demands that positions, lengths
 * and buffer addresses be multiples of the filesystem block size, which may exceed the kernel's
 * own rule. Buffers that miss it are bounced; an offset or length that misses it (but meets the
 * kernel's rule) goes through a buffered channel on the same file, which Linux keeps coherent
 * with direct I/O.
 *
 * <p>It holds its image from creation to a drained close (or the reaper's release), as every
 * back end does ({@link Image#close()}): an embedder's image close meanwhile is deferred, and
 * the workers' channels (opened on the image's own open file, fetched once) keep reaching that
 * file; what needs the image afresh (its channels, its zero run) fails cleanly once it is closed.
 */
final class ThreadPoolBackend extends SlottedBackend {
    /** Transfer plan: through the buffered channel, as is. */
    static final int BUFFERED = 2;
    /** One bit per worker in the idle mask. */
    static final int MAX_WORKERS = Long.SIZE;
    private static final int PORTABLE_ZERO_CHUNK_BYTES = 256 * 1024;
    private static final long JOIN_TIMEOUT_MS = 10_000;
    private static final int CLOSE_WAIT_MS = 100;

    private final Integer[] boxes;
    private final ManyToManyConcurrentArrayQueue<Integer> work;
    private final ManyToOneConcurrentArrayQueue<Integer> done;
    private final boolean[] buffered;
    /**
     * Slots prepared for the workers, indexed by their number among everything ever offered: the
     * next to hand over is number {@code work.addedCount()} (the submitter is the queue's only
     * producer), so handing one over and counting it are the same step.
     */
    private final int[] pending;
    private final int pendingMask;
    private long pendingTail;
    private final long channelAlignmentMask;
    private final FileChannel channel;
    private final FileChannel bufferedChannel;
    private final Worker[] workers;
    /** Bit i set: worker i is parked, or about to park after one more look at the queue. */
    private final AtomicLong idle;
    private volatile boolean running = true;
    /** Set once {@link #release()} saw every worker end: only then does the image go ({@link #fileReleased()}). */
    private volatile boolean workersEnded;

    ThreadPoolBackend(Image image, BackendOptions options) {
        super(image, options, Image.LINUX && !image.portable() ? CompletionSignal.overEventFd() : CompletionSignal.parking());
        // The image is held from here: whatever fails below (an OutOfMemoryError too: a worker's
        // direct window, a thread the system refuses to start) stops the workers already
        // started, frees what was made and gives the hold back, once.
        Worker[] started = new Worker[0];
        try {
            setupStep("threads start");
            int depth = options.depth();
            int threads = options.workerThreads();
            if (threads > MAX_WORKERS) {
                throw new IllegalArgumentException("at most " + MAX_WORKERS + " worker threads, not " + threads);
            }
            this.idle = new AtomicLong();
            this.boxes = new Integer[depth];
            for (int slot = 0; slot < depth; slot++) {
                boxes[slot] = slot;
            }
            // Agrona's queues hold at least two entries.
            this.work = new ManyToManyConcurrentArrayQueue<>(Math.max(2, depth));
            this.done = new ManyToOneConcurrentArrayQueue<>(Math.max(2, depth));
            this.buffered = new boolean[depth];
            this.pending = new int[org.agrona.BitUtil.findNextPositivePowerOfTwo(depth)];
            this.pendingMask = pending.length - 1;
            this.channelAlignmentMask = channelAlignment(image) - 1;
            this.workers = new Worker[threads];
            started = workers;
            try {
                // Fetched once: Image hands them out under a lock, which has no place per operation.
                this.channel = image.channel();
                this.bufferedChannel = image.direct() ? image.bufferedChannel() : channel;
            } catch (IOException e) {
                throw new IllegalStateException("cannot open a channel on " + image, e);
            }
            for (int i = 0; i < threads; i++) {
                setupStep("threads worker " + i);
                Worker worker = new Worker(i);
                worker.thread.start();
                workers[i] = worker; // only once started: the failure path joins what is listed
            }
            setupStep("threads end");
        } catch (Throwable t) {
            stopStarted(started);
            signal.close();
            slots.close();
            setupFailed();
            throw t;
        }
    }

    /**
     * A failed set-up: ends the workers it started (nothing was handed to them), waiting for
     * them before the hold goes, so none is left to reach the image's channels.
     */
    private void stopStarted(Worker[] started) {
        running = false;
        for (Worker worker : started) {
            if (worker != null) {
                LockSupport.unpark(worker.thread);
            }
        }
        boolean interrupted = false;
        for (Worker worker : started) {
            while (worker != null && worker.thread.isAlive()) {
                try {
                    worker.thread.join();
                } catch (InterruptedException e) {
                    interrupted = true;
                }
            }
        }
        if (interrupted) {
            Thread.currentThread().interrupt();
        }
    }

    /** The alignment Java's DIRECT channel enforces: the file store's block size. */
    private static long channelAlignment(Image image) {
        if (!image.direct()) {
            return 1;
        }
        long block;
        try {
            block = Files.getFileStore(image.path()).getBlockSize();
        } catch (IOException | UnsupportedOperationException e) {
            block = Linux.PAGE_SIZE;
        }
        block = Math.max(block, image.offsetAlignment());
        return Long.bitCount(block) == 1 && block <= Linux.PAGE_SIZE ? block : Linux.PAGE_SIZE;
    }

    @Override
    int planTransfer(long offset, IoVector buffers, long total) {
        int kernelPlan = super.planTransfer(offset, buffers, total);
        if (kernelPlan < 0 || channelAlignmentMask == 0) {
            return kernelPlan;
        }
        if (((offset | total) & channelAlignmentMask) != 0) {
            return BUFFERED;
        }
        // Java checks every buffer's address and remaining length against one alignment. What
        // is too big to bounce can still go through the page cache.
        int channelPlan = plan(offset, buffers, total, channelAlignmentMask, channelAlignmentMask);
        return channelPlan == BOUNCE && total > maxBounceBytes() ? BUFFERED : channelPlan;
    }

    @Override
    void enqueueTransfer(int slot, boolean isWrite, int plan) {
        buffered[slot] = plan == BUFFERED;
        enqueue(slot);
    }

    @Override
    void enqueueFlush(int slot) {
        enqueue(slot);
    }

    @Override
    void enqueueZeroing(int slot) {
        enqueue(slot);
    }

    private void enqueue(int slot) {
        pending[(int) pendingTail & pendingMask] = slot;
        pendingTail++;
    }

    @Override
    int queuedCount() {
        return (int) (pendingTail - work.addedCount());
    }

    /**
     * Offered to the workers and not taken back: both counted by the queues themselves as each
     * offer and each poll happens, so no exception can leave the count off.
     */
    @Override
    int kernelInFlight() {
        return (int) (work.addedCount() - done.removedCount());
    }

    @Override
    int submitQueued() {
        int n = 0;
        for (long next = work.addedCount(); next != pendingTail; next = work.addedCount()) {
            n++;
            Integer box = boxes[pending[(int) next & pendingMask]];
            // Never logically full (as many entries as slots), but Agrona's many-to-many queue
            // refuses an offer onto the entry a worker has claimed and not yet released: a
            // worker preempted inside poll() while the others cycle the ring round to it. The
            // offer must not be dropped (the operation would be in flight for ever, and close
            // would wait for it); the worker finishes its release as soon as it runs again.
            while (!work.offer(box)) {
                Thread.yield();
            }
        }
        // Dekker with the workers (they set their idle bit, then look at the queue again): the
        // queue's publish is a release store, which may pass our load of the idle mask; without
        // a full fence a worker can miss the entry while we miss its bit, and everyone sleeps
        // with work queued. Once per batch.
        VarHandle.fullFence();
        wakeWorkers(n);
        return n;
    }

    private void wakeWorkers(int wanted) {
        int woken = 0;
        while (woken < wanted) {
            long mask = idle.get();
            if (mask == 0) {
                return;
            }
            long lowest = mask & -mask;
            if (idle.compareAndSet(mask, mask & ~lowest)) {
                LockSupport.unpark(workers[Long.numberOfTrailingZeros(lowest)].thread);
                woken++;
            }
        }
    }

    @Override
    int reapQueued(CompletionSink sink, int max) {
        int n = 0;
        while (n < max) {
            Integer slot = done.poll();
            if (slot == null) {
                break;
            }
            io.vblk.sys.FaultPoints.at(io.vblk.sys.FaultPoints.REAP_TAKEN); // tests only: see FaultPoints
            complete(slot, slots.result(slot), sink);
            n++;
        }
        return n;
    }

    @Override
    boolean hasQueuedCompletions() {
        return !done.isEmpty();
    }

    @Override
    int awaitQueued(long timeoutNs) {
        // A worker stuck in a call (a hung FUSE or NFS file) holds the close no longer than the
        // deadline; the reaper then waits on (its slots and the caller's memory stay).
        long deadline = System.nanoTime() + timeoutNs;
        while (kernelInFlight() > 0) {
            Integer slot = done.poll();
            if (slot != null) {
                dropCompletion(slot);
            } else {
                long left = timeoutNs < 0 ? Long.MAX_VALUE : deadline - System.nanoTime();
                if (left <= 0) {
                    return TIMED_OUT;
                }
                rearmSignal();
                if (done.isEmpty()) {
                    signal.await((int) Math.max(1, Math.min(CLOSE_WAIT_MS, TimeUnit.NANOSECONDS.toMillis(left))));
                }
            }
        }
        return AWAITED;
    }

    /**
     * Operations queued for the workers and not yet taken never touched the file: an undrained
     * close takes them back (they go to {@code done}, which close drops), so that the reaper
     * waits only for the ones a worker is performing, and none starts after close (the workers
     * run until the reaper's release: a queued write could otherwise reach the file after the
     * server recovered, when another writer may hold its locks).
     */
    @Override
    int dropUnstarted() {
        int n = 0;
        for (Integer slot = work.poll(); slot != null; slot = work.poll()) {
            slots.result(slot, -Errno.ECANCELED);
            done.offer(slot); // never full: as many entries as slots
            n++;
        }
        return n;
    }

    /**
     * The workers reach the file through the image's channels, which are other open file
     * descriptions than the locked descriptor, and closing a channel waits for a worker stuck
     * in it: the image stays open (descriptor, locks, channels; the hold every back end takes
     * at creation) until the reaper's release saw every worker end.
     */
    @Override
    boolean fileReleased() {
        return workersEnded;
    }

    @Override
    void release() {
        running = false;
        for (Worker worker : workers) {
            LockSupport.unpark(worker.thread);
        }
        for (Worker worker : workers) {
            try {
                worker.thread.join(JOIN_TIMEOUT_MS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return;
            }
        }
        for (Worker worker : workers) {
            if (worker.thread.isAlive()) {
                return; // still in the file: the image stays held (leaked rather than unlocked under it)
            }
        }
        workersEnded = true;
    }

    private void setIdle(long bit) {
        long mask;
        do {
            mask = idle.get();
        } while (!idle.compareAndSet(mask, mask | bit));
    }

    private void clearIdle(long bit) {
        long mask;
        do {
            mask = idle.get();
        } while ((mask & bit) != 0 && !idle.compareAndSet(mask, mask & ~bit));
    }

    /** One pool thread and what it owns: its window onto guest memory and its zero buffer. */
    private final class Worker implements Runnable {
        private final long bit;
        private final Thread thread;
        private final NativeWindow window = new NativeWindow();
        private ByteBuffer zeros;
        /** This worker's BLKDISCARD range ({@link Image#discard}); made on its first discard. */
        private io.vblk.sys.NativeBuffer discardRange;

        Worker(int index) {
            this.bit = 1L << index;
            this.thread = new Thread(this, "vblk-aio-threads-" + index);
            thread.setDaemon(true);
        }

        @Override
        public void run() {
            while (running) {
                Integer slot = work.poll();
                if (slot != null) {
                    perform(slot);
                    continue;
                }
                // Advertise idleness, then look once more: a submitter that queued before it
                // saw the bit is found by this look; one that queues after it unparks us.
                setIdle(bit);
                slot = work.poll();
                if (slot != null) {
                    clearIdle(bit);
                    perform(slot);
                    continue;
                }
                if (running) {
                    LockSupport.park(this);
                }
                clearIdle(bit);
            }
        }

        private void perform(int slot) {
            slots.result(slot, execute(slot));
            // Never full: the queue holds as many entries as there are slots.
            done.offer(boxes[slot]);
            signalCompletions();
        }

        private long execute(int slot) {
            try {
                switch (slots.op(slot)) {
                    case SlotTable.OP_READ:
                        return transfer(slot, false);
                    case SlotTable.OP_WRITE:
                        return transfer(slot, true);
                    case SlotTable.OP_FLUSH:
                        channel.force(false);
                        return 0;
                    case SlotTable.OP_DISCARD:
                    case SlotTable.OP_WRITE_ZEROES:
                    case SlotTable.OP_WRITE_ZEROES_UNMAP:
                        return zero(slot);
                    case SlotTable.OP_FAILED:
                        return slots.result(slot);
                    default:
                        return -Errno.EINVAL;
                }
            } catch (ClosedChannelException | NonWritableChannelException e) {
                return -Errno.EBADF;
            } catch (IOException e) {
                return -Errno.EIO;
            } catch (IllegalArgumentException e) {
                return -Errno.EINVAL;
            } catch (OutOfMemoryError e) {
                // Direct memory (the first discard's range, the portable zero chunk, a channel's
                // temporary buffer), shared by every disk, used up: this request fails, and the
                // worker lives on (its death would strand every request it was dealt).
                return -Errno.EIO;
            }
        }

        private long transfer(int slot, boolean isWrite) throws IOException {
            FileChannel target = buffered[slot] ? bufferedChannel : channel;
            long position = slots.offset(slot);
            long moved = 0;
            for (int i = 0, n = slots.submissionIovecCount(slot); i < n; i++) {
                ByteBuffer segment = window.wrap(slots.submissionAddress(slot, i), (int) slots.submissionLength(slot, i));
                while (segment.hasRemaining()) {
                    int rc = isWrite ? target.write(segment, position) : target.read(segment, position);
                    if (rc < 0) {
                        return moved;
                    }
                    moved += rc;
                    position += rc;
                }
            }
            return moved;
        }

        private long zero(int slot) throws IOException {
            int op = slots.op(slot);
            long offset = slots.offset(slot);
            long length = slots.length(slot);
            if (op == SlotTable.OP_DISCARD) {
                // Advisory: a hole or BLKDISCARD, never written zeros (none at all when portable).
                if (discardRange == null) {
                    discardRange = new io.vblk.sys.NativeBuffer(Image.DISCARD_RANGE_BYTES); // once per worker
                }
                return image.portable() ? 0 : image.discard(offset, length, discardRange.address(), closing());
            }
            if (!image.portable()) {
                int mode = image.writeZeroesMode(op == SlotTable.OP_WRITE_ZEROES_UNMAP);
                return image.zeroRange(offset, length, mode, op != SlotTable.OP_WRITE_ZEROES, closing());
            }
            if (zeros == null) {
                // Aligned so that a DIRECT channel accepts it; made on first use (rare).
                zeros = BufferUtil.allocateDirectAligned(PORTABLE_ZERO_CHUNK_BYTES, Linux.PAGE_SIZE);
            }
            FileChannel target = ((offset | length) & channelAlignmentMask) == 0 ? channel : bufferedChannel;
            long position = offset;
            long end = offset + length;
            while (position < end) {
                zeros.clear().limit((int) Math.min(zeros.capacity(), end - position));
                while (zeros.hasRemaining()) {
                    position += target.write(zeros, position);
                }
            }
            return 0;
        }
    }

    @Override
    public String toString() {
        return "ThreadPoolBackend[depth " + depth() + ", " + workers.length + " workers, in flight " + inFlight()
                + ", " + image + "]";
    }
}
