package io.vblk.block.nbd;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.RandomAccessFile;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.logging.Handler;
import java.util.logging.LogRecord;
import java.util.logging.Logger;
import java.util.logging.SimpleFormatter;
import java.util.regex.Pattern;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.NativeBuffer;

/**
 * The FLUSH a clean close sends (writes acknowledged, none covered by a FLUSH) waits within
 * close's deadline and the request timeout. A close with no time left (closeWithin(0), or a
 * drain that used the wait up) queued the FLUSH, never sent it, and counted and logged it as
 * "no reply" (with a literal {@code close''s}): now it is not queued, the log says "not sent (no
 * time left)", and the server sees no FLUSH. A server that went silent (SIGSTOP) held close for
 * the whole close bound (10 s) even with a request timeout of 1 s: now the FLUSH is given up
 * after the request timeout, and the log says how long it waited.
 */
class NbdCloseFlushDeadlineTest {
    private static final long MiB = 1 << 20;
    private static final Pattern NO_REPLY = Pattern.compile("final FLUSH at close got no reply within (\\d+) ms");

    @TempDir
    Path dir;

    private final Logger jul = Logger.getLogger("io.vblk.block.nbd");
    private final List<String> logged = new CopyOnWriteArrayList<>();
    private final Handler handler = new Handler() {
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

    @BeforeEach
    void capture() {
        jul.addHandler(handler);
    }

    @AfterEach
    void release() {
        jul.removeHandler(handler);
    }

    private ServerProcess nbdkit(Path sock, Path log) throws Exception {
        Path img = dir.resolve("disk.img");
        try (RandomAccessFile f = new RandomAccessFile(img.toFile(), "rw")) {
            f.setLength(8 * MiB);
        }
        return ServerProcess.start(List.of("nbdkit", "-f", "-U", sock.toString(), "--filter=log", "file", img.toString(),
                "logfile=" + log), sock, 0, dir);
    }

    @Test
    void aCloseWithNoTimeLeftSendsNoFlushAndSaysSo() throws Exception {
        assumeTrue(ServerProcess.available("nbdkit"));
        Path sock = dir.resolve("n.sock");
        Path log = dir.resolve("n.log");
        ServerProcess server = nbdkit(sock, log);
        try {
            NbdBackend disk = NbdBackend.open("nbd+unix:///?socket=" + sock, NbdOptions.defaults());
            Io io = new Io(disk);
            NativeBuffer b = Io.buffer(4096);
            Io.fill(b, 7);
            assertEquals(4096, io.write(MiB, b));
            disk.closeWithin(0);
            assertEquals(0, disk.closeFlushes(), "no FLUSH sent: " + logged);
            assertEquals(1, disk.closeFlushesSkipped());
            assertTrue(logged.stream().anyMatch(m -> m.contains("final FLUSH at close not sent (no time left)")),
                    String.valueOf(logged));
            assertTrue(logged.stream().noneMatch(m -> m.contains("''")), "a doubled quote in the log: " + logged);
            assertEquals(List.of("Write"), NbdCloseFlushTest.commands(log), "the server saw no FLUSH");
        } finally {
            server.close();
        }
    }

    @Test
    void aSilentServersCloseFlushIsGivenUpAfterTheRequestTimeout() throws Exception {
        assumeTrue(ServerProcess.available("nbdkit"));
        Path sock = dir.resolve("n.sock");
        Path log = dir.resolve("n.log");
        ServerProcess server = nbdkit(sock, log);
        long pid = server.process.pid();
        try {
            NbdBackend disk = NbdBackend.open("nbd+unix:///?socket=" + sock, NbdOptions.defaults().withRequestTimeoutMs(1000));
            Io io = new Io(disk);
            NativeBuffer b = Io.buffer(4096);
            Io.fill(b, 7);
            assertEquals(4096, io.write(MiB, b));
            stopProcess(pid);
            disk.close(); // no deadline: close's bound (10 s) and the request timeout (1 s)
            assertEquals(1, disk.closeFlushes());
            assertTrue(logged.stream().map(NO_REPLY::matcher).anyMatch(m -> m.find() && Long.parseLong(m.group(1)) <= 1000),
                    "the FLUSH was given up after the request timeout, not close's 10 s: " + logged);
        } finally {
            new ProcessBuilder("kill", "-CONT", Long.toString(pid)).start().waitFor();
            server.close();
        }
    }

    /** SIGSTOPs {@code pid} and waits until every thread of it is stopped (state T in /proc), so no reply can slip out. */
    static void stopProcess(long pid) throws Exception {
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
