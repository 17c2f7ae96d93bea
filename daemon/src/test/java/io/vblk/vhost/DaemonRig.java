package io.vblk.vhost;

import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.BufferedReader;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.io.PrintStream;
import java.io.RandomAccessFile;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.Channels;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import com.fasterxml.jackson.jr.ob.JSON;

import io.vblk.daemon.Main;

/**
 * {@code vblk daemon} running in this JVM on a thread of its own, as the command line starts it,
 * and raw JSON-RPC clients of its control socket: the tests see exactly the bytes a client sees.
 */
final class DaemonRig implements AutoCloseable {
    private final ByteArrayOutputStream out = new ByteArrayOutputStream();
    private final ByteArrayOutputStream err = new ByteArrayOutputStream();
    final Path control;
    private final Thread thread;
    private volatile int status = -1;

    DaemonRig(Path control, String... extraArgs) throws InterruptedException {
        this.control = control;
        List<String> args = new ArrayList<>(List.of("daemon", "--control", control.toString()));
        args.addAll(List.of(extraArgs));
        PrintStream o = new PrintStream(out, true, StandardCharsets.UTF_8);
        PrintStream e = new PrintStream(err, true, StandardCharsets.UTF_8);
        thread = new Thread(() -> status = Main.run(args.toArray(new String[0]), o, e, false), "test-daemon");
        thread.start();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60); // a hang guard, sized for a loaded CI machine
        while (!(Files.exists(control) && stdout().contains("listening")) && thread.isAlive() && System.nanoTime() < deadline) {
            Thread.sleep(10);
        }
        if (!thread.isAlive() || !Files.exists(control)) {
            throw new AssertionError("the daemon did not start: status " + status + ", stderr " + stderr());
        }
    }

    String stdout() {
        synchronized (out) {
            return out.toString(StandardCharsets.UTF_8);
        }
    }

    String stderr() {
        synchronized (err) {
            return err.toString(StandardCharsets.UTF_8);
        }
    }

    /** Whether the daemon's command is still running. */
    boolean running() {
        return thread.isAlive();
    }

    /** Waits for the daemon's command to return; its exit status. */
    int awaitExit() throws InterruptedException {
        thread.join(TimeUnit.SECONDS.toMillis(60));
        if (thread.isAlive()) {
            throw new AssertionError("the daemon did not exit; stderr " + stderr());
        }
        return status;
    }

    Client client() throws IOException {
        return new Client(control);
    }

    /** One call on a fresh connection; the decoded response. */
    Map<String, Object> call(String method, String paramsJson) throws IOException {
        try (Client c = client()) {
            return c.call(method, paramsJson);
        }
    }

    /** The result of a call that must succeed. */
    Object result(String method, String paramsJson) throws IOException {
        Map<String, Object> r = call(method, paramsJson);
        if (r.containsKey("error")) {
            throw new AssertionError(method + " " + paramsJson + " failed: " + r);
        }
        return r.get("result");
    }

    @Override
    public void close() throws IOException {
        if (thread.isAlive()) {
            try {
                call("daemon.shutdown", null);
            } catch (IOException e) {
                // already gone
            }
            try {
                awaitExit();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
    }

    /** A raw JSON-RPC connection. */
    static final class Client implements AutoCloseable {
        private final SocketChannel ch;
        private final BufferedReader in;
        private final OutputStream os;
        private int nextId = 1;

        Client(Path path) throws IOException {
            ch = SocketChannel.open(StandardProtocolFamily.UNIX);
            ch.connect(UnixDomainSocketAddress.of(path));
            in = new BufferedReader(new InputStreamReader(Channels.newInputStream(ch), StandardCharsets.UTF_8));
            os = Channels.newOutputStream(ch);
        }

        /** Sends {@code line} as is; the response line. */
        String raw(String line) throws IOException {
            os.write((line + "\n").getBytes(StandardCharsets.UTF_8));
            os.flush();
            return in.readLine();
        }

        /** The next response line (after a {@link #raw} that sent several requests). */
        String readLine() throws IOException {
            return in.readLine();
        }

        @SuppressWarnings("unchecked")
        Map<String, Object> call(String method, String paramsJson) throws IOException {
            int id = nextId++;
            String line = "{\"jsonrpc\":\"2.0\",\"method\":\"" + method + "\"" + (paramsJson == null ? "" : ",\"params\":" + paramsJson)
                    + ",\"id\":" + id + "}";
            String response = raw(line);
            if (response == null) {
                throw new IOException("connection closed");
            }
            Map<String, Object> r = (Map<String, Object>) JSON.std.anyFrom(response);
            if (((Number) r.get("id")).intValue() != id) {
                throw new AssertionError("response id " + r.get("id") + " for request " + id);
            }
            return r;
        }

        @Override
        public void close() throws IOException {
            ch.close();
        }
    }

    /** The error object of a response that must be an error. */
    @SuppressWarnings("unchecked")
    static Map<String, Object> error(Map<String, Object> response) {
        Object e = response.get("error");
        if (!(e instanceof Map<?, ?>)) {
            throw new AssertionError("expected an error, got " + response);
        }
        return (Map<String, Object>) e;
    }

    /**
     * Starts nbdkit's 8 MiB memory plugin on unix socket {@code sock} (log in {@code dir}), or
     * skips the test where nbdkit is not installed ({@code .ci/run} installs it). The caller waits
     * with {@link #awaitListening} and destroys the process.
     */
    static Process nbdkitMemory(Path dir, Path sock) throws IOException {
        assumeTrue(Files.isExecutable(Path.of("/usr/bin/nbdkit")) || Files.isExecutable(Path.of("/usr/sbin/nbdkit")),
                "nbdkit is not installed (.ci/run installs it)");
        return new ProcessBuilder("nbdkit", "-f", "-U", sock.toString(), "memory", "8M")
                .redirectErrorStream(true).redirectOutput(dir.resolve("nbdkit.log").toFile()).start();
    }

    /** A 4 MiB sparse raw image {@code name} in {@code dir}. */
    static Path image(Path dir, String name) throws IOException {
        Path p = dir.resolve(name);
        try (RandomAccessFile f = new RandomAccessFile(p.toFile(), "rw")) {
            f.setLength(4 << 20);
        }
        return p;
    }

    /** {@code export.add} parameters: export {@code id} of a new image in {@code dir} on {@code socket}, I/O thread t0. */
    static String exportOnT0(Path dir, String id, Path socket) throws IOException {
        return json(Map.of("id", id, "image", image(dir, id + ".img").toString(), "socket", socket.toString(),
                "iothreads", List.of("t0")));
    }

    /**
     * Stops process {@code pid} (SIGSTOP) and returns once every one of its threads is stopped
     * (state T in /proc): {@code kill} returns once the signal is sent, not once it took effect,
     * and a request sent in between would still be served.
     */
    static void stopProcess(long pid) throws Exception {
        new ProcessBuilder("kill", "-STOP", Long.toString(pid)).start().waitFor();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        while (true) {
            boolean all = true;
            try (var tasks = Files.list(Path.of("/proc/" + pid + "/task"))) {
                for (Path t : (Iterable<Path>) tasks::iterator) {
                    String stat = Files.readString(t.resolve("stat"));
                    char state = stat.charAt(stat.lastIndexOf(')') + 2);
                    all &= state == 'T' || state == 't';
                }
            }
            if (all) {
                return;
            }
            if (System.nanoTime() > deadline) {
                throw new AssertionError("process " + pid + " did not stop within 20 s");
            }
            Thread.sleep(5);
        }
    }

    /**
     * Waits until a server takes connections on the Unix socket {@code sock} (a probe connect,
     * closed at once), for at most 60 s (a hang guard: a server's start took seconds on a loaded
     * CI machine). The file alone is not enough: a server creates it at bind, before it listens,
     * and a connect in between is refused.
     */
    static void awaitListening(Path sock, String server) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        IOException last = null;
        while (System.nanoTime() < deadline) {
            try (SocketChannel probe = SocketChannel.open(StandardProtocolFamily.UNIX)) {
                probe.connect(UnixDomainSocketAddress.of(sock));
                return;
            } catch (IOException e) {
                last = e;
            }
            Thread.sleep(20);
        }
        throw new AssertionError(server + " does not take connections on " + sock + ": " + last);
    }

    /** The export.add parameters {@code {id, image, socket}} and {@code extra}, as JSON. */
    static String exportSpec(String id, Path image, Path socket, Map<String, Object> extra) {
        Map<String, Object> m = new java.util.HashMap<>(Map.of("id", id, "image", image.toString(), "socket", socket.toString()));
        m.putAll(extra);
        return json(m);
    }

    static String json(Object o) {
        try {
            return JSON.std.asString(o);
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
    }
}
