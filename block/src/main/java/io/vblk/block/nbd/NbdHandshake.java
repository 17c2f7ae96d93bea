package io.vblk.block.nbd;

import static io.vblk.block.nbd.NbdProtocol.*;

import java.io.IOException;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;

import javax.net.ssl.SSLException;

import org.agrona.concurrent.UnsafeBuffer;

import io.vblk.sys.NativeBuffer;

/**
 * The fixed newstyle negotiation (proto.md, "Fixed newstyle negotiation"): structured replies,
 * then NBD_OPT_GO asking for block-size information, falling back to NBD_OPT_EXPORT_NAME when
 * the server does not know GO; with TLS, NBD_OPT_STARTTLS and the TLS handshake before all of
 * them. Every length the server sends is checked before it is used.
 */
final class NbdHandshake {
    private static final ByteOrder BE = ByteOrder.BIG_ENDIAN;
    /** The largest option reply we read; longer ones (descriptions, names) are skipped. */
    private static final int MAX_OPTION_REPLY = 4096;
    private static final int OLDSTYLE_ZEROES = 124;

    private final NbdSocket socket;
    private final long deadlineNs;
    private final NativeBuffer memory = new NativeBuffer(8192);
    private final UnsafeBuffer buf = memory.buffer();
    private boolean noZeroes;

    private final NbdAddress address;
    private final NbdTls tls;

    private NbdHandshake(NbdSocket socket, NbdAddress address, NbdTls tls, long deadlineNs) {
        this.socket = socket;
        this.address = address;
        this.tls = tls;
        this.deadlineNs = deadlineNs;
    }

    /**
     * Negotiates the export {@code address} names on a freshly connected socket by
     * {@code deadlineNs}: the deadline the connect began with, so that connect and handshake
     * together take at most the connect timeout ({@code timeoutMs}, named when it runs out), not
     * twice it; with {@code tls}, NBD_OPT_STARTTLS first (proto.md: a client that wants
     * only TLS sends it as the first option and ends the session if it is refused), then the
     * TLS handshake, then every other option inside TLS.
     */
    static NbdExport negotiate(NbdSocket socket, NbdAddress address, NbdTls tls, long deadlineNs, int timeoutMs)
            throws IOException {
        NbdHandshake h = new NbdHandshake(socket, address, tls, deadlineNs);
        try {
            return h.run(address.exportName());
        } catch (SSLException e) {
            throw new IOException("TLS with " + address + " failed: " + tls.explain(e), e);
        } catch (IOException e) {
            // The socket's waits end at or after the deadline when it runs out (NbdSocket.awaitUntil).
            if (System.nanoTime() - deadlineNs >= 0) {
                // Name the limit that ran out: the operator who finds it too short can raise it.
                throw new IOException(e.getMessage() + " (connect timeout " + timeoutMs + " ms)", e);
            }
            throw e;
        }
    }

    private NbdExport run(String exportName) throws IOException {
        byte[] name = exportName.getBytes(StandardCharsets.UTF_8);
        if (name.length > MAX_OPTION_REPLY) {
            throw new IOException("export name longer than " + MAX_OPTION_REPLY + " bytes");
        }
        read(18);
        if (buf.getLong(0, BE) != NBDMAGIC) {
            throw new IOException("not an NBD server (magic 0x" + Long.toHexString(buf.getLong(0, BE)) + ")");
        }
        if (buf.getLong(8, BE) != IHAVEOPT) {
            throw new IOException("NBD server speaks the oldstyle protocol, which is not supported");
        }
        int serverFlags = buf.getShort(16, BE) & 0xffff;
        if ((serverFlags & FLAG_FIXED_NEWSTYLE) == 0) {
            throw new IOException("NBD server does not offer fixed newstyle negotiation");
        }
        noZeroes = (serverFlags & FLAG_NO_ZEROES) != 0;
        buf.putInt(0, FLAG_C_FIXED_NEWSTYLE | (noZeroes ? FLAG_C_NO_ZEROES : 0), BE);
        write(4);
        if (tls != null) {
            startTls();
        }

        sendOption(OPT_STRUCTURED_REPLY, 0);
        int type;
        try {
            type = readOptionReply(OPT_STRUCTURED_REPLY);
        } catch (IOException e) {
            if (tls == null || e instanceof SSLException) {
                throw e;
            }
            // TLS 1.3: the server checks the client's certificate after the client's handshake
            // ended; a server that refuses it (or wanted one) may just hang up here.
            throw new IOException(e.getMessage() + " right after the TLS handshake: the server may require a client"
                    + " certificate (" + NbdTls.CLIENT_CERT + " and " + NbdTls.CLIENT_KEY + ") or refuse this one", e);
        }
        requireNoTls(type);
        boolean structured = type == REP_ACK;
        if (!structured && (type & REP_FLAG_ERROR) == 0) {
            throw new IOException("unexpected reply type 0x" + Integer.toHexString(type) + " to NBD_OPT_STRUCTURED_REPLY");
        }
        NbdExport export = go(name, structured);
        return export != null ? export : exportName(name, structured);
    }

    /** NBD_OPT_STARTTLS, then the TLS handshake; any refusal ends the session with an error. */
    private void startTls() throws IOException {
        sendOption(OPT_STARTTLS, 0);
        int type = readOptionReply(OPT_STARTTLS);
        if (type != REP_ACK) {
            String why = type == REP_ERR_POLICY ? "refused by policy" : type == REP_ERR_UNSUP ? "not supported"
                    : "reply 0x" + Integer.toHexString(type);
            throw new IOException("the NBD server at " + address + " does not offer TLS (" + why
                    + (lastReplyLength > 0 ? ": " + replyText(lastReplyLength) : "")
                    + "); an nbds:// address never falls back to plain NBD");
        }
        String host = address.socket() != null ? null : address.host();
        NbdTlsSession session = new NbdTlsSession(tls.engine(host, address.port()), socket, address.toString());
        session.handshake(deadlineNs);
        socket.startTls(session);
    }

    /** A plain client met a server that requires TLS: say so, rather than "export refused". */
    private void requireNoTls(int type) throws IOException {
        if (type == REP_ERR_TLS_REQD) {
            throw new IOException("the NBD server at " + address + " requires TLS: use an nbds:// (or nbds+unix://)"
                    + " address with the server's CA (tls-certificates=DIR)");
        }
    }

    /** NBD_OPT_GO; null when the server does not support it (fall back to EXPORT_NAME). */
    private NbdExport go(byte[] name, boolean structured) throws IOException {
        int data = 20;
        buf.putInt(data, name.length, BE);
        buf.putBytes(data + 4, name);
        buf.putShort(data + 4 + name.length, (short) 1, BE);
        buf.putShort(data + 6 + name.length, (short) INFO_BLOCK_SIZE, BE);
        sendOption(OPT_GO, 8 + name.length);
        long size = -1;
        int flags = 0;
        int min = 1;
        int preferred = 4096;
        int max = DEFAULT_MAX_PAYLOAD;
        while (true) {
            int type = readOptionReply(OPT_GO);
            int length = lastReplyLength;
            if (type == REP_ACK) {
                break;
            }
            if (type == REP_ERR_UNSUP) {
                return null;
            }
            requireNoTls(type);
            if ((type & REP_FLAG_ERROR) != 0) {
                throw new IOException("NBD server refused export '" + new String(name, StandardCharsets.UTF_8)
                        + "': error 0x" + Integer.toHexString(type) + " " + replyText(length));
            }
            if (type != REP_INFO || length < 2) {
                continue; // proto.md: unknown reply types before ACK are ignored
            }
            int info = buf.getShort(0, BE) & 0xffff;
            if (info == INFO_EXPORT && length >= 12) {
                size = buf.getLong(2, BE);
                flags = buf.getShort(10, BE) & 0xffff;
            } else if (info == INFO_BLOCK_SIZE && length >= 14) {
                min = buf.getInt(2, BE);
                preferred = buf.getInt(6, BE);
                max = buf.getInt(10, BE);
            }
        }
        if (size < 0) {
            throw new IOException("NBD server finished NBD_OPT_GO without NBD_INFO_EXPORT");
        }
        return checked(size, flags, min, preferred, max, structured);
    }

    private NbdExport exportName(byte[] name, boolean structured) throws IOException {
        buf.putLong(0, IHAVEOPT, BE);
        buf.putInt(8, OPT_EXPORT_NAME, BE);
        buf.putInt(12, name.length, BE);
        buf.putBytes(16, name);
        write(16 + name.length);
        read(10 + (noZeroes ? 0 : OLDSTYLE_ZEROES));
        return checked(buf.getLong(0, BE), buf.getShort(8, BE) & 0xffff, 1, 4096, DEFAULT_MAX_PAYLOAD, structured);
    }

    private static NbdExport checked(long size, int flags, int min, int preferred, int max, boolean structured)
            throws IOException {
        if (size < 0) {
            throw new IOException("NBD export size out of range: " + Long.toUnsignedString(size));
        }
        if ((flags & FLAG_HAS_FLAGS) == 0) {
            flags = FLAG_HAS_FLAGS; // no flags known: no FLUSH, TRIM, ... (treated as unsupported)
        }
        // proto.md: the minimum is a power of two up to 64 KiB, the preferred a power of two at
        // least the minimum, the maximum a multiple of the minimum (or 0xffffffff).
        if (min < 1 || min > 65536 || Integer.bitCount(min) != 1
                || preferred < min || Integer.bitCount(preferred) != 1
                || (max != -1 && (max < min || max % min != 0))) {
            throw new IOException("NBD server sent bad block sizes: min " + min + ", preferred " + preferred
                    + ", max " + Integer.toUnsignedString(max));
        }
        int maxPayload = max == -1 || max > DEFAULT_MAX_PAYLOAD ? DEFAULT_MAX_PAYLOAD : max;
        return new NbdExport(size, flags, min, preferred, maxPayload, structured);
    }

    private int lastReplyLength;

    /** Reads one option reply into buf[0..) and returns its type; its data length is {@link #lastReplyLength}. */
    private int readOptionReply(int option) throws IOException {
        read(20);
        long magic = buf.getLong(0, BE);
        int replyOption = buf.getInt(8, BE);
        int type = buf.getInt(12, BE);
        int length = buf.getInt(16, BE);
        if (magic != OPTION_REPLY_MAGIC || replyOption != option) {
            throw new IOException("bad NBD option reply (magic 0x" + Long.toHexString(magic) + ", option " + replyOption + ")");
        }
        if (length < 0 || length > MAX_OPTION_REPLY) {
            if (length < 0) {
                throw new IOException("NBD option reply length out of range: " + Integer.toUnsignedString(length));
            }
            skip(length);
            lastReplyLength = 0;
            return type;
        }
        read(length);
        lastReplyLength = length;
        return type;
    }

    private String replyText(int length) {
        byte[] text = new byte[Math.min(length, 200)];
        buf.getBytes(0, text);
        return new String(text, StandardCharsets.UTF_8);
    }

    private void sendOption(int option, int dataLength) throws IOException {
        buf.putLong(4, IHAVEOPT, BE);
        buf.putInt(12, option, BE);
        buf.putInt(16, dataLength, BE);
        socket.writeFully(memory.address() + 4, 16 + dataLength, deadlineNs);
    }

    private void skip(int length) throws IOException {
        int left = length;
        while (left > 0) {
            checkDeadline();
            int n = Math.min(left, memory.capacity());
            socket.readFully(memory.address(), n, deadlineNs);
            left -= n;
        }
    }

    private void read(int length) throws IOException {
        checkDeadline();
        socket.readFully(memory.address(), length, deadlineNs);
    }

    /**
     * The socket checks the deadline only when it has to wait: a server that never stops
     * sending (endless replies before NBD_OPT_GO's ACK) would otherwise hold the open for ever.
     */
    private void checkDeadline() throws IOException {
        if (System.nanoTime() - deadlineNs > 0) {
            throw new IOException("NBD server did not answer in time (negotiation still going at the connect timeout)");
        }
    }

    private void write(int length) throws IOException {
        socket.writeFully(memory.address(), length, deadlineNs);
    }
}
