package io.vblk.block;

import io.vblk.aio.CompletionSink;
import io.vblk.aio.Drainable;
import io.vblk.aio.IoVector;

/**
 * A block driver: turns guest requests (virtual-disk offsets) into operations on whatever holds
 * the disk (a file through an {@link io.vblk.aio.IoBackend}, a qcow2 image and its backing
 * chain, a network server). One driver serves one I/O thread; every method but
 * {@link #inFlight()} and {@link #close()} is called on that thread.
 *
 * <h2>A round</h2>
 * The I/O thread calls {@link #poll} (reap), then the request methods for every request it pops,
 * then {@link #submit()} once. A driver whose request needs several steps (metadata read, data
 * I/O, metadata update) advances them from {@link #poll}: each step it prepares there is
 * submitted with the same round's {@link #submit()}, so metadata and data operations share one
 * system call per round. Nothing here blocks, allocates in steady state, locks or logs.
 *
 * <h2>Contract</h2>
 * <ul>
 *   <li>A request method that returns 0 has accepted the request: exactly one completion with its
 *       {@code tag} is delivered later through {@link #poll}, whatever happens (errors complete
 *       with {@code -errno}). A request method that returns {@code -errno} changed nothing:
 *       {@code -EAGAIN} no room now, {@code -EINVAL} out of range or misaligned, {@code -EROFS}
 *       a change to a read-only disk, {@code -EIO} a corrupt image, {@code -EBADF} closed.</li>
 *   <li>Offsets and lengths are in bytes of the virtual disk, multiples of 512.</li>
 *   <li>The {@link IoVector} given to {@link #read} or {@link #write} and the memory it names
 *       stay valid and unchanged until the request completes (the engine keeps one per request
 *       slot), so a driver may keep the reference and carve it into back-end operations later;
 *       it must not keep it after the completion.</li>
 *   <li>A driver that finishes a request without a back-end event (zeros, a cached answer, an
 *       error found later) delivers it from the next {@link #poll} and counts it in
 *       {@link #pendingSubmit()} until then, so the I/O thread polls again before it sleeps.</li>
 *   <li>{@link #freeSlots()} requests of the worst kind (a read, write or one discard range) are
 *       guaranteed to be accepted.</li>
 *   <li>Completion sources: file descriptors the I/O thread adds to its epoll set and sleeps on
 *       (an aio back end's eventfd; a network driver's socket or its own eventfd). When one is
 *       readable the thread calls {@link #acknowledge(int)} and then {@link #poll}. A driver must
 *       leave no completion stranded: whenever work is ready that {@link #poll} did not deliver,
 *       one of its sources stays or becomes readable (or {@link #pendingSubmit()} is non-zero).
 *       A network driver typically exposes its socket (replies) and, if it has a sending thread,
 *       an eventfd; level-triggered sources must be drained (or acknowledged) by
 *       {@link #poll}/{@link #acknowledge} so they do not wake the thread forever.</li>
 * </ul>
 */
public interface BlockDriver extends Drainable, AutoCloseable {
    /** The format name ({@code raw}, {@code qcow2}, {@code nbd}...). */
    String format();

    /** The size of the virtual disk in bytes. */
    long sizeBytes();

    /** Whether every change is refused with {@code -EROFS}. */
    boolean readOnly();

    /** The largest number of requests in flight at once. */
    int depth();

    /** Requests that can be accepted now (see the contract). */
    int freeSlots();

    /** Reads {@code buffers.totalLength()} bytes at {@code offset} into {@code buffers}. */
    int read(long offset, IoVector buffers, long tag);

    /** Writes {@code buffers} at {@code offset}. */
    int write(long offset, IoVector buffers, long tag);

    /** Completes once every write completed before it is durable. */
    int flush(long tag);

    /** Deallocates a range where possible; advisory (WRITE_ZEROES zeroes): reads of it may return the old data or zeros. */
    int discard(long offset, long length, long tag);

    /** Zeroes a range; with {@code mayUnmap} it may be deallocated. */
    int writeZeroes(long offset, long length, boolean mayUnmap, long tag);

    /**
     * Hands everything prepared (by request methods and by {@link #poll}) to the back ends with
     * one system call each. Returns the operations taken, or {@code -errno} when none could be
     * (they stay pending).
     */
    int submit();

    /** Operations prepared and not yet taken by {@link #submit()}. */
    int pendingSubmit();

    /** Requests accepted and not yet completed (any thread). */
    int inFlight();

    /**
     * Gives back the slots of completions lost to an exception the JVM threw inside the reap or
     * submit (a guest-memory fault delivered late: engine GuestFaults), when nothing is in flight
     * and nothing pending (then every slot still taken is lost). Returns how many came back.
     * Reaping thread only. By default nothing: a driver that cannot tell keeps them out.
     */
    default int reclaimLostSlots() {
        return 0;
    }

    /**
     * Reaps back-end completions, advances multi-step requests and delivers up to {@code max}
     * finished requests to {@code sink} (with their tag and bytes or {@code -errno}); returns how
     * many it delivered. Never blocks.
     */
    int poll(CompletionSink sink, int max);

    /**
     * Offers to reap on the I/O thread that submits (see {@link
     * io.vblk.aio.IoBackend#reapOnSubmittingThread()}): the I/O thread checks {@link
     * #completionsReady()} after it submits and before it sleeps. A driver that accepts (true)
     * may then leave requests it finished inside {@link #submit()} without raising a completion
     * source. Declined by default.
     */
    default boolean reapOnSubmittingThread() {
        return false;
    }

    /** Whether finished requests wait for {@link #poll} without a raised completion source. */
    default boolean completionsReady() {
        return false;
    }

    /**
     * Whether the driver's one back end is a single-issuer io_uring ring (see {@link
     * io.vblk.aio.IoBackend#singleIssuer()}): only the thread that first entered it submits and
     * reaps. False by default.
     */
    default boolean singleIssuer() {
        return false;
    }

    /**
     * After {@link #close()}: whether nothing this driver handed the kernel can still read or
     * write guest memory or its files (see {@link io.vblk.aio.IoBackend#closedDrained()}). True by
     * default: a driver with no kernel I/O of its own (a network disk copies on the I/O thread).
     */
    default boolean closedDrained() {
        return true;
    }

    /**
     * Runs {@code action} once the driver is closed and {@link #closedDrained()} holds: at once
     * when it already does, else when the last back end that still had operations with the
     * kernel is released (see {@link io.vblk.aio.IoBackend#whenDrained}), on the thread that
     * releases it; never if none ever is. Call after {@link #close()}; control path. By
     * default: at once when {@link #closedDrained()} holds, else never.
     */
    default void whenDrained(Runnable action) {
        if (closedDrained()) {
            action.run();
        }
    }

    /** See {@link io.vblk.aio.IoBackend#registrationPending()}. False by default. */
    default boolean registrationPending() {
        return false;
    }

    /**
     * Switches the I/O thread's sleep into the driver's one io_uring ring (see {@link
     * io.vblk.aio.IoBackend#sleepInRing()}); null where the driver has no single ring that can
     * (several back ends, linux-aio, threads, a network server): the thread then keeps epoll
     * over {@link #completionSources()}. After a switch those sources are no longer watched.
     * Call once, before the I/O thread starts or on it.
     */
    default io.vblk.aio.RingSleep sleepInRing() {
        return null;
    }

    /** How many completion sources the I/O thread should watch (0 or more). */
    int completionSources();

    /** The file descriptor of completion source {@code i}, watched for {@code EPOLLIN}. */
    int completionFd(int i);

    /** Resets completion source {@code i} after it woke the thread (e.g. reads an eventfd). */
    void acknowledge(int i);

    /**
     * The I/O thread, about to sleep on {@link #completionSources()} after rounds that reaped:
     * resets the sources completions already reaped left readable, then returns whether
     * completions are ready to {@link #poll} after all (the thread polls instead of sleeping).
     * A completion after the reset keeps or makes a source readable. Default: nothing reset,
     * false (a source left readable costs a wake-up that finds no work, never a lost one).
     */
    default boolean rearmCompletions() {
        return false;
    }

    /**
     * Blocks up to {@code timeoutMs} until completions may be available (drain and tests only;
     * the I/O thread sleeps in epoll on the completion sources). 1, 0 on timeout, or -errno.
     */
    int awaitCompletions(int timeoutMs);

    /**
     * Online resize: gives the virtual disk {@code newSizeBytes} bytes (a multiple of 512).
     * Called on the driver's I/O thread between rounds (the device runs it as a command there),
     * before the device announces a larger size and after it announced a smaller one. Growing
     * keeps every byte; shrinking drops the tail, and a format refuses it where that is not
     * trivially safe. Synchronous: a resize is rare and may wait for its metadata writes.
     *
     * @throws UnsupportedOperationException when this kind of disk cannot be resized here, with
     *         a reason a person understands
     * @throws IllegalArgumentException for a size the format cannot take
     * @throws java.io.IOException when the resize was attempted and failed (the disk keeps its
     *         old size)
     */
    default void resize(long newSizeBytes) throws java.io.IOException {
        String owner = "nbd".equals(format()) ? " (the server owns the size)" : "";
        throw new UnsupportedOperationException("online resize is not supported for " + format() + " images" + owner);
    }

    /**
     * Whether the driver may use (and write) its image: false for a format image opened inactive
     * (a live migration's destination, BDRV_O_INACTIVE) or handed over, until {@link #activate}.
     * True by default: a driver without state of its own about the image has nothing to hand over.
     */
    default boolean active() {
        return true;
    }

    /**
     * Takes the image over (a migration's destination at its device's start, or a source taking
     * it back): the writer's locks, then every piece of metadata read afresh, nothing cached
     * from before trusted, since another backend wrote the file meanwhile. Driver's I/O thread,
     * with no request in flight. Returns whether the state changed; nothing by default.
     *
     * @throws io.vblk.sys.ImageLock.LockedException while another user still holds a writer's
     *         lock (the driver stays inactive)
     * @throws java.io.IOException when the image cannot be read again (the driver stays inactive)
     */
    default boolean activate() throws java.io.IOException {
        return false;
    }

    /**
     * Hands the image over (a migration's source, its queues stopped and drained): metadata
     * written back, reserved space returned, everything durable, then the writer's locks
     * dropped to the inactive set; from then on the driver writes nothing (not even at close)
     * until {@link #activate}. Driver's I/O thread. Returns whether the state changed; nothing
     * by default.
     *
     * @throws java.io.IOException when the metadata cannot be written back or made durable (the
     *         driver stays active)
     */
    default boolean inactivate() throws java.io.IOException {
        return false;
    }

    /**
     * Registers guest memory ranges with the driver's back end as fixed buffers (see {@link
     * io.vblk.aio.IoBackend#registerBuffers}); I/O thread, with nothing prepared and not
     * submitted. Returns the buffers registered or {@code -errno}; by default {@code
     * -EOPNOTSUPP} (a format or network driver that does not use them).
     */
    default int registerBuffers(long[] addresses, long[] lengths) {
        return -io.vblk.sys.Errno.EOPNOTSUPP;
    }

    /** Drops the fixed buffers (I/O thread). Nothing by default. */
    default void unregisterBuffers() {
    }

    /** What is registered as fixed buffers, or why nothing is. */
    default String bufferRegistration() {
        return "not supported by the " + format() + " driver";
    }

    /** Acknowledges every completion source (the drain loop's reset step). */
    /**
     * The local files this driver opened and keeps open, the image first and then every backing
     * file of its chain (those opened read-only): what a caller that must not export one file
     * twice identifies by descriptor, whatever names they had when opened. Empty for a network
     * disk and for a driver over a back end it was handed (its caller opened the file).
     */
    default java.util.List<io.vblk.aio.Image> files() {
        return java.util.List.of();
    }

    @Override
    default void acknowledgeCompletions() {
        for (int i = 0, n = completionSources(); i < n; i++) {
            acknowledge(i);
        }
    }

    /**
     * Waits for what is in flight, writes back what the format needs for a clean image, and frees
     * everything the driver opened. Idempotent.
     */
    @Override
    void close();

    /**
     * As {@link #close()}, waiting at most {@code timeoutNs} for what is in flight (a caller with
     * a deadline of its own passes what is left of it): past it the driver closes undrained,
     * freeing nothing the kernel may still write ({@link #closedDrained()} false). By default
     * {@link #close()}.
     */
    default void closeWithin(long timeoutNs) {
        close();
    }
}
