package io.vblk.block.nbd;

import static io.vblk.block.nbd.NbdProtocol.*;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyStore;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;

import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLSocket;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.NativeBuffer;

/**
 * A TLS 1.2 NBD server that renegotiates in the transmission phase: after answering the first
 * request it starts a new handshake (a HelloRequest, RFC 5246 7.4.1.1), while the client has
 * more requests to send. Written in Java (SSLSocket, server mode) because no real NBD server
 * does this on purpose; the client is the production code over a real socket. Whatever the
 * client does with the renegotiation (complete it, refuse it, reconnect), its I/O thread's
 * submit and poll must keep returning and every request must complete, never hang.
 */
class NbdTlsRenegotiationAttackTest {
    @TempDir
    static Path shared;
    private static TestCertificates certs;
    private static SSLContext serverContext;

    private final ExecutorService pool = Executors.newCachedThreadPool(r -> {
        Thread t = new Thread(r, "renegotiating-nbd");
        t.setDaemon(true);
        return t;
    });
    private ServerSocket listener;
    private final AtomicInteger connections = new AtomicInteger();

    @BeforeAll
    static void prerequisites() throws Exception {
        assumeTrue(TestCertificates.available(), "openssl is not installed (scripts/install-test-deps installs it)");
        certs = TestCertificates.create(shared.resolve("pki"));
        Path server = certs.serverDir("server");
        Path p12 = shared.resolve("server.p12");
        Process p = new ProcessBuilder("openssl", "pkcs12", "-export", "-in", server.resolve("server-cert.pem").toString(),
                "-inkey", server.resolve("server-key.pem").toString(), "-out", p12.toString(), "-passout", "pass:test")
                .redirectErrorStream(true).start();
        p.getInputStream().readAllBytes();
        assertTrue(p.waitFor(60, TimeUnit.SECONDS) && p.exitValue() == 0, "openssl pkcs12");
        KeyStore ks = KeyStore.getInstance("PKCS12");
        try (InputStream in = Files.newInputStream(p12)) {
            ks.load(in, "test".toCharArray());
        }
        KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
        kmf.init(ks, "test".toCharArray());
        serverContext = SSLContext.getInstance("TLSv1.2");
        serverContext.init(kmf.getKeyManagers(), null, null);
    }

    @AfterEach
    void stop() throws IOException {
        if (listener != null) {
            listener.close();
        }
        pool.shutdownNow();
    }

    private static void reply(DataOutputStream out, int option, int type, int length) throws IOException {
        out.writeLong(OPTION_REPLY_MAGIC);
        out.writeInt(option);
        out.writeInt(type);
        out.writeInt(length);
    }

    private static int option(DataInputStream in) throws IOException {
        in.readLong();
        int code = in.readInt();
        in.skipNBytes(in.readInt());
        return code;
    }

    /** One connection: plain greeting, STARTTLS, TLS 1.2, options, then requests (renegotiating after the first). */
    private void serveOne(Socket plain, boolean renegotiate) throws IOException {
        DataInputStream pin = new DataInputStream(plain.getInputStream());
        DataOutputStream pout = new DataOutputStream(plain.getOutputStream());
        pout.writeLong(NBDMAGIC);
        pout.writeLong(IHAVEOPT);
        pout.writeShort(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
        pout.flush();
        pin.readInt();
        int code = option(pin);
        reply(pout, code, REP_ACK, 0);
        pout.flush();
        SSLSocket tls = (SSLSocket) serverContext.getSocketFactory().createSocket(plain, "localhost", plain.getPort(), true);
        tls.setUseClientMode(false);
        tls.setEnabledProtocols(new String[] {"TLSv1.2"});
        tls.startHandshake();
        DataInputStream in = new DataInputStream(tls.getInputStream());
        DataOutputStream out = new DataOutputStream(new java.io.BufferedOutputStream(tls.getOutputStream()));
        code = option(in);
        reply(out, code, REP_ERR_UNSUP, 0); // simple replies only
        out.flush();
        code = option(in);
        reply(out, code, REP_INFO, 12);
        out.writeShort(INFO_EXPORT);
        out.writeLong(1 << 20);
        out.writeShort(FLAG_HAS_FLAGS | FLAG_SEND_FLUSH);
        reply(out, code, REP_ACK, 0);
        out.flush();
        byte[] disk = new byte[1 << 20];
        boolean renegotiated = false;
        while (true) {
            in.readInt();
            in.readShort();
            int type = in.readShort();
            long cookie = in.readLong();
            long offset = in.readLong();
            int length = in.readInt();
            if (type == CMD_WRITE) {
                in.readFully(disk, (int) offset, length);
            }
            out.writeInt(SIMPLE_REPLY_MAGIC);
            out.writeInt(0);
            out.writeLong(cookie);
            if (type == CMD_READ) {
                out.write(disk, (int) offset, length);
            }
            out.flush();
            if (type == CMD_DISC) {
                return;
            }
            if (renegotiate && !renegotiated) {
                renegotiated = true;
                tls.startHandshake(); // a HelloRequest; the server then goes on reading requests
            }
        }
    }

    @Test
    void aServerThatRenegotiatesMidSessionNeverHangsTheIoThread() throws Exception {
        listener = new ServerSocket(0, 4, InetAddress.getLoopbackAddress());
        pool.submit(() -> {
            while (true) {
                Socket s = listener.accept();
                boolean first = connections.incrementAndGet() == 1;
                pool.submit(() -> {
                    try (s) {
                        serveOne(s, first);
                    } catch (IOException e) {
                        // the client went away
                    }
                    return null;
                });
            }
        });
        NbdOptions options = NbdOptions.defaults().withTls(NbdTls.certificates(certs.clientDir("ca", false)))
                .withConnectTimeoutMs(10_000).withRequestTimeoutMs(3000).withRetryTimeoutMs(20_000);
        try (NbdBackend disk = NbdBackend.open("nbds://127.0.0.1:" + listener.getLocalPort() + "/x", options)) {
            Future<Map<Long, Long>> work = pool.submit(() -> {
                Map<Long, Long> results = new HashMap<>();
                NativeBuffer b = Io.buffer(65536);
                Io.fill(b, 5);
                for (int i = 0; i < 8; i++) {
                    Io.check(disk.prepareWrite((long) i * 65536, Io.vector(b), i));
                    disk.submit();
                    long deadline = System.nanoTime() + 60_000_000_000L;
                    while (!results.containsKey((long) i) && System.nanoTime() < deadline) {
                        if (disk.poll(results::put, 4) == 0) {
                            disk.awaitCompletions(20);
                            disk.acknowledgeCompletions();
                        }
                    }
                }
                return results;
            });
            Map<Long, Long> results;
            try {
                results = work.get(120, TimeUnit.SECONDS);
            } catch (TimeoutException e) {
                throw new AssertionError("the I/O thread's submit or poll did not return for 120 s after the server"
                        + " renegotiated TLS");
            }
            assertEquals(8, results.size(), "every request completed: " + results);
            for (long r : results.values()) {
                assertTrue(r == 65536 || r == -io.vblk.sys.Errno.EIO, "result " + r);
            }
        }
    }
}
