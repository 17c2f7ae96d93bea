package io.vblk.vhost;

import org.agrona.concurrent.UnsafeBuffer;

/**
 * Inflight tracking set-up (VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD): GET_INFLIGHT_FD hands the
 * frontend a new zeroed buffer, SET_INFLIGHT_FD gives one back to be used. QEMU asks once and
 * then sends the same buffer at every start, including to a backend restarted after a crash,
 * which finds in it what its predecessor had in flight ({@link InflightRecovery}).
 *
 * <p>Everything the frontend sends is checked against the device: the queue count and size it
 * announces, the buffer's size against the layout those imply, and its range against the file.
 * The buffer's contents are checked when a ring starts, the only time they are read.
 */
final class InflightRequests {
    private final FrontendState state;
    private final QueueControl control;
    private final MessageChannel channel;
    private final int maxQueueSize;

    InflightRequests(FrontendState state, QueueControl control, MessageChannel channel) {
        this.state = state;
        this.control = control;
        this.channel = channel;
        this.maxQueueSize = control.device().config().queueSize();
    }

    void getInflightFd(Message m) {
        m.requireSize(MessageDescriptor.INFLIGHT_LENGTH);
        m.requireFds(0);
        requireUsable(m);
        int numQueues = m.u16(MessageDescriptor.INFLIGHT_NUM_QUEUES_OFFSET);
        int queueSize = m.u16(MessageDescriptor.INFLIGHT_QUEUE_SIZE_OFFSET);
        checkShape(m, numQueues, queueSize);
        int fd = InflightBuffer.create(numQueues, queueSize);
        try {
            channel.replyWithFd(m.request(), reply(InflightDescriptor.bufferBytes(numQueues, queueSize), numQueues,
                    queueSize), fd);
        } finally {
            // The frontend holds the buffer now; this process maps it when it comes back.
            Descriptors.close(fd);
        }
    }

    /**
     * Answers a refused GET_INFLIGHT_FD with a buffer of size 0 and no descriptor: the protocol's
     * way to say "none" (QEMU then runs without inflight tracking).
     */
    void refuse(Message m) {
        channel.reply(m.request(), reply(0, 0, 0));
    }

    private int reply(long mmapSize, int numQueues, int queueSize) {
        UnsafeBuffer p = channel.replyPayload();
        p.setMemory(0, MessageDescriptor.INFLIGHT_LENGTH, (byte) 0);
        p.putLong(MessageDescriptor.INFLIGHT_MMAP_SIZE_OFFSET, mmapSize);
        p.putLong(MessageDescriptor.INFLIGHT_MMAP_OFFSET_OFFSET, 0);
        p.putShort(MessageDescriptor.INFLIGHT_NUM_QUEUES_OFFSET, (short) numQueues);
        p.putShort(MessageDescriptor.INFLIGHT_QUEUE_SIZE_OFFSET, (short) queueSize);
        return MessageDescriptor.INFLIGHT_LENGTH;
    }

    /**
     * Installs the buffer; rings must be stopped (QEMU sends it before it starts them), so that
     * no device thread uses the buffer it replaces.
     */
    void setInflightFd(Message m) {
        m.requireSize(MessageDescriptor.INFLIGHT_LENGTH);
        m.requireFds(1);
        requireUsable(m);
        long mmapSize = m.u64(MessageDescriptor.INFLIGHT_MMAP_SIZE_OFFSET);
        long mmapOffset = m.u64(MessageDescriptor.INFLIGHT_MMAP_OFFSET_OFFSET);
        int numQueues = m.u16(MessageDescriptor.INFLIGHT_NUM_QUEUES_OFFSET);
        int queueSize = m.u16(MessageDescriptor.INFLIGHT_QUEUE_SIZE_OFFSET);
        checkShape(m, numQueues, queueSize);
        for (Vring v : state.vrings) {
            if (v.running) {
                throw ProtocolError.rejected("SET_INFLIGHT_FD while vring " + v.index
                        + " runs (GET_VRING_BASE stops it)");
            }
        }
        int fd = m.takeFd(0);
        InflightBuffer buffer;
        try {
            buffer = InflightBuffer.map(fd, mmapSize, mmapOffset, numQueues, queueSize, state.inflight);
        } finally {
            // The mapping keeps the memory; the frontend keeps its own descriptor.
            Descriptors.close(fd);
        }
        control.installInflight(buffer);
    }

    private void requireUsable(Message m) {
        state.requireOwner(m);
        if (!state.inflightShmfd()) {
            throw ProtocolError.rejected(m.name() + " without the INFLIGHT_SHMFD protocol feature negotiated");
        }
    }

    /** The frontend's queues must be queues of this device: 1 to its count, of 1 to its size. */
    private void checkShape(Message m, int numQueues, int queueSize) {
        if (numQueues < 1 || numQueues > state.vrings.length) {
            throw ProtocolError.rejected(m.name() + " for " + numQueues + " queue(s); the device has 1 to "
                    + state.vrings.length);
        }
        if (queueSize < 1 || queueSize > maxQueueSize) {
            throw ProtocolError.rejected(m.name() + " for queues of " + queueSize + "; the device offers 1 to "
                    + maxQueueSize);
        }
    }
}
