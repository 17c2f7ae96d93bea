package io.vblk.vhost;

import io.vblk.engine.BlkFeatures;
import io.vblk.sys.EventFd;

/**
 * What one connected frontend has negotiated and set up: ownership, virtio and protocol
 * features, its memory table and its rings. Owned by the thread serving the connection.
 */
final class FrontendState {
    /** Regions ADD_MEM_REG may build up to (GET_MAX_MEM_SLOTS). */
    static final int MAX_MEM_SLOTS = 32;

    final Vring[] vrings;
    final MemoryTable memory;
    boolean owned;
    /** Features from the last SET_FEATURES (bit 30 included), or 0. */
    long ackedFeatures;
    /** Protocol features from SET_PROTOCOL_FEATURES, or 0. */
    long protocolFeatures;
    /** The inflight buffer from the last SET_INFLIGHT_FD, or null (no tracking). */
    InflightBuffer inflight;
    /** The dirty log of the last SET_LOG_BASE (and the logs it replaced, until nothing can use them). */
    final LogArea logs = new LogArea();
    /** The eventfd of SET_LOG_FD, or null. Kept for the frontend; vblk's log needs no signal. */
    EventFd logFd;

    /** {@code maxGuestBytes}: the export's guest-memory cap; {@code log} for the memory table's lines. */
    FrontendState(int numQueues, long maxGuestBytes, Log log) {
        memory = new MemoryTable(maxGuestBytes, log);
        vrings = new Vring[numQueues];
        for (int q = 0; q < numQueues; q++) {
            vrings[q] = new Vring(q);
        }
    }

    /** Whether REPLY_ACK was negotiated, so need_reply asks for an acknowledgement. */
    boolean replyAck() {
        return ProtocolFeatures.has(protocolFeatures, ProtocolFeatures.REPLY_ACK);
    }

    /** Whether LOG_SHMFD was negotiated, so SET_LOG_BASE brings the log as a memfd. */
    boolean logShmfd() {
        return ProtocolFeatures.has(protocolFeatures, ProtocolFeatures.LOG_SHMFD);
    }

    /**
     * Whether CONFIGURE_MEM_SLOTS was negotiated, so GET_MAX_MEM_SLOTS, ADD_MEM_REG and
     * REM_MEM_REG may come (vhost-user.rst: "only if VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS
     * has been negotiated").
     */
    boolean configureMemSlots() {
        return ProtocolFeatures.has(protocolFeatures, ProtocolFeatures.CONFIGURE_MEM_SLOTS);
    }

    /** Rejects {@code m} unless CONFIGURE_MEM_SLOTS was negotiated. */
    void requireMemSlots(Message m) {
        if (!configureMemSlots()) {
            throw ProtocolError.rejected(m.name() + " without protocol feature CONFIGURE_MEM_SLOTS negotiated");
        }
    }

    /** Whether the frontend asked for dirty logging (VHOST_F_LOG_ALL in SET_FEATURES). */
    boolean logAll() {
        return (ackedFeatures & (1L << LogRequests.VHOST_F_LOG_ALL)) != 0;
    }

    /** Whether INFLIGHT_SHMFD was negotiated, so GET/SET_INFLIGHT_FD may come. */
    boolean inflightShmfd() {
        return ProtocolFeatures.has(protocolFeatures, ProtocolFeatures.INFLIGHT_SHMFD);
    }

    /**
     * Whether rings obey SET_VRING_ENABLE: only with PROTOCOL_FEATURES negotiated; without it a
     * ring is enabled as soon as it is started (vhost-user.rst, "Ring states").
     */
    boolean ringsStartDisabled() {
        return BlkFeatures.has(ackedFeatures, BlkFeatures.VHOST_USER_PROTOCOL_FEATURES);
    }

    /** Whether {@code v} may process requests as far as enabling goes. */
    boolean enabled(Vring v) {
        return !ringsStartDisabled() || v.enabled;
    }

    /**
     * Takes the connection as a resumed session (see {@link Request#resumesSession}): the
     * frontend owns the device and has negotiated every protocol feature vblk offers, as it did
     * with the backend process before this one. Only for a connection's first message: a
     * frontend that negotiates on this connection is held to what it negotiates.
     */
    void resume() {
        owned = true;
        protocolFeatures = ProtocolFeatures.OFFERED;
    }

    /** Rejects {@code m} unless SET_OWNER came first. */
    void requireOwner(Message m) {
        if (!owned) {
            throw ProtocolError.rejected(m.name() + " before SET_OWNER");
        }
    }

    /** The ring a message names, or a rejection naming the bad index. */
    Vring vring(Message m, long index) {
        if (index < 0 || index >= vrings.length) {
            throw ProtocolError.rejected(m.name() + " for vring " + index + ", but the device has "
                    + vrings.length + " queue(s)");
        }
        return vrings[(int) index];
    }
}
