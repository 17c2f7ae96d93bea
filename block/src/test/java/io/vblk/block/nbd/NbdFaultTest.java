package io.vblk.block.nbd;

import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.RandomAccessFile;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.Errno;
import io.vblk.sys.NativeBuffer;

/**
 * Servers that die, come back, stall, fail requests or lie, all real (qemu-nbd, nbdkit with its
 * error and delay filters, a byte-damaging relay in front of qemu-nbd): requests are retried or
 * fail with EIO, never hang, and other disks keep working.
 */
@SuppressWarnings("try") // the servers are resources the try blocks only keep alive
class NbdFaultTest {
    private static final long MiB = 1 << 20;

    @TempDir
    Path dir;

    @BeforeAll
    static void serversPresent() {
        assumeTrue(ServerProcess.available("qemu-nbd") && ServerProcess.available("nbdkit"),
                "qemu-nbd and nbdkit are not installed (.ci/run installs them)");
    }

    private Path image(String name, long size) throws Exception {
        Path file = dir.resolve(name);
        try (RandomAccessFile f = new RandomAccessFile(file.toFile(), "rw")) {
            f.setLength(size);
        }
        return file;
    }

    @Test
    void writesInFlightSurviveAServerKilledAndRestarted() throws Exception {
        Path img = image("disk.img", 64 * MiB);
        Path sock = dir.resolve("nbd.sock");
        ServerProcess[] server = {ServerProcess.qemuNbdUnix(img, sock, "d", false)};
        try (NbdBackend disk = NbdBackend.open("nbd+unix:///d?socket=" + sock, NbdOptions.defaults().withRetryTimeoutMs(20_000))) {
            Io.writesInFlightSurviveARestart(disk, () -> {
                server[0].kill(); // mid-I/O: some writes done, some not
                java.nio.file.Files.deleteIfExists(sock);
                ServerProcess.sleep(300);
                server[0] = ServerProcess.qemuNbdUnix(img, sock, "d", false);
            });
        } finally {
            server[0].close();
        }
    }

    @Test
    void aServerGoneForGoodFailsRequestsWithEioAfterTheRetryTimeWhileAnotherDiskKeepsWorking() throws Exception {
        Path sockA = dir.resolve("a.sock");
        Path sockB = dir.resolve("b.sock");
        ServerProcess a = ServerProcess.nbdkit(sockA, List.of(), "8M", List.of());
        try (ServerProcess b = ServerProcess.nbdkit(sockB, List.of(), "8M", List.of());
             NbdBackend diskA = NbdBackend.open("nbd+unix:///?socket=" + sockA, NbdOptions.defaults().withRetryTimeoutMs(1500));
             NbdBackend diskB = NbdBackend.open("nbd+unix:///?socket=" + sockB, NbdOptions.defaults())) {
            Io ioA = new Io(diskA);
            Io ioB = new Io(diskB);
            NativeBuffer w = Io.buffer(4096);
            Io.fill(w, 1);
            assertEquals(4096, ioA.write(0, w));
            a.kill();
            long t0 = System.nanoTime();
            Io.check(diskA.prepareWrite(4096, Io.vector(w), 7));
            diskA.submit();
            // Meanwhile the other disk serves.
            for (int i = 0; i < 20; i++) {
                assertEquals(4096, ioB.write(i * 4096L, w));
            }
            assertEquals(-Errno.EIO, ioA.one(20_000), "failed once the retry time passed");
            long ms = (System.nanoTime() - t0) / 1_000_000;
            assertTrue(ms >= 1000, "retried for the configured time before failing (" + ms + " ms)");
            // Requests arriving after the outage outlived the retry time fail at once.
            assertEquals(-Errno.EIO, ioA.read(0, w));
        } finally {
            a.close();
        }
    }

    @Test
    void anErrorCodeFromTheServerFailsOnlyThatRequest() throws Exception {
        Path sock = dir.resolve("e.sock");
        try (ServerProcess server = ServerProcess.nbdkit(sock, List.of("error"), "8M",
                List.of("error=EIO", "error-pread-rate=1"));
             NbdBackend disk = NbdBackend.open("nbd+unix:///?socket=" + sock, NbdOptions.defaults())) {
            Io io = new Io(disk);
            NativeBuffer b = Io.buffer(8192);
            Io.fill(b, 2);
            assertEquals(8192, io.write(0, b));
            assertEquals(-Errno.EIO, io.read(0, b));
            assertEquals(8192, io.write(8192, b), "the connection still serves");
            assertEquals(0, io.flush());
        }
    }

    @Test
    void aServerThatStallsPastTheRequestTimeoutIsRetriedThenFailsWithoutHanging() throws Exception {
        Path sock = dir.resolve("slow.sock");
        try (ServerProcess server = ServerProcess.nbdkit(sock, List.of("delay"), "8M", List.of("rdelay=30"));
             NbdBackend disk = NbdBackend.open("nbd+unix:///?socket=" + sock,
                     NbdOptions.defaults().withRequestTimeoutMs(400).withRetryTimeoutMs(1200))) {
            Io io = new Io(disk);
            NativeBuffer b = Io.buffer(4096);
            Io.fill(b, 9);
            assertEquals(4096, io.write(0, b), "writes are not delayed");
            long t0 = System.nanoTime();
            assertEquals(-Errno.EIO, io.read(0, b));
            assertTrue((System.nanoTime() - t0) / 1_000_000 < 15_000, "bounded by the timeouts, not the server");
        }
    }

    @Test
    void aServerThatSlowsDownButAnswersWithinTheTimeoutIsNotAFault() throws Exception {
        Path sock = dir.resolve("slowish.sock");
        try (ServerProcess server = ServerProcess.nbdkit(sock, List.of("delay"), "8M", List.of("wdelay=200ms"));
             NbdBackend disk = NbdBackend.open("nbd+unix:///?socket=" + sock, NbdOptions.defaults().withRequestTimeoutMs(5000))) {
            Io io = new Io(disk);
            NativeBuffer b = Io.buffer(4096);
            Io.fill(b, 4);
            for (int i = 0; i < 4; i++) {
                Io.check(disk.prepareWrite(i * 4096L, Io.vector(b), i));
            }
            Map<Long, Long> done = io.await(4, 10_000);
            assertEquals(4, done.size());
            done.values().forEach(v -> assertEquals(4096L, v));
        }
    }

    @Test
    void badMagicAndUnknownCookieFailTheAffectedRequestsThenTheDiskReconnects() throws Exception {
        Path img = image("lie.img", 8 * MiB);
        int port = ServerProcess.freePort();
        try (ServerProcess server = ServerProcess.qemuNbdTcp(img, port, "lie");
             CorruptingProxy proxy = new CorruptingProxy(port);
             NbdBackend disk = NbdBackend.open("nbd://127.0.0.1:" + proxy.port() + "/lie", NbdOptions.defaults())) {
            Io io = new Io(disk);
            NativeBuffer b = Io.buffer(4096);
            Io.fill(b, 6);
            assertEquals(4096, io.write(0, b));
            for (int mode : new int[] {CorruptingProxy.BAD_MAGIC, CorruptingProxy.UNKNOWN_COOKIE}) {
                int before = proxy.connections.get();
                proxy.arm(mode);
                assertEquals(-Errno.EIO, io.read(0, b), "mode " + mode);
                Io.poison(b);
                assertEquals(4096, io.read(0, b), "served again after a reconnect (mode " + mode + ")");
                assertTrue(Io.matches(b, 6));
                assertEquals(before + 1, proxy.connections.get(), "one reconnect");
            }
        }
    }

    @Test
    void anExportThatShrankAcrossARestartFailsRequestsBeyondItsNewEnd() throws Exception {
        Path img = image("shrink.img", 8 * MiB);
        Path sock = dir.resolve("s.sock");
        ServerProcess server = ServerProcess.qemuNbdUnix(img, sock, "s", false);
        try (NbdBackend disk = NbdBackend.open("nbd+unix:///s?socket=" + sock, NbdOptions.defaults())) {
            Io io = new Io(disk);
            NativeBuffer b = Io.buffer(4096);
            Io.fill(b, 8);
            assertEquals(4096, io.write(6 * MiB, b));
            assertEquals(4096, io.write(MiB, b));
            server.kill();
            java.nio.file.Files.deleteIfExists(sock);
            try (RandomAccessFile f = new RandomAccessFile(img.toFile(), "rw")) {
                f.setLength(4 * MiB);
            }
            server = ServerProcess.qemuNbdUnix(img, sock, "s", false);
            assertEquals(-Errno.EIO, io.read(6 * MiB, b), "beyond the new end");
            Io.poison(b);
            assertEquals(4096, io.read(MiB, b));
            assertTrue(Io.matches(b, 8));
        } finally {
            server.close();
        }
    }
}
