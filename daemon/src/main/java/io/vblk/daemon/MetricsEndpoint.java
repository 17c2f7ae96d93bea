package io.vblk.daemon;

import java.io.IOException;
import java.net.InetAddress;
import java.net.UnknownHostException;

import io.prometheus.metrics.exporter.httpserver.HTTPServer;
import io.prometheus.metrics.model.registry.PrometheusRegistry;

/**
 * {@code --metrics ADDR:PORT}: Prometheus text exposition at {@code /metrics}, served by the
 * Prometheus Java client's HTTP server from a registry of its own (no JVM-wide default state).
 * A scrape reads the counters as {@code export.stats} does; the data plane never waits for it.
 */
final class MetricsEndpoint implements AutoCloseable {
    private final HTTPServer server;
    private final String url;

    private MetricsEndpoint(HTTPServer server, String url) {
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
        try {
            InetAddress.getByName(address.host());
        } catch (UnknownHostException e) {
            throw new InvalidParams("--metrics: unknown host '" + address.host() + "'");
        }
        try {
            HTTPServer server = HTTPServer.builder().hostname(address.host()).port(address.port()).registry(registry)
                    .buildAndStart();
            String host = address.host().contains(":") ? "[" + address.host() + "]" : address.host();
            return new MetricsEndpoint(server, "http://" + host + ":" + server.getPort() + "/metrics");
        } catch (IOException e) {
            throw new InvalidParams("--metrics: cannot listen on " + address.host() + ":" + address.port() + ": " + e.getMessage());
        }
    }

    /** Where the metrics are, e.g. {@code http://127.0.0.1:9100/metrics}. */
    String url() {
        return url;
    }

    int port() {
        return server.getPort();
    }

    @Override
    public void close() {
        server.close();
    }
}
