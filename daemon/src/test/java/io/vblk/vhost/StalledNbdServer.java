package io.vblk.vhost;

import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

/**
 * An NBD server that accepts connections and never greets, so a client's handshake stalls
 * until the client gives up; closing it lets the held connections go.
 */
final class StalledNbdServer implements AutoCloseable {
    final ExecutorService pool = Executors.newCachedThreadPool(r -> {
        Thread t = new Thread(r, "stalled-nbd");
        t.setDaemon(true);
        return t;
    });
    final CountDownLatch accepted = new CountDownLatch(1);
    /** Connections accepted so far. */
    final java.util.concurrent.atomic.AtomicInteger connections = new java.util.concurrent.atomic.AtomicInteger();
    private final CountDownLatch release = new CountDownLatch(1);
    private final ServerSocket listener = new ServerSocket(0, 4, InetAddress.getLoopbackAddress());

    StalledNbdServer() throws IOException {
        pool.submit(() -> {
            while (true) {
                Socket s = listener.accept();
                connections.incrementAndGet();
                accepted.countDown();
                pool.submit(() -> {
                    try (s) {
                        release.await(); // no greeting: the handshake stalls
                    }
                    return null;
                });
            }
        });
    }

    String address() {
        return "nbd://127.0.0.1:" + listener.getLocalPort() + "/x";
    }

    /** Hangs up on every connection it holds (and on any it accepts later). */
    void release() {
        release.countDown();
    }

    @Override
    public void close() throws IOException {
        release.countDown();
        pool.shutdownNow();
        listener.close();
    }
}
