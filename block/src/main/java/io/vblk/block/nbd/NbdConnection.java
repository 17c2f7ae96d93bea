package io.vblk.block.nbd;

import static io.vblk.block.nbd.NbdProtocol.*;

import java.io.IOException;
import java.lang.System.Logger.Level;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;

import javax.net.ssl.SSLEngineResult;
import javax.net.ssl.SSLException;

import org.agrona.UnsafeApi;
import org.agrona.concurrent.UnsafeBuffer;

import io.vblk.sys.Errno;
import io.vblk.sys.Linux;
import io.vblk.sys.Native;
import io.vblk.sys.NativeBuffer;

/**
 * One connection to the NBD server, driven by the disk's I/O thread itself. {@link #send()}
 * (from the disk's submit) puts every request queued in the round on the wire with one
 * {@code sendmsg} of an iovec array (headers from the slots' header area, write payloads straight
 * from guest memory) on the non-blocking socket; {@link #service} (from the disk's poll) reads
 * replies in bulk into a receive buffer, parses them in place, copies read payloads once into
 * guest memory and hands finished slots to the disk's completion ring. A send the socket cannot
 * take whole (EAGAIN mid-batch) keeps its position and resumes when the socket is writable
 * (EPOLLOUT on the disk's epoll) or on the next round. Over TLS the same batch is staged into the
 * session's preallocated buffer instead (headers and write payloads copied once), sealed into
 * records and written with one {@code send}; replies are read in bulk as records and opened
 * straight into the receive buffer, where the same parser reads them ({@link NbdTlsSession}).
 *
 * <p>Faults: a connection that breaks or stays silent past the request timeout is dropped, its
 * requests are queued again, and the disk's helper thread reconnects (the blocking connect and
 * handshake never run on the I/O thread) and hands the new socket back; the requests are then sent
 * again (writes are idempotent: their buffers are untouched until they complete) until the retry
 * timeout has passed since the outage began; then they fail with EIO. A server that breaks the
 * protocol (bad magic, unknown cookie, a chunk outside its request, chunks that overlap, a read
 * not fully covered) fails the requests it had with EIO, is logged and reconnected.
 *
 * <p>Threads: everything here runs on the I/O thread (or, once that has stopped, on the thread
 * that closes the disk) except the hand-over fields {@link #wantReconnect} and {@link #handoff}.
 */
final class NbdConnection {
    private static final System.Logger LOG = System.getLogger("io.vblk.block.nbd");
    private static final ByteOrder BE = ByteOrder.BIG_ENDIAN;
    private static final int IOV_MAX = 1024;
    private static final int RECEIVE_BYTES = 256 << 10;
    /**
     * Full reads (or TLS fills) one {@link #receive} call makes at most: a round's worth. A server
     * that keeps the socket full would otherwise hold the I/O thread in the loop and starve the
     * other devices on it; what is left stays in the socket, which (level-triggered) wakes the
     * thread again for the next round.
     */
    static final int READS_PER_CALL = 8;
    private static final int TICK_MS = 100;

    /** A socket the helper thread opened and negotiated, for the I/O thread to adopt. */
    record Fresh(NbdSocket socket, NbdExport export) {
    }

    private final NbdBackend disk;
    private final NbdSlots slots;
    private final int index;

    /** Set by the I/O thread when the socket is gone; the helper reconnects while it is set. */
    volatile boolean wantReconnect;
    /** The helper's new socket, taken (and cleared) by the I/O thread. */
    volatile Fresh handoff;
    private static final java.lang.invoke.VarHandle HANDOFF;

    static {
        try {
            HANDOFF = java.lang.invoke.MethodHandles.lookup().findVarHandle(NbdConnection.class, "handoff", Fresh.class);
        } catch (ReflectiveOperationException e) {
            throw new ExceptionInInitializerError(e);
        }
    }
    /** Set by the helper when an attempt to reconnect failed (cleared when one succeeds). */
    volatile boolean reconnectFailed;

    private NbdSocket socket;
    /** The socket's TLS session, or null (plain: sendmsg straight from guest memory). */
    private NbdTlsSession tls;
    private NbdExport export;
    /**
     * The server refused a write-zeroes longer than its maximum payload (EOVERFLOW or EINVAL,
     * which proto.md allows): from then on, on this connection, zeroing goes in parts of at most
     * the maximum payload, like a write. Sticky across reconnects (the same server).
     */
    private boolean zeroesCapped;
    private boolean watchingOut;

    // Requests waiting to be sent, in order.
    private final int[] sendQueue;
    /** Which slots this connection owns. */
    private final boolean[] mine;
    private int sendHead;
    private int sendCount;
    private int owned;

    // The batch being sent: iovecs and a msghdr in native memory.
    private final NativeBuffer iovecs = new NativeBuffer(IOV_MAX * 16);
    private final UnsafeBuffer iov = iovecs.buffer();
    private final UnsafeBuffer msghdr = new NativeBuffer(64).buffer();
    private int iovFirst;
    private int iovEnd;
    /** Counts the batches laid out; {@link #batchOf} names the one each slot was last laid out in. */
    private int batch;
    /** Per slot: the batch it was last laid out in, and the iovec index just past its bytes there. */
    private final int[] batchOf;
    private final int[] iovEndOf;
    private boolean wantWrite;
    /** Every request owned was taken since the last {@link #service}: no reply can be due yet. */
    private boolean allNew;

    // Receive buffer [start, end) and the parser's state.
    /** Direct, so that a TLS record can be opened straight into it. */
    private final ByteBuffer receiveMemory = ByteBuffer.allocateDirect(RECEIVE_BYTES);
    private final UnsafeBuffer rx = new UnsafeBuffer(receiveMemory);
    private final long receive = rx.addressOffset();
    private int start;
    private int end;
    private int payloadSlot = -1;
    private long payloadPosition;
    private long payloadLeft;
    private boolean payloadDone;

    private long failingSinceNs;
    private boolean outageLogged;
    private long nextTimeoutCheckNs;

    NbdConnection(NbdBackend disk, int index, NbdSocket socket, NbdExport export) {
        this.disk = disk;
        this.slots = disk.slots;
        this.index = index;
        this.export = export;
        sendQueue = new int[slots.depth];
        mine = new boolean[slots.depth];
        batchOf = new int[slots.depth];
        iovEndOf = new int[slots.depth];
        adopt(socket);
    }

    /** Takes a request (called from the disk's submit); it goes out with the next {@link #send()}. */
    void accept(int slot) {
        // Decided before the slot is held: from here to the end only plain stores, so an
        // exception the JVM throws at a call cannot leave it held half-way (counted, never sent).
        boolean fail = socket == null && givenUp();
        if (owned == 0) {
            allNew = true;
        }
        if (!fail) {
            sendQueue[(sendHead + sendCount) % sendQueue.length] = slot;
            sendCount++;
        }
        owned++;
        mine[slot] = true;
        slots.state[slot] = NbdSlots.QUEUED;
        if (fail) {
            finish(slot, -Errno.EIO);
        }
    }

    private void enqueue(int slot) {
        sendQueue[(sendHead + sendCount) % sendQueue.length] = slot;
        sendCount++;
    }

    /** Sends what is queued, unless the socket is full (then EPOLLOUT or the next round resumes it). */
    void send() {
        if (socket == null) {
            takeHandoff();
        }
        if (socket != null && !wantWrite && (sendCount > 0 || iovFirst < iovEnd)) {
            trySend();
        }
    }

    /**
     * Everything but sending new requests (called from the disk's poll): adopts a reconnected
     * socket, resumes a partial send, reads and parses replies when any are due or the socket woke
     * the thread, checks the request timeout, and fails what an outage held too long.
     */
    void service(boolean woken, boolean closing) {
        if (socket == null) {
            takeHandoff();
            if (socket == null) {
                if (reconnectFailed && failingSinceNs == 0) {
                    // A lie dropped a working connection; the outage starts when reconnecting fails.
                    failingSinceNs = System.nanoTime();
                }
                if (closing) {
                    failOwned(-Errno.ECANCELED);
                } else if (owned > 0 && givenUp()) {
                    LOG.log(Level.WARNING, "nbd: {0} still unreachable after {1} ms; failing {2} requests with EIO",
                            disk.address(), disk.options.retryTimeoutMs(), owned);
                    failOwned(-Errno.EIO);
                }
                return;
            }
        }
        if (wantWrite) {
            wantWrite = false;
            trySend();
        } else if (sendCount > 0 || iovFirst < iovEnd) {
            trySend();
        }
        // Right after the first send of an idle connection the reply is not there yet: a read
        // would only answer EAGAIN. If it did arrive, the socket is readable (level-triggered) and
        // wakes the sleeping thread; a polling thread reads it on its next poll.
        if (socket != null && (woken || (owned > sendCount && !allNew))) {
            receive();
            if (socket != null && sendCount > 0 && !wantWrite) {
                trySend(); // the next parts of split requests whose part just finished
            }
        }
        allNew = false;
        if (socket != null && owned > 0) {
            checkTimeouts();
        }
    }

    /** Says goodbye and closes (the disk is closing; nothing is owned any more). */
    void close() {
        if (socket != null) {
            sendDisconnect();
            disk.unwatch(socket.fd());
            socket.close();
            socket = null;
        }
        dropHandoff();
    }

    /**
     * Closes a socket handed over and not adopted (the disk is closing). Atomic: at close the
     * closing thread and a reconnect thread that outlived close's wait for it may both call it,
     * and the socket must be closed exactly once (a second close could hit a reused descriptor).
     */
    void dropHandoff() {
        Fresh f = (Fresh) HANDOFF.getAndSet(this, (Fresh) null);
        if (f != null) {
            f.socket().close();
        }
    }

    /**
     * Close gave up waiting for the server (connected, and silent: no reply within close's
     * bound, whatever the request timeout): ends the stream (shutdown(2), then close, before any
     * slot is handed on, so that no late reply can land in a slot reused) and fails every
     * request held with EIO. Nothing is sent: a silent server's socket may be full. Returns how
     * many failed. The helper thread has stopped, so no reconnect hands a socket over after it.
     */
    int abandon() {
        if (socket != null) {
            socket.shutdown();
            disk.unwatch(socket.fd());
            socket.close();
            socket = null;
            tls = null;
        }
        int failed = owned;
        failOwned(-Errno.EIO);
        return failed;
    }

    private void takeHandoff() {
        Fresh f = handoff;
        if (f == null) {
            return;
        }
        handoff = null;
        NbdExport next = f.export();
        if (next.sizeBytes < export.sizeBytes) {
            LOG.log(Level.WARNING, "nbd: {0} shrank from {1} to {2} bytes; requests beyond the end fail",
                    disk.address(), export.sizeBytes, next.sizeBytes);
        }
        if (next.readOnly() && !export.readOnly()) {
            LOG.log(Level.WARNING, "nbd: {0} came back read-only; writes fail", disk.address());
        }
        export = next;
        forgetStream();
        adopt(f.socket());
        LOG.log(Level.INFO, "nbd: {0} connection {1} reconnected; resending {2} requests",
                disk.address(), index, sendCount);
    }

    private void adopt(NbdSocket fresh) {
        socket = fresh;
        tls = fresh.tls();
        watchingOut = false;
        wantWrite = false;
        disk.watchNew(fresh.fd(), index);
    }

    // ---- sending ----

    /** Sends what is queued: one sendmsg per batch of up to IOV_MAX iovecs. */
    private void trySend() {
        if (tls != null) {
            trySendTls();
            return;
        }
        while (socket != null) {
            if (iovFirst == iovEnd && !buildBatch()) {
                break;
            }
            msghdr.setMemory(0, 56, (byte) 0);
            msghdr.putLong(16, iovecs.address() + 16L * iovFirst);
            msghdr.putLong(24, iovEnd - iovFirst);
            long rc = Native.libc().sendmsg(socket.fd(), msghdr.addressOffset(), Linux.MSG_NOSIGNAL);
            if (rc < 0) {
                int errno = Native.errno();
                if (errno == Errno.EAGAIN) {
                    wantWrite = true;
                    break;
                }
                if (errno != Errno.EINTR) {
                    connectionLost("send failed: " + Errno.describe(errno));
                    return;
                }
                continue;
            }
            advance(rc);
        }
        watchForRoom();
    }

    /** Watches for room only while a send waits for it (an epoll_ctl on the rare full socket). */
    private void watchForRoom() {
        if (socket != null && wantWrite != watchingOut) {
            watchingOut = wantWrite;
            disk.watch(socket.fd(), index, wantWrite);
        }
    }

    /**
     * The TLS form of {@link #trySend}: the batch's headers and write payloads are copied into
     * the session's staging buffer, sealed into records and written with one send; a batch
     * larger than the staging buffer takes one send per staging buffer. What the socket cannot
     * take waits, sealed, for EPOLLOUT.
     */
    private void trySendTls() {
        NbdTlsSession t = tls;
        try {
            while (socket != null) {
                if (t.sendPending()) {
                    int rc = t.flush();
                    if (rc == -Errno.EAGAIN) {
                        wantWrite = true;
                        break;
                    }
                    if (rc < 0) {
                        connectionLost("send failed: " + Errno.describe(-rc));
                        return;
                    }
                }
                if (iovFirst == iovEnd && !buildBatch()) {
                    break;
                }
                while (iovFirst < iovEnd && t.stageRoom() > 0) {
                    int at = 16 * iovFirst;
                    int n = (int) Math.min(iov.getLong(at + 8), t.stageRoom());
                    t.stage(iov.getLong(at), n);
                    advance(n);
                }
                t.sealStaged();
            }
        } catch (SSLException e) {
            connectionLost("TLS failed: " + e.getMessage());
            return;
        }
        watchForRoom();
    }

    private void advance(long sent) {
        long left = sent;
        while (left > 0 && iovFirst < iovEnd) {
            long at = 16L * iovFirst;
            long len = iov.getLong((int) at + 8);
            if (left >= len) {
                left -= len;
                iovFirst++;
            } else {
                iov.putLong((int) at, iov.getLong((int) at) + left);
                iov.putLong((int) at + 8, len - left);
                left = 0;
            }
        }
        if (iovFirst == iovEnd) {
            iovFirst = 0;
            iovEnd = 0;
        }
    }

    /** Lays out queued requests as iovecs; false when nothing was queued. */
    private boolean buildBatch() {
        int used = 0;
        long now = System.nanoTime();
        iovFirst = 0;
        iovEnd = 0;
        batch++;
        // A request leaves the queue only together with its SENT state and its place in the
        // batch (plain stores, no call between): an exception the JVM throws at a call in here
        // leaves it queued (laid out again next time) or in the batch (sent next time), never
        // held and forgotten.
        while (sendCount > 0) {
            int slot = sendQueue[sendHead];
            int op = slots.op[slot];
            int need = 1 + (op == CMD_WRITE ? slots.segments[slot] : 0);
            if (used + need > IOV_MAX) {
                break;
            }
            nextPart(slot, op);
            if (!stillValid(slot, op)) {
                sendHead = (sendHead + 1) % sendQueue.length;
                sendCount--;
                finish(slot, -Errno.EIO);
                continue;
            }
            slots.resetCovered(slot);
            int seq = ++slots.sequence[slot];
            long cookie = ((long) seq << 32) | slot;
            int h = slot * 32;
            UnsafeBuffer headers = slots.headers.buffer();
            headers.putInt(h, REQUEST_MAGIC, BE);
            headers.putShort(h + 4, (short) slots.commandFlags[slot], BE);
            headers.putShort(h + 6, (short) op, BE);
            headers.putLong(h + 8, cookie, BE);
            headers.putLong(h + 16, slots.offset[slot], BE);
            headers.putInt(h + 24, (int) slots.length[slot], BE);
            putIov(used++, slots.headers.address() + h, REQUEST_SIZE);
            if (op == CMD_WRITE) {
                used = putPayload(used, slot);
            }
            slots.error[slot] = 0;
            slots.sentAtNs[slot] = now;
            if (op == CMD_FLUSH) {
                slots.flushCovers[slot] = disk.flushSent();
            }
            sendHead = (sendHead + 1) % sendQueue.length;
            sendCount--;
            slots.state[slot] = NbdSlots.SENT;
            batchOf[slot] = batch;
            iovEndOf[slot] = used;
            iovEnd = used;
        }
        return used > 0;
    }

    /**
     * Sets the slot's part on the wire: the rest of the request from {@link NbdSlots#partStart},
     * at most what one command may carry on this connection's export (its maximum block size,
     * rounded down to the preferred size; for a trim QEMU's bound, INT_MAX rounded down to the
     * minimum). Parts go one after the other on the slot, so a part retried after a reconnect is
     * laid out again here from where the request stands.
     */
    private void nextPart(int slot, int op) {
        long at = slots.partStart[slot];
        long rest = slots.requestLength[slot] - at;
        long limit;
        if (op == CMD_TRIM) {
            limit = Integer.MAX_VALUE - Integer.MAX_VALUE % export.minBlock;
        } else if (op == CMD_WRITE_ZEROES && !zeroesCapped) {
            // proto.md (block size constraints): a command with no payload may ask for an effect
            // larger than the maximum payload. The 32-bit length field bounds it: INT_MAX (QEMU's
            // bound too) rounded down to the preferred size, so every part but the last keeps the
            // request's alignment. A 4 GiB zeroing is three commands, not thousands of round
            // trips at the maximum payload.
            limit = Integer.MAX_VALUE - Integer.MAX_VALUE % export.preferredBlock; // the handshake checked preferred >= min
        } else {
            limit = export.maxPayload;
            if (export.preferredBlock <= limit) {
                limit -= limit % export.preferredBlock;
            }
        }
        slots.offset[slot] = slots.requestOffset[slot] + at;
        slots.length[slot] = Math.min(rest, limit);
    }

    /** Lays out the iovecs of a write part's payload: bytes [partStart, partStart + length) of its buffers. */
    private int putPayload(int used, int slot) {
        int base = slot * slots.maxSegments;
        long skip = slots.partStart[slot];
        long left = slots.length[slot];
        for (int i = 0; i < slots.segments[slot] && left > 0; i++) {
            long segLength = slots.segmentLength[base + i];
            if (skip >= segLength) {
                skip -= segLength;
                continue;
            }
            long take = Math.min(segLength - skip, left);
            putIov(used++, slots.segmentAddress[base + i] + skip, take);
            left -= take;
            skip = 0;
        }
        return used;
    }

    /** After a reconnect the export may have shrunk or turned read-only: such requests fail. */
    private boolean stillValid(int slot, int op) {
        if (op == CMD_FLUSH) {
            // A FLUSH resent after a connection lost unflushed writes covers only the new server.
            return !disk.flushLost();
        }
        if (op != CMD_READ && export.readOnly()) {
            return false;
        }
        return slots.offset[slot] + slots.length[slot] <= export.sizeBytes;
    }

    private void putIov(int i, long address, long length) {
        iov.putLong(16 * i, address);
        iov.putLong(16 * i + 8, length);
    }

    private void sendDisconnect() {
        UnsafeBuffer h = msghdr;
        h.setMemory(0, 64, (byte) 0);
        h.putInt(0, REQUEST_MAGIC, BE);
        h.putShort(6, (short) CMD_DISC, BE);
        if (tls != null) {
            // Best effort, as for a plain socket: NBD_CMD_DISC, then TLS's close_notify.
            if (tls.stageRoom() >= REQUEST_SIZE) {
                tls.stage(h.addressOffset(), REQUEST_SIZE);
                try {
                    tls.sealStaged();
                } catch (SSLException e) {
                    // closing anyway
                }
            }
            tls.flush();
            tls.closeOutbound();
            return;
        }
        NbdSocket.LIB.send(socket.fd(), h.addressOffset(), REQUEST_SIZE, Linux.MSG_NOSIGNAL);
    }

    // ---- receiving ----

    private void receive() {
        if (tls != null) {
            receiveTls();
            return;
        }
        for (int reads = 0; socket != null; ) {
            if (reads == READS_PER_CALL) {
                compact();
                return;
            }
            if (end == RECEIVE_BYTES) {
                compact();
                if (end == RECEIVE_BYTES) {
                    protocolError("a reply header does not fit the receive buffer");
                    return;
                }
            }
            int room = RECEIVE_BYTES - end;
            long rc = Native.libc().read(socket.fd(), receive + end, room);
            reads++;
            if (rc > 0) {
                end += (int) rc;
                parse();
                if (rc < room) {
                    // The socket is drained: poll (level-triggered) says when more arrives, so
                    // skip the read that would only answer EAGAIN.
                    compact();
                    return;
                }
                continue;
            }
            if (rc == 0) {
                connectionLost("server closed the connection");
                return;
            }
            int errno = Native.errno();
            if (errno == Errno.EAGAIN) {
                compact();
                return;
            }
            if (errno != Errno.EINTR) {
                connectionLost("read failed: " + Errno.describe(errno));
                return;
            }
        }
    }

    /**
     * The TLS form of {@link #receive}: records are read in bulk into the session's input
     * buffer, opened one by one straight into the receive buffer and parsed in place; every whole
     * record read is opened before the next read (nothing waits, decrypted or not, behind a
     * socket that poll would call idle).
     */
    private void receiveTls() {
        NbdTlsSession t = tls;
        try {
            for (int fills = 0; socket != null; fills++) {
                while (socket != null && t.inputPending()) {
                    if (RECEIVE_BYTES - end < t.recordPlainBytes) {
                        compact();
                        if (RECEIVE_BYTES - end < t.recordPlainBytes) {
                            protocolError("a reply header does not fit the receive buffer");
                            return;
                        }
                    }
                    receiveMemory.limit(RECEIVE_BYTES).position(end);
                    SSLEngineResult.Status status = t.open(receiveMemory);
                    int opened = receiveMemory.position() - end;
                    if (opened > 0) {
                        end += opened;
                        parse();
                    }
                    if (status == SSLEngineResult.Status.CLOSED) {
                        connectionLost("server ended the TLS session");
                        return;
                    }
                    if (status == SSLEngineResult.Status.BUFFER_UNDERFLOW) {
                        break;
                    }
                }
                if (socket == null || t.drained) {
                    t.drained = false;
                    break;
                }
                if (fills == READS_PER_CALL) {
                    // Every whole record read is opened; the rest waits in the (readable) socket.
                    break;
                }
                int rc = t.fill();
                if (rc == 0) {
                    connectionLost("server closed the connection");
                    return;
                }
                if (rc == -Errno.EAGAIN) {
                    break;
                }
                if (rc < 0) {
                    connectionLost("read failed: " + Errno.describe(-rc));
                    return;
                }
            }
        } catch (SSLException e) {
            connectionLost("TLS failed: " + e.getMessage());
            return;
        }
        if (socket != null) {
            compact();
            if (t.sendPending() && !wantWrite) {
                trySendTls(); // a key update the server asked for
            }
        }
    }

    private void compact() {
        if (start == end) {
            start = 0;
            end = 0;
        } else if (start >= end - start) {
            // The regions do not overlap: what is left is at most one header plus a small chunk.
            UnsafeApi.copyMemory(receive + start, receive, end - start);
            end -= start;
            start = 0;
        }
    }

    /** Consumes whole replies (and payload as it arrives) from [start, end). */
    private void parse() {
        while (socket != null) {
            if (payloadLeft > 0) {
                long n = Math.min(payloadLeft, end - start);
                if (n == 0) {
                    return;
                }
                slots.scatter(payloadSlot, payloadPosition, receive + start, n);
                start += (int) n;
                payloadPosition += n;
                payloadLeft -= n;
                if (payloadLeft > 0) {
                    return;
                }
                int slot = payloadSlot;
                payloadSlot = -1; // first: an exception in the finish cannot leave it named
                if (payloadDone) {
                    finishRead(slot);
                }
                continue;
            }
            int available = end - start;
            if (available < 4) {
                return;
            }
            int magic = rx.getInt(start, BE);
            if (magic == SIMPLE_REPLY_MAGIC) {
                if (available < SIMPLE_REPLY_SIZE) {
                    return;
                }
                simpleReply();
            } else if (magic == STRUCTURED_REPLY_MAGIC && export.structuredReplies) {
                if (available < STRUCTURED_REPLY_SIZE || !structuredChunk(available)) {
                    return;
                }
            } else {
                protocolError("bad reply magic 0x" + Integer.toHexString(magic));
                return;
            }
        }
    }

    private void simpleReply() {
        int error = rx.getInt(start + 4, BE);
        int slot = lookup(rx.getLong(start + 8, BE));
        if (slot < 0) {
            return;
        }
        start += SIMPLE_REPLY_SIZE;
        if (error != 0) {
            partFailed(slot, error);
        } else if (slots.op[slot] == CMD_READ) {
            // A simple reply to a read carries the whole payload.
            payloadSlot = slot;
            payloadPosition = 0;
            payloadLeft = slots.length[slot];
            if (!slots.cover(slot, 0, payloadLeft)) {
                protocolError("simple reply to a read that chunks already covered");
                return;
            }
            payloadDone = true;
            if (payloadLeft == 0) {
                finishRead(slot);
                payloadSlot = -1;
            }
        } else {
            finishOk(slot);
        }
    }

    /** Handles one structured chunk when enough of it is buffered; false to wait for more bytes. */
    private boolean structuredChunk(int available) {
        int flags = rx.getShort(start + 4, BE) & 0xffff;
        int type = rx.getShort(start + 6, BE) & 0xffff;
        long cookie = rx.getLong(start + 8, BE);
        long length = rx.getInt(start + 16, BE) & 0xffffffffL;
        boolean done = (flags & REPLY_FLAG_DONE) != 0;
        if (type == REPLY_TYPE_OFFSET_DATA) {
            if (available < STRUCTURED_REPLY_SIZE + 8) {
                return false;
            }
            int slot = lookup(cookie);
            if (slot < 0) {
                return false;
            }
            long dataLength = length - 8;
            long relative = rx.getLong(start + STRUCTURED_REPLY_SIZE, BE) - slots.offset[slot];
            if (slots.op[slot] != CMD_READ || length < 8 || relative < 0 || relative > slots.length[slot]
                    || dataLength > slots.length[slot] - relative) {
                protocolError("data chunk outside its read (" + length + " bytes at relative " + relative + ")");
                return false;
            }
            if (!slots.cover(slot, relative, dataLength)) {
                protocolError("data chunk overlapping another of its read, or too fragmented");
                return false;
            }
            start += STRUCTURED_REPLY_SIZE + 8;
            payloadSlot = slot;
            payloadPosition = relative;
            payloadLeft = dataLength;
            payloadDone = done;
            if (dataLength == 0) {
                payloadSlot = -1;
                if (done) {
                    finishRead(slot);
                }
            }
            return true;
        }
        if (length > MAX_NON_DATA_CHUNK) {
            protocolError("reply chunk type " + type + " of " + length + " bytes");
            return false;
        }
        if (available < STRUCTURED_REPLY_SIZE + length) {
            return false;
        }
        int slot = lookup(cookie);
        if (slot < 0) {
            return false;
        }
        int body = start + STRUCTURED_REPLY_SIZE;
        if (type == REPLY_TYPE_OFFSET_HOLE) {
            long relative = length == 12 ? rx.getLong(body, BE) - slots.offset[slot] : -1;
            long holeLength = length == 12 ? rx.getInt(body + 8, BE) & 0xffffffffL : 0;
            if (slots.op[slot] != CMD_READ || relative < 0 || relative > slots.length[slot]
                    || holeLength > slots.length[slot] - relative) {
                protocolError("hole chunk outside its read");
                return false;
            }
            if (!slots.cover(slot, relative, holeLength)) {
                protocolError("hole chunk overlapping another of its read, or too fragmented");
                return false;
            }
            slots.scatter(slot, relative, 0, holeLength);
        } else if ((type & REPLY_TYPE_ERROR_BIT) != 0) {
            int error = length >= 4 ? rx.getInt(body, BE) : Errno.EIO;
            slots.error[slot] = error == 0 ? Errno.EIO : error;
        } else if (type != REPLY_TYPE_NONE) {
            protocolError("unexpected reply chunk type " + type);
            return false;
        }
        start += STRUCTURED_REPLY_SIZE + (int) length;
        if (done) {
            if (slots.op[slot] == CMD_READ) {
                finishRead(slot);
            } else if (slots.error[slot] != 0) {
                partFailed(slot, slots.error[slot]);
            } else {
                finishOk(slot);
            }
        }
        return true;
    }

    /**
     * Whether bytes of {@code slot}'s request (header or payload) are still in the batch being
     * sent: laid out in the current batch at or after its first iovec not yet fully sent (over
     * TLS: not yet copied into the session, which owns what it staged).
     */
    private boolean stillSending(int slot) {
        return iovFirst < iovEnd && batchOf[slot] == batch && iovEndOf[slot] > iovFirst;
    }

    /** The slot a cookie names, or -1 after a protocol error (it names no request we sent here). */
    private int lookup(long cookie) {
        int slot = (int) cookie;
        int seq = (int) (cookie >>> 32);
        if (slot < 0 || slot >= slots.depth || !mine[slot] || slots.state[slot] != NbdSlots.SENT || slots.sequence[slot] != seq
                || (payloadSlot == slot && payloadLeft > 0)) {
            protocolError("reply with unknown cookie 0x" + Long.toHexString(cookie));
            return -1;
        }
        if (stillSending(slot)) {
            // No server can answer a request it has not read whole (a write's payload still
            // leaving): finishing it would free the slot, and the guest reuse its buffer and
            // the slot its header, while the socket still sends from them. The connection is
            // closed (nothing more is sent from the batch), its requests fail, it reconnects.
            protocolError("reply to a request still being sent");
            return -1;
        }
        return slot;
    }

    private void finishRead(int slot) {
        if (slots.error[slot] != 0) {
            finish(slot, -errnoOf(slots.error[slot]));
        } else if (slots.covered[slot] != slots.length[slot]) {
            // A short read: the server said "done" before covering the whole range.
            LOG.log(Level.WARNING, "nbd: {0} ended a read with {1} of {2} bytes; failing it and reconnecting",
                    disk.address(), slots.covered[slot], slots.length[slot]);
            finish(slot, -Errno.EIO);
            protocolError("short read");
        } else {
            finishOk(slot);
        }
    }

    /**
     * A part failed with the server's error {@code nbdError}: the request fails with it, unless
     * the part is a write-zeroes above the maximum payload that the server refused as too large
     * (proto.md: it MAY answer such a request with EOVERFLOW or EINVAL). That part is sent again,
     * from where the request stands, in parts of at most the maximum payload (and every later
     * zeroing on this connection too): nothing before it is redone, nothing after it skipped.
     */
    private void partFailed(int slot, int nbdError) {
        if (slots.op[slot] == CMD_WRITE_ZEROES && !zeroesCapped && slots.length[slot] > export.maxPayload
                && (nbdError == NBD_EOVERFLOW || nbdError == Errno.EINVAL)) {
            zeroesCapped = true;
            slots.state[slot] = NbdSlots.QUEUED;
            enqueue(slot);
            return;
        }
        finish(slot, -errnoOf(nbdError));
    }

    private void finishOk(int slot) {
        failingSinceNs = 0;
        if (outageLogged) {
            outageLogged = false;
            LOG.log(Level.INFO, "nbd: {0} connection {1} serving again", disk.address(), index);
        }
        int op = slots.op[slot];
        if (op == CMD_FLUSH) {
            if (!disk.flushDone(slots.flushCovers[slot])) {
                finish(slot, -Errno.EIO);
                return;
            }
        } else if (op != CMD_READ && (slots.commandFlags[slot] & CMD_FLAG_FUA) == 0 && export.has(FLAG_SEND_FLUSH)) {
            // Acknowledged, maybe only into the server's cache: durable once a FLUSH covers it.
            disk.writeAcked();
        }
        long next = slots.partStart[slot] + slots.length[slot];
        if (op != CMD_FLUSH && next < slots.requestLength[slot]) {
            // A part of a request above the server's maximum: the next part goes out (from
            // service, after the round's replies are parsed); the request completes once, with
            // the last part (an error in any part fails it at once).
            slots.partStart[slot] = next;
            slots.state[slot] = NbdSlots.QUEUED;
            enqueue(slot);
            return;
        }
        finish(slot, op == CMD_READ || op == CMD_WRITE ? slots.requestLength[slot] : 0);
    }

    /**
     * Hands a finished request to the disk. The slot stops being held (its state, which the
     * disk's in-flight count reads) in the same run of plain stores that records the result; an
     * exception before it is listed loses the completion, never counts it for ever.
     */
    private void finish(int slot, long result) {
        slots.result[slot] = result;
        slots.state[slot] = NbdSlots.IDLE;
        mine[slot] = false;
        owned--;
        io.vblk.sys.FaultPoints.at(io.vblk.sys.FaultPoints.FINISHING); // tests only: see FaultPoints
        disk.completed(slot);
    }

    /**
     * The disk found nothing held by any connection (every slot IDLE) and takes its lost slots
     * back: forgets any trace of them here (an exception may have cut a hand-over short) so that
     * none is taken for this connection's when it is reused. Off the data path.
     */
    void forgetLost() {
        int held = 0;
        for (int slot = 0; slot < slots.depth; slot++) {
            if (slots.state[slot] == NbdSlots.IDLE) {
                mine[slot] = false;
            } else if (mine[slot]) {
                held++;
            }
        }
        owned = held;
        sendHead = 0;
        sendCount = 0;
        if (payloadSlot >= 0 && !mine[payloadSlot]) {
            payloadSlot = -1;
            payloadLeft = 0;
        }
    }

    private static int errnoOf(int nbdError) {
        switch (nbdError) {
            case Errno.EPERM:
            case Errno.EIO:
            case Errno.ENOMEM:
            case Errno.EINVAL:
            case Errno.ENOSPC:
            case Errno.EOPNOTSUPP:
                return nbdError;
            default:
                return Errno.EIO;
        }
    }

    // ---- faults ----

    private void checkTimeouts() {
        long now = System.nanoTime();
        if (now - nextTimeoutCheckNs < 0 || socket == null) {
            return;
        }
        nextTimeoutCheckNs = now + TICK_MS * 1_000_000L;
        long limit = disk.options.requestTimeoutMs() * 1_000_000L;
        int queuedHere = 0;
        for (int slot = 0; slot < slots.depth; slot++) {
            if (mine[slot] && slots.state[slot] == NbdSlots.SENT && now - slots.sentAtNs[slot] > limit) {
                connectionLost("no reply in " + disk.options.requestTimeoutMs() + " ms");
                return;
            }
            if (mine[slot] && slots.state[slot] == NbdSlots.QUEUED) {
                queuedHere++;
            }
        }
        if (queuedHere > sendCount) {
            // A requeue an exception cut short (dropSocket) left requests held and queued
            // nowhere: they would count in flight for ever. They go back in the queue.
            for (int slot = 0; slot < slots.depth; slot++) {
                if (mine[slot] && slots.state[slot] == NbdSlots.QUEUED && !queued(slot)) {
                    enqueue(slot);
                }
            }
        }
    }

    /** The server lied: the requests it had fail, the connection is reopened. */
    private void protocolError(String what) {
        // Closed before the failures are handed on: once a slot is delivered it may be reused at
        // once, so no reply may land any more (nor an exception cut this short with it open).
        closeSocket();
        int failed = 0;
        for (int slot = 0; slot < slots.depth; slot++) {
            if (mine[slot] && slots.state[slot] == NbdSlots.SENT) {
                finish(slot, -Errno.EIO);
                failed++;
            }
        }
        LOG.log(Level.WARNING, "nbd: {0} broke the protocol ({1}); {2} requests failed with EIO; reconnecting",
                disk.address(), what, failed);
        dropSocket();
    }

    /** The connection broke: its requests go back to the queue and are sent again after a reconnect. */
    private void connectionLost(String why) {
        if (failingSinceNs == 0) {
            failingSinceNs = System.nanoTime();
        }
        if (!outageLogged) {
            outageLogged = true;
            LOG.log(Level.WARNING, "nbd: {0} connection {1} lost ({2}); retrying for up to {3} ms",
                    disk.address(), index, why, disk.options.retryTimeoutMs());
        }
        dropSocket();
        if (givenUp()) {
            LOG.log(Level.WARNING, "nbd: {0} failing for over {1} ms; failing {2} requests with EIO",
                    disk.address(), disk.options.retryTimeoutMs(), owned);
            failOwned(-Errno.EIO);
        }
    }

    private void dropSocket() {
        closeSocket();
        forgetStream();
    }

    /**
     * Forgets the old socket's stream (a partial reply, a partial batch) and requeues everything
     * still held. On a drop, and again before a new socket is adopted: a drop an exception cut
     * short must not leave the new stream parsed from the old one's bytes, or a request sent on
     * the old socket waiting for a reply that can never come.
     */
    private void forgetStream() {
        watchingOut = false;
        start = 0;
        end = 0;
        payloadSlot = -1;
        payloadLeft = 0;
        iovFirst = 0;
        iovEnd = 0;
        wantWrite = false;
        // Requeue everything still owned: requests sent (no reply yet) go first, in slot order.
        sendHead = 0;
        sendCount = 0;
        for (int slot = 0; slot < slots.depth; slot++) {
            if (mine[slot] && slots.state[slot] == NbdSlots.SENT) {
                slots.state[slot] = NbdSlots.QUEUED;
                enqueue(slot);
            }
        }
        for (int slot = 0; slot < slots.depth; slot++) {
            if (mine[slot] && slots.state[slot] == NbdSlots.QUEUED && !queued(slot)) {
                enqueue(slot);
            }
        }
    }

    /** Closes the socket (nothing more is read from it) and asks the helper for a new one. */
    private void closeSocket() {
        if (socket != null) {
            disk.unwatch(socket.fd());
            socket.close();
            socket = null;
            tls = null;
            disk.connectionDropped(index);
            wantReconnect = true;
            disk.wakeHelper();
        }
    }

    private boolean queued(int slot) {
        for (int i = 0; i < sendCount; i++) {
            if (sendQueue[(sendHead + i) % sendQueue.length] == slot) {
                return true;
            }
        }
        return false;
    }

    private boolean givenUp() {
        return failingSinceNs != 0
                && System.nanoTime() - failingSinceNs > disk.options.retryTimeoutMs() * 1_000_000L;
    }

    private void failOwned(long result) {
        sendHead = 0;
        sendCount = 0;
        for (int slot = 0; slot < slots.depth; slot++) {
            if (mine[slot]) {
                finish(slot, result);
            }
        }
    }
}
