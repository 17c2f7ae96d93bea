package io.vblk.block.qcow2;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashSet;
import java.util.Set;

import io.vblk.aio.BackendKind;
import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoBackends;
import io.vblk.block.BlockDriver;
import io.vblk.block.DriverFactory;
import io.vblk.block.NetworkDisk;
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
        return open(path, kind, depth, options, 0, new Chain());
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
            private Qcow2Driver driver;

            @Override
            public synchronized BlockDriver open(int depth) {
                if (opened) {
                    throw new IllegalArgumentException("a qcow2 image is served by one I/O thread: map every queue to thread 0");
                }
                opened = true;
                driver = Qcow2.open(path, kind, depth, options);
                return driver;
            }

            @Override
            public void sync() {
                // Metadata is written through before requests complete: the file's data is all.
                // Through the descriptor the driver opened and locked, never by path (the path
                // may name another file by now, and syncing that one makes nothing durable).
                Qcow2Driver d;
                synchronized (this) {
                    d = driver;
                }
                if (!options.readOnly() && d != null && d.flushFailed()) {
                    // A failed flush (a barrier's, a metadata write's, a guest FLUSH's) consumed
                    // the kernel's one report: an fdatasync now would succeed with data lost.
                    throw new java.io.UncheckedIOException(new IOException("qcow2: an earlier flush of " + path
                            + " failed; its writes may be lost"));
                }
                if (!options.readOnly() && d != null && d.image() != null) {
                    int rc = d.image().fdatasync();
                    if (rc < 0) {
                        throw new java.io.UncheckedIOException(new IOException("qcow2: fdatasync of " + path + ": "
                                + io.vblk.sys.Errno.describe(-rc)));
                    }
                }
            }
        };
    }

    /**
     * The files one open's chain took so far (a file met again is a loop) and what is left of
     * its budget of L1 tables ({@link Qcow2Options#CHAIN_L1_BUDGET_BYTES}).
     */
    private static final class Chain {
        private final Set<String> files = new HashSet<>();
        long l1BytesLeft = Qcow2Options.CHAIN_L1_BUDGET_BYTES;
        /** What is left of {@link Qcow2Options#CHAIN_METADATA_SET_BUDGET_BYTES}. */
        long setBytesLeft = Qcow2Options.CHAIN_METADATA_SET_BUDGET_BYTES;

        /** False when {@code file} is in the chain already. */
        boolean add(String file) {
            return files.add(file);
        }
    }

    private static Qcow2Driver open(Path path, BackendKind kind, int depth, Qcow2Options options, int level,
                                    Chain chain) {
        return open(path, kind, depth, options, level, chain, null);
    }

    /** As above; a backing file confined to a directory is opened beneath {@code beneath} (null: as named). */
    private static Qcow2Driver open(Path path, BackendKind kind, int depth, Qcow2Options options, int level,
                                    Chain chain, Path beneath) {
        if (kind == BackendKind.NULL) {
            throw new IllegalArgumentException("the null back end serves raw only");
        }
        Path real;
        try {
            real = path.toRealPath();
        } catch (IOException e) {
            throw new IllegalArgumentException("qcow2: cannot open " + path + ": " + e.getMessage(), e);
        }
        if (!chain.add(real.toString())) {
            throw new IllegalArgumentException("qcow2: backing chain loops back to " + shown(real.toString()));
        }
        FileHost host = new FileHost(real, kind, options.readOnly(), options.direct(), options.locking(),
                options.incoming() && !options.readOnly(), beneath);
        io.vblk.aio.Image file = host.image();
        if (options.direct() && host.readOnly() && !file.portable() && file.sizeBytes() % file.logicalBlockSize() != 0) {
            // A read-only image whose size is no multiple of the O_DIRECT alignment (cut short:
            // a writable one is rounded to whole clusters at open): the read of a compressed
            // cluster that ends in its last partial block failed with EINVAL. Read through the
            // page cache instead, as a raw backing file of such a size is; nothing is written.
            host.close();
            host = new FileHost(real, kind, options.readOnly(), false, options.locking(), false, beneath);
        }
        return open(host, kind, depth, options, level, chain);
    }

    /**
     * Opens the qcow2 image held by a network disk (an NBD export or an RBD image holding the
     * bytes of a qcow2 file), with its backing chain where the image names one by a network
     * address or an absolute path.
     *
     * @throws IllegalArgumentException when the image is not acceptable, with the reason
     */
    public static Qcow2Driver open(NetworkDisk disk, int depth, Qcow2Options options) {
        Chain chain = new Chain();
        chain.add(disk.address());
        return open(new NetworkHost(disk, options.readOnly()), BackendKind.IO_URING, depth, options, 0, chain);
    }

    /**
     * The virtual disk size recorded in the header of the qcow2 image on {@code disk} (checked
     * like at open).
     *
     * @throws IllegalArgumentException when the disk does not hold an acceptable qcow2 image
     */
    public static long virtualSize(NetworkDisk disk) {
        try (NetworkHost host = new NetworkHost(disk, true)) {
            host.openProbe();
            return Qcow2Image.read(host, host.offsetAlignment()).header.virtualSize;
        } catch (java.io.UncheckedIOException e) {
            throw new IllegalArgumentException("qcow2: cannot read " + disk.address() + ": " + e.getMessage(), e);
        }
    }

    /** A factory for a device with one I/O thread serving the qcow2 image on {@code disk}. */
    public static DriverFactory factory(NetworkDisk disk, Qcow2Options options) {
        return new DriverFactory() {
            private Qcow2Driver opened;

            @Override
            public synchronized BlockDriver open(int depth) {
                if (opened != null) {
                    throw new IllegalArgumentException("a qcow2 image is served by one I/O thread: map every queue to thread 0");
                }
                opened = Qcow2.open(disk, depth, options);
                return opened;
            }

            /**
             * No flush, as for a raw network disk (NetworkDisk). The driver's back end
             * belongs to its I/O thread, so no flush can be sent through it from here; the
             * guest's FLUSH (which the driver passes on after its metadata writes) is what makes
             * writes durable on the server, and librbd without its cache completes writes that
             * are on the OSDs already. But a flush that failed (a server lost acknowledged
             * writes, a durable metadata write failed) fails the sync: the hand-over must not
             * report the image durable.
             */
            @Override
            public void sync() {
                Qcow2Driver d;
                synchronized (this) {
                    d = opened;
                }
                if (!options.readOnly() && d != null && d.flushFailed()) {
                    throw new java.io.UncheckedIOException(new IOException("qcow2: an earlier flush of " + disk.address()
                            + " failed; its writes may be lost"));
                }
            }
        };
    }

    private static Qcow2Driver open(Qcow2Host host, BackendKind kind, int depth, Qcow2Options options, int level,
                                    Chain chain) {
        BlockDriver backing = null;
        try {
            int ioDepth = Math.min(8192, depth * 2 + options.l2CacheTables() + 16);
            IoBackend io = host.openBackend(ioDepth);
            // An incoming image writes nothing before it is activated, not even the rounding of
            // the file to whole clusters; the source still writes it.
            // A network host too (NBD, RBD): no locks there, only the cached metadata and the
            // reserved clusters change hands, at the same two points as for a file.
            boolean inactive = options.incoming() && !options.readOnly();
            Qcow2Image meta = Qcow2Image.read(host, Math.max(512, host.offsetAlignment()), !inactive, level > 0,
                    chain.l1BytesLeft, chain.setBytesLeft);
            chain.l1BytesLeft -= meta.l1Charge;
            chain.setBytesLeft -= meta.setCharge;
            Qcow2Header h = meta.header;
            String name = shown(host.name());
            if (h.compressionType == Qcow2Descriptor.COMPRESSION_ZSTD) {
                loadZstd(name);
            }
            if (!options.readOnly()) {
                if (h.corrupt()) {
                    throw new IllegalArgumentException("qcow2: " + name + " is marked corrupt; run qemu-img check -r all"
                            + " or open it read-only");
                }
                // An incoming image's source may hold the bit set (lazy refcounts) until it
                // hands over: checked again at activation, as QEMU does.
                if (h.dirty() && !inactive) {
                    throw new IllegalArgumentException("qcow2: " + name + " has the dirty bit set (lazy refcounts not"
                            + " written back); run qemu-img check -r all first");
                }
                if (h.nbSnapshots > 0) {
                    throw new IllegalArgumentException("qcow2: " + name + " has " + h.nbSnapshots
                            + " internal snapshots: refused for writing: open it read-only (--read-only)");
                }
                // Autoclear bits: cleared by the driver before its first write (clearAutoclear).
            }
            if (h.backingFile != null) {
                backing = openBacking(host, h, kind, depth, options, level, chain);
            }
            return new Qcow2Driver(meta, host, io, backing, depth, options, level > 0);
        } catch (RuntimeException | Error e) {
            if (backing != null) {
                backing.close();
            }
            host.close();
            if (e instanceof OutOfMemoryError && String.valueOf(e.getMessage()).contains("direct buffer memory")) {
                // Any other buffer of the open (a window, a sector): refused with the same reason.
                throw DirectMemory.exhausted(host.name(), "direct memory to open it", (OutOfMemoryError) e);
            }
            throw e;
        }
    }

    /**
     * Loads zstd-jni's native library (extracted from its jar once per JVM) so that an image whose
     * clusters are zstd-compressed is refused at open, with a reason, where the library cannot
     * load, rather than failing its first compressed read.
     */
    private static void loadZstd(String image) {
        try {
            com.github.luben.zstd.util.Native.load();
        } catch (LinkageError | RuntimeException e) {
            throw new IllegalArgumentException("qcow2: " + image + " has zstd-compressed clusters but the zstd native"
                    + " library does not load here (" + e + "); convert with qemu-img convert -O qcow2"
                    + " -o compression_type=zlib", e);
        }
    }

    /**
     * Refuses a backing file that does not lie under {@code dir} once links and {@code ..} are
     * resolved; returns the resolved path, which the caller opens beneath {@code dir}'s real path
     * ({@link #backingRoot}) with openat2 RESOLVE_BENEATH (ImageOptions.beneath): a directory
     * component swapped for a link between this check and the open is then refused by the
     * kernel, not followed. This check gives the clear message for the ordinary case.
     */
    private static Path confine(Path file, Path dir, String overlay) {
        Path real;
        Path root;
        try {
            real = file.toRealPath();
            root = dir.toRealPath();
        } catch (IOException e) {
            throw new IllegalArgumentException("qcow2: cannot resolve backing file " + shown(file.toString()) + " of "
                    + shown(overlay) + ": "
                    + shown(e.toString()), e);
        }
        if (!real.startsWith(root)) {
            throw new IllegalArgumentException("qcow2: backing file " + shown(real.toString()) + " of " + shown(overlay)
                    + " lies outside the"
                    + " backing directory " + root);
        }
        return real;
    }

    /** The backing directory's real path, which confined backing files are opened beneath. */
    private static Path backingRoot(Path dir) {
        try {
            return dir.toRealPath();
        } catch (IOException e) {
            throw new IllegalArgumentException("qcow2: cannot resolve the backing directory " + dir + ": " + e, e);
        }
    }

    /** {@code name} (chosen by an image's writer, or derived from such a name) fit for an error message. */
    private static String shown(String name) {
        return Qcow2Header.printable(name);
    }

    /** Test seam: runs after a confined backing name was checked, before it is opened (null in production). */
    static volatile Runnable afterConfine;

    private static BlockDriver openBacking(Qcow2Host overlay, Qcow2Header h, BackendKind kind, int depth,
                                           Qcow2Options options, int level, Chain chain) {
        if (level + 1 > options.maxBackingDepth()) {
            throw new IllegalArgumentException("qcow2: backing chain deeper than " + options.maxBackingDepth());
        }
        String format = h.backingFormat;
        if (format == null) {
            throw new IllegalArgumentException("qcow2: " + shown(overlay.name())
                    + " does not record its backing file's format and"
                    + " vblk never guesses one; set it with qemu-img rebase -u -F raw|qcow2 -b " + shown(h.backingFile));
        }
        if (!"qcow2".equals(format) && !"raw".equals(format)) {
            throw new IllegalArgumentException("qcow2: backing format '" + shown(format) + "' is not supported (raw, qcow2)");
        }
        // Read-only, also under an incoming image: a backing file is never written, so it keeps a
        // reader's locks (consistent read, no writer) from the open on, which the source's own
        // reader's locks on it share; nothing of it changes hands in a migration.
        Qcow2Options ro = options.readOnly(true);
        if (NetworkDisk.isAddress(h.backingFile)) {
            // A backing image on a server: an NBD export or an RBD image, read-only. The image
            // chose the address, so only when the operator allows it, and never with options.
            if (!options.networkBacking()) {
                throw new IllegalArgumentException("qcow2: " + shown(overlay.name()) + " names the network backing image "
                        + shown(h.backingFile) + "; network backing names read from an image are refused unless allowed"
                        + " (export.add network_backing: true, Qcow2Options.networkBacking)");
            }
            if (io.vblk.block.rbd.RbdAddress.matches(h.backingFile)) {
                io.vblk.block.rbd.RbdAddress a = io.vblk.block.rbd.RbdAddress.parse(h.backingFile);
                if (!a.options().isEmpty() || a.conf() != null || a.id() != null) {
                    throw new IllegalArgumentException("qcow2: " + shown(overlay.name()) + " names the backing image "
                            + shown(h.backingFile) + " with Ceph options; a backing name read from an image may only be"
                            + " rbd:POOL[/NAMESPACE]/IMAGE[@SNAP]");
                }
            }
            if (!chain.add(h.backingFile)) {
                throw new IllegalArgumentException("qcow2: backing chain loops back to " + shown(h.backingFile));
            }
            // The export's waits, not the defaults: a backing server is as far away as the top
            // image's and the operator's connect, request and retry times are meant for both.
            NetworkDisk disk = NetworkDisk.open(h.backingFile, true, 1, options.networkTimeouts(), null);
            return "qcow2".equals(format) ? open(new NetworkHost(disk, true), kind, depth, ro, level + 1, chain)
                    : disk.open(depth);
        }
        if (!overlay.file() && options.backingDir() == null) {
            // The image lies on a server (NBD, RBD): its bytes, not the operator, would choose
            // the local file the daemon opens and serves (rev15a). Only under a backing directory.
            throw new IllegalArgumentException("qcow2: " + shown(overlay.name()) + " is on a network disk and names the local"
                    + " backing file " + shown(h.backingFile) + "; local backing names read from a"
                    + " network image are refused unless a backing directory confines them (export.add backing_dir,"
                    + " Qcow2Options.backingDir)");
        }
        Path name = Path.of(h.backingFile);
        if (!name.isAbsolute() && !overlay.file()) {
            throw new IllegalArgumentException("qcow2: " + shown(overlay.name()) + " names its backing file "
                    + shown(h.backingFile)
                    + " relative to a network disk; name it by an absolute path or an nbd:// / rbd: address"
                    + " (qemu-img rebase -u)");
        }
        Path named = name.isAbsolute() ? name : Path.of(overlay.name()).getParent().resolve(name);
        if (!Files.exists(named)) {
            throw new IllegalArgumentException("qcow2: backing file " + shown(named.toString()) + " of "
                    + shown(overlay.name()) + " does not exist");
        }
        Path file = options.backingDir() != null ? confine(named, options.backingDir(), overlay.name()) : named;
        Path beneath = options.backingDir() != null ? backingRoot(options.backingDir()) : null;
        Runnable hook = afterConfine;
        if (hook != null && beneath != null) {
            hook.run();
        }
        if ("qcow2".equals(format)) {
            return open(file, kind == BackendKind.NULL ? BackendKind.IO_URING : kind, depth, ro, level + 1, chain, beneath);
        }
        Path real;
        try {
            real = file.toRealPath();
        } catch (IOException e) {
            throw new IllegalArgumentException("qcow2: cannot open backing file " + shown(file.toString()), e);
        }
        if (!chain.add(real.toString())) {
            throw new IllegalArgumentException("qcow2: backing chain loops back to " + shown(real.toString()));
        }
        // A backing file is a reader's use (QEMU's backing child): it may be read by others, never written.
        Image image = io.vblk.block.ImageLocks.openLocked(real, ImageOptions.defaults().readOnly(true).direct(options.direct())
                .beneath(beneath), options.locking());
        if (options.direct() && !image.portable() && image.sizeBytes() % image.logicalBlockSize() != 0) {
            // A size that is not a multiple of the O_DIRECT alignment (QEMU reads the tail as
            // padded with zeros): the last piece's read would be refused with EINVAL, so the
            // file is read through the page cache, where a read of the tail is short and the
            // driver zero-fills the rest of the cluster. Read-only, so nothing is lost.
            io.vblk.block.ImageLocks.release(image);
            image.close();
            image = io.vblk.block.ImageLocks.openLocked(real, ImageOptions.defaults().readOnly(true).direct(false)
                    .beneath(beneath), options.locking());
        }
        try {
            IoBackend io = IoBackends.open(kind, image, depth);
            return RawDriver.owning(io, image);
        } catch (RuntimeException e) {
            image.close();
            throw e;
        }
    }
}
