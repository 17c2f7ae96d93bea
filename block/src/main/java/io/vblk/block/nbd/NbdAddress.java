package io.vblk.block.nbd;

import java.net.URI;
import java.net.URISyntaxException;
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;

/**
 * Where an NBD export lives, in the NBD URI syntax ({@code doc/uri.md}):
 * {@code nbd://HOST[:PORT]/EXPORT} (TCP, loopback addresses only) or
 * {@code nbd+unix:///EXPORT?socket=PATH}. TLS ({@code nbds://}) is not supported.
 */
public final class NbdAddress {
    /** The IANA port of NBD. */
    public static final int DEFAULT_PORT = 10809;

    private final String host;
    private final int port;
    private final Path socket;
    private final String exportName;

    private NbdAddress(String host, int port, Path socket, String exportName) {
        this.host = host;
        this.port = port;
        this.socket = socket;
        this.exportName = exportName;
    }

    /** Whether {@code address} is an NBD URI (its scheme is {@code nbd}, {@code nbd+unix}, ...). */
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
        switch (scheme) {
            case "nbd":
            case "nbd+tcp": {
                if (uri.getHost() == null) {
                    throw new IllegalArgumentException("NBD URI without a host: " + address);
                }
                int port = uri.getPort() < 0 ? DEFAULT_PORT : uri.getPort();
                return new NbdAddress(uri.getHost(), port, null, export);
            }
            case "nbd+unix": {
                String socketPath = queryParameter(uri.getRawQuery(), "socket");
                if (socketPath == null || socketPath.isEmpty()) {
                    throw new IllegalArgumentException("nbd+unix URI without ?socket=PATH: " + address);
                }
                return new NbdAddress(null, 0, Path.of(socketPath), export);
            }
            case "nbds":
            case "nbds+unix":
            case "nbds+tcp":
                throw new IllegalArgumentException("NBD over TLS is not supported yet: " + address);
            default:
                throw new IllegalArgumentException("not an NBD URI (nbd:// or nbd+unix://): " + address);
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

    @Override
    public String toString() {
        return socket != null ? "nbd+unix:///" + exportName + "?socket=" + socket
                : "nbd://" + host + ":" + port + "/" + exportName;
    }
}
