package io.vblk.block.nbd;

import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.RandomAccessFile;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.IoVector;
import io.vblk.sys.Errno;
import io.vblk.sys.NativeBuffer;

/**
 * NBD over TLS (NBD_OPT_STARTTLS, x509) against real servers: qemu-nbd with
 * {@code tls-creds-x509} and nbdkit with {@code --tls=require}, on TCP and Unix sockets, with
 * certificates the test makes with openssl. Verified I/O (many requests in flight, payloads of
 * many TLS records, several connections), and each refusal a clear error at open, never a hang:
 * a plain client meeting a TLS-only server, a TLS client meeting a plain server, an untrusted CA,
 * an expired certificate, a certificate for another name, a missing client certificate. A server
 * restarted mid-I/O is reconnected to with a new TLS session; one that comes back with a
 * certificate the client refuses fails the requests with EIO after the retry time.
 */
@SuppressWarnings("try") // the servers are resources the try blocks only keep alive
class NbdTlsTest {
    private static final long MiB = 1 << 20;

    @TempDir
    static Path shared;
    private static TestCertificates certs;

    @TempDir
    Path dir;

    @BeforeAll
    static void prerequisites() throws Exception {
        assumeTrue(ServerProcess.available("qemu-nbd") && ServerProcess.available("nbdkit"),
                "qemu-nbd and nbdkit are not installed (.ci/run installs them)");
        assumeTrue(TestCertificates.available(), "openssl is not installed (scripts/install-test-deps installs it)");
        certs = TestCertificates.create(shared.resolve("pki"));
    }

    private Path image(long size) throws Exception {
        Path file = dir.resolve("disk.img");
        try (RandomAccessFile f = new RandomAccessFile(file.toFile(), "rw")) {
            f.setLength(size);
        }
        return file;
    }

    /** qemu-nbd with x509 credentials; {@code verifyPeer}: the server demands a client certificate. */
    static ServerProcess qemuNbdTls(Path image, Path socket, int port, Path creds, boolean verifyPeer) throws Exception {
        List<String> cmd = new ArrayList<>(List.of("qemu-nbd", "-f", "raw", "--object",
                "tls-creds-x509,id=tls0,dir=" + creds + ",endpoint=server,verify-peer=" + (verifyPeer ? "on" : "off"),
                "--tls-creds", "tls0", "-x", "d", "-t", "-e", "8"));
        if (socket != null) {
            cmd.addAll(List.of("-k", socket.toString()));
        } else {
            cmd.addAll(List.of("-b", "127.0.0.1", "-p", Integer.toString(port)));
        }
        cmd.add(image.toString());
        return ServerProcess.start(cmd, socket, port, image.getParent());
    }

    /** nbdkit's memory plugin with {@code --tls=require}. */
    static ServerProcess nbdkitTls(Path socket, int port, Path creds, Path logDir) throws Exception {
        List<String> cmd = new ArrayList<>(List.of("nbdkit", "-f", "--tls=require", "--tls-certificates", creds.toString()));
        if (socket != null) {
            cmd.addAll(List.of("-U", socket.toString()));
        } else {
            cmd.addAll(List.of("-i", "127.0.0.1", "-p", Integer.toString(port)));
        }
        cmd.addAll(List.of("memory", "64M"));
        return ServerProcess.start(cmd, socket, port, logDir);
    }

    private static NbdOptions options(Path clientDir) {
        return NbdOptions.defaults().withTls(NbdTls.certificates(clientDir)).withConnectTimeoutMs(10_000);
    }

    /** Writes {@code count} requests of {@code size} bytes at once, then reads each back and compares. */
    private static void verifiedIo(NbdBackend disk, int count, int size, int seed) {
        Io io = new Io(disk);
        NativeBuffer[] bufs = new NativeBuffer[count];
        for (int i = 0; i < count; i++) {
            bufs[i] = Io.buffer(size);
            Io.fill(bufs[i], seed + i);
            Io.check(disk.prepareWrite((long) i * size, Io.vector(bufs[i]), i));
        }
        Map<Long, Long> done = io.await(count, 60_000);
        assertEquals(count, done.size(), "every write completed");
        done.values().forEach(r -> assertEquals(size, r));
        assertEquals(0, io.flush());
        io.results.clear();
        for (int i = 0; i < count; i++) {
            Io.poison(bufs[i]);
            Io.check(disk.prepareRead((long) i * size, Io.vector(bufs[i]), i));
        }
        done = io.await(count, 60_000);
        assertEquals(count, done.size(), "every read completed");
        for (int i = 0; i < count; i++) {
            assertEquals(size, done.get((long) i));
            assertTrue(Io.matches(bufs[i], seed + i), "data of request " + i + " read back over TLS");
        }
    }

    @Test
    void qemuNbdOverTcpWithAClientCertificateServesVerifiedIo() throws Exception {
        Path img = image(64 * MiB);
        int port = ServerProcess.freePort();
        try (ServerProcess server = qemuNbdTls(img, null, port, certs.serverDir("server"), true);
             NbdBackend disk = NbdBackend.open("nbds://127.0.0.1:" + port + "/d", options(certs.clientDir("ca", true)))) {
            assertTrue(disk.tls());
            assertEquals(64 * MiB, disk.sizeBytes());
            verifiedIo(disk, 64, 4096, 10);        // a batch of small requests: records shared by requests
            verifiedIo(disk, 24, 1 << 20, 100);    // payloads of many records, batches beyond one staging buffer
            assertEquals(101 * 1_000_003, NbdBackendTest.fileInt(img, MiB), "the write reached the image file");
        }
    }

    /**
     * A TLS stream damaged in transit (a relay flips a byte of the next records the server sends:
     * first a record header, then ciphertext under the record's authentication tag): the session
     * fails, the request is failed with EIO or resent on a new connection, never completed with
     * damaged data, and the disk is served again after one reconnect.
     */
    @Test
    void aDamagedTlsRecordCostsAReconnectNeverDamagedData() throws Exception {
        Path img = image(16 * MiB);
        int port = ServerProcess.freePort();
        try (ServerProcess server = qemuNbdTls(img, null, port, certs.serverDir("server"), true);
             CorruptingProxy proxy = new CorruptingProxy(port);
             NbdBackend disk = NbdBackend.open("nbds://127.0.0.1:" + proxy.port() + "/d",
                     options(certs.clientDir("ca", true)).withConnections(1))) {
            Io io = new Io(disk);
            NativeBuffer b = Io.buffer(4096);
            Io.fill(b, 7);
            assertEquals(4096, io.write(0, b));
            for (int mode : new int[] {CorruptingProxy.BAD_MAGIC, CorruptingProxy.UNKNOWN_COOKIE}) {
                int before = proxy.connections.get();
                proxy.arm(mode);
                Io.poison(b);
                long r = io.read(0, b);
                assertTrue(r == -Errno.EIO || (r == 4096 && Io.matches(b, 7)), "mode " + mode + ": " + r);
                Io.poison(b);
                assertEquals(4096, io.read(0, b), "served again after a reconnect (mode " + mode + ")");
                assertTrue(Io.matches(b, 7));
                assertEquals(before + 1, proxy.connections.get(), "one reconnect (mode " + mode + ")");
            }
        }
    }

    @Test
    void qemuNbdOverUnixChecksTheGivenHostName() throws Exception {
        Path img = image(16 * MiB);
        Path sock = dir.resolve("tls.sock");
        try (ServerProcess server = qemuNbdTls(img, sock, 0, certs.serverDir("server"), false)) {
            String base = "nbds+unix:///d?socket=" + sock + "&tls-certificates=" + certs.clientDir("ca", false);
            try (NbdBackend disk = NbdBackend.open(base + "&tls-hostname=localhost", NbdOptions.defaults())) {
                verifiedIo(disk, 16, 65536, 7);
            }
            UncheckedIOException e = assertThrows(UncheckedIOException.class,
                    () -> NbdBackend.open(base + "&tls-hostname=elsewhere.example", NbdOptions.defaults()).close());
            assertTrue(e.getMessage().contains("does not name"), e.getMessage());
        }
    }

    @Test
    void nbdkitRequiringTlsServesVerifiedIoOnTcpAndUnixWithSeveralConnections() throws Exception {
        int port = ServerProcess.freePort();
        Path sock = dir.resolve("kit.sock");
        Path creds = certs.serverDir("server");
        try (ServerProcess tcp = nbdkitTls(null, port, creds, dir);
             ServerProcess unix = nbdkitTls(sock, 0, creds, dir);
             NbdBackend a = NbdBackend.open("nbds://localhost:" + port + "/", options(certs.clientDir("ca", false))
                     .withConnections(4));
             NbdBackend b = NbdBackend.open("nbds+unix:///?socket=" + sock, options(certs.clientDir("ca", false)))) {
            assertTrue(a.connectionCount() > 1, "nbdkit's memory plugin allows multi-conn");
            verifiedIo(a, 64, 8192, 3);
            verifiedIo(b, 64, 8192, 5);
        }
    }

    @Test
    void aPlainClientMeetingATlsOnlyServerIsToldToUseTls() throws Exception {
        Path sock = dir.resolve("kit.sock");
        try (ServerProcess server = nbdkitTls(sock, 0, certs.serverDir("server"), dir)) {
            UncheckedIOException e = assertThrows(UncheckedIOException.class,
                    () -> NbdBackend.open("nbd+unix:///?socket=" + sock, NbdOptions.defaults()).close());
            assertTrue(e.getMessage().contains("requires TLS"), e.getMessage());
        }
        Path img = image(MiB);
        int port = ServerProcess.freePort();
        try (ServerProcess server = qemuNbdTls(img, null, port, certs.serverDir("server"), false)) {
            UncheckedIOException e = assertThrows(UncheckedIOException.class,
                    () -> NbdBackend.open("nbd://127.0.0.1:" + port + "/d", NbdOptions.defaults()).close());
            assertTrue(e.getMessage().contains("requires TLS"), e.getMessage());
        }
    }

    @Test
    void aTlsClientMeetingAPlainServerRefusesToFallBack() throws Exception {
        Path sock = dir.resolve("plain.sock");
        try (ServerProcess server = ServerProcess.nbdkit(sock, List.of(), "8M", List.of())) {
            UncheckedIOException e = assertThrows(UncheckedIOException.class,
                    () -> NbdBackend.open("nbds+unix:///?socket=" + sock, options(certs.clientDir("ca", false))).close());
            assertTrue(e.getMessage().contains("does not offer TLS"), e.getMessage());
        }
        Path img = image(MiB);
        Path qsock = dir.resolve("qplain.sock");
        try (ServerProcess server = ServerProcess.qemuNbdUnix(img, qsock, "d", false)) {
            UncheckedIOException e = assertThrows(UncheckedIOException.class,
                    () -> NbdBackend.open("nbds+unix:///d?socket=" + qsock, options(certs.clientDir("ca", false))).close());
            assertTrue(e.getMessage().contains("does not offer TLS"), e.getMessage());
        }
    }

    @Test
    void aServerCertificateFromAnotherCaIsRefused() throws Exception {
        Path img = image(MiB);
        int port = ServerProcess.freePort();
        try (ServerProcess server = qemuNbdTls(img, null, port, certs.serverDir("foreign"), false)) {
            UncheckedIOException e = assertThrows(UncheckedIOException.class,
                    () -> NbdBackend.open("nbds://127.0.0.1:" + port + "/d", options(certs.clientDir("ca", false))).close());
            assertTrue(e.getMessage().contains("not signed by the trusted CA"), e.getMessage());
        }
    }

    @Test
    void anExpiredServerCertificateIsRefused() throws Exception {
        Path sock = dir.resolve("expired.sock");
        try (ServerProcess server = nbdkitTls(sock, 0, certs.serverDir("expired"), dir)) {
            UncheckedIOException e = assertThrows(UncheckedIOException.class, () -> NbdBackend.open(
                    "nbds+unix:///?socket=" + sock, options(certs.clientDir("ca", false))).close());
            assertTrue(e.getMessage().contains("expired"), e.getMessage());
        }
    }

    @Test
    void aServerCertificateForAnotherNameIsRefusedUnlessThatNameIsGiven() throws Exception {
        Path img = image(MiB);
        int port = ServerProcess.freePort();
        try (ServerProcess server = qemuNbdTls(img, null, port, certs.serverDir("wrong-name"), false)) {
            UncheckedIOException e = assertThrows(UncheckedIOException.class,
                    () -> NbdBackend.open("nbds://127.0.0.1:" + port + "/d", options(certs.clientDir("ca", false))).close());
            assertTrue(e.getMessage().contains("does not name"), e.getMessage());
            try (NbdBackend disk = NbdBackend.open("nbds://127.0.0.1:" + port + "/d?tls-hostname=wrong.example",
                    options(certs.clientDir("ca", false)))) {
                assertEquals(MiB, disk.sizeBytes());
            }
        }
    }

    @Test
    void aServerDemandingAClientCertificateRefusesAClientWithout() throws Exception {
        Path img = image(MiB);
        int port = ServerProcess.freePort();
        try (ServerProcess server = qemuNbdTls(img, null, port, certs.serverDir("server"), true)) {
            UncheckedIOException e = assertThrows(UncheckedIOException.class,
                    () -> NbdBackend.open("nbds://127.0.0.1:" + port + "/d", options(certs.clientDir("ca", false))).close());
            assertTrue(e.getMessage().contains("client certificate"), e.getMessage());
        }
    }

    @Test
    void writesInFlightSurviveATlsServerKilledAndRestarted() throws Exception {
        Path img = image(64 * MiB);
        Path sock = dir.resolve("tls.sock");
        Path creds = certs.serverDir("server");
        ServerProcess[] server = {qemuNbdTls(img, sock, 0, creds, true)};
        try (NbdBackend disk = NbdBackend.open("nbds+unix:///d?socket=" + sock,
                options(certs.clientDir("ca", true)).withRetryTimeoutMs(20_000))) {
            Io.writesInFlightSurviveARestart(disk, () -> {
                server[0].kill(); // mid-I/O: some writes done, some not
                Files.deleteIfExists(sock);
                ServerProcess.sleep(300);
                server[0] = qemuNbdTls(img, sock, 0, creds, true);
            });
        } finally {
            server[0].close();
        }
    }

    @Test
    void aServerThatComesBackWithAnUntrustedCertificateFailsRequestsWithEio() throws Exception {
        Path img = image(16 * MiB);
        Path sock = dir.resolve("tls.sock");
        ServerProcess server = qemuNbdTls(img, sock, 0, certs.serverDir("server"), false);
        try (NbdBackend disk = NbdBackend.open("nbds+unix:///d?socket=" + sock,
                options(certs.clientDir("ca", false)).withRetryTimeoutMs(1500))) {
            Io io = new Io(disk);
            NativeBuffer b = Io.buffer(4096);
            Io.fill(b, 9);
            assertEquals(4096, io.write(0, b));
            server.kill();
            Files.deleteIfExists(sock);
            server = qemuNbdTls(img, sock, 0, certs.serverDir("foreign"), false);
            IoVector v = Io.vector(b);
            Io.check(disk.prepareWrite(4096, v, 1));
            assertEquals(-Errno.EIO, io.one(30_000), "the impostor is never trusted; the request fails after the retry time");
        } finally {
            server.close();
        }
    }
}
