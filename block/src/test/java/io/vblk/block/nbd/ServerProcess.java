package io.vblk.block.nbd;

import java.io.IOException;
import java.net.ServerSocket;
import java.net.Socket;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * A real NBD server (qemu-nbd or nbdkit) started by a test, killed at the end. Output goes to a
 * log file next to the socket so a failing test can show it.
 */
final class ServerProcess implements AutoCloseable {
    final Process process;
    final Path log;

    private ServerProcess(Process process, Path log) {
        this.process = process;
        this.log = log;
    }

    static boolean available(String command) {
        for (String dir : System.getenv().getOrDefault("PATH", "/usr/bin:/bin").split(":")) {
            if (Files.isExecutable(Path.of(dir, command))) {
                return true;
            }
        }
        return false;
    }

    /**
     * Starts {@code command} and waits until its Unix socket (or TCP port) takes connections: a
     * probe connects and hangs up. The socket file alone is not enough: a server creates it at
     * bind, before listen (a connect in between is refused), and a file left by a killed server
     * exists before the new one binds. The servers started here are persistent ({@code -t},
     * nbdkit's default), so the probe's connection does not end them.
     */
    private static final int START_SECONDS = 60;

    static ServerProcess start(List<String> command, Path socket, int port, Path dir) throws IOException {
        Path log = dir.resolve("server-" + System.nanoTime() + ".log");
        Process p = new ProcessBuilder(command).redirectErrorStream(true).redirectOutput(log.toFile()).start();
        ServerProcess server = new ServerProcess(p, log);
        // 60 s: a hang guard, not a measure; a server's start (nbdkit's plugin load, qemu-nbd's
        // image open) took seconds on a loaded 2-core CI machine.
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(START_SECONDS);
        while (System.nanoTime() < deadline) {
            if (!p.isAlive()) {
                throw new IOException("server exited: " + command + "\n" + Files.readString(log));
            }
            if (socket != null ? listening(socket) : listening(port)) {
                return server;
            }
            sleep(20);
        }
        server.close();
        throw new IOException("server did not start in " + START_SECONDS + " s: " + command + "\n" + Files.readString(log));
    }

    @SuppressWarnings("try")
    private static boolean listening(int port) {
        try (Socket s = new Socket("127.0.0.1", port)) {
            return true;
        } catch (IOException e) {
            return false;
        }
    }

    private static boolean listening(Path socket) {
        if (!Files.exists(socket)) {
            return false;
        }
        try (SocketChannel s = SocketChannel.open(StandardProtocolFamily.UNIX)) {
            return s.connect(UnixDomainSocketAddress.of(socket));
        } catch (IOException e) {
            return false;
        }
    }

    static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0)) {
            return s.getLocalPort();
        }
    }

    /** qemu-nbd serving a raw file on a Unix socket, persistent (survives client disconnects), shared. */
    static ServerProcess qemuNbdUnix(Path image, Path socket, String export, boolean readOnly) throws IOException {
        List<String> cmd = new ArrayList<>(List.of("qemu-nbd", "-f", "raw", "-k", socket.toString(), "-x", export,
                "-t", "-e", "8", "--cache=none", "--aio=threads"));
        if (readOnly) {
            cmd.add("-r");
        }
        cmd.add(image.toString());
        return start(cmd, socket, 0, socket.getParent());
    }

    /** qemu-nbd serving a raw file on 127.0.0.1:port. */
    static ServerProcess qemuNbdTcp(Path image, int port, String export) throws IOException {
        return start(List.of("qemu-nbd", "-f", "raw", "-b", "127.0.0.1", "-p", Integer.toString(port), "-x", export,
                "-t", "-e", "8", image.toString()), null, port, image.getParent());
    }

    /** nbdkit with the memory plugin (and any filters/parameters) on a Unix socket, in the foreground. */
    static ServerProcess nbdkit(Path socket, List<String> filters, String size, List<String> params) throws IOException {
        List<String> cmd = new ArrayList<>(List.of("nbdkit", "-f", "-U", socket.toString()));
        for (String f : filters) {
            cmd.add("--filter=" + f);
        }
        cmd.add("memory");
        cmd.add(size);
        cmd.addAll(params);
        return start(cmd, socket, 0, socket.getParent());
    }

    /** SIGKILL, as a crash. */
    void kill() {
        process.destroyForcibly();
        try {
            process.waitFor(10, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    @Override
    public void close() {
        kill();
    }
}
