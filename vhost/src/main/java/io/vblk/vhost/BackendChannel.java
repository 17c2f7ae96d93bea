package io.vblk.vhost;

import io.vblk.sys.Errno;
import io.vblk.sys.NativeBuffer;
import io.vblk.sys.UnixSocket;

/**
 * The backend-to-frontend request channel (protocol feature BACKEND_REQ): the socket the
 * frontend passes with SET_BACKEND_REQ_FD, on which the backend sends its own requests. vblk
 * sends one: BACKEND_CONFIG_CHANGE_MSG, after an online resize, upon which QEMU re-reads the
 * config space (GET_CONFIG) and raises the guest's config-change interrupt.
 *
 * <p>No reply is asked for (NEED_REPLY clear): the frontend's answer would arrive on this socket
 * while the session's handler reads the other, and nothing here depends on it.
 */
final class BackendChannel implements AutoCloseable {
    /** vhost-user backend request: the device's config space changed. */
    static final int CONFIG_CHANGE_MSG = 2;
    /** How long a request may wait for room on the channel. */
    static final int SEND_WAIT_MS = 1_000;

    private final UnixSocket socket;
    private final NativeBuffer header = new NativeBuffer(MessageDescriptor.HEADER_LENGTH);

    BackendChannel(int fd) {
        this.socket = UnixSocket.wrap(fd);
    }

    /**
     * Sends BACKEND_CONFIG_CHANGE_MSG; false when the frontend has gone, or has left this channel
     * full for {@link #SEND_WAIT_MS} (it reads none of it): the caller, an RPC handler holding the
     * daemon's lock for changes, never waits on a frontend for longer.
     */
    synchronized boolean configChanged() {
        return socket.awaitWritable(SEND_WAIT_MS) && sendConfigChange();
    }

    /** The send of {@link #configChanged()} once the channel looked writable: never blocks; false if not sent. */
    synchronized boolean sendConfigChange() {
        header.buffer().putInt(MessageDescriptor.REQUEST_OFFSET, CONFIG_CHANGE_MSG);
        header.buffer().putInt(MessageDescriptor.FLAGS_OFFSET, MessageDescriptor.VERSION);
        header.buffer().putInt(MessageDescriptor.SIZE_OFFSET, 0);
        int done = 0;
        while (done < MessageDescriptor.HEADER_LENGTH) {
            // Never a blocking send: the socket is the frontend's, maybe blocking, and "writable"
            // above says nothing about now: a writer of the frontend's own, woken by the same
            // room, may have filled it since (irev3 BackendChannelAttackTest). No room: not told.
            long rc = socket.sendNonBlocking(header.address() + done, MessageDescriptor.HEADER_LENGTH - done);
            if (rc > 0) {
                done += (int) rc;
            } else if (rc != -Errno.EINTR) {
                return false;
            }
        }
        return true;
    }

    @Override
    public void close() {
        socket.close();
    }
}
