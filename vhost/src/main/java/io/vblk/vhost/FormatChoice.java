package io.vblk.vhost;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;

import io.vblk.aio.BackendKind;
import io.vblk.block.BlockDriver;
import io.vblk.block.DriverFactory;
import io.vblk.block.ImageFormat;
import io.vblk.block.qcow2.Qcow2;
import io.vblk.block.qcow2.Qcow2Options;

/**
 * The drivers for an image served in a format other than raw (named by {@code --format}, never
 * guessed); io_uring falls back to linux-aio as for raw images.
 */
public final class FormatChoice implements DriverFactory {
    private static final int QCOW2_MAGIC = 0x514649fb;

    private final DriverFactory primary;
    private final DriverFactory fallback;
    private final long sizeBytes;
    private final Log log;

    private FormatChoice(DriverFactory primary, DriverFactory fallback, long sizeBytes, Log log) {
        this.primary = primary;
        this.fallback = fallback;
        this.sizeBytes = sizeBytes;
        this.log = log;
    }

    public static FormatChoice open(Path path, ImageFormat format, BackendKind kind, boolean readOnly, boolean direct,
            int l2CacheTables, Log log) {
        return open(path, format, kind, readOnly, direct, l2CacheTables, io.vblk.sys.ImageLock.Locking.ON, log);
    }

    /** As above, with QEMU-compatible image locking {@code locking} of the image and its backing files. */
    public static FormatChoice open(Path path, ImageFormat format, BackendKind kind, boolean readOnly, boolean direct,
            int l2CacheTables, io.vblk.sys.ImageLock.Locking locking, Log log) {
        if (format != ImageFormat.QCOW2) {
            throw new IllegalArgumentException("format " + format + " is served as raw");
        }
        return open(path, kind, Qcow2Options.defaults().readOnly(readOnly).direct(direct).l2CacheTables(l2CacheTables)
                .locking(locking), log);
    }

    /**
     * A qcow2 image opened with {@code options} (backing policy included).
     *
     * @throws IllegalArgumentException when {@code path} is no qcow2 image file (a bad argument)
     * @throws UncheckedIOException when its header cannot be read (permission denied, an I/O error)
     */
    public static FormatChoice open(Path path, BackendKind kind, Qcow2Options options, Log log) {
        if (!Files.isRegularFile(path)) {
            throw new IllegalArgumentException("qcow2 image not found or not a file: " + path);
        }
        long size;
        try {
            size = Qcow2.virtualSize(path);
        } catch (RuntimeException e) {
            String message = "cannot open qcow2 image " + path + ": " + e.getMessage();
            if (e.getCause() instanceof IOException io && !(io instanceof NoSuchFileException)) {
                // A file that cannot be read now (permission denied, an I/O error): not a bad
                // argument, trying again may pass (the caller tells the two apart by type).
                throw new UncheckedIOException(message, io);
            }
            throw new IllegalArgumentException(message, e); // no qcow2 image: a header that does not parse
        }
        DriverFactory fallback = kind == BackendKind.IO_URING ? Qcow2.factory(path, BackendKind.LINUX_AIO, options) : null;
        return new FormatChoice(Qcow2.factory(path, kind, options), fallback, size, log);
    }

    /** The virtual disk size in bytes. */
    public long sizeBytes() {
        return sizeBytes;
    }

    @Override
    public BlockDriver open(int depth) {
        try {
            return primary.open(depth);
        } catch (io.vblk.sys.NativeException e) {
            // Only io_uring's own refusals (its calls, its rings' mmap) fall back; anything else
            // (a refused image lock's fcntl, an open) fails the same with linux-aio and must be
            // reported as itself (review 9b).
            if (fallback == null || !(e.call().startsWith("io_uring") || e.call().equals("mmap"))) {
                throw e;
            }
            log.info("io_uring cannot be set up (" + e.getMessage() + "); using linux-aio");
            return fallback.open(depth);
        }
    }

    @Override
    public void sync() {
        primary.sync();
        if (fallback != null) {
            fallback.sync(); // the driver may have been opened by the fallback (each syncs only its own)
        }
    }

    /** One line when a file served as raw starts like a qcow2 image: it stays raw (a guest may write that). */
    public static void warnIfLooksLikeQcow2(Path path, Log log) {
        if (!Files.isRegularFile(path)) {
            return; // a FIFO put in the file's place would block this control thread in open(2)
        }
        try (InputStream in = Files.newInputStream(path)) {
            byte[] b = in.readNBytes(4);
            if (b.length == 4 && ((b[0] & 0xff) << 24 | (b[1] & 0xff) << 16 | (b[2] & 0xff) << 8 | (b[3] & 0xff)) == QCOW2_MAGIC) {
                log.info("warning: " + path + " starts with a qcow2 header but is served as raw (pass --format qcow2"
                        + " only if it was made as a qcow2 image: never for a disk a guest writes, whose guest can"
                        + " write such a header, backing file name included)");
            }
        } catch (IOException e) {
            // Not readable as a stream (a block device with odd permissions): nothing to warn about.
        }
    }
}
