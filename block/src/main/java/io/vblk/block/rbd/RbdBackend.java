package io.vblk.block.rbd;

import java.util.Map;

import org.agrona.concurrent.UnsafeBuffer;

import io.vblk.aio.CompletionSink;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoVector;
import io.vblk.block.SlotRing;
import io.vblk.sys.Errno;
import io.vblk.sys.EventFd;
import io.vblk.sys.NativeBuffer;

/**
 * A disk on a Ceph RBD image through librbd's asynchronous C API, as an {@link IoBackend}.
 * Requests are prepared into preallocated slots (each with its own native iovec array), and
 * {@link #submit()} issues them with {@code rbd_aio_readv/writev/flush/discard/write_zeroes}.
 * librbd announces completions on an eventfd ({@code rbd_set_image_notification}) and
 * {@link #poll} collects them with {@code rbd_poll_io_events}: no callback into the JVM per
 * request, no Java allocation per request (librbd allocates its completion object natively).
 *
 * <p>librbd's writeback cache is off unless the address turns it on ({@code :rbd_cache=true}):
 * completed writes are then on the OSDs, as after QEMU's {@code cache=none}.
 *
 * <p>A cluster that stops answering (an OSD or monitor down) is waited for by librados up to the
 * retry timeout ({@code rados_osd_op_timeout}); then the operation fails with
 * {@code -ETIMEDOUT}. A snapshot, or an image opened read-only, refuses changes with
 * {@code -EROFS}.
 */
public final class RbdBackend implements IoBackend {
    private static final byte OP_READ = 0;
    private static final byte OP_WRITE = 1;
    private static final byte OP_FLUSH = 2;
    private static final byte OP_DISCARD = 3;
    private static final byte OP_ZEROES = 4;

    private final Librbd lib;
    private final RbdAddress address;
    private final long cluster;
    private final long ioctx;
    private final long image;
    /** Volatile: {@link #resize} changes it on the control thread while requests are checked against it. */
    private volatile long sizeBytes;
    private final boolean readOnly;
    private final int depth;
    private final int maxSegments;

    // Slots.
    private final byte[] op;
    private final long[] offset;
    private final long[] length;
    private final int[] segments;
    private final int[] flags;
    private final long[] userData;
    private final long[] result;
    private final NativeBuffer iovecs;
    private final SlotRing free;
    private final SlotRing failed;
    private final int[] pending;
    private int pendingCount;

    private final EventFd completion = EventFd.create(true);
    private final NativeBuffer scratch = new NativeBuffer(64);
    private final NativeBuffer polled;
    private volatile long submitted;
    private volatile long completed;
    private volatile boolean closed;
    /**
     * Reaper only: a poll took completions whose signal (librbd writes the eventfd once per
     * completion, ours once per batch of failed submissions) may still be raised:
     * {@link #rearmCompletions()} then resets the eventfd before the reaper sleeps.
     */
    private boolean eventRaised;
    /** A write, discard or write-zeroes was issued (reaper only): a clean close then flushes. */
    private boolean wrote;
    /** rbd_flush calls a close made ({@link #close}); for tests. */
    private volatile int closeFlushes;

    private RbdBackend(Librbd lib, RbdAddress address, RbdOptions options, long cluster, long ioctx, long image,
            long sizeBytes, boolean readOnly) {
        this.lib = lib;
        this.address = address;
        this.cluster = cluster;
        this.ioctx = ioctx;
        this.image = image;
        this.sizeBytes = sizeBytes;
        this.readOnly = readOnly;
        depth = options.depth();
        maxSegments = options.maxSegments();
        op = new byte[depth];
        offset = new long[depth];
        length = new long[depth];
        segments = new int[depth];
        flags = new int[depth];
        userData = new long[depth];
        result = new long[depth];
        iovecs = new NativeBuffer(depth * maxSegments * 16);
        polled = new NativeBuffer(depth * 8);
        free = new SlotRing(depth);
        failed = new SlotRing(depth);
        pending = new int[depth];
        for (int i = 0; i < depth; i++) {
            free.offer(i);
        }
    }

    /**
     * Connects to the cluster, opens the image (read-only for a snapshot or when asked) and
     * routes its completions to an eventfd.
     *
     * @throws IllegalStateException when librbd is missing, the cluster unreachable or the image absent
     */
    public static RbdBackend open(String address, RbdOptions options) {
        return open(RbdAddress.parse(address), options);
    }

    /** Opens {@code address}; see {@link #open(String, RbdOptions)}. */
    public static RbdBackend open(RbdAddress address, RbdOptions options) {
        Librbd lib = Librbd.get();
        NativeBuffer out = new NativeBuffer(64);
        long cluster = 0;
        long ioctx = 0;
        long image = 0;
        try {
            check(lib.rados.rados_create(out.address(), address.id()), "rados_create", address);
            cluster = out.buffer().getLong(0);
            if (address.conf() != null) {
                check(lib.rados.rados_conf_read_file(cluster, address.conf()), "reading " + address.conf(), address);
            } else {
                lib.rados.rados_conf_read_file(cluster, null); // the default search path; absence is fine
            }
            String timeout = Integer.toString(options.retryTimeoutSeconds());
            check(lib.rados.rados_conf_set(cluster, "rados_osd_op_timeout", timeout), "rados_osd_op_timeout", address);
            check(lib.rados.rados_conf_set(cluster, "rados_mon_op_timeout", timeout), "rados_mon_op_timeout", address);
            check(lib.rados.rados_conf_set(cluster, "client_mount_timeout", timeout), "client_mount_timeout", address);
            // As QEMU does for cache=none: no librbd writeback cache, so a completed write is on
            // the OSDs and any other handle of the image (a migration's destination) reads it.
            // An address may turn it back on (:rbd_cache=true), overriding this below.
            check(lib.rados.rados_conf_set(cluster, "rbd_cache", "false"), "rbd_cache", address);
            // One librados completion thread instead of two: every completion passes through
            // this pool (msgr-worker -> io_context_pool -> our eventfd), and with two threads
            // the idle one is woken for nearly every reply. One thread that finds several
            // completions queued when it wakes measured ~0.4 fewer context switches per 4 KiB
            // read at depth 64 (scripts/bench-network, issue 14); context switches dominate the
            // client's CPU on a VM. One I/O thread per disk feeds it, so more threads do not
            // add parallelism here. An address may set it back (:librados_thread_count=2).
            check(lib.rados.rados_conf_set(cluster, "librados_thread_count", "1"), "librados_thread_count", address);
            for (Map.Entry<String, String> e : address.options().entrySet()) {
                check(lib.rados.rados_conf_set(cluster, e.getKey(), e.getValue()), "option " + e.getKey(), address);
            }
            check(lib.rados.rados_connect(cluster), "connecting to the cluster", address);
            check(lib.rados.rados_ioctx_create(cluster, address.pool(), out.address()), "opening pool " + address.pool(), address);
            ioctx = out.buffer().getLong(0);
            if (address.namespace() != null) {
                lib.rados.rados_ioctx_set_namespace(ioctx, address.namespace());
            }
            boolean readOnly = options.readOnly() || address.snapshot() != null;
            int rc = readOnly ? lib.rbd.rbd_open_read_only(ioctx, address.image(), out.address(), address.snapshot())
                    : lib.rbd.rbd_open(ioctx, address.image(), out.address(), address.snapshot());
            check(rc, "opening image " + address.image(), address);
            image = out.buffer().getLong(0);
            check(lib.rbd.rbd_get_size(image, out.address()), "rbd_get_size", address);
            long size = out.buffer().getLong(0);
            RbdBackend disk = new RbdBackend(lib, address, options, cluster, ioctx, image, size, readOnly);
            rc = lib.rbd.rbd_set_image_notification(image, disk.completion.fd(), Librbd.EVENT_TYPE_EVENTFD);
            if (rc < 0) {
                disk.close();
                check(rc, "rbd_set_image_notification", address);
            }
            return disk;
        } catch (RuntimeException e) {
            if (image != 0) {
                lib.rbd.rbd_close(image);
            }
            if (ioctx != 0) {
                lib.rados.rados_ioctx_destroy(ioctx);
            }
            if (cluster != 0) {
                lib.rados.rados_shutdown(cluster);
            }
            throw e;
        }
    }

    private static void check(int rc, String what, RbdAddress address) {
        if (rc < 0) {
            throw new IllegalStateException("RBD " + address + ": " + what + " failed: " + Errno.describe(-rc) + " (" + rc + ")");
        }
    }

    /**
     * The value of Ceph client option {@code name} this disk's cluster handle runs with (what the
     * driver set, overridden by the address), or null when librados does not know it. Control
     * path only: it allocates.
     */
    String clientOption(String name) {
        if (closed) {
            return null;
        }
        NativeBuffer value = new NativeBuffer(256); // freed with it by the collector
        int rc = lib.rados.rados_conf_get(cluster, name, value.address(), value.capacity());
        if (rc < 0) {
            return null;
        }
        byte[] bytes = new byte[value.capacity()];
        value.buffer().getBytes(0, bytes);
        int end = 0;
        while (end < bytes.length && bytes[end] != 0) {
            end++;
        }
        return new String(bytes, 0, end, java.nio.charset.StandardCharsets.US_ASCII);
    }

    /** The image's size in bytes (the snapshot's, for a snapshot). */
    public long sizeBytes() {
        return sizeBytes;
    }

    /**
     * Changes the image's size with {@code rbd_resize} (synchronous: a round trip to the cluster,
     * so never on the data path; QEMU's rbd driver does the same). Requests are checked against
     * the new size once it returns. Growing adds space that reads as zeros; shrinking drops the
     * data past the new end.
     *
     * @throws java.io.IOException when librbd refuses (a snapshot or read-only image, a cluster
     *         that does not answer), with its reason
     */
    public synchronized void resize(long newSizeBytes) throws java.io.IOException {
        if (newSizeBytes < 0) {
            throw new IllegalArgumentException("size must not be negative: " + newSizeBytes);
        }
        if (closed) {
            throw new java.io.IOException("RBD " + address + " is closed");
        }
        if (readOnly) {
            throw new java.io.IOException("RBD " + address + " is read-only" + (address.snapshot() != null
                    ? " (a snapshot)" : "") + ": it cannot be resized");
        }
        if (newSizeBytes == sizeBytes) {
            return;
        }
        int rc = lib.rbd.rbd_resize(image, newSizeBytes);
        if (rc < 0) {
            throw new java.io.IOException("RBD " + address + ": rbd_resize to " + newSizeBytes + " bytes failed: "
                    + Errno.describe(-rc) + " (" + rc + ")");
        }
        sizeBytes = newSizeBytes;
    }

    /** Whether changes are refused (a snapshot, or opened read-only). */
    public boolean readOnly() {
        return readOnly;
    }

    @Override
    public int depth() {
        return depth;
    }

    @Override
    public int freeSlots() {
        return free.size();
    }

    @Override
    public int prepareRead(long offset, IoVector buffers, long userData) {
        return prepareTransfer(OP_READ, offset, buffers, userData);
    }

    @Override
    public int prepareWrite(long offset, IoVector buffers, long userData) {
        if (readOnly) {
            return -Errno.EROFS;
        }
        return prepareTransfer(OP_WRITE, offset, buffers, userData);
    }

    private int prepareTransfer(byte kind, long at, IoVector buffers, long tag) {
        if (closed) {
            return -Errno.EBADF;
        }
        long total = buffers.totalLength();
        if (buffers.count() > maxSegments || buffers.count() == 0 || !inRange(at, total)) {
            return -Errno.EINVAL;
        }
        int slot = take();
        if (slot < 0) {
            return -Errno.EAGAIN;
        }
        fill(slot, kind, at, total, 0, tag);
        UnsafeBuffer iov = iovecs.buffer();
        int base = slot * maxSegments * 16;
        for (int i = 0; i < buffers.count(); i++) {
            iov.putLong(base + 16 * i, buffers.address(i));
            iov.putLong(base + 16 * i + 8, buffers.length(i));
        }
        segments[slot] = buffers.count();
        return 0;
    }

    @Override
    public int prepareFlush(long userData) {
        if (closed) {
            return -Errno.EBADF;
        }
        int slot = take();
        if (slot < 0) {
            return -Errno.EAGAIN;
        }
        fill(slot, OP_FLUSH, 0, 0, 0, userData);
        return 0;
    }

    @Override
    public int prepareDiscard(long offset, long length, long userData) {
        return prepareRange(OP_DISCARD, offset, length, 0, userData);
    }

    @Override
    public int prepareWriteZeroes(long offset, long length, boolean mayUnmap, long userData) {
        return prepareRange(OP_ZEROES, offset, length, mayUnmap ? 0 : Librbd.WRITE_ZEROES_FLAG_THICK_PROVISION, userData);
    }

    private int prepareRange(byte kind, long at, long len, int zeroFlags, long tag) {
        if (closed) {
            return -Errno.EBADF;
        }
        if (readOnly) {
            return -Errno.EROFS;
        }
        if (!inRange(at, len)) {
            return -Errno.EINVAL;
        }
        int slot = take();
        if (slot < 0) {
            return -Errno.EAGAIN;
        }
        fill(slot, kind, at, len, zeroFlags, tag);
        return 0;
    }

    private boolean inRange(long at, long len) {
        return at >= 0 && len >= 0 && at <= sizeBytes - len;
    }

    private int take() {
        return pendingCount == pending.length ? -1 : free.poll();
    }

    private void fill(int slot, byte kind, long at, long len, int zeroFlags, long tag) {
        op[slot] = kind;
        offset[slot] = at;
        length[slot] = len;
        flags[slot] = zeroFlags;
        userData[slot] = tag;
        segments[slot] = 0;
        pending[pendingCount++] = slot;
    }

    /** Issues every prepared operation to librbd (which queues them to its own threads). */
    @Override
    public int submit() {
        int n = pendingCount;
        if (n == 0) {
            return 0;
        }
        boolean anyFailed = false;
        long out = scratch.address();
        for (int i = 0; i < n; i++) {
            int slot = pending[i];
            int rc = lib.rbd.rbd_aio_create_completion(slot, 0, out);
            if (rc >= 0) {
                long c = scratch.buffer().getLong(0);
                rc = issue(slot, c);
                if (rc < 0) {
                    lib.rbd.rbd_aio_release(c);
                }
            }
            if (rc < 0) {
                result[slot] = rc;
                failed.offer(slot);
                anyFailed = true;
            }
        }
        pendingCount = 0;
        submitted = submitted + n;
        if (anyFailed) {
            completion.signal();
        }
        return n;
    }

    private int issue(int slot, long c) {
        wrote |= op[slot] != OP_READ && op[slot] != OP_FLUSH;
        switch (op[slot]) {
            case OP_READ:
                return lib.rbd.rbd_aio_readv(image, iovecs.address() + (long) slot * maxSegments * 16, segments[slot], offset[slot], c);
            case OP_WRITE:
                return lib.rbd.rbd_aio_writev(image, iovecs.address() + (long) slot * maxSegments * 16, segments[slot], offset[slot], c);
            case OP_FLUSH:
                return lib.rbd.rbd_aio_flush(image, c);
            case OP_DISCARD:
                return lib.rbd.rbd_aio_discard(image, offset[slot], length[slot], c);
            default:
                return lib.rbd.rbd_aio_write_zeroes(image, offset[slot], length[slot], c, flags[slot], 0);
        }
    }

    @Override
    public int pendingSubmit() {
        return pendingCount;
    }

    @Override
    public int inFlight() {
        return (int) (submitted - completed);
    }

    @Override
    public int poll(CompletionSink sink, int max) {
        int reaped = 0;
        int slot;
        while (reaped < max && (slot = failed.poll()) >= 0) {
            reaped += deliver(slot, result[slot], sink);
        }
        if (reaped > 0) {
            eventRaised = true;
        }
        if (reaped < max && !closed) {
            int want = Math.min(max - reaped, depth);
            int n = lib.rbd.rbd_poll_io_events(image, polled.address(), want);
            if (n > 0) {
                eventRaised = true;
            }
            for (int i = 0; i < n; i++) {
                long c = polled.buffer().getLong(8 * i);
                long arg = lib.rbd.rbd_aio_get_arg(c);
                long rc = lib.rbd.rbd_aio_get_return_value(c);
                lib.rbd.rbd_aio_release(c);
                if (arg < 0 || arg >= depth) {
                    continue; // not ours: cannot happen, but a bad index must not touch the slots
                }
                int s = (int) arg;
                long value = rc < 0 ? rc : (op[s] == OP_READ ? readResult(s, rc) : op[s] == OP_WRITE ? length[s] : 0);
                reaped += deliver(s, value, sink);
            }
            if (n == want) {
                completion.signal(); // there may be more: leave the source readable
            }
        }
        return reaped;
    }

    /**
     * A read's result from librbd's: the bytes it read. librbd clips a read that straddles the
     * end another client shrank the image to and returns the shorter length; the tail it did not
     * read is zero-filled (as QEMU's rbd driver does), so the guest never sees its buffer's stale
     * bytes as disk contents. A length beyond the request's is EIO.
     */
    private long readResult(int slot, long rc) {
        long len = length[slot];
        if (rc == len) {
            return len;
        }
        if (rc > len) {
            return -Errno.EIO;
        }
        UnsafeBuffer iov = iovecs.buffer();
        int base = slot * maxSegments * 16;
        long skip = rc;
        for (int i = 0; i < segments[slot]; i++) {
            long addr = iov.getLong(base + 16 * i);
            long n = iov.getLong(base + 16 * i + 8);
            if (skip >= n) {
                skip -= n;
                continue;
            }
            org.agrona.UnsafeApi.setMemory(addr + skip, n - skip, (byte) 0);
            skip = 0;
        }
        return len;
    }

    private int deliver(int slot, long value, CompletionSink sink) {
        long tag = userData[slot];
        free.offer(slot);
        completed = completed + 1;
        sink.complete(tag, value);
        return 1;
    }

    /**
     * Resets the eventfd that completions a poll already took left raised (librbd writes it once
     * per completion, whether or not a poll then takes it: a lump reaped by busy rounds left it
     * readable, and the next sleep woke at once to nothing). librbd's completion queue cannot be
     * looked at without taking from it, so after a reset this answers true: the reaper polls once
     * more instead of sleeping, and that poll takes every completion whose signal the reset
     * consumed (librbd queues a completion before it writes the eventfd). A completion queued
     * after that poll writes the eventfd after the reset, so the sleep wakes for it. No read when
     * no poll took anything since the last reset: a raised eventfd then announces completions
     * still queued, a wake-up that finds work.
     */
    @Override
    public boolean rearmCompletions() {
        if (!eventRaised || closed) {
            return false;
        }
        eventRaised = false;
        completion.read();
        return true;
    }

    @Override
    public EventFd completionEvent() {
        return completion;
    }

    @Override
    public int awaitCompletions(int timeoutMs) {
        return completion.await(timeoutMs);
    }

    /**
     * Waits for operations in flight (dropping their completions); then, drained, a writable
     * image that was written is flushed (rbd_flush: librbd's writeback cache, when an address
     * turned it on, reaches the OSDs before the handle goes, as QEMU's bdrv_close flushes; a
     * failure is logged, close has no caller to report to); then closes image, pool and cluster.
     * A read-only image never flushes.
     */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        pendingCount = 0;
        long deadline = System.nanoTime() + 60_000_000_000L;
        while (inFlight() > 0 && System.nanoTime() < deadline) {
            completion.read();
            if (poll((t, r) -> { }, depth) == 0) {
                completion.await(10);
            }
        }
        if (!readOnly && wrote && inFlight() == 0) {
            int rc = lib.rbd.rbd_flush(image);
            closeFlushes++;
            if (rc < 0) {
                System.getLogger(RbdBackend.class.getName()).log(System.Logger.Level.ERROR, "rbd: {0} the final flush at"
                        + " close failed: {1}; writes may not be durable", address, Errno.describe(-rc));
            }
        }
        closed = true;
        lib.rbd.rbd_close(image);
        lib.rados.rados_ioctx_destroy(ioctx);
        lib.rados.rados_shutdown(cluster);
        completion.close();
    }

    /** rbd_flush calls close made (0 or 1); for tests. */
    int closeFlushes() {
        return closeFlushes;
    }

    @Override
    public String toString() {
        return "RbdBackend[" + address + ", " + sizeBytes + " bytes" + (readOnly ? ", read-only" : "") + "]";
    }
}
