package io.vblk.block.nbd;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.InputStream;
import java.io.OutputStream;
import java.io.RandomAccessFile;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.file.Path;
import java.util.Map;
import java.util.Random;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.NativeBuffer;

/**
 * TLS records cut into the smallest pieces a network can deliver: a relay between the client
 * and a real qemu-nbd with x509 credentials hands the server's bytes on 1 to 29 bytes at a time,
 * each a TCP segment of its own, so no read the client makes ever holds a whole record (the
 * handshake's flights, the option replies inside TLS, reply headers and payload records). The
 * session must complete, and the data must read back exactly.
 */
@SuppressWarnings("try") // the server and relay are resources the try block only keeps alive
class NbdTlsSplitRecordAttackTest {
    private static final long MiB = 1 << 20;

    @TempDir
    static Path shared;
    private static TestCertificates certs;

    @TempDir
    Path dir;

    @BeforeAll
    static void prerequisites() throws Exception {
        assumeTrue(ServerProcess.available("qemu-nbd"), "qemu-nbd is not installed (.ci/run installs it)");
        assumeTrue(TestCertificates.available(), "openssl is not installed (scripts/install-test-deps installs it)");
        certs = TestCertificates.create(shared.resolve("pki"));
    }

    /** Relays a connection; the server's bytes go on in pieces of 1 to 29 bytes. */
    private static final class SplittingRelay implements AutoCloseable {
        private final ServerSocket listener;

        SplittingRelay(int upstreamPort) throws Exception {
            listener = new ServerSocket(0, 4, InetAddress.getLoopbackAddress());
            Thread t = new Thread(() -> {
                while (true) {
                    try {
                        Socket client = listener.accept();
                        Socket server = new Socket(InetAddress.getLoopbackAddress(), upstreamPort);
                        client.setTcpNoDelay(true);
                        server.setTcpNoDelay(true);
                        pump(server, client, true);
                        pump(client, server, false);
                    } catch (Exception e) {
                        return;
                    }
                }
            }, "splitting-relay");
            t.setDaemon(true);
            t.start();
        }

        int port() {
            return listener.getLocalPort();
        }

        private static void pump(Socket from, Socket to, boolean split) {
            Thread t = new Thread(() -> {
                Random random = new Random(17);
                byte[] buf = new byte[65536];
                try (InputStream in = from.getInputStream(); OutputStream out = to.getOutputStream()) {
                    int n;
                    while ((n = in.read(buf)) > 0) {
                        if (!split) {
                            out.write(buf, 0, n);
                            continue;
                        }
                        for (int at = 0; at < n; ) {
                            int piece = Math.min(n - at, 1 + random.nextInt(29));
                            out.write(buf, at, piece);
                            out.flush();
                            at += piece;
                        }
                    }
                } catch (Exception e) {
                    // one side closed
                } finally {
                    try {
                        from.close();
                        to.close();
                    } catch (Exception e) {
                        // closing anyway
                    }
                }
            }, "splitting-relay-pump");
            t.setDaemon(true);
            t.start();
        }

        @Override
        public void close() throws Exception {
            listener.close();
        }
    }

    @Test
    void recordsDeliveredInPiecesOfAFewBytesStillServeVerifiedIo() throws Exception {
        Path img = dir.resolve("disk.img");
        try (RandomAccessFile f = new RandomAccessFile(img.toFile(), "rw")) {
            f.setLength(16 * MiB);
        }
        int port = ServerProcess.freePort();
        try (ServerProcess server = NbdTlsTest.qemuNbdTls(img, null, port, certs.serverDir("server"), true);
             SplittingRelay relay = new SplittingRelay(port);
             NbdBackend disk = NbdBackend.open("nbds://127.0.0.1:" + relay.port() + "/d",
                     NbdOptions.defaults().withTls(NbdTls.certificates(certs.clientDir("ca", true)))
                             .withConnectTimeoutMs(20_000))) {
            assertTrue(disk.tls());
            for (int size : new int[] {4096, 65536}) {
                int count = 16;
                Io io = new Io(disk);
                NativeBuffer[] bufs = new NativeBuffer[count];
                for (int i = 0; i < count; i++) {
                    bufs[i] = Io.buffer(size);
                    Io.fill(bufs[i], size + i);
                    Io.check(disk.prepareWrite((long) i * size, Io.vector(bufs[i]), i));
                }
                Map<Long, Long> done = io.await(count, 60_000);
                assertEquals(count, done.size(), "every write completed");
                done.values().forEach(r -> assertEquals(size, r));
                io.results.clear();
                for (int i = 0; i < count; i++) {
                    Io.poison(bufs[i]);
                    Io.check(disk.prepareRead((long) i * size, Io.vector(bufs[i]), i));
                }
                done = io.await(count, 60_000);
                assertEquals(count, done.size(), "every read completed");
                for (int i = 0; i < count; i++) {
                    assertEquals(size, done.get((long) i));
                    assertTrue(Io.matches(bufs[i], size + i), "request " + i + " of " + size + " bytes read back");
                }
            }
        }
    }
}
