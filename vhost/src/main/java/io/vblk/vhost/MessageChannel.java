package io.vblk.vhost;

import org.agrona.concurrent.UnsafeBuffer;

import io.vblk.sys.Errno;
import io.vblk.sys.NativeBuffer;
import io.vblk.sys.UnixSocket;

/**
 * Frames vhost-user messages on a connected, non-blocking socket: reads a header and its payload
 * as they come, gathering the descriptors that ride along, and writes replies. Used by one
 * thread at a time, the one handling the connection's turn (another thread may only
 * {@link #shutdown()} it).
 *
 * <p>The header is checked before the payload is read: a wrong version, a reply flag, unknown
 * flag bits or a size above {@link MessageDescriptor#MAX_PAYLOAD_LENGTH} mean the frontend and
 * vblk no longer agree where messages start, so the connection ends ({@link ProtocolError#fatal}).
 */
final class MessageChannel implements AutoCloseable {
    /** How long a reply may wait for a frontend to make room in its socket buffer. */
    static final int REPLY_WAIT_MS = 2_000;
    private final UnixSocket socket;
    private final int[] received = new int[UnixSocket.MAX_FDS];
    private final int[] receivedCount = new int[1];
    private final NativeBuffer replyMemory =
            new NativeBuffer(MessageDescriptor.HEADER_LENGTH + MessageDescriptor.MAX_PAYLOAD_LENGTH);
    private final UnsafeBuffer replyPayload = new UnsafeBuffer(replyMemory.buffer(), MessageDescriptor.HEADER_LENGTH,
            MessageDescriptor.MAX_PAYLOAD_LENGTH);

    /** Bytes of the message being received that have come so far (header, then payload). */
    private int done;

    MessageChannel(UnixSocket socket) {
        this.socket = socket;
    }

    /** {@link #receive}: a whole message is in {@code m}. */
    static final int MESSAGE = 1;
    /** {@link #receive}: part of a message (or none) has come; the rest is awaited without blocking. */
    static final int PARTIAL = 0;
    /** {@link #receive}: the frontend closed the connection cleanly between messages. */
    static final int END = -1;

    /**
     * Reads what has come of the next message into {@code m} without blocking (the socket is
     * non-blocking): {@link #MESSAGE} once it is whole, {@link #PARTIAL} when the rest has yet
     * to come (call again when the socket is readable; the bytes and descriptors so far are
     * kept), {@link #END} at a clean end of stream. A frontend that sends half a message and
     * stops holds no thread.
     *
     * @throws ProtocolError (fatal) for a broken frame, a message cut short, or a socket error
     */
    int receive(Message m) {
        if (done == 0) {
            m.closeFds();
        }
        while (true) {
            int want = done < MessageDescriptor.HEADER_LENGTH ? MessageDescriptor.HEADER_LENGTH
                    : MessageDescriptor.HEADER_LENGTH + m.size(); // the size was checked with the header
            if (done == want) {
                done = 0;
                return MESSAGE;
            }
            long rc = socket.receive(m.address() + done, want - done, received, receivedCount);
            boolean overflow = false;
            for (int i = 0; i < receivedCount[0]; i++) {
                // Past the message's room every one is closed, not just the first (addFd closes
                // what it cannot keep): they are ours since recvmsg (irev3 FrontendAttackTest).
                overflow |= !m.addFd(received[i]);
            }
            if (overflow) {
                throw ProtocolError.fatal("more than " + UnixSocket.MAX_FDS + " descriptors in one message");
            }
            if (rc > 0) {
                done += (int) rc;
                if (done == MessageDescriptor.HEADER_LENGTH) {
                    checkHeader(m);
                }
            } else if (rc == 0) {
                if (done == 0) {
                    return END;
                }
                throw ProtocolError.fatal("connection closed inside a message (" + done + " of " + want + " bytes)");
            } else if (rc == -Errno.EAGAIN) {
                return PARTIAL;
            } else if (rc == -UnixSocket.EMSGSIZE) {
                throw ProtocolError.fatal("more than " + UnixSocket.MAX_FDS + " descriptors in one message");
            } else if (rc != -Errno.EINTR) {
                throw ProtocolError.fatal("receive failed: errno " + -rc + " (" + Errno.describe((int) -rc) + ")");
            }
        }
    }

    /**
     * The header is checked before the payload is read: past a bad one, the frontend and vblk no
     * longer agree where messages start.
     */
    private static void checkHeader(Message m) {
        int flags = m.flags();
        if ((flags & MessageDescriptor.VERSION_MASK) != MessageDescriptor.VERSION
                || (flags & ~MessageDescriptor.REQUEST_FLAGS) != 0) {
            throw ProtocolError.fatal(String.format("%s with flags 0x%x: expected version 1 and no flags but need_reply",
                    m.name(), flags));
        }
        int size = m.size();
        if (Integer.compareUnsigned(size, MessageDescriptor.MAX_PAYLOAD_LENGTH) > 0) {
            throw ProtocolError.fatal(m.name() + " announces a payload of " + Integer.toUnsignedString(size)
                    + " bytes, more than the " + MessageDescriptor.MAX_PAYLOAD_LENGTH + " any request may have");
        }
    }

    /** Where a reply's payload is written before {@link #reply(int, int)}. */
    UnsafeBuffer replyPayload() {
        return replyPayload;
    }

    /** Sends a reply to {@code request} whose payload is the first {@code size} bytes of {@link #replyPayload()}. */
    void reply(int request, int size) {
        send(request, size, null);
    }

    /**
     * Sends a reply like {@link #reply(int, int)} with descriptor {@code fd} in its ancillary data
     * (GET_INFLIGHT_FD). The caller still owns {@code fd}: the receiver gets its own copy.
     */
    void replyWithFd(int request, int size, int fd) {
        send(request, size, new int[] {fd});
    }

    private void send(int request, int size, int[] fds) {
        UnsafeBuffer header = replyMemory.buffer();
        header.putInt(MessageDescriptor.REQUEST_OFFSET, request);
        header.putInt(MessageDescriptor.FLAGS_OFFSET, MessageDescriptor.VERSION | MessageDescriptor.FLAG_REPLY);
        header.putInt(MessageDescriptor.SIZE_OFFSET, size);
        int length = MessageDescriptor.HEADER_LENGTH + size;
        int done = 0;
        while (done < length) {
            // The descriptors ride with the first bytes that go out, once.
            boolean withFds = done == 0 && fds != null;
            long rc = socket.send(replyMemory.address() + done, length - done, withFds ? fds : null,
                    withFds ? fds.length : 0);
            if (rc > 0) {
                done += (int) rc;
            } else if (rc == -Errno.EAGAIN) {
                // A frontend reads each reply before it sends its next request, so a full socket
                // buffer means one that reads none: wait a little, then give up on it.
                if (!socket.awaitWritable(REPLY_WAIT_MS)) {
                    throw ProtocolError.fatal("reply to " + Request.name(request) + " not taken: the frontend has read no "
                            + "reply for " + REPLY_WAIT_MS + " ms with its socket buffer full");
                }
            } else if (rc != -Errno.EINTR) {
                throw ProtocolError.fatal("reply to " + Request.name(request) + " failed: errno " + -rc + " ("
                        + Errno.describe((int) -rc) + ")");
            }
        }
    }

    /** Sends a reply carrying one u64 (a GET_* answer or a REPLY_ACK status). */
    void replyU64(int request, long value) {
        replyPayload.putLong(0, value);
        reply(request, MessageDescriptor.U64_LENGTH);
    }

    /** Wakes a thread blocked in {@link #receive}; it then sees the end of the stream. */
    void shutdown() {
        socket.shutdown();
    }

    @Override
    public void close() {
        socket.close();
    }
}
