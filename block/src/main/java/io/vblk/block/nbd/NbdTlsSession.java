package io.vblk.block.nbd;

import java.io.IOException;
import java.nio.ByteBuffer;

import javax.net.ssl.SSLEngine;
import javax.net.ssl.SSLEngineResult;
import javax.net.ssl.SSLException;

import org.agrona.UnsafeApi;
import org.agrona.concurrent.UnsafeBuffer;

import io.vblk.sys.Errno;
import io.vblk.sys.Linux;
import io.vblk.sys.Native;

/**
 * One TLS session over an {@link NbdSocket}, through the JDK's {@link SSLEngine}: the blocking
 * handshake (with the connect deadline) right after NBD_OPT_STARTTLS, blocking reads and writes
 * for the rest of the option haggling, and the non-blocking calls of the transmission phase.
 *
 * <p>All memory is direct and preallocated: plaintext to seal ({@link #plainOut}), sealed records
 * waiting for the socket ({@code netOut}, [{@code sendPosition}, {@code sendEnd})), records read
 * but not yet opened ({@code netIn}, [position, limit)), and opened plaintext the handshake has not
 * consumed yet ({@code appIn}). A batch is staged whole into {@link #plainOut}, sealed into as many
 * records as it needs and written with one {@code send}; what the socket cannot take stays in
 * {@code netOut} for the next writable event. The JDK engine itself allocates a result object
 * (and its cipher some state) per record; nothing here allocates per request.
 */
final class NbdTlsSession {
    /** Plaintext staged per seal: a depth-64 batch of 4 KiB writes with their headers. */
    static final int PLAIN_OUT_BYTES = 256 << 10;
    private static final int NET_IN_BYTES = 256 << 10;
    private static final ByteBuffer EMPTY = ByteBuffer.allocateDirect(0);

    private final SSLEngine engine;
    private final NbdSocket socket;
    private final String peer;

    final ByteBuffer plainOut;
    private final long plainOutAddress;
    private int plainEnd;

    private final ByteBuffer netOut;
    private final long netOutAddress;
    private int sendPosition;
    private int sendEnd;

    private final ByteBuffer netIn;
    private final long netInAddress;

    private final ByteBuffer appIn;
    private final long appInAddress;

    /** The last {@link #fill} read less than it had room for: the socket is empty for now. */
    boolean drained;

    /** The largest plaintext one record can carry: room an unwrap must find in its destination. */
    final int recordPlainBytes;
    private final int packetBytes;

    NbdTlsSession(SSLEngine engine, NbdSocket socket, String peer) {
        this.engine = engine;
        this.socket = socket;
        this.peer = peer;
        int packet = engine.getSession().getPacketBufferSize();
        packetBytes = packet;
        recordPlainBytes = engine.getSession().getApplicationBufferSize();
        plainOut = ByteBuffer.allocateDirect(PLAIN_OUT_BYTES);
        plainOutAddress = address(plainOut);
        // Every record of a full plainOut, plus one for a handshake message or an alert.
        netOut = ByteBuffer.allocateDirect((PLAIN_OUT_BYTES / 16384 + 2) * packet);
        netOutAddress = address(netOut);
        netIn = ByteBuffer.allocateDirect(Math.max(NET_IN_BYTES, 2 * packet));
        netInAddress = address(netIn);
        netIn.limit(0);
        appIn = ByteBuffer.allocateDirect(recordPlainBytes + 64);
        appInAddress = address(appIn);
        appIn.limit(0);
    }

    static long address(ByteBuffer direct) {
        return new UnsafeBuffer(direct).addressOffset();
    }

    // ---- the handshake and the option haggling (blocking, with a deadline) ----

    /** Runs the TLS handshake to its end, or throws (a refused certificate, a silent or closing server). */
    void handshake(long deadlineNs) throws IOException {
        engine.beginHandshake();
        while (true) {
            checkDeadline(deadlineNs);
            switch (engine.getHandshakeStatus()) {
                case NEED_WRAP:
                    seal(EMPTY);
                    flushBlocking(deadlineNs);
                    break;
                case NEED_UNWRAP:
                case NEED_UNWRAP_AGAIN: {
                    appIn.clear();
                    SSLEngineResult.Status status = openInto(appIn, true);
                    appIn.flip();
                    if (status == SSLEngineResult.Status.CLOSED) {
                        throw new IOException("the server closed the TLS session during the handshake");
                    }
                    if (status == SSLEngineResult.Status.BUFFER_UNDERFLOW) {
                        fillBlocking(deadlineNs, "during the TLS handshake");
                    }
                    break;
                }
                case NEED_TASK:
                    runTasks();
                    break;
                default:
                    // Anything the server's Finished flight left unsent (the client's Finished).
                    flushBlocking(deadlineNs);
                    return;
            }
        }
    }

    /** Seals {@code length} bytes at {@code address} and sends them, waiting until {@code deadlineNs}. */
    void writeFully(long address, int length, long deadlineNs) throws IOException {
        int done = 0;
        while (done < length) {
            int n = Math.min(length - done, PLAIN_OUT_BYTES - plainEnd);
            stage(address + done, n);
            done += n;
            sealStaged();
            flushBlocking(deadlineNs);
        }
    }

    /** Reads exactly {@code length} plaintext bytes into {@code address}, waiting until {@code deadlineNs}. */
    void readFully(long address, int length, long deadlineNs) throws IOException {
        int done = 0;
        while (done < length) {
            if (appIn.hasRemaining()) {
                int n = Math.min(appIn.remaining(), length - done);
                UnsafeApi.copyMemory(appInAddress + appIn.position(), address + done, n);
                appIn.position(appIn.position() + n);
                done += n;
                continue;
            }
            checkDeadline(deadlineNs); // records without plaintext never make the socket wait
            appIn.clear();
            SSLEngineResult.Status status = openInto(appIn, false);
            appIn.flip();
            if (status == SSLEngineResult.Status.CLOSED) {
                throw new IOException("the server closed the TLS session");
            }
            if (status == SSLEngineResult.Status.BUFFER_UNDERFLOW) {
                fillBlocking(deadlineNs, "");
            }
        }
    }

    /** Plaintext the handshake read ahead of what it consumed (there is none when it ends: NBD takes turns). */
    int readAhead() {
        return appIn.remaining();
    }

    /** The socket checks the deadline only when it waits; a server that keeps sending must meet it too. */
    private static void checkDeadline(long deadlineNs) throws IOException {
        if (System.nanoTime() - deadlineNs > 0) {
            throw new IOException("NBD server did not answer in time (TLS still going at the connect timeout)");
        }
    }

    private void flushBlocking(long deadlineNs) throws IOException {
        while (sendPosition < sendEnd) {
            int rc = flush();
            if (rc == -Errno.EAGAIN) {
                socket.waitUntil(NbdSocket.POLLOUT, deadlineNs);
            } else if (rc < 0) {
                throw new IOException("send: " + Errno.describe(-rc));
            }
        }
    }

    private void fillBlocking(long deadlineNs, String when) throws IOException {
        while (true) {
            int rc = fill();
            if (rc > 0) {
                return;
            }
            if (rc == 0) {
                throw new IOException("server closed the connection" + (when.isEmpty() ? "" : " " + when));
            }
            if (rc != -Errno.EAGAIN) {
                throw new IOException("read: " + Errno.describe(-rc));
            }
            socket.waitUntil(Linux.POLLIN, deadlineNs);
        }
    }

    private void runTasks() {
        Runnable task;
        while ((task = engine.getDelegatedTask()) != null) {
            task.run();
        }
    }

    // ---- the transmission phase (non-blocking, on the I/O thread) ----

    /** Room left in the staging buffer. */
    int stageRoom() {
        return PLAIN_OUT_BYTES - plainEnd;
    }

    /** Copies {@code length} plaintext bytes (at most {@link #stageRoom()}) into the staging buffer. */
    void stage(long address, int length) {
        UnsafeApi.copyMemory(address, plainOutAddress + plainEnd, length);
        plainEnd += length;
    }

    /** Seals what is staged into records behind whatever still waits for the socket. */
    void sealStaged() throws SSLException {
        plainOut.limit(plainEnd).position(0);
        while (plainOut.hasRemaining()) {
            seal(plainOut);
        }
        plainOut.clear();
        plainEnd = 0;
    }

    private void seal(ByteBuffer source) throws SSLException {
        if (sendPosition == sendEnd) {
            sendPosition = 0;
            sendEnd = 0;
        } else if (netOut.capacity() - sendEnd < 2 * packetBytes) {
            UnsafeApi.copyMemory(netOutAddress + sendPosition, netOutAddress, sendEnd - sendPosition);
            sendEnd -= sendPosition;
            sendPosition = 0;
        }
        netOut.limit(netOut.capacity()).position(sendEnd);
        SSLEngineResult r = engine.wrap(source, netOut);
        if (r.getStatus() != SSLEngineResult.Status.OK) {
            throw new SSLException("TLS seal failed: " + r.getStatus());
        }
        sendEnd = netOut.position();
        if (r.getHandshakeStatus() == SSLEngineResult.HandshakeStatus.NEED_TASK) {
            runTasks();
        }
    }

    /** Whether sealed bytes wait for the socket. */
    boolean sendPending() {
        return sendPosition < sendEnd;
    }

    /** One {@code send} of what is sealed; returns the bytes left, or -errno (EAGAIN: nothing went). */
    int flush() {
        while (sendPosition < sendEnd) {
            long rc = NbdSocket.LIB.send(socket.fd(), netOutAddress + sendPosition, sendEnd - sendPosition,
                    Linux.MSG_NOSIGNAL);
            if (rc > 0) {
                sendPosition += (int) rc;
                if (sendPosition < sendEnd) {
                    return -Errno.EAGAIN; // the socket is full: the rest waits for EPOLLOUT
                }
                break;
            }
            int errno = rc < 0 ? Native.errno() : Errno.EPIPE;
            if (errno != Errno.EINTR) {
                return -errno;
            }
        }
        sendPosition = 0;
        sendEnd = 0;
        return 0;
    }

    /**
     * One {@code read} of records into the input buffer; returns the bytes read, 0 at the end of
     * the stream, or -errno (EAGAIN: nothing there).
     */
    int fill() {
        int pos = netIn.position();
        int lim = netIn.limit();
        if (pos > 0) {
            // What is left is less than one record: move it to the front.
            UnsafeApi.copyMemory(netInAddress + pos, netInAddress, lim - pos);
            lim -= pos;
            netIn.limit(lim).position(0);
        }
        int room = netIn.capacity() - lim;
        if (room == 0) {
            return -Errno.EIO; // cannot happen: the buffer holds two records and less than one is left
        }
        while (true) {
            long rc = Native.libc().read(socket.fd(), netInAddress + lim, room);
            if (rc >= 0) {
                netIn.limit(lim + (int) rc);
                drained = rc > 0 && rc < room;
                return (int) rc;
            }
            int errno = Native.errno();
            if (errno != Errno.EINTR) {
                return -errno;
            }
        }
    }

    /**
     * Opens the next record into {@code destination} (which must have {@link #recordPlainBytes}
     * of room): OK (plaintext added, possibly none), BUFFER_UNDERFLOW (more records must be read
     * first), or CLOSED (the server ended the session).
     */
    SSLEngineResult.Status open(ByteBuffer destination) throws SSLException {
        return openInto(destination, false);
    }

    private SSLEngineResult.Status openInto(ByteBuffer destination, boolean handshaking) throws SSLException {
        if (!netIn.hasRemaining()) {
            return SSLEngineResult.Status.BUFFER_UNDERFLOW;
        }
        SSLEngineResult r = engine.unwrap(netIn, destination);
        switch (r.getHandshakeStatus()) {
            case NEED_TASK:
                runTasks();
                break;
            case NEED_WRAP:
                if (!handshaking) {
                    // A post-handshake message that wants an answer (a key update): sealed now,
                    // sent with the next flush.
                    seal(EMPTY);
                }
                break;
            default:
                break;
        }
        if (r.getStatus() == SSLEngineResult.Status.BUFFER_OVERFLOW) {
            throw new SSLException("TLS record larger than " + destination.remaining() + " bytes of room");
        }
        return r.getStatus();
    }

    /** Whether a whole record may still be waiting in the input buffer. */
    boolean inputPending() {
        return netIn.hasRemaining();
    }

    /** Best effort: the close_notify alert, without waiting. */
    void closeOutbound() {
        try {
            engine.closeOutbound();
            while (!engine.isOutboundDone()) {
                int before = sendEnd;
                seal(EMPTY);
                if (sendEnd == before) {
                    break;
                }
            }
            flush();
        } catch (SSLException | RuntimeException e) {
            // The connection is being closed anyway.
        }
    }

    @Override
    public String toString() {
        return "TLS " + engine.getSession().getProtocol() + " " + engine.getSession().getCipherSuite() + " to " + peer;
    }
}
