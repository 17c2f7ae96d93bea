package io.vblk.block;

import io.vblk.aio.IoBackend;
import io.vblk.block.nbd.NbdAddress;
import io.vblk.block.nbd.NbdBackend;
import io.vblk.block.nbd.NbdOptions;
import io.vblk.block.nbd.NbdTls;
import io.vblk.block.rbd.RbdAddress;
import io.vblk.block.rbd.RbdBackend;
import io.vblk.block.rbd.RbdOptions;

/**
 * A disk on a server, named by its address: an NBD URI ({@code nbd://HOST[:PORT]/EXPORT},
 * {@code nbd+unix:///EXPORT?socket=PATH}, or over TLS {@code nbds://...} and
 * {@code nbds+unix://...} with {@code tls-certificates=DIR} or an {@link NbdTls}) or a Ceph RBD image
 * ({@code rbd:POOL/IMAGE[@SNAP][:conf=PATH][:id=USER]}). Opening one connects once to learn the
 * size and whether it is read-only; each I/O thread then opens its own driver (its own NBD
 * connection(s), its own librbd image handle).
 *
 * <pre>
 * NetworkDisk disk = NetworkDisk.open("nbd+unix:///vol?socket=/run/nbd.sock", 2);
 * BlockDevice device = BlockDevice.builder(BlkConfig.builder(disk.sizeBytes()).readOnly(disk.readOnly()).build(), ...)
 *         .drivers(disk).build();
 * </pre>
 *
 * <p>An NBD server that does not advertise CAN_MULTI_CONN cannot keep FLUSH's meaning across
 * connections, and librbd handles each have their own writeback cache, so such a disk and an RBD
 * image serve one I/O thread only; a second driver is refused.
 */
public final class NetworkDisk implements DriverFactory {
    private final String address;
    private final boolean nbd;
    /** Volatile: an online resize of an RBD image changes it. */
    private volatile long sizeBytes;
    private final boolean readOnly;
    private final boolean multiConn;
    private final int connections;
    private final NetworkTimeouts timeouts;
    private final int blockSizeBytes;
    /** TLS credentials for an nbds:// address (null: the URI's own, or plain). */
    private final NbdTls tls;
    /** NBD: FLUSH fails for good once a server lost acknowledged writes ({@link NbdOptions#withStrictFlush}). */
    private final boolean strictFlush;
    private int opened;

    private NetworkDisk(String address, boolean nbd, long sizeBytes, boolean readOnly, boolean multiConn, int connections,
            NetworkTimeouts timeouts, int blockSizeBytes, NbdTls tls, boolean strictFlush) {
        this.address = address;
        this.tls = tls;
        this.strictFlush = strictFlush;
        this.nbd = nbd;
        // A tail shorter than a sector cannot be addressed by a virtio-blk guest: not served.
        this.sizeBytes = sizeBytes & ~511L;
        this.blockSizeBytes = blockSizeBytes;
        this.readOnly = readOnly;
        this.multiConn = multiConn;
        this.connections = connections;
        this.timeouts = timeouts;
    }

    /** Whether {@code address} names a network disk (rather than a file). */
    public static boolean isAddress(String address) {
        return address != null && (NbdAddress.matches(address) || RbdAddress.matches(address));
    }

    /** Opens {@code address} with the default retry time (30 s) and one NBD connection per driver. */
    public static NetworkDisk open(String address, boolean readOnly) {
        return open(address, readOnly, 1, 30_000);
    }

    /**
     * Connects to {@code address} once to learn its size and mode.
     *
     * @param readOnly       serve read-only even when the server allows writes
     * @param connections    NBD connections per driver when the server allows several
     * @param retryTimeoutMs how long requests wait for a lost server before failing with EIO
     * @throws IllegalArgumentException when the address is malformed
     * @throws RuntimeException (with the server's or librbd's reason) when it cannot be opened
     */
    public static NetworkDisk open(String address, boolean readOnly, int connections, int retryTimeoutMs) {
        return open(address, readOnly, connections, retryTimeoutMs, null);
    }

    /**
     * {@link #open(String, boolean, int, int)} with TLS credentials for an {@code nbds://} or
     * {@code nbds+unix://} address: {@code tls} (null: the URI's {@code tls-certificates=DIR},
     * else the JVM's trust store) serves every connection and reconnect of the disk.
     *
     * @throws IllegalArgumentException when TLS credentials are given for an address that does not use TLS
     */
    public static NetworkDisk open(String address, boolean readOnly, int connections, int retryTimeoutMs, NbdTls tls) {
        return open(address, readOnly, connections, NetworkTimeouts.DEFAULTS.withRetryMs(retryTimeoutMs), tls);
    }

    /**
     * {@link #open(String, boolean, int, int, NbdTls)} with every {@link NetworkTimeouts time}
     * given: the first connect (this call) and every later connection of the disk keep them.
     */
    public static NetworkDisk open(String address, boolean readOnly, int connections, NetworkTimeouts timeouts, NbdTls tls) {
        return open(address, readOnly, connections, timeouts, tls, NbdOptions.defaults().strictFlush());
    }

    /**
     * {@link #open(String, boolean, int, NetworkTimeouts, NbdTls)} with NBD strict flushes on or
     * off for this disk ({@link NbdOptions#withStrictFlush}; the other overloads take the
     * process-wide default, the system property {@value NbdOptions#STRICT_FLUSH_PROPERTY}).
     * An RBD disk ignores it.
     */
    public static NetworkDisk open(String address, boolean readOnly, int connections, NetworkTimeouts timeouts, NbdTls tls,
            boolean strictFlush) {
        if (NbdAddress.matches(address)) {
            NbdAddress parsed = NbdAddress.parse(address);
            if (tls != null && !parsed.tls()) {
                throw new IllegalArgumentException("TLS credentials given for a plain NBD address (use nbds:// or"
                        + " nbds+unix://): " + address);
            }
            try (NbdBackend probe = NbdBackend.open(parsed, nbdOptions(timeouts).withDepth(1).withTls(tls))) {
                return new NetworkDisk(address, true, probe.sizeBytes(), readOnly || probe.readOnly(),
                        probe.allowsMultiConn(), connections, timeouts, Math.max(512, probe.minBlockBytes()), tls, strictFlush);
            }
        }
        if (tls != null) {
            throw new IllegalArgumentException("TLS credentials apply to nbds:// addresses only: " + address);
        }
        if (RbdAddress.matches(address)) {
            RbdAddress.parse(address);
            try (RbdBackend probe = RbdBackend.open(address, rbdOptions(1, readOnly, timeouts.retryMs()))) {
                return new NetworkDisk(address, false, probe.sizeBytes(), probe.readOnly(), true, 1, timeouts, 512, null, false);
            }
        }
        throw new IllegalArgumentException("not a network disk address (nbd://, nbd+unix://, rbd:): " + address);
    }

    private static NbdOptions nbdOptions(NetworkTimeouts t) {
        return NbdOptions.defaults().withConnectTimeoutMs(t.connectMs()).withRequestTimeoutMs(t.requestMs())
                .withRetryTimeoutMs(t.retryMs());
    }

    private static RbdOptions rbdOptions(int depth, boolean readOnly, int retryTimeoutMs) {
        return RbdOptions.defaults().withDepth(depth).withReadOnly(readOnly)
                .withRetryTimeoutSeconds(Math.max(1, (retryTimeoutMs + 999) / 1000));
    }

    /**
     * The smallest request the server accepts, at least 512: the guest's logical block size
     * (VIRTIO_BLK_F_BLK_SIZE), so that its requests are aligned as the server needs.
     */
    public int blockSizeBytes() {
        return blockSizeBytes;
    }

    /** The disk's size in bytes (rounded down to a whole sector). */
    public long sizeBytes() {
        return sizeBytes;
    }

    /** Whether the disk is served read-only (asked for, a read-only export, or a snapshot). */
    public boolean readOnly() {
        return readOnly;
    }

    /** NBD: whether FLUSH fails for good once a server lost acknowledged writes ({@link NbdOptions#withStrictFlush}). */
    public boolean strictFlush() {
        return strictFlush;
    }

    /** {@code nbd} or {@code rbd}. */
    public String format() {
        return nbd ? "nbd" : "rbd";
    }

    @Override
    public BlockDriver open(int depth) {
        IoBackend backend = openBackend(depth);
        // A migration's hand-over flushes the server's (or librbd's) cache, as QEMU's does.
        RawDriver driver = new RawDriver(format(), backend, sizeBytes, readOnly, true).flushAtHandOver();
        return nbd ? driver : driver.resizableBy(size -> resizeBackend(backend, size));
    }

    /**
     * Opens the back end of one I/O thread (its own NBD connection(s), its own librbd handle) for
     * a driver that lays a format over the disk (qcow2); {@link #open} wraps it as raw. The
     * caller closes it. The same one-thread rules as {@link #open} apply.
     */
    public synchronized IoBackend openBackend(int depth) {
        return openBackend(depth, true);
    }

    /**
     * Opens a back end for a look at the disk before any driver serves it (a format's header),
     * closed by the caller before the first {@link #open}; it does not count as an I/O thread's.
     */
    public synchronized IoBackend openProbe() {
        return openBackend(4, false);
    }

    private IoBackend openBackend(int depth, boolean counted) {
        if (!counted) {
            return nbd ? NbdBackend.open(address, nbdOptions(timeouts).withDepth(depth).withReadOnly(true).withTls(tls))
                    : RbdBackend.open(address, rbdOptions(depth, true, timeouts.retryMs()));
        }
        if (nbd && !multiConn && opened > 0) {
            throw new IllegalStateException("the NBD server at " + address + " does not allow several connections"
                    + " (no CAN_MULTI_CONN): serve it with one I/O thread");
        }
        if (!nbd && opened > 0) {
            // Each librbd handle has its own writeback cache: a flush on one would not cover
            // writes another completed from its cache.
            throw new IllegalStateException("an RBD image is served by one I/O thread (one librbd handle): " + address);
        }
        opened++;
        if (nbd) {
            NbdOptions options = nbdOptions(timeouts).withDepth(depth).withConnections(connections)
                    .withReadOnly(readOnly).withTls(tls).withStrictFlush(strictFlush);
            return NbdBackend.open(address, options);
        }
        return RbdBackend.open(address, rbdOptions(depth, readOnly, timeouts.retryMs()));
    }

    /**
     * Resizes the disk through {@code backend} (one this disk opened): {@code rbd_resize} for an
     * RBD image; refused for an NBD export, whose size the server owns.
     *
     * @throws UnsupportedOperationException for NBD, with the reason
     * @throws java.io.IOException when librbd refuses
     */
    public void resizeBackend(IoBackend backend, long newSizeBytes) throws java.io.IOException {
        if (!(backend instanceof RbdBackend)) {
            throw new UnsupportedOperationException("online resize is not supported for nbd disks (the server owns the"
                    + " export's size: resize it there, then reconnect): " + address);
        }
        ((RbdBackend) backend).resize(newSizeBytes);
        sizeBytes = newSizeBytes & ~511L;
    }

    /** The address this disk was opened with. */
    public String address() {
        return address;
    }

    @Override
    public String toString() {
        return format() + " " + address;
    }
}
