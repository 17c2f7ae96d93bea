package io.vblk.block.nbd;

/**
 * The numbers of the NBD protocol (NetworkBlockDevice/nbd {@code doc/proto.md}), named as the
 * document names them. Every integer on the wire is big-endian.
 *
 * <pre>
 * request (28 bytes):          magic u32 @0, flags u16 @4, type u16 @6, cookie u64 @8,
 *                              offset u64 @16, length u32 @24
 * simple reply (16 bytes):     magic u32 @0, error u32 @4, cookie u64 @8
 * structured chunk (20 bytes): magic u32 @0, flags u16 @4, type u16 @6, cookie u64 @8,
 *                              length u32 @16
 * option request:              IHAVEOPT u64, option u32, length u32, data
 * option reply (20 bytes):     magic u64 @0, option u32 @8, type u32 @12, length u32 @16, data
 * </pre>
 */
final class NbdProtocol {
    static final long NBDMAGIC = 0x4e42444d41474943L;
    static final long IHAVEOPT = 0x49484156454F5054L;
    static final long OPTION_REPLY_MAGIC = 0x3e889045565a9L;

    // Handshake flags (server) and client flags.
    static final int FLAG_FIXED_NEWSTYLE = 1;
    static final int FLAG_NO_ZEROES = 2;
    static final int FLAG_C_FIXED_NEWSTYLE = 1;
    static final int FLAG_C_NO_ZEROES = 2;

    // Options.
    static final int OPT_EXPORT_NAME = 1;
    static final int OPT_ABORT = 2;
    static final int OPT_STARTTLS = 5;
    static final int OPT_GO = 7;
    static final int OPT_STRUCTURED_REPLY = 8;

    // Option reply types; errors have bit 31 set.
    static final int REP_ACK = 1;
    static final int REP_INFO = 3;
    static final int REP_FLAG_ERROR = 1 << 31;
    static final int REP_ERR_UNSUP = REP_FLAG_ERROR | 1;
    static final int REP_ERR_POLICY = REP_FLAG_ERROR | 2;
    static final int REP_ERR_TLS_REQD = REP_FLAG_ERROR | 5;

    // NBD_OPT_INFO/GO information types.
    static final int INFO_EXPORT = 0;
    static final int INFO_BLOCK_SIZE = 3;

    // Transmission flags.
    static final int FLAG_HAS_FLAGS = 1;
    static final int FLAG_READ_ONLY = 1 << 1;
    static final int FLAG_SEND_FLUSH = 1 << 2;
    static final int FLAG_SEND_FUA = 1 << 3;
    static final int FLAG_SEND_TRIM = 1 << 5;
    static final int FLAG_SEND_WRITE_ZEROES = 1 << 6;
    static final int FLAG_CAN_MULTI_CONN = 1 << 8;

    // Requests.
    static final int REQUEST_MAGIC = 0x25609513;
    static final int REQUEST_SIZE = 28;
    static final int CMD_READ = 0;
    static final int CMD_WRITE = 1;
    static final int CMD_DISC = 2;
    static final int CMD_FLUSH = 3;
    static final int CMD_TRIM = 4;
    static final int CMD_WRITE_ZEROES = 6;
    static final int CMD_FLAG_FUA = 1;
    static final int CMD_FLAG_NO_HOLE = 1 << 1;

    // Replies.
    static final int SIMPLE_REPLY_MAGIC = 0x67446698;
    static final int SIMPLE_REPLY_SIZE = 16;
    static final int STRUCTURED_REPLY_MAGIC = 0x668e33ef;
    static final int STRUCTURED_REPLY_SIZE = 20;
    static final int REPLY_FLAG_DONE = 1;
    static final int REPLY_TYPE_NONE = 0;
    static final int REPLY_TYPE_OFFSET_DATA = 1;
    static final int REPLY_TYPE_OFFSET_HOLE = 2;
    static final int REPLY_TYPE_ERROR_BIT = 1 << 15;
    static final int REPLY_TYPE_ERROR = REPLY_TYPE_ERROR_BIT | 1;
    static final int REPLY_TYPE_ERROR_OFFSET = REPLY_TYPE_ERROR_BIT | 2;
    /** The NBD error for a request too large to serve (proto.md "Error values"). */
    static final int NBD_EOVERFLOW = 75;

    /** The payload limit a server that states none must accept (proto.md, "Block size constraints"). */
    static final int DEFAULT_MAX_PAYLOAD = 32 << 20;
    /** The largest structured chunk other than data we accept (an error message is at most 4 KiB). */
    static final int MAX_NON_DATA_CHUNK = 4096 + 16;

    private NbdProtocol() {
    }
}
