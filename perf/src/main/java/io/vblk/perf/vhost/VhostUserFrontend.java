package io.vblk.perf.vhost;

import java.nio.file.Path;

import org.agrona.concurrent.UnsafeBuffer;

import io.vblk.sys.Linux;
import io.vblk.sys.Native;
import io.vblk.sys.NativeBuffer;
import io.vblk.sys.NativeException;
import io.vblk.sys.UnixSocket;

/**
 * The frontend end of a vhost-user connection, one request at a time, as QEMU speaks it: each
 * method sends one message (with descriptors where the protocol carries them) and, for a GET,
 * waits for the reply. Once REPLY_ACK is negotiated every SET asks for an acknowledgement, so a
 * backend's refusal surfaces at the message that caused it and set-up is known to be complete
 * before the first kick.
 *
 * <p>Descriptors sent are the caller's; their flags are never changed here (a backend that sets
 * O_NONBLOCK on what it receives changes the shared open file description, see facts.md).
 */
public final class VhostUserFrontend implements AutoCloseable {
    private static final int REPLY_TIMEOUT_MS = 10_000;
    private static final int CONNECT_RETRY_MS = 50;

    private final UnixSocket socket;
    private final Path path;
    private final NativeBuffer memory = new NativeBuffer(VhostUserDescriptor.HEADER_LENGTH + VhostUserDescriptor.MAX_PAYLOAD, 8);
    private final UnsafeBuffer msg = memory.buffer();
    private final UnsafeBuffer pollfd = new NativeBuffer(8, 8).buffer();
    private final int[] fdsIn = new int[UnixSocket.MAX_FDS];
    private final int[] fdCount = new int[1];
    private final int[] oneFd = new int[1];
    private boolean replyAck;

    private VhostUserFrontend(UnixSocket socket, Path path) {
        this.socket = socket;
        this.path = path;
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
                return new VhostUserFrontend(UnixSocket.connect(path), path);
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

    /** The pid of the process that listens on the socket (SO_PEERCRED). */
    public long peerPid() {
        return socket.peerCredentials()[0];
    }

    /** Asks for acknowledgements of SETs from now on (after REPLY_ACK was negotiated). */
    public void useReplyAck(boolean value) {
        replyAck = value;
    }

    // ------------------------------------------------------------------ requests

    /** GET_FEATURES or GET_PROTOCOL_FEATURES or GET_QUEUE_NUM: a u64 reply. */
    public long getU64(int request) {
        header(request, 0, false);
        send(request, null, 0);
        receiveReply(request, Long.BYTES);
        return msg.getLong(VhostUserDescriptor.PAYLOAD_OFFSET);
    }

    /** A SET with a u64 payload (SET_FEATURES, SET_PROTOCOL_FEATURES, SET_OWNER has none). */
    public void setU64(int request, long value) {
        boolean ack = replyAck;
        header(request, Long.BYTES, ack);
        msg.putLong(VhostUserDescriptor.PAYLOAD_OFFSET, value);
        send(request, null, 0);
        awaitAck(request, ack);
    }

    /** A request without payload (SET_OWNER). */
    public void request(int request) {
        boolean ack = replyAck;
        header(request, 0, ack);
        send(request, null, 0);
        awaitAck(request, ack);
    }

    /** SET_VRING_KICK / SET_VRING_CALL / SET_VRING_ERR for queue {@code index} with eventfd {@code fd}. */
    public void setVringFd(int request, int index, int fd) {
        boolean ack = replyAck;
        header(request, Long.BYTES, ack);
        msg.putLong(VhostUserDescriptor.PAYLOAD_OFFSET, index & VhostUserDescriptor.VRING_INDEX_MASK);
        oneFd[0] = fd;
        send(request, oneFd, 1);
        awaitAck(request, ack);
    }

    /** SET_VRING_NUM / SET_VRING_BASE / SET_VRING_ENABLE: a vring state. */
    public void setVringState(int request, int index, int num) {
        boolean ack = replyAck;
        header(request, VhostUserDescriptor.STATE_LENGTH, ack);
        msg.putInt(VhostUserDescriptor.STATE_INDEX_OFFSET, index);
        msg.putInt(VhostUserDescriptor.STATE_NUM_OFFSET, num);
        send(request, null, 0);
        awaitAck(request, ack);
    }

    /** GET_VRING_BASE: stops queue {@code index}; returns the next available index it would process. */
    public int getVringBase(int index) {
        header(VhostUserDescriptor.GET_VRING_BASE, VhostUserDescriptor.STATE_LENGTH, false);
        msg.putInt(VhostUserDescriptor.STATE_INDEX_OFFSET, index);
        msg.putInt(VhostUserDescriptor.STATE_NUM_OFFSET, 0);
        send(VhostUserDescriptor.GET_VRING_BASE, null, 0);
        receiveReply(VhostUserDescriptor.GET_VRING_BASE, VhostUserDescriptor.STATE_LENGTH);
        return msg.getInt(VhostUserDescriptor.STATE_NUM_OFFSET);
    }

    /** SET_VRING_ADDR with the frontend's user addresses of the three rings. */
    public void setVringAddr(int index, long descUser, long usedUser, long availUser) {
        boolean ack = replyAck;
        header(VhostUserDescriptor.SET_VRING_ADDR, VhostUserDescriptor.ADDR_LENGTH, ack);
        msg.putInt(VhostUserDescriptor.ADDR_INDEX_OFFSET, index);
        msg.putInt(VhostUserDescriptor.ADDR_FLAGS_OFFSET, 0);
        msg.putLong(VhostUserDescriptor.ADDR_DESC_OFFSET, descUser);
        msg.putLong(VhostUserDescriptor.ADDR_USED_OFFSET, usedUser);
        msg.putLong(VhostUserDescriptor.ADDR_AVAIL_OFFSET, availUser);
        msg.putLong(VhostUserDescriptor.ADDR_LOG_OFFSET, 0);
        send(VhostUserDescriptor.SET_VRING_ADDR, null, 0);
        awaitAck(VhostUserDescriptor.SET_VRING_ADDR, ack);
    }

    /** SET_MEM_TABLE with one region backed by {@code fd}. */
    public void setMemTable(long gpa, long size, long userAddress, long mmapOffset, int fd) {
        boolean ack = replyAck;
        header(VhostUserDescriptor.SET_MEM_TABLE, 8 + VhostUserDescriptor.REGION_LENGTH, ack);
        msg.putInt(VhostUserDescriptor.MEM_NREGIONS_OFFSET, 1);
        msg.putInt(VhostUserDescriptor.MEM_NREGIONS_OFFSET + 4, 0);
        int r = VhostUserDescriptor.MEM_REGIONS_OFFSET;
        msg.putLong(r + VhostUserDescriptor.REGION_GPA_OFFSET, gpa);
        msg.putLong(r + VhostUserDescriptor.REGION_SIZE_OFFSET, size);
        msg.putLong(r + VhostUserDescriptor.REGION_USER_ADDR_OFFSET, userAddress);
        msg.putLong(r + VhostUserDescriptor.REGION_MMAP_OFFSET, mmapOffset);
        oneFd[0] = fd;
        send(VhostUserDescriptor.SET_MEM_TABLE, oneFd, 1);
        awaitAck(VhostUserDescriptor.SET_MEM_TABLE, ack);
    }

    /** GET_CONFIG of {@code size} bytes from offset 0: the device's config space. */
    public byte[] getConfig(int size) {
        header(VhostUserDescriptor.GET_CONFIG, VhostUserDescriptor.CONFIG_HEADER_LENGTH + size, false);
        msg.putInt(VhostUserDescriptor.CONFIG_OFFSET_OFFSET, 0);
        msg.putInt(VhostUserDescriptor.CONFIG_SIZE_OFFSET, size);
        msg.putInt(VhostUserDescriptor.CONFIG_FLAGS_OFFSET, 0);
        msg.setMemory(VhostUserDescriptor.CONFIG_DATA_OFFSET, size, (byte) 0);
        send(VhostUserDescriptor.GET_CONFIG, null, 0);
        int got = receiveReply(VhostUserDescriptor.GET_CONFIG, -1);
        int returned = msg.getInt(VhostUserDescriptor.CONFIG_SIZE_OFFSET);
        if (got < VhostUserDescriptor.CONFIG_HEADER_LENGTH + size || returned != size) {
            throw new IllegalStateException("vhost-user GET_CONFIG: asked " + size + " bytes, the reply has " + returned
                    + " (payload " + got + ")");
        }
        byte[] out = new byte[size];
        msg.getBytes(VhostUserDescriptor.CONFIG_DATA_OFFSET, out);
        return out;
    }

    // ------------------------------------------------------------------ framing

    private void header(int request, int size, boolean needReply) {
        msg.putInt(VhostUserDescriptor.REQUEST_OFFSET, request);
        msg.putInt(VhostUserDescriptor.FLAGS_OFFSET, VhostUserDescriptor.FLAG_VERSION
                | (needReply ? VhostUserDescriptor.FLAG_NEED_REPLY : 0));
        msg.putInt(VhostUserDescriptor.SIZE_OFFSET, size);
    }

    private void send(int request, int[] fds, int count) {
        int length = VhostUserDescriptor.HEADER_LENGTH + msg.getInt(VhostUserDescriptor.SIZE_OFFSET);
        long rc = socket.send(memory.address(), length, fds, count);
        if (rc != length) {
            throw new IllegalStateException("vhost-user " + name(request) + " to " + path + ": sendmsg returned " + rc);
        }
    }

    private void awaitAck(int request, boolean ack) {
        if (!ack) {
            return;
        }
        receiveReply(request, Long.BYTES);
        long status = msg.getLong(VhostUserDescriptor.PAYLOAD_OFFSET);
        if (status != 0) {
            throw new IllegalStateException("vhost-user backend at " + path + " refused " + name(request) + " (status " + status + ")");
        }
    }

    /** Reads one reply to {@code request}; checks its size when {@code expectedSize >= 0}; returns the payload size. */
    private int receiveReply(int request, int expectedSize) {
        readFully(0, VhostUserDescriptor.HEADER_LENGTH, request);
        int got = msg.getInt(VhostUserDescriptor.REQUEST_OFFSET);
        int flags = msg.getInt(VhostUserDescriptor.FLAGS_OFFSET);
        int size = msg.getInt(VhostUserDescriptor.SIZE_OFFSET);
        if (got != request || (flags & VhostUserDescriptor.FLAG_REPLY) == 0 || size < 0 || size > VhostUserDescriptor.MAX_PAYLOAD
                || (expectedSize >= 0 && size != expectedSize)) {
            throw new IllegalStateException(String.format("vhost-user %s: unexpected reply request %d flags 0x%x size %d from %s",
                    name(request), got, flags, size, path));
        }
        readFully(VhostUserDescriptor.HEADER_LENGTH, size, request);
        return size;
    }

    private void readFully(int offset, int length, int request) {
        int done = 0;
        while (done < length) {
            awaitReadable(request);
            long rc = socket.receive(memory.address() + offset + done, length - done, fdsIn, fdCount);
            for (int i = 0; i < fdCount[0]; i++) {
                Native.libc().close(fdsIn[i]);
            }
            if (rc == 0) {
                throw new IllegalStateException("vhost-user backend at " + path + " closed the connection during " + name(request));
            }
            if (rc < 0) {
                throw new IllegalStateException("vhost-user " + name(request) + ": recvmsg failed with errno " + -rc);
            }
            done += (int) rc;
        }
    }

    private void awaitReadable(int request) {
        pollfd.putInt(0, socket.fd());
        pollfd.putShort(4, Linux.POLLIN);
        pollfd.putShort(6, (short) 0);
        int rc = Native.libc().poll(pollfd.addressOffset(), 1, REPLY_TIMEOUT_MS);
        if (rc == 0) {
            throw new IllegalStateException("vhost-user backend at " + path + " did not answer " + name(request) + " within "
                    + REPLY_TIMEOUT_MS / 1000 + " s");
        }
    }

    private static String name(int request) {
        switch (request) {
            case VhostUserDescriptor.GET_FEATURES: return "GET_FEATURES";
            case VhostUserDescriptor.SET_FEATURES: return "SET_FEATURES";
            case VhostUserDescriptor.SET_OWNER: return "SET_OWNER";
            case VhostUserDescriptor.SET_MEM_TABLE: return "SET_MEM_TABLE";
            case VhostUserDescriptor.SET_VRING_NUM: return "SET_VRING_NUM";
            case VhostUserDescriptor.SET_VRING_ADDR: return "SET_VRING_ADDR";
            case VhostUserDescriptor.SET_VRING_BASE: return "SET_VRING_BASE";
            case VhostUserDescriptor.GET_VRING_BASE: return "GET_VRING_BASE";
            case VhostUserDescriptor.SET_VRING_KICK: return "SET_VRING_KICK";
            case VhostUserDescriptor.SET_VRING_CALL: return "SET_VRING_CALL";
            case VhostUserDescriptor.SET_VRING_ERR: return "SET_VRING_ERR";
            case VhostUserDescriptor.GET_PROTOCOL_FEATURES: return "GET_PROTOCOL_FEATURES";
            case VhostUserDescriptor.SET_PROTOCOL_FEATURES: return "SET_PROTOCOL_FEATURES";
            case VhostUserDescriptor.GET_QUEUE_NUM: return "GET_QUEUE_NUM";
            case VhostUserDescriptor.SET_VRING_ENABLE: return "SET_VRING_ENABLE";
            case VhostUserDescriptor.GET_CONFIG: return "GET_CONFIG";
            default: return "request " + request;
        }
    }

    /** Closes the connection (the backend resets the device). */
    @Override
    public void close() {
        socket.close();
    }
}
