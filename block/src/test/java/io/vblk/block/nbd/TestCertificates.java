package io.vblk.block.nbd;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * x509 credentials for TLS tests, made by the test with the {@code openssl} command line: a CA,
 * server certificates (good, for another name, expired, from another CA) and a client
 * certificate, laid out as QEMU's and nbdkit's credential directories
 * ({@code ca-cert.pem, server-cert.pem, server-key.pem}; {@code client-cert.pem, client-key.pem}).
 */
final class TestCertificates {
    final Path root;

    private TestCertificates(Path root) {
        this.root = root;
    }

    static boolean available() {
        return ServerProcess.available("openssl");
    }

    /** Makes everything under {@code root}. */
    static TestCertificates create(Path root) throws IOException {
        Files.createDirectories(root);
        TestCertificates c = new TestCertificates(root);
        c.ca("ca");
        c.ca("other-ca");
        c.issue("ca", "server", "localhost", "DNS:localhost,IP:127.0.0.1", "serverAuth", 30, false);
        c.issue("ca", "wrong-name", "wrong.example", "DNS:wrong.example", "serverAuth", 30, false);
        c.issue("ca", "expired", "localhost", "DNS:localhost,IP:127.0.0.1", "serverAuth", -1, false);
        c.issue("other-ca", "foreign", "localhost", "DNS:localhost,IP:127.0.0.1", "serverAuth", 30, false);
        // A PKCS#1 ("RSA PRIVATE KEY") client key: the older format certtool and openssl -traditional write.
        c.issue("ca", "client", "vblk client", null, "clientAuth", 30, true);
        return c;
    }

    /** A server credentials directory for qemu-nbd / nbdkit with the certificate {@code name}. */
    Path serverDir(String name) throws IOException {
        Path dir = root.resolve("server-" + name);
        if (!Files.isDirectory(dir)) {
            Files.createDirectories(dir);
            String ca = name.equals("foreign") ? "other-ca" : "ca";
            copy(root.resolve(ca + "-cert.pem"), dir.resolve("ca-cert.pem"));
            copy(root.resolve(name + "-cert.pem"), dir.resolve("server-cert.pem"));
            copy(root.resolve(name + "-key.pem"), dir.resolve("server-key.pem"));
        }
        return dir;
    }

    /** A client directory: the CA {@code ca}, and the client certificate when {@code withClientCert}. */
    Path clientDir(String ca, boolean withClientCert) throws IOException {
        Path dir = root.resolve("client-" + ca + (withClientCert ? "-cert" : ""));
        if (!Files.isDirectory(dir)) {
            Files.createDirectories(dir);
            copy(root.resolve(ca + "-cert.pem"), dir.resolve(NbdTls.CA_CERT));
            if (withClientCert) {
                copy(root.resolve("client-cert.pem"), dir.resolve(NbdTls.CLIENT_CERT));
                copy(root.resolve("client-key.pem"), dir.resolve(NbdTls.CLIENT_KEY));
            }
        }
        return dir;
    }

    private static void copy(Path from, Path to) throws IOException {
        Files.copy(from, to, StandardCopyOption.REPLACE_EXISTING);
    }

    private void ca(String name) throws IOException {
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", name + "-key.pem", "-out", name + "-cert.pem", "-days", "30", "-subj", "/CN=vblk test " + name,
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign");
    }

    private void issue(String ca, String name, String cn, String san, String purpose, int days, boolean rsaPkcs1)
            throws IOException {
        if (rsaPkcs1) {
            openssl("genrsa", "-traditional", "-out", name + "-key.pem", "2048");
            openssl("req", "-new", "-key", name + "-key.pem", "-out", name + ".csr", "-subj", "/CN=" + cn);
        } else {
            openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", name + "-key.pem", "-out", name + ".csr", "-subj", "/CN=" + cn);
        }
        StringBuilder ext = new StringBuilder("basicConstraints=CA:FALSE\n")
                .append("keyUsage=critical,digitalSignature,keyEncipherment\n")
                .append("extendedKeyUsage=").append(purpose).append('\n');
        if (san != null) {
            ext.append("subjectAltName=").append(san).append('\n');
        }
        Files.writeString(root.resolve(name + ".ext"), ext);
        openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + "-cert.pem", "-CAkey", ca + "-key.pem",
                "-CAcreateserial", "-out", name + "-cert.pem", "-days", Integer.toString(days), "-extfile", name + ".ext");
    }

    private void openssl(String... args) throws IOException {
        List<String> cmd = new ArrayList<>();
        cmd.add("openssl");
        cmd.addAll(List.of(args));
        Path log = root.resolve("openssl.log");
        Process p = new ProcessBuilder(cmd).directory(root.toFile()).redirectErrorStream(true)
                .redirectOutput(ProcessBuilder.Redirect.appendTo(log.toFile())).start();
        try {
            if (!p.waitFor(60, TimeUnit.SECONDS) || p.exitValue() != 0) {
                p.destroyForcibly();
                throw new IOException("failed: " + cmd + "\n" + Files.readString(log));
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException(e);
        }
    }
}
