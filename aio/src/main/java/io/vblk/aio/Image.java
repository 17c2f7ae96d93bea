package io.vblk.aio;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.OpenOption;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Locale;

import com.sun.nio.file.ExtendedOpenOption;

import org.agrona.UnsafeApi;
import org.agrona.concurrent.UnsafeBuffer;

import io.vblk.sys.Errno;
import io.vblk.sys.Linux;
import io.vblk.sys.Mapping;
import io.vblk.sys.Native;
import io.vblk.sys.NativeBuffer;
import io.vblk.sys.NativeException;
import io.vblk.sys.PosixFile;

/**
 * A disk image: a raw file or a block device, opened once for all of a device's back ends.
 *
 * <p>With O_DIRECT (the default) the kernel demands alignment. {@link #offsetAlignment()} (file
 * offsets and lengths, and each segment's length) and {@link #memoryAlignment()} (buffer
 * addresses) come from statx(STATX_DIOALIGN), the filesystem's own answer; where the kernel does
 * not report it, the logical block size of a block device or the filesystem block size of a file
 * stands in (conservative). Back ends bounce guest buffers that miss the memory alignment, and
 * refuse offsets that miss the offset alignment; {@link #logicalBlockSize()} is what the device
 * should advertise so that a well-behaved guest never sends those.
 *
 * <p>Discard and write-zeroes use fallocate (punch hole, zero range) and fall back to writing
 * zeros where the filesystem refuses a mode; a refusal is remembered for the image's lifetime.
 */
public final class Image implements AutoCloseable {
    static final boolean LINUX = System.getProperty("os.name", "").toLowerCase(Locale.ROOT).startsWith("linux");

    /** Zeros are written in chunks of this size when fallocate is refused. */
    static final int ZERO_CHUNK_BYTES = 1 << 20;
    /**
     * The most one zeroing step covers: a discard or write-zeroes (up to ~512 GiB from a guest)
     * is done as fallocate calls, or written zeros, over chunks of this size, with a look at the
     * caller's cancellation between chunks (and between the 1 MiB writes of written zeros).
     * Measured here (ext4 on /tmp, OffloadTest prints it, on the shared 2-core machine): a 64 MiB
     * punch hole about 1 ms, a zero range under 0.1 ms, 64 MiB of written zeros 0.2-1.8 s; so a
     * close waits at most one fallocate chunk or one 1 MiB write for a zeroing in progress.
     */
    static final long ZEROING_CHUNK_BYTES = 64L << 20;
    private static final int SECTOR_BYTES = 512;

    private final Path path;
    private final ImageOptions options;
    private final PosixFile file;
    /** Volatile: {@link #resize} and {@link #extendTo(long)} change it while back ends check requests against it. */
    private volatile long sizeBytes;
    private final boolean blockDevice;
    private final int memoryAlignment;
    private final int offsetAlignment;
    private final int logicalBlockSize;
    private volatile boolean punchHoleSupported;
    private volatile boolean zeroRangeSupported;
    private Mapping zeros;
    private FileChannel channel;
    private FileChannel bufferedChannel;
    private volatile boolean closed;
    /**
     * A flush of this file failed (an fdatasync, an io_uring or Linux AIO FDSYNC, the thread back
     * end's force): sticky, for every back end on the file and for {@link #fdatasync()}. Linux
     * reports a writeback error once per open file and may drop the dirty pages it could not
     * write, so a retried flush would succeed with the data gone; from here on every flush fails
     * with EIO instead (QEMU's page_cache_inconsistent). Only reopening the image clears it.
     */
    private volatile boolean flushFailed;
    /**
     * Tests only (a seam like sys FaultPoints): the errno the next successful flush completion
     * reports instead, 0 for none. There is no dm-error without root to fail a real fdatasync.
     */
    public volatile int injectFlushErrno;
    /**
     * Tests only (null in production): runs just before the final fdatasync of a close, so a
     * test can hold it there, as a slow disk would.
     */
    volatile Runnable beforeFinalSync;
    /**
     * Back ends that still reach the file: every back end over this image holds it from its
     * creation until its close has drained (for a close that returned undrained, until the
     * reaper saw the kernel, or the thread back end's workers, let go). While any holds the
     * image, {@link #close()} only marks it closed and defers closing the descriptor and
     * channels to the last {@link #releaseHold}. A back end that runs past an embedder's close
     * keeps naming its descriptor by number (Linux AIO's iocbs, io_uring's SQEs without a
     * registered file): closed, that number could name the next file the process opens, and the
     * guest's writes would land there. Closing a channel waits (FileChannelImpl's signalAndWait)
     * for every thread blocked in it, which held the closer (an export.remove) for ever; and the
     * image's OFD locks live on the descriptor's open file description (the thread back end's
     * channels are other descriptions, opened via /proc/self/fd/N), so closing it under a
     * running back end dropped the locks while it could still write. Guarded by this.
     */
    private int holds;
    /** {@link #close()} was deferred by holds and its final fdatasync with it (guarded by this). */
    private boolean syncAtLastRelease;
    private final BounceBudget bounceBudget;

    private Image(Path path, ImageOptions options, PosixFile file, long sizeBytes, boolean blockDevice,
                  int memoryAlignment, int offsetAlignment, int logicalBlockSize) {
        this.path = path;
        this.options = options;
        this.file = file;
        this.sizeBytes = sizeBytes;
        this.blockDevice = blockDevice;
        this.memoryAlignment = memoryAlignment;
        this.offsetAlignment = offsetAlignment;
        this.logicalBlockSize = logicalBlockSize;
        this.punchHoleSupported = options.fallocate() && file != null;
        this.zeroRangeSupported = options.fallocate() && file != null;
        this.bounceBudget = new BounceBudget(options.bounceBudgetBytes());
    }

    /** The bounce memory this image's back ends (its device) may borrow at once. */
    public BounceBudget bounceBudget() {
        return bounceBudget;
    }

    /**
     * Opens a raw file or block device.
     *
     * @throws NativeException when open(2) or statx(2) fails (errno and path in the message)
     * @throws IllegalArgumentException when {@code path} is neither a regular file nor a block device
     * @throws UncheckedIOException when a portable open fails
     */
    public static Image open(Path path, ImageOptions options) {
        if (options.beneath() != null && (options.portable() || !LINUX)) {
            throw new IllegalArgumentException("cannot confine " + path + " to " + options.beneath()
                    + ": that needs the native open (openat2, Linux)");
        }
        if (options.portable() || !LINUX) {
            return openPortable(path, options);
        }
        // Only a regular file or a block device: a FIFO (its open would block for ever), a
        // character device or a socket is refused, whoever named it (a qcow2 backing name too).
        PosixFile file = options.beneath() != null
                ? PosixFile.openFileOrBlockDeviceBeneath(options.beneath(), path, options.readOnly(), options.direct())
                : PosixFile.openFileOrBlockDevice(path, options.readOnly(), options.direct());
        try {
            return describe(path, options, file);
        } catch (RuntimeException e) {
            file.close();
            throw e;
        }
    }

    private static Image describe(Path path, ImageOptions options, PosixFile file) {
        NativeBuffer statx = new NativeBuffer(StatxDescriptor.LENGTH);
        NativeBuffer emptyPath = new NativeBuffer(8);
        long rc = Native.syscall(StatxDescriptor.SYS_STATX, file.fd(), emptyPath.address(),
                StatxDescriptor.AT_EMPTY_PATH,
                StatxDescriptor.STATX_TYPE | StatxDescriptor.STATX_SIZE | StatxDescriptor.STATX_DIOALIGN,
                statx.address());
        if (rc < 0) {
            throw new NativeException((int) -rc, "statx", file.fd(), "\"\"", "AT_EMPTY_PATH", path);
        }
        UnsafeBuffer stx = statx.buffer();
        boolean blockDevice = (stx.getShort(StatxDescriptor.MODE_OFFSET) & StatxDescriptor.S_IFMT)
                == StatxDescriptor.S_IFBLK;
        int sectorBytes = blockDevice ? deviceLogicalBlockSize(file) : SECTOR_BYTES;
        long sizeBytes = file.sizeBytes();
        int memAlign = 1;
        int offAlign = 1;
        if (options.direct()) {
            int dioMem = stx.getInt(StatxDescriptor.DIO_MEM_ALIGN_OFFSET);
            int dioOff = stx.getInt(StatxDescriptor.DIO_OFFSET_ALIGN_OFFSET);
            boolean reported = (stx.getInt(StatxDescriptor.MASK_OFFSET) & StatxDescriptor.STATX_DIOALIGN) != 0
                    && dioMem > 0 && dioOff > 0;
            if (reported) {
                memAlign = dioMem;
                offAlign = dioOff;
            } else {
                // Not reported (older kernel, tmpfs, a block device before 6.11): assume the
                // strictest plausible rule so that nothing we submit fails with EINVAL.
                int fallback = blockDevice ? sectorBytes
                        : Math.max(SECTOR_BYTES, Math.min(Linux.PAGE_SIZE, stx.getInt(StatxDescriptor.BLKSIZE_OFFSET)));
                memAlign = fallback;
                offAlign = fallback;
            }
            checkPowerOfTwo(memAlign, "dio memory alignment", path);
            checkPowerOfTwo(offAlign, "dio offset alignment", path);
        }
        int logical = Math.max(sectorBytes, offAlign);
        return new Image(path, options, file, sizeBytes, blockDevice, memAlign, offAlign, logical);
    }

    private static int deviceLogicalBlockSize(PosixFile file) {
        NativeBuffer out = new NativeBuffer(8);
        Native.check(Native.libc().ioctl(file.fd(), Linux.BLKSSZGET, out.address()), "ioctl", file.fd(), "BLKSSZGET");
        return out.buffer().getInt(0);
    }

    private static void checkPowerOfTwo(int value, String what, Path path) {
        if (value <= 0 || (value & (value - 1)) != 0 || value > Linux.PAGE_SIZE) {
            // Bounce buffers are page-aligned mappings: an alignment above a page cannot be met.
            throw new IllegalStateException(what + " of " + path + " is " + value
                    + ": expected a power of two no larger than " + Linux.PAGE_SIZE);
        }
    }

    private static Image openPortable(Path path, ImageOptions options) {
        try {
            long sizeBytes;
            try (FileChannel probe = FileChannel.open(path, StandardOpenOption.READ)) {
                sizeBytes = probe.size();
            }
            int align = 1;
            if (options.direct()) {
                align = (int) Math.min(Linux.PAGE_SIZE, Math.max(SECTOR_BYTES, Files.getFileStore(path).getBlockSize()));
            }
            Image image = new Image(path, options, null, sizeBytes, false, align, align, Math.max(SECTOR_BYTES, align));
            image.channel();
            return image;
        } catch (IOException e) {
            throw new UncheckedIOException("cannot open image " + path + " " + options, e);
        }
    }

    /** The path the image was opened from. */
    public Path path() {
        return path;
    }

    /** The options it was opened with. */
    public ImageOptions options() {
        return options;
    }

    /** The capacity in bytes, fixed at open. */
    public long sizeBytes() {
        return sizeBytes;
    }

    /** Whether writes are refused. */
    public boolean readOnly() {
        return options.readOnly();
    }

    /** Whether the image bypasses the host page cache (O_DIRECT). */
    public boolean direct() {
        return options.direct();
    }

    /** Whether it is a block device rather than a regular file. */
    public boolean blockDevice() {
        return blockDevice;
    }

    /** Whether it was opened through {@code java.nio} only (no descriptor, no native calls). */
    public boolean portable() {
        return file == null;
    }

    /**
     * The descriptor, or -1 for a portable image. Back ends take it once, at setup, and hold
     * the image ({@link #hold()}) for their life, so the number stays this file's while they run.
     *
     * @throws IllegalStateException once closed: the number may already belong to another file
     */
    public int fd() {
        if (closed) {
            // Even while a back end's hold keeps it open: the number is only ours until then.
            throw new IllegalStateException("closed: " + path);
        }
        return file == null ? -1 : file.fd();
    }

    /**
     * fdatasync(2) of the image; returns 0 or {@code -errno}, {@code -EBADF} once closed (never
     * a sync of whatever file reuses the number), {@code -EINVAL} for a portable image.
     */
    public int fdatasync() {
        if (file == null) {
            return -Errno.EINVAL;
        }
        return (int) flushCompleted(file.fdatasync());
    }

    /**
     * Every flush's result on this file passes through here (back ends call it as a flush
     * completes): a failure makes every later flush fail with EIO ({@link #flushFailed}).
     * ECANCELED (a flush a close cancelled, never run) and EBADF (the image already closed) say
     * nothing of the file's data. A volatile read per flush, no lock.
     */
    public long flushCompleted(long result) {
        if (result == 0 && injectFlushErrno != 0) {
            result = -injectFlushErrno; // tests only: a failed fdatasync, which nothing else here can cause
            injectFlushErrno = 0;
        }
        if (result < 0 && result != -Errno.ECANCELED && result != -Errno.EBADF) {
            if (!flushFailed) {
                flushFailed = true;
                System.getLogger("io.vblk.aio").log(System.Logger.Level.ERROR, "vblk: flush of {0} failed ({1});"
                        + " every later flush fails with EIO until the image is reopened", path, Errno.describe((int) -result));
            }
            return result;
        }
        return result == 0 && flushFailed ? -Errno.EIO : result;
    }

    /** Whether a flush of this file failed: every later one fails (see {@link #flushCompleted}). */
    public boolean flushFailed() {
        return flushFailed;
    }

    /** The block size the device should advertise: a sector, or the O_DIRECT offset alignment if larger. */
    public int logicalBlockSize() {
        return logicalBlockSize;
    }

    /** The alignment O_DIRECT requires of buffer addresses (1 when buffered). */
    public int memoryAlignment() {
        return memoryAlignment;
    }

    /** The alignment O_DIRECT requires of file offsets and lengths (1 when buffered). */
    public int offsetAlignment() {
        return offsetAlignment;
    }

    /**
     * Changes the size of the image file (ftruncate(2)): growing adds a hole that reads as zeros,
     * shrinking drops the tail. Only for a writable regular file opened by path.
     *
     * @throws IllegalStateException for a block device, a read-only, a portable or a closed image
     * @throws io.vblk.sys.NativeException when the kernel refuses (no space for the metadata, a
     *         file size limit)
     */
    public synchronized void resize(long newSizeBytes) {
        if (newSizeBytes <= 0 || newSizeBytes % SECTOR_BYTES != 0) {
            throw new IllegalArgumentException("size must be a positive multiple of " + SECTOR_BYTES + ": " + newSizeBytes);
        }
        if (blockDevice || options.readOnly() || file == null || closed) {
            // Closed: the descriptor number may belong to another disk by now. Synchronized
            // with close, so no close slips between this check and the ftruncate.
            throw new IllegalStateException("cannot resize " + path + ": " + (closed ? "closed"
                    : blockDevice ? "a block device" : options.readOnly() ? "opened read-only" : "not a file"));
        }
        Native.check(Native.libc().ftruncate(file.fd(), newSizeBytes), "ftruncate", path, newSizeBytes);
        sizeBytes = newSizeBytes;
    }

    /**
     * Learns the file's size afresh, for an image format whose file another process grew or
     * shrank meanwhile (a migration's source wrote it while this image was inactive). Control
     * path only; nothing for a portable or closed image. Returns the size now known.
     */
    public synchronized long refreshSize() {
        if (file == null || closed || blockDevice) {
            return sizeBytes;
        }
        sizeBytes = file.sizeBytes();
        return sizeBytes;
    }

    /**
     * Grows the file to {@code newSizeBytes} with allocated blocks (fallocate, falling back to
     * ftruncate only where the file system cannot preallocate: EOPNOTSUPP, ENOSYS; ENOSPC and
     * every other error fail), for an image format that allocates clusters at the end of its file. One call
     * per batch of clusters, never per request. A file another writer already grew to
     * {@code newSizeBytes} or more (seen only after a failed fallocate) is taken at its size: 0.
     * Returns 0 or {@code -errno} ({@code -EBADF} once closed); shrinking is refused.
     */
    public int extendTo(long newSizeBytes) {
        long old = sizeBytes;
        if (newSizeBytes <= old) {
            return newSizeBytes == old ? 0 : -io.vblk.sys.Errno.EINVAL;
        }
        if (file == null || options.readOnly()) {
            return -io.vblk.sys.Errno.EROFS;
        }
        int rc = file.fallocate(0, old, newSizeBytes - old);
        if (rc == -Errno.EOPNOTSUPP || rc == -Errno.ENOSYS) {
            // A file system that cannot preallocate: a sparse extension will do. Never after
            // ENOSPC or EDQUOT: the blocks are not there, and writes into them would fail later.
            rc = file.ftruncate(newSizeBytes);
        }
        if (rc == 0) {
            sizeBytes = newSizeBytes;
        } else if (rc != -Errno.EBADF) {
            // Another writer may have grown the file past the size known here (a migration's
            // source): then the size is learnt, not allocated; the range it added was its to fill
            // (rev14e M-b: fallocating its sparse part failed with ENOSPC on a full file system).
            long real;
            try {
                real = file.sizeBytes();
            } catch (RuntimeException closedOrFailed) {
                return rc;
            }
            if (real >= newSizeBytes) {
                sizeBytes = real;
                return 0;
            }
        }
        return rc;
    }

    /** Whether {@code [offset, offset + length)} lies inside the image (overflow-safe). */
    boolean contains(long offset, long length) {
        return offset >= 0 && length >= 0 && offset <= sizeBytes && length <= sizeBytes - offset;
    }

    /** The fallocate mode for a discard, or 0 when zeros must be written instead. */
    int discardMode() {
        return punchHoleSupported && !blockDevice ? Linux.FALLOC_FL_PUNCH_HOLE | Linux.FALLOC_FL_KEEP_SIZE : 0;
    }

    /**
     * Whether a DISCARD has nothing to do here: a file whose file system does not punch holes (or
     * fallocate is off). DISCARD is advisory (virtio-blk promises no zeroed reads after it, that
     * is WRITE_ZEROES), so it then completes at once without writing (rev13a: it wrote zeros, up
     * to 2 GiB per 16-byte request, outside the bytes/s throttle).
     */
    boolean discardIsNoOp() {
        return !blockDevice && discardMode() == 0;
    }

    /** Bytes of the {@code uint64_t[2]} range BLKDISCARD reads. */
    static final int DISCARD_RANGE_BYTES = 16;

    /**
     * Discards a range synchronously, blocking the calling thread (a helper or worker, never an
     * I/O thread): BLKDISCARD on a block device (the range at {@code rangeScratch}, the caller's
     * {@link #DISCARD_RANGE_BYTES} of native memory), a punched hole in a file. Never writes: a
     * refused punch hole (remembered) or a device without discard completes with 0, as DISCARD
     * is advisory. Chunked as {@link #zeroRange}, cut short with {@code -ECANCELED} when
     * {@code cancelled} turns true between two chunks. Returns 0 or {@code -errno}.
     */
    int discard(long offset, long length, long rangeScratch, java.util.function.BooleanSupplier cancelled) {
        if (file == null) {
            return 0; // portable: no descriptor to punch or discard with
        }
        for (long done = 0; done < length; ) {
            if (cancelled.getAsBoolean()) {
                return -Errno.ECANCELED;
            }
            long chunk = Math.min(ZEROING_CHUNK_BYTES, length - done);
            int rc;
            if (blockDevice) {
                UnsafeApi.putLong(rangeScratch, offset + done);
                UnsafeApi.putLong(rangeScratch + 8, chunk);
                rc = (int) io.vblk.sys.Native.result(io.vblk.sys.Native.libc().ioctl(file.fd(), Linux.BLKDISCARD, rangeScratch));
            } else {
                int mode = discardMode();
                if (mode == 0) {
                    return 0;
                }
                rc = file.fallocate(mode, offset + done, chunk);
                if (isRefusal(rc)) {
                    refused(mode);
                    return 0;
                }
            }
            if (rc == -Errno.EOPNOTSUPP) {
                return 0; // the device does not discard: nothing to do
            }
            if (rc < 0) {
                return rc;
            }
            done += chunk;
        }
        return 0;
    }

    /** The fallocate mode for a write-zeroes, or 0 when zeros must be written instead. */
    int writeZeroesMode(boolean mayUnmap) {
        if (mayUnmap && punchHoleSupported) {
            return Linux.FALLOC_FL_PUNCH_HOLE | Linux.FALLOC_FL_KEEP_SIZE;
        }
        // Without unmap the blocks must stay allocated: zero range, never a hole.
        return zeroRangeSupported ? Linux.FALLOC_FL_ZERO_RANGE | Linux.FALLOC_FL_KEEP_SIZE : 0;
    }

    /** Records that the filesystem refused {@code mode} (EOPNOTSUPP), so it is not tried again. */
    void refused(int mode) {
        if ((mode & Linux.FALLOC_FL_PUNCH_HOLE) != 0) {
            punchHoleSupported = false;
        }
        if ((mode & Linux.FALLOC_FL_ZERO_RANGE) != 0) {
            zeroRangeSupported = false;
        }
    }

    /** Whether a fallocate result means "this filesystem does not do that mode". */
    static boolean isRefusal(long result) {
        return result == -Errno.EOPNOTSUPP;
    }

    /**
     * Zeroes a range synchronously, blocking the calling thread (never an I/O thread: back ends
     * call it from a helper or worker thread), starting with {@code mode} (0: write zeros) and
     * falling back along the chain punch hole, zero range, written zeros when a mode is refused.
     * Works in {@link #ZEROING_CHUNK_BYTES} chunks and returns {@code -ECANCELED} when
     * {@code cancelled} turns true between two. Thread-safe. Returns 0 or {@code -errno}. Needs a
     * descriptor (not portable).
     */
    int zeroRange(long offset, long length, int mode, boolean mayUnmap, java.util.function.BooleanSupplier cancelled) {
        int current = mode;
        for (long done = 0; done < length; ) {
            if (cancelled.getAsBoolean()) {
                return -Errno.ECANCELED;
            }
            long chunk = Math.min(ZEROING_CHUNK_BYTES, length - done);
            int rc;
            while (true) {
                if (current == 0) {
                    rc = writeZeros(offset + done, chunk, cancelled);
                    break;
                }
                rc = file.fallocate(current, offset + done, chunk);
                if (!isRefusal(rc)) {
                    break;
                }
                refused(current);
                int next = writeZeroesMode(mayUnmap);
                current = next == current ? 0 : next;
            }
            if (rc < 0) {
                return rc;
            }
            done += chunk;
        }
        return 0;
    }

    /**
     * Writes zeros over a range with pwrite from a shared zero page run, {@link #ZERO_CHUNK_BYTES}
     * per call, looking at {@code cancelled} between calls. Returns 0 or {@code -errno}.
     */
    int writeZeros(long offset, long length, java.util.function.BooleanSupplier cancelled) {
        if (((offset | length) & (offsetAlignment - 1)) != 0) {
            return -Errno.EINVAL;
        }
        Mapping zeroRun = zeros();
        if (zeroRun == null) {
            return -Errno.EBADF;
        }
        long zeroAddress = zeroRun.address();
        long done = 0;
        while (done < length) {
            if (cancelled.getAsBoolean()) {
                return -Errno.ECANCELED;
            }
            long chunk = Math.min(ZERO_CHUNK_BYTES, length - done);
            long rc = file.pwrite(zeroAddress, chunk, offset + done);
            if (rc < 0) {
                if (rc == -Errno.EINTR) {
                    continue;
                }
                return (int) rc;
            }
            if (rc == 0) {
                return -Errno.EIO;
            }
            done += rc;
        }
        return 0;
    }

    /** The shared zero run, mapped on first use; null once closed (nothing is mapped after close). */
    private synchronized Mapping zeros() {
        if (closed) {
            return null;
        }
        if (zeros == null) {
            zeros = Mapping.anonymous(ZERO_CHUNK_BYTES, false);
        }
        return zeros;
    }

    /**
     * The channel for positional I/O: opened with {@link ExtendedOpenOption#DIRECT} when the image
     * is direct, else buffered. Opened on first use; closed with the image.
     */
    synchronized FileChannel channel() throws IOException {
        if (closed) {
            throw new java.nio.channels.ClosedChannelException();
        }
        if (channel == null) {
            channel = options.direct() ? openChannel(true) : bufferedChannel();
        }
        return channel;
    }

    /** A buffered channel on the same file, for operations O_DIRECT cannot express. */
    synchronized FileChannel bufferedChannel() throws IOException {
        if (closed) {
            throw new java.nio.channels.ClosedChannelException();
        }
        if (bufferedChannel == null) {
            bufferedChannel = openChannel(false);
        }
        return bufferedChannel;
    }

    private FileChannel openChannel(boolean direct) throws IOException {
        OpenOption[] opts = direct
                ? (options.readOnly() ? new OpenOption[] {StandardOpenOption.READ, ExtendedOpenOption.DIRECT}
                        : new OpenOption[] {StandardOpenOption.READ, StandardOpenOption.WRITE, ExtendedOpenOption.DIRECT})
                : (options.readOnly() ? new OpenOption[] {StandardOpenOption.READ}
                        : new OpenOption[] {StandardOpenOption.READ, StandardOpenOption.WRITE});
        // Through the open descriptor, never by path: the image's locks are held on that
        // descriptor, and the path may name another file by now (renamed and replaced).
        // /proc/self/fd/N reaches the same inode; the caller holds this image's monitor, which
        // close takes, so the number is still ours.
        return FileChannel.open(file == null ? path : Path.of("/proc/self/fd/" + file.fd()), opts);
    }

    /** Whether {@link #close()} was called. */
    public boolean isClosed() {
        return closed;
    }

    /**
     * Closes the descriptor and channels, after a final fdatasync of a writable image (as QEMU's
     * bdrv_close). Close the back ends on the image first: then this closes at once.
     *
     * <p>A back end still open (a running device whose embedder closes the image first), or
     * one whose close returned undrained (I/O stuck in the kernel), holds the image ({@link
     * #hold()}): this then only marks it closed and returns at once, never waiting for the back
     * end; the descriptor, its locks and the channels stay open until the last such back end is
     * closed and drained, and the real close (with the final fdatasync, when that back end's close
     * drained) happens then, exactly once, on the thread that closes it (or the reaper of undrained
     * closes, without the fdatasync). Meanwhile the back end's I/O still reaches this file, never
     * another one that reuses the descriptor's number; {@link #fd()}, {@link #resize} and new back
     * ends are refused as closed.
     *
     * <p>The final fdatasync and the close run outside the image's lock (decided under it, by
     * one thread only), so a slow disk keeps no other caller of the image waiting; a second
     * {@code close} returns at once, possibly before the first one's sync is done.
     */
    @Override
    public void close() {
        synchronized (this) {
            if (closed) {
                return;
            }
            closed = true;
            if (holds > 0) {
                // A back end still reaches the file: the last releaseHold closes (see holds). No
                // fdatasync here: the back end may be stuck in a hung file system, and this must
                // not wait for it.
                syncAtLastRelease = true;
                return;
            }
        }
        finishClose(true);
    }

    /**
     * The close decided under the lock (closed, no hold left, so {@link #hold()} refuses and
     * nothing reopens a channel or the zero run): done by the one thread that decided it, out of
     * the lock, as an fdatasync may take as long as the disk likes. The descriptor is closed only
     * after the sync returned, so the sync never meets a closed (or reused) number.
     */
    private void finishClose(boolean sync) {
        try {
            if (sync) {
                finalSync();
            }
        } finally {
            closeNow();
        }
    }

    /**
     * A clean close makes what was written durable, as QEMU's does (bdrv_close flushes): a guest
     * or an embedder that never sent a last FLUSH keeps its writes across a power cut after
     * close. Not after a failed flush (it stays failed; nothing to learn).
     */
    private void finalSync() {
        if (file != null && !options.readOnly() && !flushFailed) {
            Runnable hook = beforeFinalSync;
            if (hook != null) {
                hook.run();
            }
            int rc = fdatasync();
            if (rc < 0 && rc != -Errno.EINVAL) { // EINVAL: a file that takes no fdatasync (a pipe, /dev/null)
                System.getLogger("io.vblk.aio").log(System.Logger.Level.ERROR,
                        "vblk: the final fdatasync of {0} at close failed: {1}", path, Errno.describe(-rc));
            }
        }
    }

    /**
     * A back end's hold, taken at its creation: keeps the descriptor (and its locks) and
     * channels open past {@link #close()} until its {@link #releaseHold}. False when the image
     * is already closed (nothing is held then).
     */
    synchronized boolean hold() {
        if (closed) {
            return false;
        }
        holds++;
        return true;
    }

    /**
     * The back end of a {@link #hold()} is done with the file: a deferred close happens now, with
     * its final fdatasync when {@code drained} (a back end whose close drained; never on the
     * reaper of undrained closes, which one hung file must not stop). Each hold is released once.
     */
    void releaseHold(boolean drained) {
        boolean sync;
        synchronized (this) {
            if (holds <= 0) {
                throw new IllegalStateException("released more holds than taken: " + path);
            }
            if (--holds != 0 || !closed) {
                return;
            }
            sync = drained && syncAtLastRelease;
            syncAtLastRelease = false;
        }
        finishClose(sync); // outside the lock: see finishClose
    }

    /** How many back ends hold the image (tests). */
    synchronized int holds() {
        return holds;
    }

    /**
     * Out of the lock ({@link #finishClose}): the fields it reads were last written under the
     * lock before {@code closed} was set there, which this thread saw under it too.
     */
    private void closeNow() {
        if (file != null) {
            file.close();
        }
        closeQuietly(channel);
        closeQuietly(bufferedChannel);
        if (zeros != null) {
            zeros.close();
        }
    }

    private static void closeQuietly(FileChannel ch) {
        if (ch != null) {
            try {
                ch.close();
            } catch (IOException e) {
                // Nothing to do at close: the descriptor is released either way.
            }
        }
    }

    @Override
    public String toString() {
        return "Image[" + path + ", " + sizeBytes + " bytes, " + options + ", align mem " + memoryAlignment
                + " off " + offsetAlignment + (blockDevice ? ", block device" : "") + "]";
    }
}
