package io.vblk.vhost;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.ArrayDeque;

import org.agrona.concurrent.UnsafeBuffer;

import io.vblk.sys.Epoll;
import io.vblk.sys.Errno;
import io.vblk.sys.EventFd;
import io.vblk.sys.Linux;
import io.vblk.sys.Native;
import io.vblk.sys.NativeBuffer;
import io.vblk.sys.UnixSocket;

/**
 * A vhost-user frontend written for the tests, as QEMU 7.2 behaves (facts.md). Its message
 * layouts are written out here from the spec, independently of {@code MessageDescriptor}, so a
 * wrong offset on either side fails a test.
 */
final class TestFrontend implements AutoCloseable {
    static final int GET_FEATURES = 1;
    static final int SET_FEATURES = 2;
    static final int SET_OWNER = 3;
    static final int RESET_OWNER = 4;
    static final int SET_MEM_TABLE = 5;
    static final int SET_VRING_NUM = 8;
    static final int SET_VRING_ADDR = 9;
    static final int SET_VRING_BASE = 10;
    static final int GET_VRING_BASE = 11;
    static final int SET_VRING_KICK = 12;
    static final int SET_VRING_CALL = 13;
    static final int SET_VRING_ERR = 14;
    static final int GET_PROTOCOL_FEATURES = 15;
    static final int SET_PROTOCOL_FEATURES = 16;
    static final int GET_QUEUE_NUM = 17;
    static final int SET_VRING_ENABLE = 18;
    static final int GET_CONFIG = 24;
    static final int SET_CONFIG = 25;
    static final int GET_INFLIGHT_FD = 31;
    static final int SET_INFLIGHT_FD = 32;
    static final int RESET_DEVICE = 34;
    static final int GET_MAX_MEM_SLOTS = 36;
    static final int ADD_MEM_REG = 37;
    static final int REM_MEM_REG = 38;

    static final int VERSION = 0x1;
    static final int REPLY = 0x4;
    static final int NEED_REPLY = 0x8;
    static final long NOFD = 0x100;

    static final long F_PROTOCOL_FEATURES = 1L << 30;
    static final long PF_MQ = 1L;
    static final long PF_REPLY_ACK = 1L << 3;
    static final long PF_CONFIG = 1L << 9;
    static final long PF_INFLIGHT_SHMFD = 1L << 12;
    static final long PF_CONFIGURE_MEM_SLOTS = 1L << 15;

    static final int TIMEOUT_MS = 10_000;

    /** A memory region as the protocol describes it. */
    record Region(long gpa, long size, long user, long offset) {
    }

    /** A reply: header fields and payload. */
    record Reply(int request, int flags, ByteBuffer payload) {
        long u64() {
            return payload.getLong(0);
        }
    }

    /**
     * An inflight buffer description (VhostUserInflight: u64 mmap_size, u64 mmap_offset,
     * u16 num_queues, u16 queue_size, padded to 24 bytes) and the descriptor that goes with it.
     */
    record Inflight(long mmapSize, long mmapOffset, int numQueues, int queueSize, int fd) {
        ByteBuffer payload() {
            return TestFrontend.payload(24).putLong(0, mmapSize).putLong(8, mmapOffset).putShort(16, (short) numQueues)
                    .putShort(18, (short) queueSize);
        }
    }

    private final UnixSocket socket;
    private final Epoll epoll = new Epoll(1);
    private final NativeBuffer io = new NativeBuffer(16384);
    private final int[] fdsIn = new int[UnixSocket.MAX_FDS];
    private final int[] fdCount = new int[1];
    /** Whether to ask for an acknowledgement of every request without a reply of its own. */
    boolean ackEverything;
    /** Descriptors of replies received while {@link #keepFds} is set, for the test to take; otherwise closed. */
    private final ArrayDeque<Integer> keptFds = new ArrayDeque<>();
    private boolean keepFds;
    private boolean replyAck;

    private TestFrontend(UnixSocket socket) {
        this.socket = socket;
        epoll.add(socket.fd(), Linux.EPOLLIN, 0);
    }

    static TestFrontend connect(Path path) {
        return new TestFrontend(UnixSocket.connect(path));
    }

    static ByteBuffer payload(int bytes) {
        return ByteBuffer.allocate(bytes).order(ByteOrder.LITTLE_ENDIAN);
    }

    // ---------------------------------------------------------------- raw

    /** Sends header + payload in one sendmsg with {@code fds}, as QEMU does. */
    void send(int request, int flags, ByteBuffer payload, int... fds) {
        byte[] body = payload == null ? new byte[0] : payload.array();
        ByteBuffer m = payload(12 + body.length);
        m.putInt(0, request).putInt(4, flags).putInt(8, body.length);
        m.position(12);
        m.put(body);
        sendBytes(m.array(), fds);
    }

    /** Sends arbitrary bytes (a frame of any shape) with {@code fds}. */
    void sendBytes(byte[] bytes, int... fds) {
        UnsafeBuffer b = io.buffer();
        b.putBytes(0, bytes);
        long rc = socket.send(io.address(), bytes.length, fds, fds.length);
        if (rc != bytes.length) {
            throw new IllegalStateException("send returned " + rc);
        }
    }

    /** Receives one reply, failing after {@link #TIMEOUT_MS}; null when the backend closed the connection. */
    Reply receive() {
        if (!readFully(0, 12)) {
            return null;
        }
        UnsafeBuffer b = io.buffer();
        int request = b.getInt(0);
        int flags = b.getInt(4);
        int size = b.getInt(8);
        if (size < 0 || size > 4096) {
            throw new AssertionError("reply with size " + size);
        }
        if (size > 0 && !readFully(12, size)) {
            throw new AssertionError("reply cut short");
        }
        byte[] body = new byte[size];
        b.getBytes(12, body);
        return new Reply(request, flags, ByteBuffer.wrap(body).order(ByteOrder.LITTLE_ENDIAN));
    }

    private boolean readFully(int offset, int length) {
        int done = 0;
        long deadline = System.nanoTime() + TIMEOUT_MS * 1_000_000L;
        while (done < length) {
            // Epoll reports EINTR as 0 ready: only the deadline means a timeout.
            long leftMs = (deadline - System.nanoTime()) / 1_000_000L;
            if (leftMs <= 0) {
                throw new AssertionError("no reply within " + TIMEOUT_MS + " ms");
            }
            if (epoll.await((int) leftMs) == 0) {
                continue;
            }
            long rc = socket.receive(io.address() + offset + done, length - done, fdsIn, fdCount);
            for (int i = 0; i < fdCount[0]; i++) {
                if (keepFds) {
                    keptFds.add(fdsIn[i]);
                } else {
                    Native.libc().close(fdsIn[i]);
                }
            }
            if (rc == 0 || rc == -Errno.ECONNRESET) {
                if (done == 0) {
                    return false;
                }
                throw new AssertionError("connection closed inside a reply");
            }
            if (rc == -Errno.EINTR) {
                continue;
            }
            if (rc < 0) {
                throw new AssertionError("receive failed: " + rc);
            }
            done += (int) rc;
        }
        return true;
    }

    /** Whether the backend closed the connection (anything it sends first is skipped). */
    boolean closedByBackend() {
        for (int i = 0; i < 16; i++) {
            if (receive() == null) {
                return true;
            }
        }
        return false;
    }

    /** Sends a request that has a reply of its own, and returns the reply (null: connection closed). */
    Reply request(int request, ByteBuffer payload, int... fds) {
        send(request, VERSION, payload, fds);
        Reply r = receive();
        if (r != null && (r.request() != request || r.flags() != (VERSION | REPLY))) {
            throw new AssertionError("reply header " + r.request() + "/0x" + Integer.toHexString(r.flags()) + " to " + request);
        }
        return r;
    }

    /**
     * Sends a request with need_reply and returns the acknowledgement (0 success), or -1 when the
     * backend closed the connection instead.
     */
    long acked(int request, ByteBuffer payload, int... fds) {
        send(request, VERSION | NEED_REPLY, payload, fds);
        Reply r = receive();
        if (r == null) {
            return -1;
        }
        if (r.request() != request || r.flags() != (VERSION | REPLY) || r.payload().capacity() != 8) {
            throw new AssertionError("bad acknowledgement of " + request + ": " + r);
        }
        return r.u64();
    }

    /** Sends a request without a reply of its own, acknowledged if {@link #ackEverything}; fails on a refusal. */
    void post(int request, ByteBuffer payload, int... fds) {
        if (ackEverything && replyAck) {
            long ack = acked(request, payload, fds);
            if (ack != 0) {
                throw new AssertionError("request " + request + " refused: ack " + ack);
            }
        } else {
            send(request, VERSION, payload, fds);
        }
    }

    // ---------------------------------------------------------------- typed requests

    long getU64(int request) {
        Reply r = request(request, null);
        if (r == null) {
            throw new AssertionError("connection closed on request " + request);
        }
        return r.u64();
    }

    static ByteBuffer u64(long value) {
        return payload(8).putLong(0, value);
    }

    static ByteBuffer state(int index, int num) {
        return payload(8).putInt(0, index).putInt(4, num);
    }

    long getFeatures() {
        return getU64(GET_FEATURES);
    }

    void setFeatures(long features) {
        post(SET_FEATURES, u64(features));
    }

    long getProtocolFeatures() {
        return getU64(GET_PROTOCOL_FEATURES);
    }

    void setProtocolFeatures(long features) {
        post(SET_PROTOCOL_FEATURES, u64(features));
        replyAck = (features & PF_REPLY_ACK) != 0;
    }

    void setOwner() {
        post(SET_OWNER, null);
    }

    static ByteBuffer region(ByteBuffer b, int at, Region r) {
        return b.putLong(at, r.gpa()).putLong(at + 8, r.size()).putLong(at + 16, r.user()).putLong(at + 24, r.offset());
    }

    static ByteBuffer memTable(Region... regions) {
        ByteBuffer b = payload(8 + 32 * regions.length).putInt(0, regions.length).putInt(4, 0);
        for (int i = 0; i < regions.length; i++) {
            region(b, 8 + 32 * i, regions[i]);
        }
        return b;
    }

    static ByteBuffer singleRegion(Region r) {
        return region(payload(40).putLong(0, 0), 8, r);
    }

    static ByteBuffer addr(int index, long desc, long used, long avail) {
        return payload(40).putInt(0, index).putInt(4, 0).putLong(8, desc).putLong(16, used).putLong(24, avail).putLong(32, 0);
    }

    static ByteBuffer config(int offset, int size, byte[] bytes) {
        ByteBuffer b = payload(12 + size).putInt(0, offset).putInt(4, size).putInt(8, 0);
        if (bytes != null) {
            b.position(12);
            b.put(bytes);
        }
        return b;
    }

    byte[] getConfig(int offset, int size) {
        Reply r = request(GET_CONFIG, config(offset, size, null));
        if (r == null) {
            throw new AssertionError("connection closed on GET_CONFIG");
        }
        if (r.payload().capacity() == 0) {
            return null;
        }
        if (r.payload().getInt(0) != offset || r.payload().getInt(4) != size || r.payload().capacity() != 12 + size) {
            throw new AssertionError("GET_CONFIG reply does not echo offset " + offset + " size " + size);
        }
        byte[] bytes = new byte[size];
        r.payload().get(12, bytes);
        return bytes;
    }

    void setVringNum(int q, int num) {
        post(SET_VRING_NUM, state(q, num));
    }

    void setVringBase(int q, int base) {
        post(SET_VRING_BASE, state(q, base));
    }

    void setVringAddr(int q, long desc, long used, long avail) {
        post(SET_VRING_ADDR, addr(q, desc, used, avail));
    }

    void setVringEnable(int q, boolean enable) {
        post(SET_VRING_ENABLE, state(q, enable ? 1 : 0));
    }

    /** Sends a kick/call/err eventfd for queue {@code q}, or "no fd" when {@code fd} is null. */
    void setVringFd(int request, int q, EventFd fd) {
        if (fd == null) {
            post(request, u64(q | NOFD));
        } else {
            post(request, u64(q), fd.fd());
        }
    }

    int getVringBase(int q) {
        Reply r = request(GET_VRING_BASE, state(q, 0));
        if (r == null) {
            throw new AssertionError("connection closed on GET_VRING_BASE");
        }
        if (r.payload().capacity() != 8 || r.payload().getInt(0) != q) {
            throw new AssertionError("bad GET_VRING_BASE reply");
        }
        return r.payload().getInt(4);
    }

    /**
     * GET_INFLIGHT_FD for {@code numQueues} queues of {@code queueSize}; returns the buffer the
     * backend handed out (fd -1 and size 0 when it refused), whose descriptor the caller owns.
     */
    Inflight getInflightFd(int numQueues, int queueSize) {
        keepFds = true;
        Reply r;
        try {
            r = request(GET_INFLIGHT_FD, new Inflight(0, 0, numQueues, queueSize, -1).payload());
        } finally {
            keepFds = false;
        }
        if (r == null) {
            throw new AssertionError("connection closed on GET_INFLIGHT_FD");
        }
        if (r.payload().capacity() != 24) {
            throw new AssertionError("GET_INFLIGHT_FD reply of " + r.payload().capacity() + " bytes");
        }
        int fd = keptFds.isEmpty() ? -1 : keptFds.poll();
        while (!keptFds.isEmpty()) {
            Native.libc().close(keptFds.poll());
        }
        ByteBuffer p = r.payload();
        return new Inflight(p.getLong(0), p.getLong(8), p.getShort(16) & 0xffff, p.getShort(18) & 0xffff, fd);
    }

    void setInflightFd(Inflight inflight) {
        post(SET_INFLIGHT_FD, inflight.payload(), inflight.fd());
    }

    @Override
    public void close() {
        while (!keptFds.isEmpty()) {
            Native.libc().close(keptFds.poll());
        }
        socket.close();
        epoll.close();
    }
}
