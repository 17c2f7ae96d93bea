package io.vblk.block.rbd;

import java.io.IOException;
import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * A one-node Ceph cluster (mon + one OSD on 127.0.0.1, authentication off) brought up by
 * {@code scripts/ceph/start} for a test class, and stopped with {@code scripts/ceph/stop}.
 */
public final class CephCluster implements AutoCloseable {
    final Path dir;
    final Path conf;

    private CephCluster(Path dir, Path conf) {
        this.dir = dir;
        this.conf = conf;
    }

    public static boolean installed() {
        return Files.isExecutable(Path.of("/usr/bin/ceph-mon")) && Files.isExecutable(Path.of("/usr/bin/ceph-osd"))
                && Librbd.available();
    }

    static Path scripts() {
        Path here = Path.of("").toAbsolutePath();
        for (Path p = here; p != null; p = p.getParent()) {
            if (Files.isExecutable(p.resolve("scripts/ceph/start"))) {
                return p.resolve("scripts/ceph");
            }
        }
        throw new IllegalStateException("scripts/ceph/start not found above " + here);
    }

    public static CephCluster start(Path dir, String store) throws Exception {
        int port;
        try (ServerSocket s = new ServerSocket(0)) {
            port = s.getLocalPort();
        }
        ProcessBuilder pb = new ProcessBuilder(scripts().resolve("start").toString(), dir.toString(), Integer.toString(port));
        pb.environment().put("CEPH_STORE", store);
        Path log = Files.createTempFile("ceph-start", ".log");
        Process p = pb.redirectErrorStream(true).redirectOutput(log.toFile()).start();
        // 300 s: a hang guard; a monitor's and an OSD's start (bluestore's mkfs) took a good part of
        // the old 120 s on a loaded 2-core CI machine.
        if (!p.waitFor(300, TimeUnit.SECONDS) || p.exitValue() != 0) {
            p.destroyForcibly();
            new CephCluster(dir, dir.resolve("ceph.conf")).close(); // no daemon it started keeps running
            throw new IOException("scripts/ceph/start failed:\n" + Files.readString(log));
        }
        return new CephCluster(dir, dir.resolve("ceph.conf"));
    }

    /** Runs a ceph/rbd command against this cluster; returns its output, throws on failure. */
    public String run(String... command) throws Exception {
        List<String> cmd = new ArrayList<>(List.of(command));
        ProcessBuilder pb = new ProcessBuilder(cmd).redirectErrorStream(true);
        pb.environment().put("CEPH_CONF", conf.toString());
        Process p = pb.start();
        byte[] out = p.getInputStream().readAllBytes();
        if (!p.waitFor(120, TimeUnit.SECONDS) || p.exitValue() != 0) {
            throw new IOException(String.join(" ", command) + " failed: " + new String(out));
        }
        return new String(out);
    }

    public String address(String image) {
        return "rbd:rbd/" + image + ":conf=" + conf;
    }

    /** The OSD's pid (for fault tests). */
    long osdPid() throws IOException {
        return Long.parseLong(Files.readString(dir.resolve("run/osd.0.pid")).trim());
    }

    /** Starts the OSD again after a kill (a store that persists, e.g. bluestore, keeps its data). */
    void restartOsd() throws Exception {
        run("ceph-osd", "--id", "0", "--setuser", "root", "--setgroup", "root");
    }

    @Override
    public void close() throws IOException {
        Process p = new ProcessBuilder(scripts().resolve("stop").toString(), dir.toString()).inheritIO().start();
        try {
            p.waitFor(60, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
