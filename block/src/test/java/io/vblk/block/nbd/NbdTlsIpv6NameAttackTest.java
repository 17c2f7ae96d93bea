package io.vblk.block.nbd;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.RandomAccessFile;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.List;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.NativeBuffer;

/**
 * The certificate name check for an IPv6 literal ({@code nbds://[::1]:PORT/...}): the URI's host
 * keeps its brackets, the certificate names the bare address (subjectAltName IP:::1). A server
 * whose certificate names ::1 must be accepted; one whose certificate names only 127.0.0.1 and
 * localhost must be refused at open. Real qemu-nbd with x509 credentials on the IPv6 loopback.
 */
@SuppressWarnings("try") // the probe socket is a resource the try block only opens
class NbdTlsIpv6NameAttackTest {
    @TempDir
    static Path shared;
    private static TestCertificates certs;
    private static Path v6Server;

    @TempDir
    Path dir;

    @BeforeAll
    static void prerequisites() throws Exception {
        assumeTrue(ServerProcess.available("qemu-nbd"), "qemu-nbd is not installed (.ci/run installs it)");
        assumeTrue(TestCertificates.available(), "openssl is not installed (scripts/install-test-deps installs it)");
        assumeTrue(java.net.NetworkInterface.networkInterfaces().flatMap(i -> i.inetAddresses())
                .anyMatch(a -> a instanceof java.net.Inet6Address && a.isLoopbackAddress()), "no IPv6 loopback address here");
        Path pki = shared.resolve("pki");
        certs = TestCertificates.create(pki);
        // A server certificate that names only the IPv6 loopback, signed by the same CA.
        Files.writeString(pki.resolve("v6.ext"), "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,"
                + "keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:::1\n");
        openssl(pki, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
                "v6-key.pem", "-out", "v6.csr", "-subj", "/CN=ipv6 loopback");
        openssl(pki, "x509", "-req", "-in", "v6.csr", "-CA", "ca-cert.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
                "-out", "v6-cert.pem", "-days", "30", "-extfile", "v6.ext");
        v6Server = shared.resolve("server-v6");
        Files.createDirectories(v6Server);
        Files.copy(pki.resolve("ca-cert.pem"), v6Server.resolve("ca-cert.pem"), StandardCopyOption.REPLACE_EXISTING);
        Files.copy(pki.resolve("v6-cert.pem"), v6Server.resolve("server-cert.pem"), StandardCopyOption.REPLACE_EXISTING);
        Files.copy(pki.resolve("v6-key.pem"), v6Server.resolve("server-key.pem"), StandardCopyOption.REPLACE_EXISTING);
    }

    private static void openssl(Path cwd, String... args) throws Exception {
        List<String> cmd = new java.util.ArrayList<>(List.of("openssl"));
        cmd.addAll(List.of(args));
        Process p = new ProcessBuilder(cmd).directory(cwd.toFile()).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        assertTrue(p.waitFor(60, TimeUnit.SECONDS) && p.exitValue() == 0, cmd + ": " + out);
    }

    /** qemu-nbd with x509 credentials {@code creds}, on [::1]:port. */
    private Process serverOnIpv6(Path creds, int port) throws Exception {
        Path img = dir.resolve("disk.img");
        try (RandomAccessFile f = new RandomAccessFile(img.toFile(), "rw")) {
            f.setLength(8 << 20);
        }
        Process p = new ProcessBuilder(List.of("qemu-nbd", "-f", "raw", "--object",
                "tls-creds-x509,id=tls0,dir=" + creds + ",endpoint=server,verify-peer=off", "--tls-creds", "tls0",
                "-b", "::1", "-p", Integer.toString(port), "-x", "d", "-t", img.toString()))
                .redirectErrorStream(true).redirectOutput(dir.resolve("qemu-nbd.log").toFile()).start();
        for (int i = 0; i < 400; i++) {
            try (java.net.Socket probe = new java.net.Socket("::1", port)) {
                break;
            } catch (java.io.IOException e) {
                Thread.sleep(25);
            }
        }
        return p;
    }

    @Test
    void aCertificateNamingTheIpv6AddressIsAcceptedAndOneNamingOthersIsRefused() throws Exception {
        NbdOptions options = NbdOptions.defaults().withTls(NbdTls.certificates(certs.clientDir("ca", false)))
                .withConnectTimeoutMs(10_000);
        int port = ServerProcess.freePort();
        Process good = serverOnIpv6(v6Server, port);
        try (NbdBackend disk = NbdBackend.open("nbds://[::1]:" + port + "/d", options)) {
            assertTrue(disk.tls());
            Io io = new Io(disk);
            NativeBuffer w = Io.buffer(65536);
            Io.fill(w, 6);
            assertEquals(65536, io.write(0, w));
            NativeBuffer r = Io.buffer(65536);
            assertEquals(65536, io.read(0, r));
            assertTrue(Io.matches(r, 6));
        } finally {
            good.destroyForcibly();
            good.waitFor();
        }
        int other = ServerProcess.freePort();
        Process wrong = serverOnIpv6(certs.serverDir("server"), other); // names localhost and 127.0.0.1 only
        try {
            UncheckedIOException e = assertThrows(UncheckedIOException.class,
                    () -> NbdBackend.open("nbds://[::1]:" + other + "/d", options).close());
            assertTrue(e.getMessage().contains("does not name"), e.getMessage());
        } finally {
            wrong.destroyForcibly();
            wrong.waitFor();
        }
    }
}
