package io.vblk.perf.vhost;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import io.vblk.perf.load.DiskSpec;
import io.vblk.perf.report.ResultTable;

/**
 * A vhost-user-blk backend process this benchmark starts, serves from, and stops: {@code vblk
 * serve} or qemu-storage-daemon. Output goes to a log file next to the socket, quoted when the
 * daemon fails to come up.
 */
public final class BackendDaemon implements AutoCloseable {
    private static final long READY_TIMEOUT_MS = 60_000;
    private static final long STOP_TIMEOUT_MS = 10_000;

    private final String name;
    private final Process process;
    private final Path socket;
    private final Path log;
    private final List<String> command;

    private BackendDaemon(String name, List<String> command, Path socket, Path log) throws IOException {
        this.name = name;
        this.command = List.copyOf(command);
        this.socket = socket;
        this.log = log;
        Files.deleteIfExists(socket);
        this.process = new ProcessBuilder(command).redirectErrorStream(true).redirectOutput(log.toFile()).start();
    }

    /**
     * Starts {@code serveCommand} (e.g. {@code java -jar vblk.jar serve}) on {@code disk} at
     * {@code socket}; {@code aio} and {@code wait} are passed on unless null (a null disk has no
     * back end to choose).
     */
    public static BackendDaemon vblkServe(List<String> serveCommand, DiskSpec disk, Path socket, String aio, String wait,
                                          int queues) throws IOException {
        List<String> cmd = new ArrayList<>(serveCommand);
        cmd.addAll(List.of("--image", disk.isNull() ? "null:" + disk.nullSizeBytes() : disk.isNetwork() ? disk.network() : disk.path().toString(),
                "--socket", socket.toString(), "--queues", Integer.toString(queues)));
        if (aio != null && !disk.isNull() && !disk.isNetwork()) {
            cmd.addAll(List.of("--aio", aio));
        }
        if (disk.isQcow2()) {
            cmd.addAll(List.of("--format", "qcow2"));
        }
        if (wait != null) {
            cmd.addAll(List.of("--wait", wait));
        }
        String fixed = System.getProperty("vblk.bench.fixedBuffers");
        if (fixed != null) {
            // A/B runs of io_uring fixed buffers; unset: vblk serve's default (auto).
            cmd.addAll(List.of("--fixed-buffers", fixed));
        }
        return new BackendDaemon("vblk serve", cmd, socket, logFor(socket));
    }

    /**
     * Starts qemu-storage-daemon exporting {@code disk} as vhost-user-blk at {@code socket}, the
     * way facts.md measured it: O_DIRECT, {@code aio} (io_uring or native), one iothread with
     * {@code pollMaxNs} of adaptive polling (negative: its default), image locking off so that
     * vblk can serve the same file at the same time.
     */
    public static BackendDaemon qemuStorageDaemon(DiskSpec disk, Path socket, String aio, long pollMaxNs, int queues,
                                                  boolean writable) throws IOException {
        String blockdev;
        if (disk.isNull()) {
            blockdev = "driver=null-co,node-name=disk0,size=" + disk.nullSizeBytes();
        } else if (disk.isNetwork()) {
            blockdev = networkBlockdev(disk.network());
        } else {
            String path = disk.path().toAbsolutePath().toString().replace(",", ",,");
            String driver = Files.isRegularFile(disk.path()) ? "file" : "host_device";
            blockdev = "driver=" + driver + ",node-name=" + (disk.isQcow2() ? "file0" : "disk0") + ",filename=" + path
                    + ",cache.direct=on,aio=" + aio + ",locking=off";
        }
        String iothread = "iothread,id=iot0" + (pollMaxNs >= 0 ? ",poll-max-ns=" + pollMaxNs : "");
        String export = "type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path="
                + socket.toAbsolutePath().toString().replace(",", ",,") + ",writable=" + (writable ? "on" : "off")
                + ",num-queues=" + queues + ",iothread=iot0";
        List<String> cmd = new ArrayList<>(List.of("qemu-storage-daemon"));
        String tlsCreds = disk.isNetwork() ? networkTlsObject(disk.network()) : null;
        if (tlsCreds != null) {
            cmd.addAll(List.of("--object", tlsCreds));
        }
        cmd.addAll(List.of("--blockdev", blockdev));
        if (disk.isQcow2()) {
            // QEMU's qcow2 driver over the file, with its default caches; it opens the backing chain itself.
            cmd.addAll(List.of("--blockdev", "driver=qcow2,node-name=disk0,file=file0"));
        }
        cmd.addAll(List.of("--object", iothread, "--export", export));
        return new BackendDaemon("qemu-storage-daemon", cmd, socket, logFor(socket));
    }

    /** qemu-storage-daemon's own nbd or rbd driver on the disk a network address names. */
    static String networkBlockdev(String address) {
        if (io.vblk.block.rbd.RbdAddress.matches(address)) {
            io.vblk.block.rbd.RbdAddress a = io.vblk.block.rbd.RbdAddress.parse(address);
            return "driver=rbd,node-name=disk0,pool=" + a.pool() + ",image=" + a.image()
                    + (a.namespace() != null ? ",namespace=" + a.namespace() : "")
                    + (a.snapshot() != null ? ",snapshot=" + a.snapshot() : "")
                    + (a.conf() != null ? ",conf=" + a.conf().replace(",", ",,") : "")
                    + (a.id() != null ? ",user=" + a.id() : "");
        }
        io.vblk.block.nbd.NbdAddress a = io.vblk.block.nbd.NbdAddress.parse(address);
        String server = a.socket() != null ? "server.type=unix,server.path=" + a.socket().toString().replace(",", ",,")
                : "server.type=inet,server.host=" + a.host() + ",server.port=" + a.port();
        io.vblk.block.nbd.NbdTls tls = a.tlsCredentials(null);
        String tlsOptions = "";
        if (tls != null && tls.caFile() != null) {
            // The same credentials and name as vblk's: QEMU checks the name even over a Unix socket.
            String name = tls.hostname() != null ? tls.hostname() : a.host() != null ? a.host() : "localhost";
            tlsOptions = ",tls-creds=tls0,tls-hostname=" + name;
        }
        return "driver=nbd,node-name=disk0," + server + ",export=" + a.exportName() + tlsOptions;
    }

    /**
     * For an {@code nbds://} address, QEMU's client credentials object: the directory of the
     * URI's {@code tls-certificates} (QEMU's layout, ca-cert.pem and the client's pair); null otherwise.
     */
    static String networkTlsObject(String address) {
        if (!io.vblk.block.nbd.NbdAddress.matches(address)) {
            return null;
        }
        io.vblk.block.nbd.NbdTls tls = io.vblk.block.nbd.NbdAddress.parse(address).tlsCredentials(null);
        if (tls == null || tls.caFile() == null) {
            return null;
        }
        return "tls-creds-x509,id=tls0,endpoint=client,dir=" + tls.caFile().getParent().toString().replace(",", ",,");
    }

    private static Path logFor(Path socket) {
        return socket.resolveSibling(socket.getFileName() + ".log");
    }

    /**
     * Waits until the socket exists (the daemon listens).
     *
     * @throws IllegalStateException when the daemon exits or does not listen in time, with its log
     */
    public BackendDaemon awaitReady() throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(READY_TIMEOUT_MS);
        while (!Files.exists(socket)) {
            if (!process.isAlive()) {
                throw new IllegalStateException(name + " exited with status " + process.exitValue() + " before listening: "
                        + String.join(" ", command) + "\n" + logTail());
            }
            if (System.nanoTime() > deadline) {
                throw new IllegalStateException(name + " did not create " + socket + " within " + READY_TIMEOUT_MS / 1000 + " s\n"
                        + logTail());
            }
            Thread.sleep(20);
        }
        return this;
    }

    /** The socket it listens on. */
    public Path socket() {
        return socket;
    }

    /** The process id (its descendants are metered with it). */
    public long pid() {
        return process.pid();
    }

    /** Whether it is still running. */
    public boolean isAlive() {
        return process.isAlive();
    }

    /** The command line, for reports. */
    public String commandLine() {
        return String.join(" ", command);
    }

    /** The end of its log, for error messages. */
    public String logTail() {
        try {
            String text = Files.readString(log, StandardCharsets.UTF_8);
            return text.length() > 4000 ? "..." + text.substring(text.length() - 4000) : text;
        } catch (IOException e) {
            return "(no log: " + e.getMessage() + ")";
        }
    }

    /** A short description: what serves what. */
    public static String describe(String name, DiskSpec disk) {
        return name + " " + (disk.isNull() ? "null:" + ResultTable.size(disk.nullSizeBytes()) : disk.path());
    }

    /** Stops it (SIGTERM, then SIGKILL after 10 s) with any children, and removes the socket. */
    @Override
    public void close() {
        List<ProcessHandle> children = new ArrayList<>();
        process.descendants().forEach(children::add);
        process.destroy();
        children.forEach(ProcessHandle::destroy);
        try {
            if (!process.waitFor(STOP_TIMEOUT_MS, TimeUnit.MILLISECONDS)) {
                process.destroyForcibly();
                children.forEach(ProcessHandle::destroyForcibly);
                process.waitFor(STOP_TIMEOUT_MS, TimeUnit.MILLISECONDS);
            }
        } catch (InterruptedException e) {
            process.destroyForcibly();
            Thread.currentThread().interrupt();
        }
        try {
            Files.deleteIfExists(socket);
        } catch (IOException e) {
            // a stale socket is replaced on the next start
        }
    }
}
