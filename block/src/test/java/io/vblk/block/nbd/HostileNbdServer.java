package io.vblk.block.nbd;

import static io.vblk.block.nbd.NbdProtocol.*;

import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * A hand-written NBD server on a real loopback TCP socket for the attack tests: no real server
 * misbehaves on purpose, so each test scripts what its connections say (the client side is the
 * production code). Connections are served one after the other on a daemon thread, each by the
 * test's {@link Session}, numbered from 1, until {@link #close()}; the helpers speak the
 * protocol's well-formed parts (proto.md: the greeting, options and their replies, an
 * NBD_OPT_GO answered with the export and its block sizes).
 */
final class HostileNbdServer implements AutoCloseable {
    /** What one connection does after the accept. */
    interface Session {
        void run(int connection, DataInputStream in, DataOutputStream out) throws IOException, InterruptedException;
    }

    private final ExecutorService pool;
    private final AtomicInteger connections = new AtomicInteger();
    private ServerSocket listener;
    private volatile boolean closed;

    HostileNbdServer(String threadName) {
        pool = Executors.newCachedThreadPool(r -> {
            Thread t = new Thread(r, threadName);
            t.setDaemon(true);
            return t;
        });
    }

    /** Starts serving; returns the address a disk opens ({@code nbd://127.0.0.1:PORT/x}). */
    String serve(Session session) throws IOException {
        listener = new ServerSocket(0, 4, InetAddress.getLoopbackAddress());
        pool.submit(() -> {
            while (!closed) {
                try (Socket s = listener.accept()) {
                    s.setTcpNoDelay(true);
                    session.run(connections.incrementAndGet(), new DataInputStream(s.getInputStream()),
                            new DataOutputStream(s.getOutputStream()));
                } catch (IOException | InterruptedException e) {
                    // the client hung up or the test ended
                }
            }
            return null;
        });
        return "nbd://127.0.0.1:" + listener.getLocalPort() + "/x";
    }

    /** Whether {@link #close()} was called: a session that writes without end stops on it. */
    boolean closed() {
        return closed;
    }

    /** Connections accepted so far. */
    int connections() {
        return connections.get();
    }

    /** The server's thread pool, for a test's own background work (it ends with the server). */
    ExecutorService pool() {
        return pool;
    }

    /** The greeting and the client's flags (fixed newstyle, no zeroes). */
    static void greet(DataInputStream in, DataOutputStream out) throws IOException {
        out.writeLong(NBDMAGIC);
        out.writeLong(IHAVEOPT);
        out.writeShort(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
        out.flush();
        in.readInt();
    }

    /** Reads one option; returns its code. */
    static int option(DataInputStream in) throws IOException {
        if (in.readLong() != IHAVEOPT) {
            throw new IOException("bad option magic");
        }
        int code = in.readInt();
        in.skipNBytes(in.readInt());
        return code;
    }

    /** An option reply's header; {@code length} bytes of data follow. */
    static void reply(DataOutputStream out, int option, int type, int length) throws IOException {
        out.writeLong(OPTION_REPLY_MAGIC);
        out.writeInt(option);
        out.writeInt(type);
        out.writeInt(length);
    }

    /**
     * A whole handshake as the client drives it: the greeting, structured replies accepted, and
     * the NBD_OPT_GO answered with an export of {@code sizeBytes} (no transmission flags but
     * HAS_FLAGS) and the block sizes given.
     */
    static void negotiate(DataInputStream in, DataOutputStream out, long sizeBytes, int min, int preferred, int max)
            throws IOException {
        int code = exportInfo(in, out, sizeBytes);
        reply(out, code, REP_INFO, 14);
        out.writeShort(INFO_BLOCK_SIZE);
        out.writeInt(min);
        out.writeInt(preferred);
        out.writeInt(max);
        reply(out, code, REP_ACK, 0);
        out.flush();
    }

    /** As above without NBD_INFO_BLOCK_SIZE: the client keeps its default block sizes. */
    static void negotiate(DataInputStream in, DataOutputStream out, long sizeBytes) throws IOException {
        int code = exportInfo(in, out, sizeBytes);
        reply(out, code, REP_ACK, 0);
        out.flush();
    }

    /**
     * The greeting, structured replies accepted, and the NBD_OPT_GO's NBD_INFO_EXPORT ({@code
     * sizeBytes}, HAS_FLAGS only); returns the option's code for the replies that end it.
     */
    private static int exportInfo(DataInputStream in, DataOutputStream out, long sizeBytes) throws IOException {
        greet(in, out);
        int code = option(in);
        reply(out, code, REP_ACK, 0); // structured replies
        code = option(in);
        reply(out, code, REP_INFO, 12);
        out.writeShort(INFO_EXPORT);
        out.writeLong(sizeBytes);
        out.writeShort(FLAG_HAS_FLAGS);
        return code;
    }

    /** A request's header (proto.md "Request message"); a write's payload follows it on the stream. */
    record Request(int type, long cookie, long offset, int length) {
    }

    /** Reads the next request's header (the magic and command flags are not checked). */
    static Request request(DataInputStream in) throws IOException {
        in.readInt();
        in.readShort();
        int type = in.readShort();
        long cookie = in.readLong();
        long offset = in.readLong();
        return new Request(type, cookie, offset, in.readInt());
    }

    /** A simple reply (proto.md) with {@code error} for {@code cookie}, flushed. */
    static void simpleReply(DataOutputStream out, long cookie, int error) throws IOException {
        out.writeInt(SIMPLE_REPLY_MAGIC);
        out.writeInt(error);
        out.writeLong(cookie);
        out.flush();
    }

    /** Stops accepting, closes the listener and ends the server's threads. */
    @Override
    public void close() throws IOException {
        closed = true;
        if (listener != null) {
            listener.close();
        }
        pool.shutdownNow();
    }
}
