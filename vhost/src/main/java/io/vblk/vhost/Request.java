package io.vblk.vhost;

/**
 * Request codes of the vhost-user protocol, frontend to backend (QEMU
 * {@code docs/interop/vhost-user.rst}, "Front-end message types"). Only those vblk names in logs
 * or handles are listed; any other code is answered as unknown.
 */
final class Request {
    static final int GET_FEATURES = 1;
    static final int SET_FEATURES = 2;
    static final int SET_OWNER = 3;
    static final int RESET_OWNER = 4;
    static final int SET_MEM_TABLE = 5;
    static final int SET_LOG_BASE = 6;
    static final int SET_LOG_FD = 7;
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
    static final int SEND_RARP = 19;
    static final int NET_SET_MTU = 20;
    static final int SET_BACKEND_REQ_FD = 21;
    static final int IOTLB_MSG = 22;
    static final int SET_VRING_ENDIAN = 23;
    static final int GET_CONFIG = 24;
    static final int SET_CONFIG = 25;
    static final int GET_INFLIGHT_FD = 31;
    static final int SET_INFLIGHT_FD = 32;
    static final int RESET_DEVICE = 34;
    static final int VRING_KICK = 35;
    static final int GET_MAX_MEM_SLOTS = 36;
    static final int ADD_MEM_REG = 37;
    static final int REM_MEM_REG = 38;
    static final int SET_STATUS = 39;
    static final int GET_STATUS = 40;

    private static final String[] NAMES = new String[41];

    static {
        NAMES[GET_FEATURES] = "GET_FEATURES";
        NAMES[SET_FEATURES] = "SET_FEATURES";
        NAMES[SET_OWNER] = "SET_OWNER";
        NAMES[RESET_OWNER] = "RESET_OWNER";
        NAMES[SET_MEM_TABLE] = "SET_MEM_TABLE";
        NAMES[SET_LOG_BASE] = "SET_LOG_BASE";
        NAMES[SET_LOG_FD] = "SET_LOG_FD";
        NAMES[SET_VRING_NUM] = "SET_VRING_NUM";
        NAMES[SET_VRING_ADDR] = "SET_VRING_ADDR";
        NAMES[SET_VRING_BASE] = "SET_VRING_BASE";
        NAMES[GET_VRING_BASE] = "GET_VRING_BASE";
        NAMES[SET_VRING_KICK] = "SET_VRING_KICK";
        NAMES[SET_VRING_CALL] = "SET_VRING_CALL";
        NAMES[SET_VRING_ERR] = "SET_VRING_ERR";
        NAMES[GET_PROTOCOL_FEATURES] = "GET_PROTOCOL_FEATURES";
        NAMES[SET_PROTOCOL_FEATURES] = "SET_PROTOCOL_FEATURES";
        NAMES[GET_QUEUE_NUM] = "GET_QUEUE_NUM";
        NAMES[SET_VRING_ENABLE] = "SET_VRING_ENABLE";
        NAMES[SEND_RARP] = "SEND_RARP";
        NAMES[NET_SET_MTU] = "NET_SET_MTU";
        NAMES[SET_BACKEND_REQ_FD] = "SET_BACKEND_REQ_FD";
        NAMES[IOTLB_MSG] = "IOTLB_MSG";
        NAMES[SET_VRING_ENDIAN] = "SET_VRING_ENDIAN";
        NAMES[GET_CONFIG] = "GET_CONFIG";
        NAMES[SET_CONFIG] = "SET_CONFIG";
        NAMES[GET_INFLIGHT_FD] = "GET_INFLIGHT_FD";
        NAMES[SET_INFLIGHT_FD] = "SET_INFLIGHT_FD";
        NAMES[RESET_DEVICE] = "RESET_DEVICE";
        NAMES[VRING_KICK] = "VRING_KICK";
        NAMES[GET_MAX_MEM_SLOTS] = "GET_MAX_MEM_SLOTS";
        NAMES[ADD_MEM_REG] = "ADD_MEM_REG";
        NAMES[REM_MEM_REG] = "REM_MEM_REG";
        NAMES[SET_STATUS] = "SET_STATUS";
        NAMES[GET_STATUS] = "GET_STATUS";
    }

    private Request() {
    }

    /** The spec's name of {@code request} (without the VHOST_USER_ prefix), or "request N". */
    static String name(int request) {
        String n = request >= 0 && request < NAMES.length ? NAMES[request] : null;
        return n != null ? n : "request " + Integer.toUnsignedString(request);
    }

    /**
     * Whether {@code request}, as a connection's first message, resumes a session a previous
     * backend process set up: a message of the device's start (features, inflight buffer, memory
     * table, rings, dirty log), which only a frontend that negotiated and took ownership sends.
     * QEMU 7.2 reconnecting while its device is stopped (a {@code -S} guest, a migration's
     * destination) skips its initialisation and sends only these, beginning with SET_FEATURES or
     * SET_INFLIGHT_FD (its disconnect handler never ran, so it still holds what it negotiated
     * with the backend that died; libvhost-user and qemu-storage-daemon serve it). Negotiation,
     * queries and ownership messages are not in the list: a session that begins with one of them
     * negotiates as usual.
     */
    static boolean resumesSession(int request) {
        switch (request) {
            case SET_FEATURES:
            case SET_MEM_TABLE:
            case ADD_MEM_REG:
            case SET_LOG_BASE:
            case SET_LOG_FD:
            case SET_VRING_NUM:
            case SET_VRING_ADDR:
            case SET_VRING_BASE:
            case SET_VRING_KICK:
            case SET_VRING_CALL:
            case SET_VRING_ERR:
            case SET_VRING_ENABLE:
            case GET_INFLIGHT_FD:
            case SET_INFLIGHT_FD:
                return true;
            default:
                return false;
        }
    }

    /**
     * Whether the protocol defines a reply for {@code request} whatever REPLY_ACK says: such a
     * request is never acknowledged separately (vhost-user.rst, "REPLY_ACK").
     */
    static boolean hasOwnReply(int request) {
        switch (request) {
            case GET_FEATURES:
            case GET_PROTOCOL_FEATURES:
            case GET_VRING_BASE:
            case SET_LOG_BASE:
            case GET_QUEUE_NUM:
            case GET_CONFIG:
            case GET_MAX_MEM_SLOTS:
            case GET_INFLIGHT_FD:
            case GET_STATUS:
                return true;
            default:
                return false;
        }
    }
}
