package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.logging.Handler;
import java.util.logging.LogRecord;
import java.util.logging.Logger;
import java.util.logging.SimpleFormatter;
import java.util.regex.Pattern;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.block.NetworkDisk;
import io.vblk.sys.NativeBuffer;
import io.vblk.testkit.QemuTools;

/**
 * A qcow2 image on an NBD disk whose server went silent (SIGSTOP) after acknowledging writes no
 * FLUSH covered: the driver's {@code closeWithin} deadline did not reach the NBD back end
 * (NetworkHost closed it with no deadline), so the final FLUSH at close waited the back end's
 * whole close bound (10 s) whatever the caller's deadline. Now the deadline passes through: with
 * 2 s the FLUSH is given up within those 2 s, as the NBD log line says.
 */
class Qcow2NetworkCloseDeadlineTest {
    private static final Pattern NO_REPLY = Pattern.compile("final FLUSH at close got no reply within (\\d+) ms");

    @TempDir
    Path dir;

    @Test
    void theDriversDeadlineBoundsTheCloseFlushOfASilentServer() throws Exception {
        assumeTrue(QemuTools.installed("nbdkit"));
        Path img = DriverRig.create(dir, "n.qcow2", "4M", "-o", "compat=1.1,cluster_size=65536");
        QemuTools.Run w = DriverRig.run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 1M", img.toString());
        assertEquals(0, w.code(), w.output());
        Path sock = dir.resolve("k.sock");
        Process server = new ProcessBuilder(List.of("nbdkit", "-f", "-U", sock.toString(), "file", img.toString()))
                .redirectErrorStream(true).redirectOutput(dir.resolve("nbdkit.out").toFile()).start();
        Logger jul = Logger.getLogger("io.vblk.block.nbd");
        List<String> logged = new CopyOnWriteArrayList<>();
        Handler handler = new Handler() {
            @Override
            public void publish(LogRecord record) {
                logged.add(new SimpleFormatter().formatMessage(record));
            }

            @Override
            public void flush() {
            }

            @Override
            public void close() {
            }
        };
        jul.addHandler(handler);
        String pid = Long.toString(server.pid());
        long closeMs = -1;
        try {
            Qcow2NetworkTest.awaitListening(server, sock, dir.resolve("nbdkit.out"));
            Qcow2Driver d = Qcow2.open(NetworkDisk.open("nbd+unix:///?socket=" + sock, false), 8, Qcow2Options.defaults());
            try {
                DriverRig rig = new DriverRig(d);
                NativeBuffer b = DriverRig.buffer(65536);
                b.buffer().setMemory(0, 65536, (byte) 0x22);
                assertEquals(65536, rig.one(rig.write(0, b, 65536))); // in place: no metadata of the driver's
            } finally {
                stopProcess(server.pid());
                long t0 = System.nanoTime();
                d.closeWithin(TimeUnit.SECONDS.toNanos(2));
                closeMs = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - t0);
            }
            assertTrue(logged.stream().map(NO_REPLY::matcher).anyMatch(m -> m.find() && Long.parseLong(m.group(1)) <= 2000),
                    "the close's FLUSH was given up within the 2 s deadline, not close's 10 s: " + logged + " (close took "
                            + closeMs + " ms)");
        } finally {
            jul.removeHandler(handler);
            new ProcessBuilder("kill", "-CONT", pid).start().waitFor();
            QemuTools.stop(server);
        }
    }

    /** SIGSTOPs {@code pid} and waits until every thread of it is stopped (state T in /proc), so no reply can slip out. */
    private static void stopProcess(long pid) throws Exception {
        assertEquals(0, new ProcessBuilder("kill", "-STOP", Long.toString(pid)).start().waitFor());
        java.nio.file.Path tasks = java.nio.file.Path.of("/proc/" + pid + "/task");
        long deadline = System.nanoTime() + java.util.concurrent.TimeUnit.SECONDS.toNanos(10);
        while (System.nanoTime() < deadline) {
            boolean all = true;
            try (java.util.stream.Stream<java.nio.file.Path> ts = java.nio.file.Files.list(tasks)) {
                for (java.nio.file.Path t : (Iterable<java.nio.file.Path>) ts::iterator) {
                    String stat = java.nio.file.Files.readString(t.resolve("stat"));
                    char state = stat.charAt(stat.lastIndexOf(')') + 2);
                    all &= state == 'T' || state == 't';
                }
            }
            if (all) {
                return;
            }
            Thread.sleep(5);
        }
        throw new AssertionError("process " + pid + " did not stop");
    }
}
