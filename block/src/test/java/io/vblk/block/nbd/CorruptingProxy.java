package io.vblk.block.nbd;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * A TCP relay between the driver and a real NBD server that, when armed, damages the next block
 * of bytes the server sends: the way to make a real server "lie" (no protocol mock: the
 * handshake and every other reply are the server's own). Arm it only while no reply is in
 * transit, so the damaged bytes start with a reply header.
 */
final class CorruptingProxy implements AutoCloseable {
    /** Flip the first byte: a bad reply magic. */
    static final int BAD_MAGIC = 1;
    /** Flip the cookie's most significant byte: a reply for a request never sent. */
    static final int UNKNOWN_COOKIE = 2;

    private final ServerSocket listener;
    private final int upstreamPort;
    private final AtomicInteger armed = new AtomicInteger();
    final AtomicInteger connections = new AtomicInteger();
    private volatile boolean closed;

    CorruptingProxy(int upstreamPort) throws IOException {
        this.upstreamPort = upstreamPort;
        listener = new ServerSocket(0, 8, InetAddress.getLoopbackAddress());
        Thread t = new Thread(this::acceptLoop, "corrupting-proxy");
        t.setDaemon(true);
        t.start();
    }

    int port() {
        return listener.getLocalPort();
    }

    void arm(int mode) {
        armed.set(mode);
    }

    private void acceptLoop() {
        while (!closed) {
            try {
                Socket client = listener.accept();
                Socket server = new Socket(InetAddress.getLoopbackAddress(), upstreamPort);
                connections.incrementAndGet();
                pump(client, server, false);
                pump(server, client, true);
            } catch (IOException e) {
                return;
            }
        }
    }

    private void pump(Socket from, Socket to, boolean fromServer) {
        Thread t = new Thread(() -> {
            byte[] buf = new byte[65536];
            try (InputStream in = from.getInputStream(); OutputStream out = to.getOutputStream()) {
                int n;
                while ((n = in.read(buf)) > 0) {
                    int mode = fromServer ? armed.getAndSet(0) : 0;
                    if (mode == BAD_MAGIC) {
                        buf[0] ^= (byte) 0xff;
                    } else if (mode == UNKNOWN_COOKIE && n > 8) {
                        buf[8] ^= (byte) 0x5a;
                    }
                    out.write(buf, 0, n);
                }
            } catch (IOException e) {
                // the other side closed
            } finally {
                try {
                    from.close();
                    to.close();
                } catch (IOException e) {
                    // closing anyway
                }
            }
        }, "corrupting-proxy-pump");
        t.setDaemon(true);
        t.start();
    }

    @Override
    public void close() throws IOException {
        closed = true;
        listener.close();
    }
}
