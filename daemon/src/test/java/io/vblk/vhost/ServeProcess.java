package io.vblk.vhost;

import io.vblk.daemon.Main;
import io.vblk.testkit.JvmFlags;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * {@code vblk serve} as its own JVM, as an operator runs it: the test classpath, the JVM flags
 * facts.md demands, stdout and stderr in files. A crash of the daemon (a signal, an uncaught
 * error) shows as {@link #alive()} turning false, with the cause in {@link #stderr()}.
 */
final class ServeProcess implements AutoCloseable {
    /** A hang guard: a JVM's start on a loaded 2-core CI machine took seconds. */
    private static final long START_TIMEOUT_S = 60;

    final Process process;
    final Path socket;
    final String servingLine;
    private final Path out;
    private final Path err;

    private ServeProcess(Process process, Path socket, Path out, Path err) throws IOException, InterruptedException {
        this.process = process;
        this.socket = socket;
        this.out = out;
        this.err = err;
        this.servingLine = firstLine();
    }

    /** The command that runs {@code java ... Main args} with the test classpath, preceded by {@code prefix}. */
    static List<String> command(List<String> prefix, String... args) {
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        List<String> cmd = new ArrayList<>(prefix);
        cmd.add(java);
        cmd.addAll(JvmFlags.list());
        cmd.addAll(List.of("-Xmx256m", "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1", "-cp", System.getProperty("java.class.path"), Main.class.getName()));
        cmd.addAll(List.of(args));
        return cmd;
    }

    /**
     * Starts {@code vblk serve args} (which must include {@code --socket socket}) and waits for its
     * "serving" line; files go to {@code dir}.
     *
     * @throws AssertionError when it exits or stays silent instead
     */
    static ServeProcess start(Path dir, Path socket, String... args) throws IOException, InterruptedException {
        String[] all = new String[args.length + 1];
        all[0] = "serve";
        System.arraycopy(args, 0, all, 1, args.length);
        Path out = Files.createTempFile(dir, "serve", ".out");
        Path err = Files.createTempFile(dir, "serve", ".err");
        Process p = new ProcessBuilder(command(List.of(), all)).redirectOutput(out.toFile()).redirectError(err.toFile()).start();
        try {
            return new ServeProcess(p, socket, out, err);
        } catch (AssertionError | IOException | InterruptedException e) {
            p.destroyForcibly();
            throw e;
        }
    }

    private String firstLine() throws IOException, InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(START_TIMEOUT_S);
        while (System.nanoTime() < deadline) {
            String text = Files.readString(out);
            int nl = text.indexOf('\n');
            if (nl >= 0) {
                return text.substring(0, nl);
            }
            if (!process.isAlive()) {
                throw new AssertionError("vblk serve exited with " + process.exitValue() + ": " + stderr());
            }
            Thread.sleep(20);
        }
        throw new AssertionError("vblk serve did not start within " + START_TIMEOUT_S + " s: " + stderr());
    }

    long pid() {
        return process.pid();
    }

    boolean alive() {
        return process.isAlive();
    }

    /** What the daemon logged so far. */
    String stderr() {
        try {
            return Files.readString(err);
        } catch (IOException e) {
            return "(stderr unreadable: " + e + ")";
        }
    }

    /** The logged lines that contain {@code text}. */
    List<String> logLines(String text) {
        List<String> found = new ArrayList<>();
        for (String line : stderr().split("\n")) {
            if (line.contains(text)) {
                found.add(line);
            }
        }
        return found;
    }

    /** SIGTERM, and the exit status (the daemon drains and exits 0). */
    int stop() throws InterruptedException {
        process.destroy();
        if (!process.waitFor(30, TimeUnit.SECONDS)) {
            process.destroyForcibly();
            throw new AssertionError("vblk serve did not exit within 30 s of SIGTERM: " + stderr());
        }
        return process.exitValue();
    }

    @Override
    public void close() {
        process.destroyForcibly();
        try {
            process.waitFor(10, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
