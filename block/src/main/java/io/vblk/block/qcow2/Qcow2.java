package io.vblk.block.qcow2;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashSet;
import java.util.Set;

import io.vblk.aio.BackendKind;
import io.vblk.aio.BackendOptions;
import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoBackends;
import io.vblk.block.BlockDriver;
import io.vblk.block.DriverFactory;
import io.vblk.block.RawDriver;

/**
 * Opens qcow2 images and their backing chains.
 *
 * <pre>{@code
 * try (BlockDriver disk = Qcow2.open(Path.of("vm.qcow2"), BackendKind.IO_URING, 128, Qcow2Options.defaults())) {
 *     ... read / write / poll / submit ...
 * }
 * }</pre>
 *
 * A qcow2 image keeps its metadata in the driver, so one driver (one I/O thread) serves it: the
 * {@link #factory} refuses a second open.
 */
public final class Qcow2 {
    private Qcow2() {
    }

    /**
     * Opens {@code path} as qcow2 with its backing chain (each backing file read-only, through its
     * own back end of the same kind).
     *
     * @throws IllegalArgumentException when the image is not acceptable, with the reason
     */
    public static Qcow2Driver open(Path path, BackendKind kind, int depth, Qcow2Options options) {
        return open(path, kind, depth, options, 0, new HashSet<>());
    }

    /**
     * The virtual disk size recorded in {@code path}'s header (checked like at open).
     *
     * @throws IllegalArgumentException when the file is not an acceptable qcow2 image
     */
    public static long virtualSize(Path path) {
        try (java.nio.channels.FileChannel ch = java.nio.channels.FileChannel.open(path)) {
            long fileSize = ch.size();
            java.nio.ByteBuffer first = java.nio.ByteBuffer.allocate((int) Math.min(fileSize, 1 << Qcow2Descriptor.MAX_CLUSTER_BITS));
            Qcow2Image.readFully(ch, first, 0);
            first.flip();
            return Qcow2Header.parse(first, fileSize).virtualSize;
        } catch (IOException e) {
            throw new IllegalArgumentException("qcow2: cannot read " + path + ": " + e.getMessage(), e);
        }
    }

    /** A factory for a device with one I/O thread serving {@code path}. */
    public static DriverFactory factory(Path path, BackendKind kind, Qcow2Options options) {
        return new DriverFactory() {
            private boolean opened;

            @Override
            public synchronized BlockDriver open(int depth) {
                if (opened) {
                    throw new IllegalArgumentException("a qcow2 image is served by one I/O thread: map every queue to thread 0");
                }
                opened = true;
                return Qcow2.open(path, kind, depth, options);
            }

            @Override
            public void sync() {
                // Metadata is written through before requests complete: the file's data is all.
                if (!options.readOnly()) {
                    try (java.nio.channels.FileChannel ch = java.nio.channels.FileChannel.open(path,
                            java.nio.file.StandardOpenOption.WRITE)) {
                        ch.force(false);
                    } catch (IOException e) {
                        throw new java.io.UncheckedIOException("qcow2: fdatasync of " + path, e);
                    }
                }
            }
        };
    }

    private static Qcow2Driver open(Path path, BackendKind kind, int depth, Qcow2Options options, int level,
                                    Set<Path> chain) {
        if (kind == BackendKind.NULL) {
            throw new IllegalArgumentException("the null back end serves raw only");
        }
        Path real;
        try {
            real = path.toRealPath();
        } catch (IOException e) {
            throw new IllegalArgumentException("qcow2: cannot open " + path + ": " + e.getMessage(), e);
        }
        if (!chain.add(real)) {
            throw new IllegalArgumentException("qcow2: backing chain loops back to " + real);
        }
        Image image = Image.open(real, ImageOptions.defaults().readOnly(options.readOnly()).direct(options.direct()));
        BlockDriver backing = null;
        IoBackend io = null;
        try {
            Qcow2Image meta = Qcow2Image.read(real, image.offsetAlignment(), image);
            Qcow2Header h = meta.header;
            if (h.compressionType != Qcow2Descriptor.COMPRESSION_DEFLATE) {
                throw new IllegalArgumentException("qcow2: zstd-compressed images are not supported (no zstd library"
                        + " is bundled); convert with qemu-img convert -O qcow2 -o compression_type=zlib");
            }
            if (!options.readOnly()) {
                if (h.corrupt()) {
                    throw new IllegalArgumentException("qcow2: " + real + " is marked corrupt; run qemu-img check -r all"
                            + " or open it read-only");
                }
                if (h.dirty()) {
                    throw new IllegalArgumentException("qcow2: " + real + " has the dirty bit set (lazy refcounts not"
                            + " written back); run qemu-img check -r all first");
                }
                if (h.nbSnapshots > 0) {
                    throw new IllegalArgumentException("qcow2: " + real + " has " + h.nbSnapshots
                            + " internal snapshots; images with snapshots are served read-only");
                }
                if (h.autoclearFeatures != 0) {
                    System.err.println("vblk: qcow2 " + real + ": autoclear features 0x"
                            + Long.toHexString(h.autoclearFeatures) + " left as they are (bitmaps are not maintained)");
                }
            }
            if (h.backingFile != null) {
                backing = openBacking(real, h, kind, depth, options, level, chain);
            }
            int ioDepth = Math.min(8192, depth * 2 + options.l2CacheTables() + 16);
            io = IoBackends.open(kind, image, BackendOptions.depth(ioDepth));
            return new Qcow2Driver(meta, image, io, backing, depth, options);
        } catch (RuntimeException | Error e) {
            if (io != null) {
                io.close();
            }
            if (backing != null) {
                backing.close();
            }
            image.close();
            throw e;
        }
    }

    private static BlockDriver openBacking(Path overlay, Qcow2Header h, BackendKind kind, int depth,
                                           Qcow2Options options, int level, Set<Path> chain) {
        if (level + 1 > options.maxBackingDepth()) {
            throw new IllegalArgumentException("qcow2: backing chain deeper than " + options.maxBackingDepth());
        }
        Path name = Path.of(h.backingFile);
        Path file = name.isAbsolute() ? name : overlay.getParent().resolve(name);
        if (!Files.exists(file)) {
            throw new IllegalArgumentException("qcow2: backing file " + file + " of " + overlay + " does not exist");
        }
        String format = h.backingFormat;
        if (format == null) {
            throw new IllegalArgumentException("qcow2: " + overlay + " does not record its backing file's format and"
                    + " vblk never guesses one; set it with qemu-img rebase -u -F raw|qcow2 -b " + h.backingFile);
        }
        Qcow2Options ro = options.readOnly(true);
        switch (format) {
            case "qcow2":
                return open(file, kind, depth, ro, level + 1, chain);
            case "raw": {
                Path real;
                try {
                    real = file.toRealPath();
                } catch (IOException e) {
                    throw new IllegalArgumentException("qcow2: cannot open backing file " + file, e);
                }
                if (!chain.add(real)) {
                    throw new IllegalArgumentException("qcow2: backing chain loops back to " + real);
                }
                Image image = Image.open(real, ImageOptions.defaults().readOnly(true).direct(options.direct()));
                try {
                    IoBackend io = IoBackends.open(kind, image, depth);
                    return RawDriver.owning(io, image);
                } catch (RuntimeException e) {
                    image.close();
                    throw e;
                }
            }
            default:
                throw new IllegalArgumentException("qcow2: backing format '" + format + "' is not supported (raw, qcow2)");
        }
    }
}
