package io.vblk.daemon.soak;

import java.nio.file.Path;

import org.agrona.concurrent.UnsafeBuffer;

import io.vblk.sys.Linux;
import io.vblk.sys.Native;
import io.vblk.sys.NativeBuffer;
import io.vblk.sys.NativeException;
import io.vblk.sys.UnixSocket;

/**
 * The vhost-user frontend of the soak: the requests QEMU 7.2 sends to start, stop and restart a
 * vhost-user-blk device with one queue (facts.md), one message at a time. With REPLY_ACK every
 * SET asks for an acknowledgement, so a refusal surfaces at the message that caused it. Written
 * from the vhost-user spec, independently of the backend's own layouts.
 *
 * <pre>
 * header (12 bytes): request u32 @0, flags u32 @4 (0x1 version, 0x4 reply, 0x8 need_reply), size u32 @8
 * vring state:       index u32 @0, num u32 @4
 * vring address:     index u32 @0, flags u32 @4, desc u64 @8, used u64 @16, avail u64 @24, log u64 @32
 * memory table:      nregions u32 @0, padding u32 @4, regions @8: gpa u64, size u64, user u64, offset u64
 * config:            offset u32 @0, size u32 @4, flags u32 @8, data @12
 * </pre>
 */
final class SoakFrontend implements AutoCloseable {
    static final int GET_FEATURES = 1;
    static final int SET_FEATURES = 2;
    static final int SET_OWNER = 3;
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
    static final int SET_VRING_ENABLE = 18;
    static final int GET_CONFIG = 24;

    static final long F_PROTOCOL_FEATURES = 1L << 30;
    static final long PF_REPLY_ACK = 1L << 3;
    static final long PF_CONFIG = 1L << 9;

    private static final int HEADER = 12;
    private static final int FLAG_VERSION = 0x1;
    private static final int FLAG_REPLY = 0x4;
    private static final int FLAG_NEED_REPLY = 0x8;
    private static final int MAX_PAYLOAD = 4096;
    private static final int REPLY_TIMEOUT_MS = 30_000;
    /** The config size QEMU asks for. */
    static final int CONFIG_SIZE = 57;

    private final UnixSocket socket;
    private final NativeBuffer memory = new NativeBuffer(HEADER + MAX_PAYLOAD, 8);
    private final UnsafeBuffer msg = memory.buffer();
    private final UnsafeBuffer pollfd = new NativeBuffer(8, 8).buffer();
    private final int[] fdsIn = new int[UnixSocket.MAX_FDS];
    private final int[] fdCount = new int[1];
    private final int[] oneFd = new int[1];
    private boolean ack;

    private SoakFrontend(UnixSocket socket) {
        this.socket = socket;
    }

    /** Connects, retrying for up to {@code timeoutMs} while the daemon is still starting. */
    static SoakFrontend connect(Path path, long timeoutMs) throws InterruptedException {
        long deadline = System.nanoTime() + timeoutMs * 1_000_000L;
        while (true) {
            try {
                return new SoakFrontend(UnixSocket.connect(path));
            } catch (NativeException e) {
                if (System.nanoTime() > deadline) {
                    throw new IllegalStateException("cannot connect to " + path + ": " + e.getMessage(), e);
                }
                Thread.sleep(50);
            }
        }
    }

    /** Asks for acknowledgements of SETs from now on (once REPLY_ACK is negotiated). */
    void useReplyAck(boolean value) {
        ack = value;
    }

    long getU64(int request) {
        header(request, 0, false);
        send(request, null, 0);
        receive(request, Long.BYTES);
        return msg.getLong(HEADER);
    }

    void setU64(int request, long value) {
        header(request, Long.BYTES, ack);
        msg.putLong(HEADER, value);
        send(request, null, 0);
        awaitAck(request);
    }

    void request(int request) {
        header(request, 0, ack);
        send(request, null, 0);
        awaitAck(request);
    }

    void setVringFd(int request, int index, int fd) {
        header(request, Long.BYTES, ack);
        msg.putLong(HEADER, index);
        oneFd[0] = fd;
        send(request, oneFd, 1);
        awaitAck(request);
    }

    void setVringState(int request, int index, int num) {
        header(request, 8, ack);
        msg.putInt(HEADER, index);
        msg.putInt(HEADER + 4, num);
        send(request, null, 0);
        awaitAck(request);
    }

    /** GET_VRING_BASE: stops the queue; the next available index the backend would process. */
    int getVringBase(int index) {
        header(GET_VRING_BASE, 8, false);
        msg.putInt(HEADER, index);
        msg.putInt(HEADER + 4, 0);
        send(GET_VRING_BASE, null, 0);
        receive(GET_VRING_BASE, 8);
        return msg.getInt(HEADER + 4);
    }

    void setVringAddr(int index, long descUser, long usedUser, long availUser) {
        header(SET_VRING_ADDR, 40, ack);
        msg.putInt(HEADER, index);
        msg.putInt(HEADER + 4, 0);
        msg.putLong(HEADER + 8, descUser);
        msg.putLong(HEADER + 16, usedUser);
        msg.putLong(HEADER + 24, availUser);
        msg.putLong(HEADER + 32, 0);
        send(SET_VRING_ADDR, null, 0);
        awaitAck(SET_VRING_ADDR);
    }

    void setMemTable(long gpa, long size, long user, long offset, int fd) {
        header(SET_MEM_TABLE, 8 + 32, ack);
        msg.putInt(HEADER, 1);
        msg.putInt(HEADER + 4, 0);
        msg.putLong(HEADER + 8, gpa);
        msg.putLong(HEADER + 16, size);
        msg.putLong(HEADER + 24, user);
        msg.putLong(HEADER + 32, offset);
        oneFd[0] = fd;
        send(SET_MEM_TABLE, oneFd, 1);
        awaitAck(SET_MEM_TABLE);
    }

    /** GET_CONFIG of the size QEMU asks for; returns the device's capacity in sectors. */
    long capacitySectors() {
        header(GET_CONFIG, 12 + CONFIG_SIZE, false);
        msg.putInt(HEADER, 0);
        msg.putInt(HEADER + 4, CONFIG_SIZE);
        msg.putInt(HEADER + 8, 0);
        msg.setMemory(HEADER + 12, CONFIG_SIZE, (byte) 0);
        send(GET_CONFIG, null, 0);
        receive(GET_CONFIG, 12 + CONFIG_SIZE);
        return msg.getLong(HEADER + 12);
    }

    private void header(int request, int size, boolean needReply) {
        msg.putInt(0, request);
        msg.putInt(4, FLAG_VERSION | (needReply ? FLAG_NEED_REPLY : 0));
        msg.putInt(8, size);
    }

    private void send(int request, int[] fds, int count) {
        int length = HEADER + msg.getInt(8);
        long rc = socket.send(memory.address(), length, fds, count);
        if (rc != length) {
            throw new IllegalStateException("request " + request + ": sendmsg returned " + rc);
        }
    }

    private void awaitAck(int request) {
        if (!ack) {
            return;
        }
        receive(request, Long.BYTES);
        long status = msg.getLong(HEADER);
        if (status != 0) {
            throw new IllegalStateException("the backend refused request " + request + " (status " + status + ")");
        }
    }

    private void receive(int request, int expectedSize) {
        readFully(0, HEADER, request);
        int got = msg.getInt(0);
        int flags = msg.getInt(4);
        int size = msg.getInt(8);
        if (got != request || (flags & FLAG_REPLY) == 0 || size != expectedSize) {
            throw new IllegalStateException(String.format("request %d: reply request %d flags 0x%x size %d", request, got, flags,
                    size));
        }
        readFully(HEADER, size, request);
    }

    private void readFully(int offset, int length, int request) {
        int done = 0;
        while (done < length) {
            pollfd.putInt(0, socket.fd());
            pollfd.putShort(4, Linux.POLLIN);
            pollfd.putShort(6, (short) 0);
            if (Native.libc().poll(pollfd.addressOffset(), 1, REPLY_TIMEOUT_MS) == 0) {
                throw new IllegalStateException("no reply to request " + request + " within " + REPLY_TIMEOUT_MS + " ms");
            }
            long rc = socket.receive(memory.address() + offset + done, length - done, fdsIn, fdCount);
            for (int i = 0; i < fdCount[0]; i++) {
                Native.libc().close(fdsIn[i]);
            }
            if (rc == 0) {
                throw new IllegalStateException("the backend closed the connection during request " + request);
            }
            if (rc < 0 && rc != -4 /* EINTR */) {
                throw new IllegalStateException("request " + request + ": recvmsg failed with errno " + -rc);
            }
            if (rc > 0) {
                done += (int) rc;
            }
        }
    }

    @Override
    public void close() {
        socket.close();
    }
}
