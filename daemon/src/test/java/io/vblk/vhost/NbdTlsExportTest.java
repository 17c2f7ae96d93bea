package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code export.add} of an {@code nbds+unix://} image served by qemu-nbd with x509 credentials
 * (made here with openssl): the {@code tls_certificates} and {@code tls_hostname} parameters,
 * verified I/O from a vhost-user frontend over the TLS connection, and the refusals: the
 * parameters on a plain image, and a server the JVM's trust store does not know.
 */
class NbdTlsExportTest {
    @TempDir
    Path dir;

    private void run(String... cmd) throws Exception {
        Process p = new ProcessBuilder(cmd).directory(dir.toFile()).redirectErrorStream(true)
                .redirectOutput(ProcessBuilder.Redirect.appendTo(dir.resolve("openssl.log").toFile())).start();
        assertTrue(p.waitFor(60, TimeUnit.SECONDS) && p.exitValue() == 0, String.join(" ", cmd) + ": "
                + Files.readString(dir.resolve("openssl.log")));
    }

    private static boolean available(String command) {
        for (String d : System.getenv().getOrDefault("PATH", "/usr/bin:/bin").split(":")) {
            if (Files.isExecutable(Path.of(d, command))) {
                return true;
            }
        }
        return false;
    }

    /** A CA, a server certificate for localhost, the server's and the client's credential directories. */
    private void certificates(Path server, Path client) throws Exception {
        run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", "ca-key.pem", "-out", "ca-cert.pem", "-days", "30", "-subj", "/CN=vblk test ca",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign");
        run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", "server-key.pem", "-out", "server.csr", "-subj", "/CN=localhost");
        Files.writeString(dir.resolve("server.ext"), "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                + "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost\n");
        run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca-cert.pem", "-CAkey", "ca-key.pem",
                "-CAcreateserial", "-out", "server-cert.pem", "-days", "30", "-extfile", "server.ext");
        Files.createDirectories(server);
        Files.createDirectories(client);
        for (String f : List.of("ca-cert.pem", "server-cert.pem", "server-key.pem")) {
            Files.copy(dir.resolve(f), server.resolve(f));
        }
        Files.copy(dir.resolve("ca-cert.pem"), client.resolve("ca-cert.pem"));
    }

    @Test
    void anExportOnATlsNbdServerServesVerifiedIoAndRefusesWhatItCannotTrust() throws Exception {
        assumeTrue(available("qemu-nbd") && available("openssl"), "qemu-nbd and openssl are needed (.ci/run installs them)");
        Path server = dir.resolve("server-pki");
        Path client = dir.resolve("client-pki");
        certificates(server, client);
        Path img = dir.resolve("disk.img");
        run("truncate", "-s", "16M", img.toString());
        Path nbdSock = dir.resolve("tls.nbd");
        Process nbd = new ProcessBuilder(List.of("qemu-nbd", "-f", "raw", "--object",
                "tls-creds-x509,id=tls0,dir=" + server + ",endpoint=server,verify-peer=off", "--tls-creds", "tls0",
                "-k", nbdSock.toString(), "-x", "d", "-t", "-e", "4", img.toString()))
                .redirectErrorStream(true).redirectOutput(dir.resolve("qemu-nbd.log").toFile()).start();
        Path control = dir.resolve("control.sock");
        Path vq = dir.resolve("d.sock");
        try (DaemonRig d = new DaemonRig(control)) {
            DaemonRig.awaitListening(nbdSock, "qemu-nbd");
            String address = "nbds+unix:///d?socket=" + nbdSock;
            d.result("export.add", DaemonRig.json(Map.of("id", "d", "image", address, "socket", vq.toString(),
                    "tls_certificates", client.toString(), "tls_hostname", "localhost")));
            DaemonTest.verifiedIo(vq, 10, 3);
            Map<String, Object> untrusted = DaemonRig.error(d.call("export.add", DaemonRig.json(Map.of("id", "e",
                    "image", address, "socket", dir.resolve("e.sock").toString()))));
            assertTrue(untrusted.get("message").toString().contains("not signed by the trusted CA"), untrusted.toString());
            Map<String, Object> plain = DaemonRig.error(d.call("export.add", DaemonRig.json(Map.of("id", "f",
                    "image", "nbd+unix:///d?socket=" + nbdSock, "socket", dir.resolve("f.sock").toString(),
                    "tls_certificates", client.toString()))));
            assertEquals(-32602, ((Number) plain.get("code")).longValue(), plain.toString());
            assertTrue(plain.get("message").toString().contains("applies to nbds://"), plain.toString());
            d.result("export.remove", "{\"id\":\"d\"}");
        } finally {
            io.vblk.testkit.QemuTools.stop(nbd);
        }
    }
}
