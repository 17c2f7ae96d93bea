package io.vblk.block.nbd;

import static io.vblk.block.nbd.NbdProtocol.*;

import java.io.IOException;
import java.io.UncheckedIOException;

import java.util.Arrays;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.LockSupport;

import io.vblk.aio.CompletionSink;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoVector;
import io.vblk.block.SlotRing;
import io.vblk.sys.Epoll;
import io.vblk.sys.Errno;
import io.vblk.sys.EventFd;
import io.vblk.sys.Linux;

/**
 * A disk on an NBD server, as an {@link IoBackend} driven by the I/O thread itself: requests are
 * prepared into preallocated slots, {@link #submit()} deals the round's batch to the connections
 * (round robin when the server allows several, one otherwise) and each sends its share with one
 * {@code sendmsg} on its non-blocking socket; {@link #poll} reads and parses the replies and
 * delivers the completions directly. No thread hop, eventfd write, allocation or lock per request.
 *
 * <p>The completion source ({@link #completionEvent()}) is an epoll descriptor of the disk's own
 * that watches the sockets (for {@code EPOLLOUT} too while a send waits for room) and a control
 * eventfd: the socket's descriptor changes on a reconnect, the I/O thread's watch of this one
 * does not. The control eventfd is written only by the helper thread, which does the blocking
 * reconnects (connect and handshake) off the I/O thread, hands the new socket back, and wakes the
 * I/O thread at most every 100 ms while requests make no progress, so that it checks the request
 * timeout and the retry time even when it sleeps.
 *
 * <p>With CAN_MULTI_CONN the server promises that a flush on any connection makes every write
 * completed on any connection durable (proto.md), so a FLUSH goes to one connection and keeps
 * virtio's meaning. Without it only one connection is opened.
 *
 * <p>A request larger than the server's maximum block size (NBD_INFO_BLOCK_SIZE; a guest knows
 * nothing of it) is sent in parts of at most that size, one after the other in the slot it
 * holds (no extra slot, no allocation), each write part with the request's FUA; it completes once,
 * after its last part, or at its first failed part. A part a reconnect interrupted is sent again.
 *
 * <p>{@link #inFlight()} is derived, never kept as a running count: the slots a connection
 * holds (their own state says so, from the moment a connection takes one until it finishes it)
 * plus the finished ones not yet delivered. Every hand-over removes a slot from where it was
 * before the next holder counts it, so an exception the JVM throws at any call on the I/O thread
 * (a guest-memory fault delivered late: engine GuestFaults) can lose a completion (the engine's
 * drain gives its request up with IOERR, and {@link #reclaimLostSlots()} brings its slot back
 * once nothing is in flight), but never leaves the count above what can still complete (a drain
 * waiting for ever), never hands a slot on twice, and never frees a slot a connection still holds
 * (a command sent and not answered stays held across reconnects, until its reply or its failure).
 *
 * <p>A read-only export gives a read-only disk: writes, discards and write-zeroes are refused
 * with {@code -EROFS} before anything reaches the server.
 */
public final class NbdBackend implements IoBackend {
    private static final System.Logger LOG = System.getLogger("io.vblk.block.nbd");
    private static final java.util.concurrent.atomic.AtomicBoolean PLAIN_REMOTE_WARNED =
            new java.util.concurrent.atomic.AtomicBoolean();
    /**
     * The largest request taken (u32, the wire's length): larger than one NBD command may carry
     * when the server's maximum block size is small; the connection sends it in parts.
     */
    static final long MAX_REQUEST_BYTES = 0xffffffffL;
    /** How long close waits for the reconnect thread once told to stop (it stops in ms unless a DNS lookup holds it). */
    private static final long HELPER_JOIN_MS = 2_000;
    final NbdSlots slots;
    final NbdOptions options;
    private final NbdAddress address;
    /** TLS credentials for every connection and reconnect, or null (plain). */
    private final NbdTls tls;
    private final NbdExport export;
    private final boolean readOnly;
    private final NbdConnection[] connections;
    private final SlotRing free;
    /** Finished requests waiting for {@link #poll} to deliver them. */
    private final SlotRing done;
    private final Epoll epoll;
    /** The epoll descriptor seen as an event (polled, never read or closed as one). */
    private final EventFd completion;
    private final EventFd control = EventFd.create(true);
    /**
     * Signalled once by {@link #close()} and never read: while it is, every wait of a
     * reconnect in progress ends at once, so close does not wait out the server's handshake.
     */
    private final EventFd stop = EventFd.create(true);
    private volatile boolean controlPending;
    private boolean woken;
    private final int[] pending;
    private int pendingCount;
    /** How many of {@link #pending} submit handed on so far (each one leaves the list as it goes). */
    private int pendingHead;
    private int nextConnection;
    /** Completions delivered so far: the helper's sign of progress only (never an in-flight count). */
    private volatile long delivered;
    private volatile boolean closed;
    private final Thread helper;
    private volatile boolean helperStop;

    // Durability across reconnects (I/O thread only; rev16a H1). A server with a volatile cache
    // that acknowledged writes and then died took them with it; a FLUSH sent to its successor
    // covers only what the successor holds, so it must not say those writes are durable.
    /** Write, trim and write-zeroes parts acknowledged without FUA by a server with a volatile cache. */
    private long writesAcked;
    /** The most of {@link #writesAcked} a completed FLUSH covered (made durable). */
    private long writesFlushed;
    /** {@link #writesAcked} when a lost connection last logged its uncovered writes: each loss is logged once. */
    private long lossLogged;
    /**
     * Set, for good, when a connection was lost while writes it (or another connection to the
     * same server) acknowledged were not covered by a completed FLUSH: every FLUSH from then on,
     * a resent one too, fails with EIO. Sticky like a qcow2 image's failed flush and QEMU's
     * after a failed fdatasync: the guest cannot tell which writes were lost, and a FLUSH that
     * succeeded on a retry would tell it that they are durable. Only reopening the disk clears it.
     */
    private boolean flushLost;
    /** FLUSH commands sent at close ({@link #flushAtClose}). */
    private volatile long closeFlushes;
    private volatile long closeFlushesSkipped;

    private NbdBackend(NbdAddress address, NbdTls tls, NbdOptions options, NbdSocket first, NbdExport export) {
        this.address = address;
        this.tls = tls;
        this.options = options;
        this.export = export;
        readOnly = export.readOnly() || options.readOnly();
        slots = new NbdSlots(options.depth(), options.maxSegments());
        free = new SlotRing(options.depth());
        done = new SlotRing(options.depth());
        pending = new int[options.depth()];
        for (int i = 0; i < options.depth(); i++) {
            free.offer(i);
        }
        int count = export.has(FLAG_CAN_MULTI_CONN) ? options.connections() : 1;
        epoll = new Epoll(count + 1);
        completion = EventFd.wrap(epoll.fd());
        epoll.add(control.fd(), Linux.EPOLLIN, -1);
        connections = new NbdConnection[count];
        connections[0] = new NbdConnection(this, 0, first, export);
        helper = new Thread(this::helperLoop, "vblk-nbd-reconnect");
        helper.setDaemon(true);
    }

    /**
     * Connects to {@code address} (an NBD URI, see {@link NbdAddress}) and negotiates the export.
     *
     * @throws UncheckedIOException when the server cannot be reached or refuses the export
     */
    public static NbdBackend open(String address, NbdOptions options) {
        return open(NbdAddress.parse(address), options);
    }

    /**
     * Connects to {@code address} and negotiates the export; over TLS when the address is
     * {@code nbds://} or {@code nbds+unix://} (with {@link NbdOptions#tls()}, else the URI's
     * credentials). Every failure (unreachable, refused export, TLS refused or required, an
     * untrusted, expired or wrongly named certificate) is an error within the connect timeout.
     */
    public static NbdBackend open(NbdAddress address, NbdOptions options) {
        NbdBackend disk = null;
        NbdTls tls;
        try {
            tls = address.tlsCredentials(options.tls());
        } catch (IllegalArgumentException e) {
            throw new UncheckedIOException("NBD " + address + ": " + e.getMessage(), new IOException(e));
        }
        NbdSocket socket = null;
        try {
            long deadlineNs = deadline(options);
            socket = connect(address, tls, options, deadlineNs, -1);
            NbdExport export = negotiate(socket, address, tls, options, deadlineNs);
            disk = new NbdBackend(address, tls, options, socket, export);
            for (int i = 1; i < disk.connections.length; i++) {
                // Each connection gets the connect timeout for its own connect and handshake.
                deadlineNs = deadline(options);
                NbdSocket more = connect(address, tls, options, deadlineNs, -1);
                socket = more; // closed below if its connection cannot be made
                disk.connections[i] = new NbdConnection(disk, i, more, negotiate(more, address, tls, options, deadlineNs));
            }
        } catch (IOException e) {
            if (disk != null) {
                disk.close();
            }
            throw new UncheckedIOException("NBD " + address + ": " + e.getMessage(), e);
        } catch (OutOfMemoryError e) {
            // Its buffers are direct memory, which every disk of the JVM shares: refused at open,
            // with a reason, rather than an error out of the daemon's open path with sockets left.
            if (disk != null) {
                disk.close();
            }
            if (socket != null) {
                socket.close(); // idempotent: the one a connection holds is closed already
            }
            throw new UncheckedIOException("NBD " + address + ": no direct memory left for its buffers ("
                    + e.getMessage() + "; -XX:MaxDirectMemorySize, by default -Xmx)", new IOException(e));
        }
        disk.helper.start();
        return disk;
    }

    /**
     * The end of one connect plus handshake: one deadline for both, so that the connect timeout
     * is what the documentation says (a connect and a handshake), not twice it.
     */
    private static long deadline(NbdOptions options) {
        return System.nanoTime() + options.connectTimeoutMs() * 1_000_000L;
    }

    private static NbdSocket connect(NbdAddress address, NbdTls tls, NbdOptions options, long deadlineNs, int cancelFd)
            throws IOException {
        if (tls == null && address.socket() == null && !PLAIN_REMOTE_WARNED.get() && !NbdSocket.isLoopback(address.host())
                && PLAIN_REMOTE_WARNED.compareAndSet(false, true)) {
            LOG.log(System.Logger.Level.WARNING, "nbd: {0} is plain NBD to a remote host: the disk's data crosses the"
                    + " network unencrypted and the server unauthenticated (nbds:// uses TLS)", address);
        }
        return NbdSocket.connect(address, deadlineNs, options.connectTimeoutMs(), cancelFd);
    }

    /** Negotiates on a fresh socket; closes it when that fails. */
    private static NbdExport negotiate(NbdSocket socket, NbdAddress address, NbdTls tls, NbdOptions options,
            long deadlineNs) throws IOException {
        try {
            return NbdHandshake.negotiate(socket, address, tls, deadlineNs, options.connectTimeoutMs());
        } catch (IOException | RuntimeException | OutOfMemoryError e) { // its buffers are direct memory
            socket.close();
            throw e;
        }
    }

    /** The export's size in bytes, as the server announced it when the disk was opened. */
    public long sizeBytes() {
        return export.sizeBytes;
    }

    /** Whether the export is read-only (writes are refused with {@code -EROFS}). */
    public boolean readOnly() {
        return readOnly;
    }

    /** Whether the server allows several connections to the export (NBD_FLAG_CAN_MULTI_CONN). */
    public boolean allowsMultiConn() {
        return export.has(FLAG_CAN_MULTI_CONN);
    }

    /** The smallest block the server accepts (requests must be aligned to it). */
    public int minBlockBytes() {
        return export.minBlock;
    }

    /**
     * The largest payload of one NBD command (the server's maximum block size, at most 32 MiB);
     * a larger request is still taken and sent in parts of at most this size.
     */
    public int maxPayloadBytes() {
        return export.maxPayload;
    }

    /** Whether the server takes FUA writes, flushes, trims and write-zeroes (the disk's features). */
    public boolean supportsFua() {
        return export.has(FLAG_SEND_FUA);
    }

    /** Whether discards reach the server (without it they complete at once, doing nothing). */
    public boolean supportsDiscard() {
        return export.has(FLAG_SEND_TRIM);
    }

    /** Whether write-zeroes is offered (without it, {@link #prepareWriteZeroes} returns {@code -EOPNOTSUPP}). */
    public boolean supportsWriteZeroes() {
        return export.has(FLAG_SEND_WRITE_ZEROES);
    }

    /** Whether the connections run TLS ({@code nbds://}, {@code nbds+unix://}). */
    public boolean tls() {
        return tls != null;
    }

    /** Connections in use. */
    public int connectionCount() {
        return connections.length;
    }

    NbdAddress address() {
        return address;
    }

    // ---- for the connections (I/O thread) ----

    void watchNew(int fd, int index) {
        epoll.add(fd, Linux.EPOLLIN, index);
    }

    void watch(int fd, int index, boolean alsoOut) {
        epoll.modify(fd, Linux.EPOLLIN | (alsoOut ? Linux.EPOLLOUT : 0), index);
    }

    void unwatch(int fd) {
        epoll.remove(fd);
    }

    /** A request finished (its result is in its slot): delivered by the next {@link #poll}. */
    void completed(int slot) {
        done.offer(slot);
    }

    /** A write-type part completed without FUA on a connection whose server has a volatile cache. */
    void writeAcked() {
        writesAcked++;
    }

    /** A FLUSH is laid out: what it will cover if it succeeds (the writes acknowledged so far). */
    long flushSent() {
        return writesAcked;
    }

    /**
     * A FLUSH succeeded on the wire, covering {@code covers} acknowledged writes; false when a
     * lost connection already made FLUSH fail for good (its success covers only the new server).
     */
    boolean flushDone(long covers) {
        if (covers > writesFlushed) {
            writesFlushed = covers;
        }
        return !flushLost;
    }

    /** Whether FLUSH fails for good (a server lost acknowledged writes no FLUSH covered). */
    boolean flushLost() {
        return flushLost;
    }

    /**
     * A connection's socket is gone (a crash, a hang-up, a timeout or a protocol error): if the
     * server acknowledged writes that no completed FLUSH covered, they may be gone with it (a
     * write-back cache in a process that died), and nothing sent to the server it comes back as
     * can tell. FLUSH fails from now on (see {@link #flushLost}).
     */
    void connectionDropped(int index) {
        if (flushLost || writesAcked == writesFlushed || writesAcked == lossLogged) {
            return;
        }
        if (options.strictFlush()) {
            flushLost = true;
            LOG.log(System.Logger.Level.ERROR, "nbd: {0} connection {1} lost with {2} acknowledged write(s) not yet flushed;"
                    + " the server may have lost them, so every later FLUSH fails with EIO (strict flush; reopen the disk to clear)",
                    address, index, writesAcked - writesFlushed);
        } else {
            // Trusted (the default, as QEMU's client): a server whose acknowledged writes outlive
            // its process loses nothing; one whose cache dies with it wants strict flushes.
            LOG.log(System.Logger.Level.WARNING, "nbd: {0} connection {1} lost with {2} acknowledged write(s) not yet flushed;"
                    + " a later FLUSH covers them only if the server kept them (strict flushes, nbd_strict_flush or -D"
                    + NbdOptions.STRICT_FLUSH_PROPERTY + "=true, fail FLUSH instead)", address, index, writesAcked - writesFlushed);
            // Logged once per loss, not again at the next drop; writesFlushed stays as it is, so a
            // clean close still flushes them to the server the disk reconnected to.
            lossLogged = writesAcked;
        }
    }

    /** Asks the helper thread to reconnect now. */
    void wakeHelper() {
        LockSupport.unpark(helper);
    }

    /**
     * The I/O thread was woken by the completion source (readable or writable sockets): nothing
     * to read (it is an epoll descriptor), only noted. Nor is there anything to reset before a
     * sleep ({@link IoBackend#rearmCompletions()}, the default here): the epoll descriptor is
     * readable only while a socket it watches is (level-triggered, so a reply a poll already read
     * leaves nothing raised) or the control eventfd is, which {@link #poll} reads.
     */
    @Override
    public void acknowledgeCompletions() {
        woken = true;
    }

    // ---- the helper thread: blocking reconnects, and a tick while requests stall ----

    private void helperLoop() {
        try {
            reconnectUntilStopped();
        } finally {
            // A reconnect that passed its stop check just before close set it, and published its
            // socket after close had closed the connections (close gave up waiting for this
            // thread): nobody adopts that socket now, so it is closed here (rev14c L3).
            if (helperStop) {
                for (NbdConnection c : connections) {
                    if (c != null) {
                        c.dropHandoff();
                    }
                }
            }
        }
    }

    /** Tests only: whether some connection's last reconnect attempt failed (none succeeded since). */
    boolean reconnectFailing() {
        for (NbdConnection c : connections) {
            if (c != null && c.reconnectFailed) {
                return true;
            }
        }
        return false;
    }

    /** Tests only: runs on the reconnect thread after a reconnect's stop check, before its hand-over (null: nothing). */
    volatile Runnable beforeHandoff;

    private void reconnectUntilStopped() {
        long[] nextAttemptNs = new long[connections.length];
        long[] backoffMs = new long[connections.length];
        Arrays.fill(backoffMs, 10);
        long lastDelivered = delivered;
        while (!helperStop) {
            boolean reconnecting = false;
            for (int i = 0; i < connections.length && !helperStop; i++) {
                NbdConnection c = connections[i];
                if (c == null || !c.wantReconnect || c.handoff != null) {
                    continue;
                }
                reconnecting = true;
                long now = System.nanoTime();
                if (now - nextAttemptNs[i] < 0) {
                    continue;
                }
                if (reconnect(c)) {
                    backoffMs[i] = 10;
                } else {
                    nextAttemptNs[i] = System.nanoTime() + backoffMs[i] * 1_000_000L;
                    backoffMs[i] = Math.min(backoffMs[i] * 2, 500);
                }
                signalControl();
            }
            long now = delivered;
            if (now == lastDelivered && inFlight() > 0) {
                // No progress for a tick: let the I/O thread check timeouts even if it sleeps.
                signalControl();
            }
            lastDelivered = now;
            LockSupport.parkNanos(reconnecting ? 10_000_000L : 100_000_000L);
        }
    }

    private boolean reconnect(NbdConnection c) {
        try {
            // A new TLS session each time: a restarted server knows nothing of the old one.
            // One deadline for connect and handshake, and the stop eventfd on the socket: close
            // signals it, so a server that accepts and never greets holds close for no time
            // instead of up to the connect timeout (which may be an hour).
            long deadlineNs = deadline(options);
            NbdSocket fresh = connect(address, tls, options, deadlineNs, stop.fd());
            NbdExport next = negotiate(fresh, address, tls, options, deadlineNs);
            fresh.stopCancel(); // the transmission phase (and its goodbye at close) waits as before
            if (helperStop) {
                // Closing: close may already have closed the connections, so a hand-over now
                // would leak this socket (and if close sets the flag just after this check, the
                // hand-over is dropped when this thread ends: helperLoop).
                fresh.close();
                return false;
            }
            Runnable hook = beforeHandoff;
            if (hook != null) {
                hook.run();
            }
            c.reconnectFailed = false;
            // Cleared before the hand-over: a drop after the adoption sets it again.
            c.wantReconnect = false;
            c.handoff = new NbdConnection.Fresh(fresh, next);
            return true;
        } catch (IOException | RuntimeException | OutOfMemoryError e) {
            // OutOfMemoryError: the socket's, the handshake's and the TLS session's buffers are
            // direct memory, which every disk of the JVM shares; another disk may hold it all for
            // a while. A failed attempt, retried with the backoff, never this thread's end (the
            // disk would then never reconnect, and its requests would all time out).
            if (!c.reconnectFailed && !helperStop) { // a reconnect close gave up is no failure to report
                LOG.log(System.Logger.Level.WARNING, "nbd: {0} reconnect failed: {1}", address, e.getMessage());
            }
            c.reconnectFailed = true;
            return false;
        }
    }

    private void signalControl() {
        controlPending = true;
        control.signal();
    }

    @Override
    public int depth() {
        return slots.depth;
    }

    @Override
    public int freeSlots() {
        return free.size();
    }

    @Override
    public int prepareRead(long offset, IoVector buffers, long userData) {
        return prepareTransfer(CMD_READ, offset, buffers, 0, userData);
    }

    @Override
    public int prepareWrite(long offset, IoVector buffers, long userData) {
        return prepareWrite(offset, buffers, false, userData);
    }

    /** A write that is durable when it completes when {@code fua} (NBD_CMD_FLAG_FUA). */
    public int prepareWrite(long offset, IoVector buffers, boolean fua, long userData) {
        if (readOnly) {
            return -Errno.EROFS;
        }
        if (fua && !export.has(FLAG_SEND_FUA)) {
            return -Errno.EOPNOTSUPP;
        }
        return prepareTransfer(CMD_WRITE, offset, buffers, fua ? CMD_FLAG_FUA : 0, userData);
    }

    private int prepareTransfer(int op, long offset, IoVector buffers, int flags, long userData) {
        long length = buffers.totalLength();
        if (closed) {
            return -Errno.EBADF;
        }
        // A request above the server's maximum block size goes in parts (the connection splits it).
        if (buffers.count() > slots.maxSegments || length > MAX_REQUEST_BYTES || !inRange(offset, length)) {
            return -Errno.EINVAL;
        }
        int slot = take();
        if (slot < 0) {
            return -Errno.EAGAIN;
        }
        fill(slot, length == 0 ? NbdSlots.OP_LOCAL : op, offset, length, flags, userData);
        slots.copySegments(slot, buffers);
        // Listed last, whole: an exception while it was filled loses the slot, never sends half a request.
        pending[pendingCount++] = slot;
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
        // A server that offers no flush has nothing volatile to flush (proto.md, NBD_FLAG_SEND_FLUSH).
        fill(slot, export.has(FLAG_SEND_FLUSH) && !flushLost ? CMD_FLUSH : NbdSlots.OP_LOCAL, 0, 0, 0, userData);
        if (flushLost) {
            slots.result[slot] = -Errno.EIO; // writes a lost server acknowledged are gone: never durable
        }
        pending[pendingCount++] = slot;
        return 0;
    }

    @Override
    public int prepareDiscard(long offset, long length, long userData) {
        if (readOnly) {
            return -Errno.EROFS;
        }
        return prepareRange(export.has(FLAG_SEND_TRIM) ? CMD_TRIM : NbdSlots.OP_LOCAL, offset, length, 0, userData);
    }

    @Override
    public int prepareWriteZeroes(long offset, long length, boolean mayUnmap, long userData) {
        if (readOnly) {
            return -Errno.EROFS;
        }
        if (!export.has(FLAG_SEND_WRITE_ZEROES)) {
            return -Errno.EOPNOTSUPP;
        }
        return prepareRange(CMD_WRITE_ZEROES, offset, length, mayUnmap ? 0 : CMD_FLAG_NO_HOLE, userData);
    }

    private int prepareRange(int op, long offset, long length, int flags, long userData) {
        if (closed) {
            return -Errno.EBADF;
        }
        // A range above what one command may carry goes in parts (the connection splits it).
        if (length > MAX_REQUEST_BYTES || !inRange(offset, length)) {
            return -Errno.EINVAL;
        }
        int slot = take();
        if (slot < 0) {
            return -Errno.EAGAIN;
        }
        fill(slot, length == 0 ? NbdSlots.OP_LOCAL : op, offset, length, flags, userData);
        pending[pendingCount++] = slot;
        return 0;
    }

    private boolean inRange(long offset, long length) {
        int mask = export.minBlock - 1;
        return offset >= 0 && length >= 0 && offset <= export.sizeBytes - length && ((offset | length) & mask) == 0;
    }

    private int take() {
        if (pendingHead == pendingCount) {
            // Empty (a submit an exception cut short may have left both indices past 0).
            pendingCount = 0;
            pendingHead = 0;
        }
        return pendingCount == pending.length ? -1 : free.poll();
    }

    private void fill(int slot, int op, long offset, long length, int flags, long userData) {
        slots.op[slot] = (byte) op;
        slots.requestOffset[slot] = offset;
        slots.requestLength[slot] = length;
        slots.offset[slot] = offset;
        slots.length[slot] = length;
        slots.partStart[slot] = 0;
        slots.commandFlags[slot] = flags;
        slots.userData[slot] = userData;
        slots.segments[slot] = 0;
        slots.result[slot] = 0;
    }

    @Override
    public int submit() {
        if (pendingHead == pendingCount) {
            return 0;
        }
        int n = pendingCount - pendingHead;
        long touched = 0;
        // Each request leaves the list before its next holder takes it: an exception between the
        // two loses that one request (the engine gives it up), never counts it twice or for ever,
        // and leaves the rest of the list to the next submit.
        while (pendingHead < pendingCount) {
            int slot = pending[pendingHead++];
            io.vblk.sys.FaultPoints.at(io.vblk.sys.FaultPoints.HANDING_OVER); // tests only: see FaultPoints
            if (slots.op[slot] == NbdSlots.OP_LOCAL) {
                done.offer(slot);
                continue;
            }
            int c = nextConnection;
            nextConnection = c + 1 == connections.length ? 0 : c + 1;
            connections[c].accept(slot);
            touched |= 1L << c;
        }
        pendingCount = 0;
        pendingHead = 0;
        for (int c = 0; c < connections.length; c++) {
            if ((touched & (1L << c)) != 0) {
                connections[c].send();
            }
        }
        return n;
    }

    @Override
    public int pendingSubmit() {
        // Finished requests not delivered yet count too, so the I/O thread polls before it sleeps.
        return pendingCount - pendingHead + done.size();
    }

    /**
     * Derived (see the class comment): the slots a connection holds, by their own state, plus
     * the finished ones not yet delivered. A scan of the slots' states: off the data path (the
     * engine asks while it drains). Exact on the I/O thread; from another thread a moment's view.
     */
    @Override
    public int inFlight() {
        int n = done.size();
        byte[] state = slots.state;
        for (int slot = 0; slot < state.length; slot++) {
            if (state[slot] != NbdSlots.IDLE) {
                n++;
            }
        }
        return n;
    }

    /**
     * Derived like {@link #inFlight()}: with nothing held by a connection, finished or pending,
     * every slot out of the pool belongs to a completion an exception cut off (taken from the done
     * list and never delivered, finished and never listed, or handed on by submit and never
     * taken), so the pool is made whole again. A slot whose command a server may still answer is
     * held by its connection (counted in flight), so none can be reused under a late reply.
     */
    @Override
    public int reclaimLostSlots() {
        if (closed || inFlight() != 0 || pendingSubmit() != 0) {
            return 0;
        }
        int lost = slots.depth - free.size();
        if (lost <= 0) {
            return 0;
        }
        for (NbdConnection c : connections) {
            if (c != null) {
                c.forgetLost();
            }
        }
        while (free.poll() >= 0) {
            // emptied, then refilled with every slot: none is held anywhere
        }
        for (int slot = 0; slot < slots.depth; slot++) {
            free.offer(slot);
        }
        pendingCount = 0;
        pendingHead = 0;
        return lost;
    }

    @Override
    public int poll(CompletionSink sink, int max) {
        if (controlPending) {
            controlPending = false;
            control.read();
        }
        boolean wake = woken;
        woken = false;
        for (NbdConnection c : connections) {
            c.service(wake, closed);
        }
        int n = 0;
        while (n < max) {
            int slot = done.poll();
            if (slot < 0) {
                break;
            }
            io.vblk.sys.FaultPoints.at(io.vblk.sys.FaultPoints.REAP_TAKEN); // tests only: see FaultPoints
            long userData = slots.userData[slot];
            long result = slots.result[slot];
            free.offer(slot);
            delivered = delivered + 1;
            n++;
            sink.complete(userData, result);
        }
        return n;
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
     * Waits at most {@code vblk.aio.closeDrainMs} (10 s) for the requests in flight (a lost
     * server's fail with ECANCELED at once), says goodbye to the server, and closes. Idempotent.
     * See {@link #closeWithin}.
     */
    @Override
    public void close() {
        closeWithin(Long.MAX_VALUE);
    }

    /**
     * As {@link #close()}, waiting at most {@code timeoutNs} (a device's {@code close(ms)} passes
     * what is left of its deadline) and never longer than {@code vblk.aio.closeDrainMs} (10 s),
     * whatever the request timeout: a server that accepted the connection and then went silent
     * (no reply, no hang-up) held close for the request timeout (30 s by default, settable to
     * hours). Past the wait, the reconnect thread is stopped first (no socket handed over after
     * this), then every connection's socket is shut down and closed and the requests it held
     * fail with EIO (their completions, like every completion at close, go nowhere). Replies
     * are read by the closing thread itself into the requests' buffers, and sends copy from them
     * in the call, so once this returns nothing of the disk touches those buffers: the close is
     * always drained ({@link #closedDrained()}).
     */
    @Override
    public void closeWithin(long timeoutNs) {
        if (closed) {
            return;
        }
        closed = true;
        long waitNs = Math.min(Math.max(0, timeoutNs), closeDrainNs());
        long start = System.nanoTime();
        // Called once the I/O thread stopped: finish what is in flight here (a lost server's
        // requests fail with ECANCELED instead of waiting for it).
        drainAtClose(waitNs, start, (userData, result) -> { });
        if (closeFlushWanted()) {
            long leftNs = waitNs - (System.nanoTime() - start);
            if (leftNs <= 0) {
                // The drain used the wait up (or there was none: closeWithin(0)): a FLUSH queued
                // now would never be sent, so none is, and the log says so rather than "no reply".
                closeFlushesSkipped++;
                LOG.log(System.Logger.Level.ERROR, "nbd: {0} the final FLUSH at close not sent (no time left);"
                        + " writes the server acknowledged may not be durable", address);
            } else {
                // Bounded by what is left of close's wait and by the request timeout, as any request.
                flushAtClose(Math.min(leftNs, options.requestTimeoutMs() * 1_000_000L));
            }
        }
        helperStop = true;
        // Ends a reconnect's connect or handshake at once (it polls this eventfd with its socket):
        // without it close waited for the server up to the connect timeout (rev12a M2).
        stop.signal();
        boolean helperGone = true;
        if (helper.isAlive()) {
            LockSupport.unpark(helper);
            try {
                // Bounded all the same: a reconnect may sit in what no eventfd ends (a DNS lookup).
                helper.join(HELPER_JOIN_MS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            helperGone = !helper.isAlive();
            if (!helperGone) {
                LOG.log(System.Logger.Level.WARNING, "nbd: {0} reconnect thread still busy after {1} ms at close;"
                        + " closing without it (it drops what it connects)", address, HELPER_JOIN_MS);
            }
        }
        int abandoned = 0;
        for (NbdConnection c : connections) {
            if (c != null) {
                abandoned += c.abandon(); // nothing when every request came back
            }
        }
        if (abandoned > 0) {
            poll((userData, result) -> { }, slots.depth);
            LOG.log(System.Logger.Level.WARNING, "nbd: {0} did not answer {1} request(s) within close''s {2} ms;"
                    + " their connections were shut down and they failed with EIO", address, abandoned,
                    TimeUnit.NANOSECONDS.toMillis(waitNs));
        }
        for (NbdConnection c : connections) {
            if (c != null) {
                c.close();
            }
        }
        epoll.close();
        if (helperGone) {
            // A helper still running polls these descriptors (stop) or signals them (control):
            // left open (two descriptors) rather than closed under it, where their numbers could
            // be reused by another file and written to or polled.
            control.close();
            stop.close();
        }
    }

    /** Finishes what is in flight (and pending) within close's wait, delivering to {@code sink}. */
    private void drainAtClose(long waitNs, long start, CompletionSink sink) {
        while (connections[connections.length - 1] != null && (inFlight() > 0 || pendingCount > pendingHead)) {
            long leftNs = waitNs - (System.nanoTime() - start);
            if (leftNs <= 0) {
                break;
            }
            submit();
            if (poll(sink, slots.depth) == 0 && inFlight() > 0) {
                completion.await((int) Math.max(1, Math.min(DRAIN_WAIT_MS, leftNs / 1_000_000)));
            }
        }
    }

    /**
     * Whether a clean close flushes: a writable disk whose server has a volatile cache
     * (NBD_FLAG_SEND_FLUSH) holding writes it acknowledged that no completed FLUSH covered (a
     * guest or embedder that never sent a last FLUSH), with everything drained; not once FLUSH
     * failed for good ({@link #flushLost}: nothing to learn), as an image's final fdatasync.
     */
    private boolean closeFlushWanted() {
        return !readOnly && export.has(FLAG_SEND_FLUSH) && !flushLost && writesAcked != writesFlushed
                && connections[connections.length - 1] != null && inFlight() == 0 && pendingCount == pendingHead;
    }

    /**
     * A clean close makes what the server acknowledged durable before saying goodbye, as QEMU's
     * bdrv_close flushes (a raw file's close ends with an fdatasync): one NBD_CMD_FLUSH (with
     * CAN_MULTI_CONN it covers every connection's completed writes), waited for at most {@code
     * waitNs} (what is left of close's wait, at most the request timeout). A failure is logged: close has no caller to report to (the image's fdatasync logs
     * its failure alike). Returns 0, a negative errno, or Long.MIN_VALUE when close's wait ran out.
     */
    private long flushAtClose(long waitNs) {
        int slot = take();
        if (slot < 0) {
            return 0; // cannot be: everything drained
        }
        fill(slot, CMD_FLUSH, 0, 0, 0, 0);
        pending[pendingCount++] = slot;
        long[] result = {Long.MIN_VALUE}; // no reply within close's wait
        drainAtClose(waitNs, System.nanoTime(), (userData, r) -> result[0] = r);
        if (result[0] == Long.MIN_VALUE) {
            LOG.log(System.Logger.Level.ERROR, "nbd: {0} the final FLUSH at close got no reply within {1} ms;"
                    + " writes the server acknowledged may not be durable", address,
                    Long.toString(TimeUnit.NANOSECONDS.toMillis(waitNs)));
        } else if (result[0] < 0) {
            LOG.log(System.Logger.Level.ERROR, "nbd: {0} the final FLUSH at close failed: {1}; writes the server"
                    + " acknowledged may not be durable", address, Errno.describe((int) -result[0]));
        }
        closeFlushes++;
        return result[0];
    }

    /** Flushes a close sent ({@link #flushAtClose}); for tests. */
    long closeFlushes() {
        return closeFlushes;
    }

    /** Flushes a close wanted but did not send, its wait used up; for tests. */
    long closeFlushesSkipped() {
        return closeFlushesSkipped;
    }

    /** The bound on close's wait for the server ({@code vblk.aio.closeDrainMs}, default 10 s, as the kernel back ends'). */
    private static long closeDrainNs() {
        return TimeUnit.MILLISECONDS.toNanos(Math.max(0, Long.getLong("vblk.aio.closeDrainMs", 10_000)));
    }

    @Override
    public String toString() {
        return "NbdBackend[" + address + ", " + export + ", " + connections.length + " connections]";
    }
}
