package io.vblk.block.nbd;

import java.net.URI;
import java.net.URISyntaxException;
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;

/**
 * Where an NBD export lives, in the NBD URI syntax ({@code doc/uri.md}):
 * {@code nbd://HOST[:PORT]/EXPORT} (TCP), {@code nbd+unix:///EXPORT?socket=PATH}, and their TLS
 * forms {@code nbds://} and {@code nbds+unix://}, where TLS is required (never a fallback to
 * plain NBD). TLS query parameters: {@code tls-certificates=DIR} (a credentials directory, see
 * {@link NbdTls#certificates}), {@code tls-hostname=NAME} (the name the server's certificate must
 * carry), {@code tls-verify-peer=0|1}, {@code tls-type=x509} (the only type supported). Unknown
 * parameters are refused, except experimental {@code x-} ones.
 */
public final class NbdAddress {
    /** The IANA port of NBD. */
    public static final int DEFAULT_PORT = 10809;

    private static final java.util.Set<String> PARAMETERS = java.util.Set.of("socket", "tls-type", "tls-hostname",
            "tls-verify-peer", "tls-certificates");

    private final String host;
    private final int port;
    private final Path socket;
    private final String exportName;
    private final boolean tls;
    private final Path tlsCertificates;
    private final String tlsHostname;
    private final boolean tlsVerifyPeer;

    private NbdAddress(String host, int port, Path socket, String exportName, boolean tls, Path tlsCertificates,
            String tlsHostname, boolean tlsVerifyPeer) {
        this.host = host;
        this.port = port;
        this.socket = socket;
        this.exportName = exportName;
        this.tls = tls;
        this.tlsCertificates = tlsCertificates;
        this.tlsHostname = tlsHostname;
        this.tlsVerifyPeer = tlsVerifyPeer;
    }

    /** Whether {@code address} is an NBD URI (its scheme is {@code nbd}, {@code nbd+unix}, {@code nbds}, ...). */
    public static boolean matches(String address) {
        return address.startsWith("nbd:") || address.startsWith("nbd+") || address.startsWith("nbds");
    }

    /**
     * Parses an NBD URI.
     *
     * @throws IllegalArgumentException with the offending text when it is not one we can use
     */
    public static NbdAddress parse(String address) {
        URI uri;
        try {
            uri = new URI(address);
        } catch (URISyntaxException e) {
            throw new IllegalArgumentException("not an NBD URI: " + address + " (" + e.getMessage() + ")", e);
        }
        String scheme = uri.getScheme() == null ? "" : uri.getScheme();
        String export = uri.getPath() == null || uri.getPath().isEmpty() ? "" : uri.getPath().substring(1);
        String query = uri.getRawQuery();
        checkParameters(query, address);
        boolean tls;
        boolean unix;
        switch (scheme) {
            case "nbd":
            case "nbd+tcp":
                tls = false;
                unix = false;
                break;
            case "nbds":
            case "nbds+tcp":
                tls = true;
                unix = false;
                break;
            case "nbd+unix":
                tls = false;
                unix = true;
                break;
            case "nbds+unix":
                tls = true;
                unix = true;
                break;
            default:
                throw new IllegalArgumentException("not an NBD URI (nbd://, nbds://, nbd+unix://, nbds+unix://): " + address);
        }
        String type = queryParameter(query, "tls-type");
        String certificates = queryParameter(query, "tls-certificates");
        String hostname = queryParameter(query, "tls-hostname");
        String verify = queryParameter(query, "tls-verify-peer");
        if (!tls && (type != null || certificates != null || hostname != null || verify != null)) {
            throw new IllegalArgumentException("TLS parameters on a plain NBD URI (use nbds:// or nbds+unix://): " + address);
        }
        if (type != null && !type.equals("x509")) {
            throw new IllegalArgumentException("tls-type " + type + " is not supported (x509 only): " + address);
        }
        if (verify != null && !verify.matches("0|1|true|false")) {
            throw new IllegalArgumentException("tls-verify-peer must be 0 or 1: " + address);
        }
        boolean verifyPeer = verify == null || verify.equals("1") || verify.equals("true");
        Path dir = certificates == null || certificates.isEmpty() ? null : Path.of(certificates);
        if (unix) {
            String socketPath = queryParameter(query, "socket");
            if (socketPath == null || socketPath.isEmpty()) {
                throw new IllegalArgumentException(scheme + " URI without ?socket=PATH: " + address);
            }
            return new NbdAddress(null, 0, Path.of(socketPath), export, tls, dir, hostname, verifyPeer);
        }
        if (uri.getHost() == null) {
            throw new IllegalArgumentException("NBD URI without a host: " + address);
        }
        int port = uri.getPort() < 0 ? DEFAULT_PORT : uri.getPort();
        return new NbdAddress(uri.getHost(), port, null, export, tls, dir, hostname, verifyPeer);
    }

    /** uri.md: query parameters a client does not understand should be diagnosed ({@code x-} ones are experimental). */
    private static void checkParameters(String rawQuery, String address) {
        if (rawQuery == null || rawQuery.isEmpty()) {
            return;
        }
        for (String pair : rawQuery.split("&")) {
            int eq = pair.indexOf('=');
            String key = eq < 0 ? pair : pair.substring(0, eq);
            if (!PARAMETERS.contains(key) && !key.startsWith("x-")) {
                throw new IllegalArgumentException("unknown NBD URI parameter " + key + " (known: " + PARAMETERS + "): " + address);
            }
        }
    }

    private static String queryParameter(String rawQuery, String name) {
        if (rawQuery == null) {
            return null;
        }
        for (String pair : rawQuery.split("&")) {
            int eq = pair.indexOf('=');
            String key = eq < 0 ? pair : pair.substring(0, eq);
            if (key.equals(name)) {
                return eq < 0 ? "" : URLDecoder.decode(pair.substring(eq + 1), StandardCharsets.UTF_8);
            }
        }
        return null;
    }

    /** The Unix socket path, or null for TCP. */
    public Path socket() {
        return socket;
    }

    /** The TCP host, or null for a Unix socket. */
    public String host() {
        return host;
    }

    /** The TCP port. */
    public int port() {
        return port;
    }

    /** The export name ("" is the default export). */
    public String exportName() {
        return exportName;
    }

    /** Whether the URI asks for TLS ({@code nbds://}, {@code nbds+unix://}): then it is required. */
    public boolean tls() {
        return tls;
    }

    /**
     * The TLS credentials and policy of a connection to this address: null for a plain one;
     * otherwise {@code given} (or, when null, the URI's {@code tls-certificates} directory, or the
     * JVM's trust store), with the URI's {@code tls-hostname} and {@code tls-verify-peer} applied
     * where {@code given} does not set them.
     *
     * @throws IllegalArgumentException when the URI's certificates directory is unusable
     */
    public NbdTls tlsCredentials(NbdTls given) {
        if (!tls) {
            return null;
        }
        NbdTls t = given != null ? given : tlsCertificates != null ? NbdTls.certificates(tlsCertificates) : NbdTls.defaults();
        if (t.hostname() == null && tlsHostname != null) {
            t = t.withHostname(tlsHostname);
        }
        return tlsVerifyPeer ? t : t.withVerifyPeer(false);
    }

    @Override
    public String toString() {
        String s = tls ? "nbds" : "nbd";
        return socket != null ? s + "+unix:///" + exportName + "?socket=" + socket
                : s + "://" + (host.indexOf(':') >= 0 && !host.startsWith("[") ? "[" + host + "]" : host) + ":" + port + "/" + exportName;
    }
}
