package io.vblk.vhost;

import io.vblk.engine.BlkFeatures;

/**
 * Negotiation and ownership: GET/SET_FEATURES, GET/SET_PROTOCOL_FEATURES, GET_QUEUE_NUM,
 * SET_OWNER, RESET_OWNER and RESET_DEVICE.
 */
final class FeatureRequests {
    private final FrontendState state;
    private final QueueControl control;
    private final MessageChannel channel;

    FeatureRequests(FrontendState state, QueueControl control, MessageChannel channel) {
        this.state = state;
        this.control = control;
        this.channel = channel;
    }

    /**
     * The virtio features offered: the device's, plus PROTOCOL_FEATURES, which QEMU requires of a
     * vhost-user-blk backend (it is vhost-user's own bit, never passed to the device).
     */
    long offeredFeatures() {
        return control.device().config().offeredFeatures() | BlkFeatures.bit(BlkFeatures.VHOST_USER_PROTOCOL_FEATURES)
                | LOG_ALL;
    }

    /** VHOST_F_LOG_ALL: vhost's own bit, switching dirty logging; never passed to the device. */
    private static final long LOG_ALL = 1L << LogRequests.VHOST_F_LOG_ALL;

    void getFeatures(Message m) {
        m.requireSize(0);
        m.requireFds(0);
        channel.replyU64(m.request(), offeredFeatures());
    }

    /**
     * SET_FEATURES may come several times (QEMU sends it twice per start) and while rings run (a
     * migration sets and clears VHOST_F_LOG_ALL): the device renegotiates with its queues stopped,
     * so they are drained around a change of its features; LOG_ALL alone switches logging.
     */
    void setFeatures(Message m) {
        m.requireSize(MessageDescriptor.U64_LENGTH);
        m.requireFds(0);
        state.requireOwner(m);
        long features = m.u64();
        long unknown = features & ~offeredFeatures();
        if (unknown != 0) {
            throw ProtocolError.rejected(String.format("SET_FEATURES 0x%x asks for 0x%x, which was not offered", features,
                    unknown));
        }
        state.ackedFeatures = features;
        if (!state.ringsStartDisabled()) {
            // Without PROTOCOL_FEATURES rings are enabled from the start (vhost-user.rst, "Ring states").
            for (Vring v : state.vrings) {
                v.enabled = true;
            }
        }
        control.negotiate(features & ~BlkFeatures.bit(BlkFeatures.VHOST_USER_PROTOCOL_FEATURES) & ~LOG_ALL);
        control.applyLogging();
        for (Vring v : state.vrings) {
            control.startIfReady(v);
        }
    }

    void getProtocolFeatures(Message m) {
        m.requireSize(0);
        m.requireFds(0);
        channel.replyU64(m.request(), ProtocolFeatures.OFFERED);
    }

    void setProtocolFeatures(Message m) {
        m.requireSize(MessageDescriptor.U64_LENGTH);
        m.requireFds(0);
        long features = m.u64();
        long unknown = features & ~ProtocolFeatures.OFFERED;
        if (unknown != 0) {
            throw ProtocolError.rejected(String.format("SET_PROTOCOL_FEATURES 0x%x asks for 0x%x, which was not offered",
                    features, unknown));
        }
        state.protocolFeatures = features;
    }

    void getQueueNum(Message m) {
        m.requireSize(0);
        m.requireFds(0);
        channel.replyU64(m.request(), state.vrings.length);
    }

    void setOwner(Message m) {
        m.requireSize(0);
        m.requireFds(0);
        if (state.owned) {
            throw ProtocolError.rejected("SET_OWNER, but this frontend already owns the device");
        }
        state.owned = true;
    }

    /**
     * RESET_OWNER (deprecated: the spec advises treating it as "disable all rings") and
     * RESET_DEVICE both reset the device and keep the connection, its memory and its notifiers.
     */
    void reset(Message m) {
        m.requireSize(0);
        m.requireFds(0);
        state.requireOwner(m);
        control.resetDevice();
    }
}
