package io.vblk.vhost;

import org.agrona.concurrent.UnsafeBuffer;

import io.vblk.sys.Errno;
import io.vblk.sys.NativeBuffer;
import io.vblk.sys.UnixSocket;

/**
 * Frames vhost-user messages on a connected socket: reads a header and its payload, gathering the
 * descriptors that ride along, and writes replies. Blocking; used by the one thread that serves
 * the connection (another thread may only {@link #shutdown()} it).
 *
 * <p>The header is checked before the payload is read: a wrong version, a reply flag, unknown
 * flag bits or a size above {@link MessageDescriptor#MAX_PAYLOAD_LENGTH} mean the frontend and
 * vblk no longer agree where messages start, so the connection ends ({@link ProtocolError#fatal}).
 */
final class MessageChannel implements AutoCloseable {
    private final UnixSocket socket;
    private final int[] received = new int[UnixSocket.MAX_FDS];
    private final int[] receivedCount = new int[1];
    private final NativeBuffer replyMemory =
            new NativeBuffer(MessageDescriptor.HEADER_LENGTH + MessageDescriptor.MAX_PAYLOAD_LENGTH);
    private final UnsafeBuffer replyPayload = new UnsafeBuffer(replyMemory.buffer(), MessageDescriptor.HEADER_LENGTH,
            MessageDescriptor.MAX_PAYLOAD_LENGTH);

    MessageChannel(UnixSocket socket) {
        this.socket = socket;
    }

    /**
     * Reads the next message into {@code m}. Returns false when the frontend closed the
     * connection cleanly between messages.
     *
     * @throws ProtocolError (fatal) for a broken frame, a message cut short, or a socket error
     */
    boolean receive(Message m) {
        m.closeFds();
        if (!readFully(m, m.address(), MessageDescriptor.HEADER_LENGTH, true)) {
            return false;
        }
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
        if (size > 0) {
            readFully(m, m.address() + MessageDescriptor.HEADER_LENGTH, size, false);
        }
        return true;
    }

    private boolean readFully(Message m, long address, int length, boolean atBoundary) {
        int done = 0;
        while (done < length) {
            long rc = socket.receive(address + done, length - done, received, receivedCount);
            for (int i = 0; i < receivedCount[0]; i++) {
                if (!m.addFd(received[i])) {
                    throw ProtocolError.fatal("more than " + UnixSocket.MAX_FDS + " descriptors in one message");
                }
            }
            if (rc > 0) {
                done += (int) rc;
            } else if (rc == 0) {
                if (atBoundary && done == 0) {
                    return false;
                }
                throw ProtocolError.fatal("connection closed inside a message (" + done + " of " + length + " bytes)");
            } else if (rc == -UnixSocket.EMSGSIZE) {
                throw ProtocolError.fatal("more than " + UnixSocket.MAX_FDS + " descriptors in one message");
            } else if (rc != -Errno.EINTR) {
                throw ProtocolError.fatal("receive failed: errno " + -rc + " (" + Errno.describe((int) -rc) + ")");
            }
        }
        return true;
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
