package io.vblk.block.nbd;

import java.io.IOException;
import java.io.InputStream;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.KeyFactory;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import java.security.spec.PKCS8EncodedKeySpec;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Collection;
import java.util.List;

import javax.net.ssl.KeyManager;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SNIHostName;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLEngine;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.TrustManager;
import javax.net.ssl.TrustManagerFactory;
import javax.net.ssl.X509ExtendedTrustManager;

/**
 * TLS credentials and policy for an NBD connection (proto.md "TLS support", x509): the CA that
 * must have signed the server's certificate, an optional client certificate and key (for a server
 * that verifies its clients, as qemu-nbd's {@code tls-creds-x509} does by default), the name the
 * server's certificate must carry, and whether the server is verified at all.
 *
 * <p>Files are PEM, the layout of QEMU's and nbdkit's credential directories: {@code ca-cert.pem},
 * {@code client-cert.pem}, {@code client-key.pem} (an unencrypted PKCS#8 or PKCS#1 RSA key). The
 * server's certificate is checked against the CA (or the JVM's default trust store when no CA is
 * named) and, when a host name is known (the TCP host, or the one given with
 * {@link #withHostname}), against that name (its subject alternative names, as HTTPS does). Over a
 * Unix socket without a given name only the chain is checked, as QEMU and libnbd do. TLS 1.3 and
 * 1.2 only (proto.md: TLS 1.2 at least, older versions not by default).
 *
 * <p>Immutable; the {@link SSLContext} is built once, on first use, and shared by every connection
 * (and reconnect) of the disks that use this object.
 */
public final class NbdTls {
    /** The CA file's name in a credentials directory. */
    public static final String CA_CERT = "ca-cert.pem";
    /** The client certificate's name in a credentials directory. */
    public static final String CLIENT_CERT = "client-cert.pem";
    /** The client key's name in a credentials directory. */
    public static final String CLIENT_KEY = "client-key.pem";

    private static final String[] PROTOCOLS = {"TLSv1.3", "TLSv1.2"};
    /** DER prefix of a PKCS#8 wrapper around a PKCS#1 RSA key: version 0, rsaEncryption, NULL. */
    private static final byte[] RSA_PKCS8_ALGORITHM = {0x02, 0x01, 0x00, 0x30, 0x0d, 0x06, 0x09, 0x2a, (byte) 0x86,
        0x48, (byte) 0x86, (byte) 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00};

    private final Path caFile;
    private final Path certFile;
    private final Path keyFile;
    private final String hostname;
    private final boolean verifyPeer;
    private volatile SSLContext context;

    private NbdTls(Path caFile, Path certFile, Path keyFile, String hostname, boolean verifyPeer) {
        if ((certFile == null) != (keyFile == null)) {
            throw new IllegalArgumentException("a client certificate needs its key and a key its certificate: "
                    + certFile + ", " + keyFile);
        }
        this.caFile = caFile;
        this.certFile = certFile;
        this.keyFile = keyFile;
        this.hostname = hostname;
        this.verifyPeer = verifyPeer;
    }

    /**
     * Credentials from a directory laid out as QEMU's {@code tls-creds-x509,endpoint=client}:
     * {@code ca-cert.pem} (the JVM's trust store when absent), and {@code client-cert.pem} with
     * {@code client-key.pem} when both are present.
     *
     * @throws IllegalArgumentException when {@code dir} is not a directory or holds only half a client identity
     */
    public static NbdTls certificates(Path dir) {
        if (!Files.isDirectory(dir)) {
            throw new IllegalArgumentException("TLS certificates directory not found: " + dir);
        }
        Path ca = dir.resolve(CA_CERT);
        Path cert = dir.resolve(CLIENT_CERT);
        Path key = dir.resolve(CLIENT_KEY);
        boolean hasCert = Files.exists(cert);
        boolean hasKey = Files.exists(key);
        if (hasCert != hasKey) {
            throw new IllegalArgumentException(dir + " holds " + (hasCert ? CLIENT_CERT + " but no " + CLIENT_KEY
                    : CLIENT_KEY + " but no " + CLIENT_CERT));
        }
        return new NbdTls(Files.exists(ca) ? ca : null, hasCert ? cert : null, hasKey ? key : null, null, true);
    }

    /**
     * Credentials from files: {@code caFile} (null: the JVM's default trust store), and a client
     * certificate and key (both null, or both given).
     */
    public static NbdTls of(Path caFile, Path clientCertFile, Path clientKeyFile) {
        return new NbdTls(caFile, clientCertFile, clientKeyFile, null, true);
    }

    /** The JVM's default trust store, no client certificate. */
    public static NbdTls defaults() {
        return new NbdTls(null, null, null, null, true);
    }

    /** The name the server's certificate must carry instead of the TCP host (needed to check one over a Unix socket). */
    public NbdTls withHostname(String name) {
        return new NbdTls(caFile, certFile, keyFile, name == null || name.isEmpty() ? null : name, verifyPeer);
    }

    /**
     * Whether the server's certificate is checked at all (default true). False accepts any server
     * (the URI's {@code tls-verify-peer=0}): encrypted, but open to a man in the middle.
     */
    public NbdTls withVerifyPeer(boolean value) {
        return new NbdTls(caFile, certFile, keyFile, hostname, value);
    }

    /** The name given with {@link #withHostname}, or null. */
    public String hostname() {
        return hostname;
    }

    /** Whether the server is verified. */
    public boolean verifyPeer() {
        return verifyPeer;
    }

    /** The CA file, or null for the JVM's trust store. */
    public Path caFile() {
        return caFile;
    }

    /**
     * A client engine for a connection to {@code host} (null over a Unix socket) and {@code port}:
     * the server's certificate must name {@link #hostname()} if given, else {@code host}.
     *
     * @throws IOException when the credentials cannot be read
     */
    SSLEngine engine(String host, int port) throws IOException {
        String name = hostname != null ? hostname : host;
        SSLEngine engine = name != null ? context().createSSLEngine(name, port) : context().createSSLEngine();
        engine.setUseClientMode(true);
        SSLParameters p = engine.getSSLParameters();
        p.setProtocols(PROTOCOLS);
        if (verifyPeer && name != null) {
            p.setEndpointIdentificationAlgorithm("HTTPS");
        }
        if (name != null && !isIpLiteral(name)) {
            p.setServerNames(List.of(new SNIHostName(name)));
        }
        engine.setSSLParameters(p);
        return engine;
    }

    /** What a failed handshake most likely means, for the error message. */
    String explain(Throwable failure) {
        for (Throwable t = failure; t != null; t = t.getCause()) {
            if (t instanceof java.security.cert.CertificateExpiredException) {
                return "the server's certificate has expired (" + t.getMessage() + ")";
            }
            if (t instanceof java.security.cert.CertificateNotYetValidException) {
                return "the server's certificate is not valid yet (" + t.getMessage() + ")";
            }
            String m = String.valueOf(t.getMessage());
            if (m.contains("No subject alternative") || m.contains("No name matching")) {
                return "the server's certificate does not name the host (" + m + ")";
            }
            if (m.contains("certificate_required") || m.contains("bad_certificate") || m.contains("unknown_ca")) {
                return "the server refused this client's certificate or requires one (" + m
                        + "; give " + CLIENT_CERT + " and " + CLIENT_KEY + " signed by a CA the server trusts)";
            }
            if (m.contains("PKIX path") || m.contains("unable to find valid certification path")) {
                return "the server's certificate is not signed by the trusted CA "
                        + (caFile != null ? caFile : "(the JVM's trust store)");
            }
        }
        return String.valueOf(failure.getMessage());
    }

    private static boolean isIpLiteral(String name) {
        return name.indexOf(':') >= 0 || name.chars().allMatch(c -> c == '.' || (c >= '0' && c <= '9'));
    }

    private SSLContext context() throws IOException {
        SSLContext c = context;
        if (c == null) {
            synchronized (this) {
                c = context;
                if (c == null) {
                    c = build();
                    context = c;
                }
            }
        }
        return c;
    }

    private SSLContext build() throws IOException {
        try {
            TrustManager[] trust;
            if (!verifyPeer) {
                trust = new TrustManager[] {new AcceptAny()};
            } else {
                TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
                KeyStore anchors = null;
                if (caFile != null) {
                    anchors = KeyStore.getInstance("PKCS12");
                    anchors.load(null, null);
                    int i = 0;
                    for (Certificate ca : readCertificates(caFile)) {
                        anchors.setCertificateEntry("ca" + i++, ca);
                    }
                }
                tmf.init(anchors);
                trust = tmf.getTrustManagers();
            }
            KeyManager[] keys = null;
            if (certFile != null) {
                KeyStore identity = KeyStore.getInstance("PKCS12");
                identity.load(null, null);
                char[] password = new char[0];
                identity.setKeyEntry("client", privateKey(keyFile), password,
                        readCertificates(certFile).toArray(new Certificate[0]));
                KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
                kmf.init(identity, password);
                keys = kmf.getKeyManagers();
            }
            SSLContext c = SSLContext.getInstance("TLS");
            c.init(keys, trust, null);
            return c;
        } catch (GeneralSecurityException e) {
            throw new IOException("cannot use the TLS credentials (" + caFile + ", " + certFile + "): " + e.getMessage(), e);
        }
    }

    private static Collection<? extends Certificate> readCertificates(Path file) throws IOException, GeneralSecurityException {
        try (InputStream in = Files.newInputStream(file)) {
            Collection<? extends Certificate> all = CertificateFactory.getInstance("X.509").generateCertificates(in);
            if (all.isEmpty()) {
                throw new IOException("no certificate in " + file);
            }
            return all;
        } catch (java.security.cert.CertificateException e) {
            throw new IOException("cannot read the certificates in " + file + ": " + e.getMessage(), e);
        }
    }

    /** An unencrypted PEM private key: PKCS#8 ("PRIVATE KEY": RSA, EC, Ed25519) or PKCS#1 ("RSA PRIVATE KEY"). */
    static PrivateKey privateKey(Path file) throws IOException, GeneralSecurityException {
        String pem = Files.readString(file, StandardCharsets.US_ASCII);
        byte[] pkcs8;
        if (pem.contains("-----BEGIN PRIVATE KEY-----")) {
            pkcs8 = pemBody(pem, "PRIVATE KEY", file);
        } else if (pem.contains("-----BEGIN RSA PRIVATE KEY-----")) {
            pkcs8 = rsaPkcs8(pemBody(pem, "RSA PRIVATE KEY", file));
        } else {
            throw new IOException(file + " holds no unencrypted PKCS#8 or RSA private key"
                    + " (convert it: openssl pkcs8 -topk8 -nocrypt -in KEY -out " + file + ")");
        }
        List<String> tried = new ArrayList<>();
        for (String algorithm : new String[] {"RSA", "EC", "Ed25519", "RSASSA-PSS"}) {
            try {
                return KeyFactory.getInstance(algorithm).generatePrivate(new PKCS8EncodedKeySpec(pkcs8));
            } catch (GeneralSecurityException e) {
                tried.add(algorithm);
            }
        }
        throw new IOException("cannot read the private key in " + file + " (tried " + tried + ")");
    }

    private static byte[] pemBody(String pem, String label, Path file) throws IOException {
        String begin = "-----BEGIN " + label + "-----";
        String end = "-----END " + label + "-----";
        int from = pem.indexOf(begin);
        int to = pem.indexOf(end, from);
        if (from < 0 || to < 0) {
            throw new IOException("malformed PEM in " + file);
        }
        try {
            return Base64.getMimeDecoder().decode(pem.substring(from + begin.length(), to));
        } catch (IllegalArgumentException e) {
            throw new IOException("malformed PEM in " + file + ": " + e.getMessage(), e);
        }
    }

    /** Wraps a PKCS#1 RSAPrivateKey in a PKCS#8 PrivateKeyInfo (DER). */
    static byte[] rsaPkcs8(byte[] pkcs1) {
        byte[] octets = der(0x04, pkcs1);
        byte[] body = new byte[RSA_PKCS8_ALGORITHM.length + octets.length];
        System.arraycopy(RSA_PKCS8_ALGORITHM, 0, body, 0, RSA_PKCS8_ALGORITHM.length);
        System.arraycopy(octets, 0, body, RSA_PKCS8_ALGORITHM.length, octets.length);
        return der(0x30, body);
    }

    private static byte[] der(int tag, byte[] content) {
        int n = content.length;
        int lengthBytes = n < 0x80 ? 0 : n < 0x100 ? 1 : n < 0x10000 ? 2 : 3;
        byte[] out = new byte[2 + lengthBytes + n];
        out[0] = (byte) tag;
        if (lengthBytes == 0) {
            out[1] = (byte) n;
        } else {
            out[1] = (byte) (0x80 | lengthBytes);
            for (int i = 0; i < lengthBytes; i++) {
                out[2 + i] = (byte) (n >>> (8 * (lengthBytes - 1 - i)));
            }
        }
        System.arraycopy(content, 0, out, 2 + lengthBytes, n);
        return out;
    }

    @Override
    public String toString() {
        return "NbdTls[ca=" + (caFile == null ? "default" : caFile) + (certFile != null ? ", client=" + certFile : "")
                + (hostname != null ? ", hostname=" + hostname : "") + (verifyPeer ? "" : ", verify-peer=0") + "]";
    }

    /** tls-verify-peer=0: encryption without authentication, only when asked for by name. */
    private static final class AcceptAny extends X509ExtendedTrustManager {
        @Override
        public void checkClientTrusted(X509Certificate[] chain, String authType) {
        }

        @Override
        public void checkServerTrusted(X509Certificate[] chain, String authType) {
        }

        @Override
        public void checkClientTrusted(X509Certificate[] chain, String authType, Socket socket) {
        }

        @Override
        public void checkServerTrusted(X509Certificate[] chain, String authType, Socket socket) {
        }

        @Override
        public void checkClientTrusted(X509Certificate[] chain, String authType, SSLEngine engine) {
        }

        @Override
        public void checkServerTrusted(X509Certificate[] chain, String authType, SSLEngine engine) {
        }

        @Override
        public X509Certificate[] getAcceptedIssuers() {
            return new X509Certificate[0];
        }
    }
}
