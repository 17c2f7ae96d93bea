package io.vblk.vhost;

import org.agrona.concurrent.UnsafeBuffer;

import io.vblk.sys.Native;
import io.vblk.sys.NativeBuffer;
import io.vblk.sys.UnixSocket;

/**
 * One received request: header fields, the payload in native memory, and the descriptors that
 * came with it. Reused for every message of a connection. The message owns its descriptors until
 * a handler {@linkplain #takeFd(int) takes} one; {@link #closeFds()} closes the rest, so a
 * descriptor the frontend sent where none belongs never leaks.
 */
final class Message {
    private final NativeBuffer memory = new NativeBuffer(MessageDescriptor.HEADER_LENGTH + MessageDescriptor.MAX_PAYLOAD_LENGTH);
    private final UnsafeBuffer header = new UnsafeBuffer(memory.buffer(), 0, MessageDescriptor.HEADER_LENGTH);
    private final UnsafeBuffer payload = new UnsafeBuffer(memory.buffer(), MessageDescriptor.HEADER_LENGTH,
            MessageDescriptor.MAX_PAYLOAD_LENGTH);
    private final int[] fds = new int[UnixSocket.MAX_FDS];
    private int fdCount;

    /** Native address of the header, where the channel receives into. */
    long address() {
        return memory.address();
    }

    UnsafeBuffer header() {
        return header;
    }

    /** The payload; only the first {@link #size()} bytes belong to this message. */
    UnsafeBuffer payload() {
        return payload;
    }

    int request() {
        return header.getInt(MessageDescriptor.REQUEST_OFFSET);
    }

    int flags() {
        return header.getInt(MessageDescriptor.FLAGS_OFFSET);
    }

    /** Payload length the header announces (unsigned; checked against the maximum on receive). */
    int size() {
        return header.getInt(MessageDescriptor.SIZE_OFFSET);
    }

    boolean needReply() {
        return (flags() & MessageDescriptor.FLAG_NEED_REPLY) != 0;
    }

    /** The name of the request, for logs. */
    String name() {
        return Request.name(request());
    }

    // ---------------------------------------------------------------- payload readers

    long u64() {
        return payload.getLong(0);
    }

    int u16(int offset) {
        return payload.getShort(offset) & 0xFFFF;
    }

    int u32(int offset) {
        return payload.getInt(offset);
    }

    long u64(int offset) {
        return payload.getLong(offset);
    }

    // ---------------------------------------------------------------- descriptors

    /** Adds a descriptor that arrived with this message; false (and it is closed) when full. */
    boolean addFd(int fd) {
        if (fdCount == fds.length) {
            Native.libc().close(fd);
            return false;
        }
        fds[fdCount++] = fd;
        return true;
    }

    int fdCount() {
        return fdCount;
    }

    /** Transfers descriptor {@code i} to the caller, who must close it. */
    int takeFd(int i) {
        int fd = fds[i];
        if (fd < 0) {
            throw new IllegalStateException("descriptor " + i + " of " + name() + " was already taken");
        }
        fds[i] = -1;
        return fd;
    }

    /** Closes every descriptor nobody took and forgets them all. */
    void closeFds() {
        for (int i = 0; i < fdCount; i++) {
            if (fds[i] >= 0) {
                Native.libc().close(fds[i]);
                fds[i] = -1;
            }
        }
        fdCount = 0;
    }

    // ---------------------------------------------------------------- checks used by handlers

    /** Rejects the message unless its payload is exactly {@code expected} bytes. */
    void requireSize(int expected) {
        if (size() != expected) {
            throw ProtocolError.rejected(name() + " payload is " + Integer.toUnsignedString(size())
                    + " bytes, expected " + expected);
        }
    }

    /** Rejects the message unless exactly {@code expected} descriptors came with it. */
    void requireFds(int expected) {
        if (fdCount != expected) {
            throw ProtocolError.rejected(name() + " came with " + fdCount + " descriptor(s), expected " + expected);
        }
    }
}
