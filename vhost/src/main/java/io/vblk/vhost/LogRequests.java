package io.vblk.vhost;

import io.vblk.sys.EventFd;

/**
 * Live migration (vhost-user.rst, "Migration"): SET_LOG_BASE hands the dirty log over as a memfd
 * (LOG_SHMFD), SET_LOG_FD an optional eventfd. Logging itself is switched by VHOST_F_LOG_ALL in
 * SET_FEATURES, and each ring's used-ring logging by VHOST_VRING_F_LOG in SET_VRING_ADDR.
 *
 * <pre>
 * log description (16): mmap_size u64 @0, mmap_offset u64 @8; the memfd in the ancillary data
 * </pre>
 */
final class LogRequests {
    /** Virtio feature bit of vhost's "log every write" (VHOST_F_LOG_ALL). */
    static final int VHOST_F_LOG_ALL = 26;
    static final int LOG_SIZE_OFFSET = 0;
    static final int LOG_OFFSET_OFFSET = 8;
    static final int LOG_LENGTH = 16;

    private final FrontendState state;
    private final QueueControl control;
    private final MessageChannel channel;

    LogRequests(FrontendState state, QueueControl control, MessageChannel channel) {
        this.state = state;
        this.control = control;
        this.channel = channel;
    }

    /**
     * Maps the log and, when logging is on, switches the device to it; then answers (QEMU waits
     * for the reply before it relies on the log). A refused log ends the connection: the reply
     * carries no status, and a frontend must not believe a log is kept that is not.
     *
     * <p>The reply echoes the 16-byte log description: rust-vmm's frontend (Cloud Hypervisor)
     * reads it as {@code recv_reply::<VhostUserLog>}, exactly header + 16 bytes with a non-zero
     * mmap_size, and blocks for the missing bytes of a shorter reply; QEMU reads whatever size the
     * header announces and checks only the request code.
     */
    void setLogBase(Message m) {
        m.requireSize(LOG_LENGTH);
        state.requireOwner(m);
        if (!state.logShmfd()) {
            throw ProtocolError.rejected("SET_LOG_BASE without the LOG_SHMFD protocol feature (vblk keeps the log only"
                    + " in shared memory)");
        }
        m.requireFds(1);
        long size = m.u64(LOG_SIZE_OFFSET);
        long offset = m.u64(LOG_OFFSET_OFFSET);
        int fd = m.takeFd(0);
        try {
            state.logs.install(fd, size, offset);
        } finally {
            // The mapping keeps the memory; the frontend keeps its own descriptor.
            Descriptors.close(fd);
        }
        control.applyLogging();
        // QEMU sends a new log at every migration attempt, rings running: the replaced one goes
        // now, not when the rings stop, or cancelled attempts pile them up to LogArea's bound.
        control.releaseReplacedLogs();
        channel.replyPayload().putLong(LOG_SIZE_OFFSET, size);
        channel.replyPayload().putLong(LOG_OFFSET_OFFSET, offset);
        channel.reply(m.request(), LOG_LENGTH);
    }

    /**
     * Keeps the eventfd (closing the one it replaces); vblk's shared log needs no signal. Refused
     * without LOG_SHMFD, as SET_LOG_BASE is: the spec sends it only with that feature, and a
     * frontend that did not negotiate it has no log this descriptor could belong to.
     */
    void setLogFd(Message m) {
        if (!state.logShmfd()) {
            throw ProtocolError.rejected("SET_LOG_FD without the LOG_SHMFD protocol feature negotiated");
        }
        if (m.size() != 0 && m.size() != MessageDescriptor.U64_LENGTH) {
            throw ProtocolError.rejected("SET_LOG_FD payload of " + Integer.toUnsignedString(m.size())
                    + " bytes: none expected");
        }
        m.requireFds(1);
        state.requireOwner(m);
        int fd = m.takeFd(0);
        if (!Descriptors.isEventFd(fd)) {
            Descriptors.close(fd);
            throw ProtocolError.rejected("SET_LOG_FD descriptor is not an eventfd");
        }
        EventFd old = state.logFd;
        state.logFd = EventFd.wrap(fd);
        if (old != null) {
            old.close();
        }
    }
}
