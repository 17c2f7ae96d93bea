package io.vblk.testkit;

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
import io.vblk.sys.NativeException;
import io.vblk.sys.UnixSocket;

/**
 * The frontend end of a vhost-user connection, as QEMU 7.2 speaks it (facts.md): the one the
 * tests, the soak and the benchmark's load generator use. Its message layouts are written out
 * here from the spec, independently of the backend's {@code MessageDescriptor}, so a wrong offset
 * on either side fails a test.
 *
 * <p>Two levels: raw frames ({@link #send}, {@link #sendBytes}, {@link #receive},
 * {@link #request(int, ByteBuffer, int...)}, {@link #acked}) for tests that send what QEMU never
 * would, and typed requests ({@link #getFeatures}, {@link #setVringAddr}, {@link #setMemTable},
 * ...) that send one message each and, for a GET, wait for its reply. With
 * {@link #useReplyAck(boolean)} every request without a reply of its own asks for an
 * acknowledgement, so a backend's refusal surfaces at the message that caused it and set-up is
 * known to be complete before the first kick.
 *
 * <pre>
 * header (12 bytes): request u32 @0, flags u32 @4 (0x1 version, 0x4 reply, 0x8 need_reply), size u32 @8
 * vring state:       index u32 @0, num u32 @4
 * vring address:     index u32 @0, flags u32 @4, desc u64 @8, used u64 @16, avail u64 @24, log u64 @32
 * memory table:      nregions u32 @0, padding u32 @4, regions @8: gpa u64, size u64, user u64, offset u64
 * config:            offset u32 @0, size u32 @4, flags u32 @8, data @12
 * </pre>
 *
 * <p>Every failure (a refusal, a malformed or missing reply, a closed connection where a reply
 * was due) is an {@link IllegalStateException} naming the request. Descriptors sent are the
 * caller's; their flags are never changed here (a backend that sets O_NONBLOCK on what it
 * receives changes the shared open file description, see facts.md). Not thread-safe.
 */
public final class VhostUserFrontend implements AutoCloseable {
    public static final int GET_FEATURES = 1;
    public static final int SET_FEATURES = 2;
    public static final int SET_OWNER = 3;
    public static final int RESET_OWNER = 4;
    public static final int SET_MEM_TABLE = 5;
    public static final int SET_VRING_NUM = 8;
    public static final int SET_VRING_ADDR = 9;
    public static final int SET_VRING_BASE = 10;
    public static final int GET_VRING_BASE = 11;
    public static final int SET_VRING_KICK = 12;
    public static final int SET_VRING_CALL = 13;
    public static final int SET_VRING_ERR = 14;
    public static final int GET_PROTOCOL_FEATURES = 15;
    public static final int SET_PROTOCOL_FEATURES = 16;
    public static final int GET_QUEUE_NUM = 17;
    public static final int SET_VRING_ENABLE = 18;
    public static final int GET_CONFIG = 24;
    public static final int SET_CONFIG = 25;
    public static final int GET_INFLIGHT_FD = 31;
    public static final int SET_INFLIGHT_FD = 32;
    public static final int RESET_DEVICE = 34;
    public static final int GET_MAX_MEM_SLOTS = 36;
    public static final int ADD_MEM_REG = 37;
    public static final int REM_MEM_REG = 38;

    /** Header flags: the protocol version, a reply, a request that asks for an acknowledgement. */
    public static final int VERSION = 0x1;
    public static final int REPLY = 0x4;
    public static final int NEED_REPLY = 0x8;
    /** The "no file descriptor" bit of a vring index in SET_VRING_KICK/CALL/ERR. */
    public static final long NOFD = 0x100;
    /** The vring index bits of a SET_VRING_KICK/CALL/ERR payload. */
    public static final long VRING_INDEX_MASK = 0xff;

    /** Virtio feature bit 30: the backend speaks the protocol features. */
    public static final long F_PROTOCOL_FEATURES = 1L << 30;
    public static final long PF_MQ = 1L;
    public static final long PF_REPLY_ACK = 1L << 3;
    public static final long PF_CONFIG = 1L << 9;
    public static final long PF_INFLIGHT_SHMFD = 1L << 12;
    public static final long PF_CONFIGURE_MEM_SLOTS = 1L << 15;

    /** The virtio-blk config size QEMU asks for in GET_CONFIG. */
    public static final int BLK_CONFIG_LENGTH = 57;
    /**
     * Default wait for a reply: a hang guard, sized for a loaded 2-core CI machine (a reply may wait
     * for a drain of real I/O); a test that expects no reply sets its own with {@link #replyTimeoutMs}.
     */
    public static final int TIMEOUT_MS = 30_000;
    private static final int HEADER = 12;
    private static final int MAX_PAYLOAD = 4096;
    private static final int CONNECT_RETRY_MS = 50;

    /** A memory region as the protocol describes it. */
    public record Region(long gpa, long size, long user, long offset) {
    }

    /** A reply: header fields and payload. */
    public record Reply(int request, int flags, ByteBuffer payload) {
        /** The payload as a u64 (GET_FEATURES, an acknowledgement, ...). */
        public long u64() {
            return payload.getLong(0);
        }
    }

    /**
     * An inflight buffer description (VhostUserInflight: u64 mmap_size, u64 mmap_offset,
     * u16 num_queues, u16 queue_size, padded to 24 bytes) and the descriptor that goes with it.
     */
    public record Inflight(long mmapSize, long mmapOffset, int numQueues, int queueSize, int fd) {
        /** The payload of GET/SET_INFLIGHT_FD. */
        public ByteBuffer payload() {
            return VhostUserFrontend.payload(24).putLong(0, mmapSize).putLong(8, mmapOffset).putShort(16, (short) numQueues)
                    .putShort(18, (short) queueSize);
        }
    }

    private final UnixSocket socket;
    private final Path path;
    private final Epoll epoll = new Epoll(1);
    private final NativeBuffer io = new NativeBuffer(16384);
    private final int[] fdsIn = new int[UnixSocket.MAX_FDS];
    private final int[] fdCount = new int[1];
    /** Descriptors of replies received while {@link #keepFds} is set, for the caller to take; otherwise closed. */
    private final ArrayDeque<Integer> keptFds = new ArrayDeque<>();
    private boolean keepFds;
    private boolean ackEverything;
    private boolean replyAck;
    /** Flags added to every request's header (see {@link #headerFlags}). */
    private int headerFlags;
    private int timeoutMs = TIMEOUT_MS;

    private VhostUserFrontend(UnixSocket socket, Path path) {
        this.socket = socket;
        this.path = path;
        epoll.add(socket.fd(), Linux.EPOLLIN, 0);
    }

    /** Connects to the backend listening at {@code path} (once). */
    public static VhostUserFrontend connect(Path path) {
        return new VhostUserFrontend(UnixSocket.connect(path), path);
    }

    /**
     * Connects to the backend listening at {@code path}, retrying for up to {@code timeoutMs}
     * while the socket does not exist yet or refuses (a daemon still starting).
     *
     * @throws IllegalStateException when no connection could be made in time
     */
    public static VhostUserFrontend connect(Path path, long timeoutMs) {
        long deadline = System.nanoTime() + timeoutMs * 1_000_000L;
        while (true) {
            try {
                return connect(path);
            } catch (NativeException e) {
                if (System.nanoTime() > deadline) {
                    throw new IllegalStateException("cannot connect to vhost-user socket " + path + ": " + e.getMessage(), e);
                }
                try {
                    Thread.sleep(CONNECT_RETRY_MS);
                } catch (InterruptedException ie) {
                    Thread.currentThread().interrupt();
                    throw new IllegalStateException("interrupted while connecting to " + path, ie);
                }
            }
        }
    }

    /** A little-endian payload of {@code bytes} zero bytes. */
    public static ByteBuffer payload(int bytes) {
        return ByteBuffer.allocate(bytes).order(ByteOrder.LITTLE_ENDIAN);
    }

    /** The pid of the process that listens on the socket (SO_PEERCRED). */
    public long peerPid() {
        return socket.peerCredentials()[0];
    }

    /** How long to wait for a reply from now on (default {@link #TIMEOUT_MS}). */
    public void replyTimeoutMs(int value) {
        timeoutMs = value;
    }

    /**
     * Asks for an acknowledgement of every request without a reply of its own, once REPLY_ACK is
     * negotiated ({@link #setProtocolFeatures} notes whether it is).
     */
    public void ackEverything(boolean value) {
        ackEverything = value;
    }

    /** REPLY_ACK negotiated by other means than {@link #setProtocolFeatures}: acknowledge every SET from now on. */
    public void useReplyAck(boolean value) {
        replyAck = value;
        ackEverything = value;
    }

    /**
     * Flags added to the header of every request from now on, GETs included, as rust-vmm's
     * {@code Frontend::set_hdr_flags} does: Cloud Hypervisor sets {@link #NEED_REPLY} on every
     * message once REPLY_ACK is negotiated. With NEED_REPLY and REPLY_ACK negotiated, a request
     * without a reply of its own then waits for its acknowledgement, as rust-vmm's
     * {@code wait_for_ack} does.
     */
    public void headerFlags(int flags) {
        headerFlags = flags;
    }

    // ---------------------------------------------------------------- raw

    /** Sends header + payload in one sendmsg with {@code fds}, as QEMU does. */
    public void send(int request, int flags, ByteBuffer payload, int... fds) {
        byte[] body = payload == null ? new byte[0] : payload.array();
        ByteBuffer m = payload(HEADER + body.length);
        m.putInt(0, request).putInt(4, flags).putInt(8, body.length);
        m.position(HEADER);
        m.put(body);
        sendBytes(m.array(), fds);
    }

    /** Sends arbitrary bytes (a frame of any shape) with {@code fds}. */
    public void sendBytes(byte[] bytes, int... fds) {
        UnsafeBuffer b = io.buffer();
        b.putBytes(0, bytes);
        long rc = socket.send(io.address(), bytes.length, fds, fds.length);
        if (rc != bytes.length) {
            throw new IllegalStateException("vhost-user send to " + path + " returned " + rc);
        }
    }

    /** Receives one reply, failing after the reply timeout; null when the backend closed the connection. */
    public Reply receive() {
        if (!readFully(0, HEADER)) {
            return null;
        }
        UnsafeBuffer b = io.buffer();
        int request = b.getInt(0);
        int flags = b.getInt(4);
        int size = b.getInt(8);
        if (size < 0 || size > MAX_PAYLOAD) {
            throw new IllegalStateException("vhost-user reply of request " + request + " with size " + size);
        }
        if (size > 0 && !readFully(HEADER, size)) {
            throw new IllegalStateException("vhost-user reply of request " + request + " cut short");
        }
        byte[] body = new byte[size];
        b.getBytes(HEADER, body);
        return new Reply(request, flags, ByteBuffer.wrap(body).order(ByteOrder.LITTLE_ENDIAN));
    }

    private boolean readFully(int offset, int length) {
        int done = 0;
        long deadline = System.nanoTime() + timeoutMs * 1_000_000L;
        while (done < length) {
            // Epoll reports EINTR as 0 ready: only the deadline means a timeout.
            long leftMs = (deadline - System.nanoTime()) / 1_000_000L;
            if (leftMs <= 0) {
                throw new IllegalStateException("vhost-user backend at " + path + ": no reply within " + timeoutMs + " ms");
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
                throw new IllegalStateException("vhost-user backend at " + path + " closed the connection inside a reply");
            }
            if (rc == -Errno.EINTR) {
                continue;
            }
            if (rc < 0) {
                throw new IllegalStateException("vhost-user receive from " + path + " failed: " + rc);
            }
            done += (int) rc;
        }
        return true;
    }

    /** Whether the backend closed the connection (anything it sends first is skipped). */
    public boolean closedByBackend() {
        for (int i = 0; i < 16; i++) {
            if (receive() == null) {
                return true;
            }
        }
        return false;
    }

    /** Sends a request that has a reply of its own, and returns the reply (null: connection closed). */
    public Reply request(int request, ByteBuffer payload, int... fds) {
        send(request, VERSION | headerFlags, payload, fds);
        Reply r = receive();
        if (r != null && (r.request() != request || r.flags() != (VERSION | REPLY))) {
            throw new IllegalStateException("vhost-user reply header " + r.request() + "/0x" + Integer.toHexString(r.flags())
                    + " to " + name(request));
        }
        return r;
    }

    /**
     * Sends a request with need_reply and returns the acknowledgement (0 success), or -1 when the
     * backend closed the connection instead.
     */
    public long acked(int request, ByteBuffer payload, int... fds) {
        send(request, VERSION | NEED_REPLY | headerFlags, payload, fds);
        Reply r = receive();
        if (r == null) {
            return -1;
        }
        if (r.request() != request || r.flags() != (VERSION | REPLY) || r.payload().capacity() != 8) {
            throw new IllegalStateException("bad acknowledgement of " + name(request) + ": " + r);
        }
        return r.u64();
    }

    /** Sends a request without a reply of its own, acknowledged if asked for (see {@link #ackEverything}); fails on a refusal. */
    public void post(int request, ByteBuffer payload, int... fds) {
        if ((ackEverything || (headerFlags & NEED_REPLY) != 0) && replyAck) {
            long ack = acked(request, payload, fds);
            if (ack != 0) {
                throw new IllegalStateException("vhost-user backend at " + path + " refused " + name(request) + " (status "
                        + ack + ")");
            }
        } else {
            send(request, VERSION | headerFlags, payload, fds);
        }
    }

    // ---------------------------------------------------------------- payloads

    /** A u64 payload. */
    public static ByteBuffer u64(long value) {
        return payload(8).putLong(0, value);
    }

    /** A vring state payload. */
    public static ByteBuffer state(int index, int num) {
        return payload(8).putInt(0, index).putInt(4, num);
    }

    /** Writes region {@code r} into {@code b} at {@code at}. */
    public static ByteBuffer region(ByteBuffer b, int at, Region r) {
        return b.putLong(at, r.gpa()).putLong(at + 8, r.size()).putLong(at + 16, r.user()).putLong(at + 24, r.offset());
    }

    /** A SET_MEM_TABLE payload. */
    public static ByteBuffer memTable(Region... regions) {
        ByteBuffer b = payload(8 + 32 * regions.length).putInt(0, regions.length).putInt(4, 0);
        for (int i = 0; i < regions.length; i++) {
            region(b, 8 + 32 * i, regions[i]);
        }
        return b;
    }

    /** An ADD_MEM_REG / REM_MEM_REG payload. */
    public static ByteBuffer singleRegion(Region r) {
        return region(payload(40).putLong(0, 0), 8, r);
    }

    /** A SET_VRING_ADDR payload (the frontend's user addresses of the rings). */
    public static ByteBuffer addr(int index, long desc, long used, long avail) {
        return payload(40).putInt(0, index).putInt(4, 0).putLong(8, desc).putLong(16, used).putLong(24, avail).putLong(32, 0);
    }

    /** A GET_CONFIG / SET_CONFIG payload ({@code bytes} null: zeros). */
    public static ByteBuffer config(int offset, int size, byte[] bytes) {
        ByteBuffer b = payload(12 + size).putInt(0, offset).putInt(4, size).putInt(8, 0);
        if (bytes != null) {
            b.position(12);
            b.put(bytes);
        }
        return b;
    }

    // ---------------------------------------------------------------- typed requests

    /** A request with a u64 reply (GET_FEATURES, GET_PROTOCOL_FEATURES, GET_QUEUE_NUM, GET_MAX_MEM_SLOTS). */
    public long getU64(int request) {
        Reply r = request(request, null);
        if (r == null) {
            throw new IllegalStateException("vhost-user backend at " + path + " closed the connection on " + name(request));
        }
        if (r.payload().capacity() != 8) {
            throw new IllegalStateException("vhost-user " + name(request) + " reply of " + r.payload().capacity() + " bytes");
        }
        return r.u64();
    }

    /** A request with a u64 payload and no reply of its own (SET_FEATURES, SET_PROTOCOL_FEATURES, ...). */
    public void setU64(int request, long value) {
        post(request, u64(value));
    }

    /** A request without payload nor reply of its own (SET_OWNER, RESET_OWNER, RESET_DEVICE). */
    public void request(int request) {
        post(request, null);
    }

    public long getFeatures() {
        return getU64(GET_FEATURES);
    }

    public void setFeatures(long features) {
        post(SET_FEATURES, u64(features));
    }

    public long getProtocolFeatures() {
        return getU64(GET_PROTOCOL_FEATURES);
    }

    /** SET_PROTOCOL_FEATURES; notes whether REPLY_ACK is now negotiated. */
    public void setProtocolFeatures(long features) {
        post(SET_PROTOCOL_FEATURES, u64(features));
        replyAck = (features & PF_REPLY_ACK) != 0;
    }

    public void setOwner() {
        post(SET_OWNER, null);
    }

    /** GET_CONFIG of {@code size} bytes at {@code offset}; null when the backend answered with an empty payload. */
    public byte[] getConfig(int offset, int size) {
        Reply r = request(GET_CONFIG, config(offset, size, null));
        if (r == null) {
            throw new IllegalStateException("vhost-user backend at " + path + " closed the connection on GET_CONFIG");
        }
        if (r.payload().capacity() == 0) {
            return null;
        }
        if (r.payload().getInt(0) != offset || r.payload().getInt(4) != size || r.payload().capacity() != 12 + size) {
            throw new IllegalStateException("GET_CONFIG reply does not echo offset " + offset + " size " + size);
        }
        byte[] bytes = new byte[size];
        r.payload().get(12, bytes);
        return bytes;
    }

    /** GET_CONFIG of {@code size} bytes from offset 0: the device's config space. */
    public byte[] getConfig(int size) {
        byte[] bytes = getConfig(0, size);
        if (bytes == null) {
            throw new IllegalStateException("vhost-user backend at " + path + " refused GET_CONFIG of " + size + " bytes");
        }
        return bytes;
    }

    /** SET_VRING_NUM / SET_VRING_BASE / SET_VRING_ENABLE: a vring state. */
    public void setVringState(int request, int index, int num) {
        post(request, state(index, num));
    }

    public void setVringNum(int q, int num) {
        post(SET_VRING_NUM, state(q, num));
    }

    public void setVringBase(int q, int base) {
        post(SET_VRING_BASE, state(q, base));
    }

    /** SET_VRING_ADDR with the frontend's user addresses of the three rings. */
    public void setVringAddr(int q, long desc, long used, long avail) {
        post(SET_VRING_ADDR, addr(q, desc, used, avail));
    }

    public void setVringEnable(int q, boolean enable) {
        post(SET_VRING_ENABLE, state(q, enable ? 1 : 0));
    }

    /** Sends a kick/call/err eventfd for queue {@code q}, or "no fd" when {@code fd} is null. */
    public void setVringFd(int request, int q, EventFd fd) {
        if (fd == null) {
            post(request, u64(q | NOFD));
        } else {
            post(request, u64(q), fd.fd());
        }
    }

    /** SET_VRING_KICK / SET_VRING_CALL / SET_VRING_ERR for queue {@code index} with descriptor {@code fd}. */
    public void setVringFd(int request, int index, int fd) {
        post(request, u64(index & VRING_INDEX_MASK), fd);
    }

    /** SET_MEM_TABLE with one region backed by {@code fd}. */
    public void setMemTable(long gpa, long size, long userAddress, long mmapOffset, int fd) {
        post(SET_MEM_TABLE, memTable(new Region(gpa, size, userAddress, mmapOffset)), fd);
    }

    /** GET_VRING_BASE: stops queue {@code q}; returns the next available index it would process. */
    public int getVringBase(int q) {
        Reply r = request(GET_VRING_BASE, state(q, 0));
        if (r == null) {
            throw new IllegalStateException("vhost-user backend at " + path + " closed the connection on GET_VRING_BASE");
        }
        if (r.payload().capacity() != 8 || r.payload().getInt(0) != q) {
            throw new IllegalStateException("bad GET_VRING_BASE reply");
        }
        return r.payload().getInt(4);
    }

    /**
     * GET_INFLIGHT_FD for {@code numQueues} queues of {@code queueSize}; returns the buffer the
     * backend handed out (fd -1 and size 0 when it refused), whose descriptor the caller owns.
     */
    public Inflight getInflightFd(int numQueues, int queueSize) {
        keepFds = true;
        Reply r;
        try {
            r = request(GET_INFLIGHT_FD, new Inflight(0, 0, numQueues, queueSize, -1).payload());
        } finally {
            keepFds = false;
        }
        if (r == null) {
            throw new IllegalStateException("vhost-user backend at " + path + " closed the connection on GET_INFLIGHT_FD");
        }
        if (r.payload().capacity() != 24) {
            throw new IllegalStateException("GET_INFLIGHT_FD reply of " + r.payload().capacity() + " bytes");
        }
        int fd = keptFds.isEmpty() ? -1 : keptFds.poll();
        while (!keptFds.isEmpty()) {
            Native.libc().close(keptFds.poll());
        }
        ByteBuffer p = r.payload();
        return new Inflight(p.getLong(0), p.getLong(8), p.getShort(16) & 0xffff, p.getShort(18) & 0xffff, fd);
    }

    public void setInflightFd(Inflight inflight) {
        post(SET_INFLIGHT_FD, inflight.payload(), inflight.fd());
    }

    /** The spec's name of {@code request}, for messages. */
    public static String name(int request) {
        return switch (request) {
            case GET_FEATURES -> "GET_FEATURES";
            case SET_FEATURES -> "SET_FEATURES";
            case SET_OWNER -> "SET_OWNER";
            case RESET_OWNER -> "RESET_OWNER";
            case SET_MEM_TABLE -> "SET_MEM_TABLE";
            case SET_VRING_NUM -> "SET_VRING_NUM";
            case SET_VRING_ADDR -> "SET_VRING_ADDR";
            case SET_VRING_BASE -> "SET_VRING_BASE";
            case GET_VRING_BASE -> "GET_VRING_BASE";
            case SET_VRING_KICK -> "SET_VRING_KICK";
            case SET_VRING_CALL -> "SET_VRING_CALL";
            case SET_VRING_ERR -> "SET_VRING_ERR";
            case GET_PROTOCOL_FEATURES -> "GET_PROTOCOL_FEATURES";
            case SET_PROTOCOL_FEATURES -> "SET_PROTOCOL_FEATURES";
            case GET_QUEUE_NUM -> "GET_QUEUE_NUM";
            case SET_VRING_ENABLE -> "SET_VRING_ENABLE";
            case GET_CONFIG -> "GET_CONFIG";
            case SET_CONFIG -> "SET_CONFIG";
            case GET_INFLIGHT_FD -> "GET_INFLIGHT_FD";
            case SET_INFLIGHT_FD -> "SET_INFLIGHT_FD";
            case RESET_DEVICE -> "RESET_DEVICE";
            case GET_MAX_MEM_SLOTS -> "GET_MAX_MEM_SLOTS";
            case ADD_MEM_REG -> "ADD_MEM_REG";
            case REM_MEM_REG -> "REM_MEM_REG";
            default -> "request " + request;
        };
    }

    /** Closes the connection (the backend resets the device) and any descriptor kept. */
    @Override
    public void close() {
        while (!keptFds.isEmpty()) {
            Native.libc().close(keptFds.poll());
        }
        socket.close();
        epoll.close();
    }
}
