package io.vblk.daemon;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.attribute.GroupPrincipal;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;

import org.agrona.concurrent.UnsafeBuffer;

import io.vblk.sys.Errno;
import io.vblk.sys.NativeBuffer;
import io.vblk.sys.NativeException;
import io.vblk.sys.UnixSocket;
import io.vblk.vhost.Log;
import io.vblk.vhost.PeerFilter;
import io.vblk.vhost.SocketFile;

/**
 * The daemon's control socket: a Unix socket (mode 0600 unless told otherwise, and the same
 * peer-uid filter as the data sockets) carrying JSON-RPC 2.0, one request per line and one
 * response per line. Each client gets a thread of its own, so a slow or stuck client holds up
 * nobody else; at most {@link #MAX_CLIENTS} at once, further ones get one error line and are
 * closed. A line longer than {@link #MAX_LINE_BYTES} ends its connection with an error.
 */
final class ControlServer implements AutoCloseable {
    static final int MAX_CLIENTS = 256;
    static final int MAX_LINE_BYTES = 1 << 20;
    private static final int BACKLOG = 128;
    private static final int READ_BYTES = 64 << 10;

    private final SocketFile socketFile;
    private final PeerFilter peers;
    private final JsonRpc rpc;
    private final Log log;
    private final Set<UnixSocket> clients = ConcurrentHashMap.newKeySet();
    private final Thread acceptor;
    private volatile boolean closing;

    /**
     * Listens on {@code path}.
     *
     * @throws IllegalArgumentException when the path is unusable (see {@link SocketFile#check})
     * @throws java.io.UncheckedIOException when the socket cannot be created
     */
    ControlServer(Path path, int mode, String group, int[] allowUids, JsonRpc rpc, Log log) {
        this.rpc = rpc;
        this.log = log;
        this.peers = allowUids == null ? PeerFilter.defaults() : PeerFilter.of(allowUids);
        GroupPrincipal principal = group == null ? null : SocketFile.group(group);
        this.socketFile = SocketFile.listen(path, BACKLOG, mode, principal);
        this.acceptor = new Thread(this::acceptLoop, "vblk-control");
        acceptor.setDaemon(true);
        acceptor.start();
    }

    Path path() {
        return socketFile.path();
    }

    private void acceptLoop() {
        while (!closing) {
            UnixSocket client;
            try {
                client = socketFile.socket().accept();
            } catch (NativeException e) {
                if (!closing && e.errno() != Errno.EINTR) {
                    log.info("control: accept failed: " + e.getMessage());
                    pause();
                }
                continue;
            }
            String refusal = peers.refusal(client);
            if (refusal != null || closing) {
                if (refusal != null) {
                    log.info("control: " + refusal);
                }
                client.close();
                continue;
            }
            if (clients.size() >= MAX_CLIENTS) {
                write(client, JsonRpc.error(null, RpcError.INTERNAL_ERROR, "too many control clients (at most "
                        + MAX_CLIENTS + "); try again later"));
                client.close();
                continue;
            }
            clients.add(client);
            Thread t = new Thread(() -> serve(client), "vblk-control-client");
            t.setDaemon(true);
            t.start();
        }
    }

    private static void pause() {
        try {
            Thread.sleep(100);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    /** Reads lines until the client goes; answers each. */
    private void serve(UnixSocket client) {
        NativeBuffer native_ = new NativeBuffer(READ_BYTES);
        UnsafeBuffer buf = native_.buffer();
        byte[] chunk = new byte[READ_BYTES];
        int[] fds = new int[UnixSocket.MAX_FDS];
        int[] fdCount = new int[1];
        ByteArrayOutputStream line = new ByteArrayOutputStream();
        try {
            while (!closing) {
                long n = client.receive(native_.address(), READ_BYTES, fds, fdCount);
                for (int i = 0; i < fdCount[0]; i++) {
                    io.vblk.sys.Native.libc().close(fds[i]); // a control client has no business sending descriptors
                }
                if (n == -Errno.EINTR) {
                    continue;
                }
                if (n <= 0) {
                    return;
                }
                buf.getBytes(0, chunk, 0, (int) n);
                int start = 0;
                for (int i = 0; i < n; i++) {
                    if (chunk[i] == '\n') {
                        line.write(chunk, start, i - start);
                        if (!answer(client, line)) {
                            return;
                        }
                        line.reset();
                        start = i + 1;
                    }
                }
                line.write(chunk, start, (int) n - start);
                if (line.size() > MAX_LINE_BYTES) {
                    write(client, JsonRpc.error(null, RpcError.INVALID_REQUEST, "request line longer than "
                            + MAX_LINE_BYTES + " bytes; closing the connection"));
                    return;
                }
            }
        } finally {
            clients.remove(client);
            client.close();
        }
    }

    private boolean answer(UnixSocket client, ByteArrayOutputStream line) {
        String text = line.toString(StandardCharsets.UTF_8).strip();
        if (text.isEmpty()) {
            return true;
        }
        String response = rpc.handle(text);
        return response == null || write(client, response);
    }

    /** Writes {@code response} and a newline; false when the client has gone. */
    private static boolean write(UnixSocket client, String response) {
        byte[] bytes = (response + "\n").getBytes(StandardCharsets.UTF_8);
        NativeBuffer out = new NativeBuffer(bytes.length);
        out.buffer().putBytes(0, bytes);
        int sent = 0;
        while (sent < bytes.length) {
            long n = client.send(out.address() + sent, bytes.length - sent, null, 0);
            if (n == -Errno.EINTR) {
                continue;
            }
            if (n <= 0) {
                return false;
            }
            sent += (int) n;
        }
        return true;
    }

    /** Stops accepting, ends every client's connection and removes the socket file. */
    @Override
    public void close() {
        closing = true;
        socketFile.socket().shutdown();
        for (UnixSocket c : clients) {
            c.shutdown();
        }
        try {
            acceptor.join(5_000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        socketFile.closeAndRemove();
    }
}
