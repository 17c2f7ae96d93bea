package io.vblk.daemon;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.UnknownHostException;

import io.prometheus.metrics.expositionformats.PrometheusTextFormatWriter;
import io.prometheus.metrics.instrumentation.jvm.JvmMetrics;
import io.prometheus.metrics.model.registry.PrometheusRegistry;

/**
 * {@code --metrics ADDR:PORT}: Prometheus text exposition at {@code /metrics}, written by the
 * Prometheus Java client's text format writer from a registry of its own (no JVM-wide default
 * state) and served by {@link MetricsHttp}, a one-thread server whose limits a hostile client
 * cannot pass (the client's own HTTPServer, the JDK's, can be stopped by ten stalled clients).
 * A scrape reads the counters as {@code export.stats} does; the data plane never waits for it.
 */
final class MetricsEndpoint implements AutoCloseable {
    private final MetricsHttp server;
    private final String url;

    private MetricsEndpoint(MetricsHttp server, String url) {
        this.server = server;
        this.url = url;
    }

    /** A listening address, {@code HOST:PORT} ({@code [::1]:9100} for IPv6); port 0 picks a free one. */
    record Address(String host, int port) {
        static Address parse(String text) {
            int colon = text.lastIndexOf(':');
            if (colon <= 0 || colon == text.length() - 1) {
                throw new InvalidParams("--metrics expects ADDR:PORT such as 127.0.0.1:9100, got '" + text + "'");
            }
            String host = text.substring(0, colon);
            if (host.startsWith("[") && host.endsWith("]")) {
                host = host.substring(1, host.length() - 1);
            }
            int port;
            try {
                port = Integer.parseInt(text.substring(colon + 1));
            } catch (NumberFormatException e) {
                throw new InvalidParams("--metrics: the port must be a number, got '" + text.substring(colon + 1) + "'");
            }
            if (port < 0 || port > 65535) {
                throw new InvalidParams("--metrics: the port must be 0 to 65535, got " + port);
            }
            return new Address(host, port);
        }
    }

    /** Starts serving the metrics of {@code daemon}'s exports at {@code address}. */
    static MetricsEndpoint start(Address address, Daemon daemon) {
        PrometheusRegistry registry = new PrometheusRegistry();
        registry.register(new ExportMetrics(daemon));
        // process_* (CPU, open fds, RSS) and jvm_* (heap, direct buffers, GC, threads): read at scrape
        JvmMetrics.builder().register(registry);
        try {
            InetAddress.getByName(address.host());
        } catch (UnknownHostException e) {
            throw new InvalidParams("--metrics: unknown host '" + address.host() + "'");
        }
        PrometheusTextFormatWriter writer = PrometheusTextFormatWriter.create();
        try {
            MetricsHttp server = new MetricsHttp(new InetSocketAddress(address.host(), address.port()), () -> {
                ByteArrayOutputStream out = new ByteArrayOutputStream(16 << 10);
                try {
                    writer.write(out, registry.scrape());
                } catch (IOException e) {
                    throw new UncheckedIOException(e); // a ByteArrayOutputStream does not throw
                }
                return out.toByteArray();
            }, daemon.log());
            String host = address.host().contains(":") ? "[" + address.host() + "]" : address.host();
            return new MetricsEndpoint(server, "http://" + host + ":" + server.port() + "/metrics");
        } catch (UncheckedIOException e) {
            String message = "--metrics: cannot listen on " + address.host() + ":" + address.port() + ": " + e.getCause().getMessage();
            String why = String.valueOf(e.getCause().getMessage());
            if (why.contains("Address already in use")) {
                throw new RpcError(RpcError.IN_USE, message, e); // another process's port: status 1, it may be free later
            }
            if (why.contains("Permission denied")) {
                throw new RpcError(RpcError.OPEN_FAILED, message, e);
            }
            throw new InvalidParams(message, e); // an address this host does not have
        }
    }

    /** The server, for tests. */
    MetricsHttp server() {
        return server;
    }

    /** Where the metrics are, e.g. {@code http://127.0.0.1:9100/metrics}. */
    String url() {
        return url;
    }

    int port() {
        return server.port();
    }

    @Override
    public void close() {
        server.close();
    }
}
