package io.vblk.block.nbd;

import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.IoVector;
import io.vblk.block.BlockDriver;
import io.vblk.block.NetworkDisk;
import io.vblk.sys.Epoll;
import io.vblk.sys.Linux;
import io.vblk.sys.Errno;
import io.vblk.sys.NativeBuffer;

/** The NBD driver against real servers: qemu-nbd on a file (Unix and TCP) and nbdkit's memory plugin. */
@SuppressWarnings("try") // the servers are resources the try blocks only keep alive
class NbdBackendTest {
    private static final long MiB = 1 << 20;

    @TempDir
    Path dir;

    @BeforeAll
    static void serversPresent() {
        assumeTrue(ServerProcess.available("qemu-nbd") && ServerProcess.available("nbdkit"),
                "qemu-nbd and nbdkit are not installed (.ci/run installs them)");
    }

    private Path image(long size) throws Exception {
        Path file = dir.resolve("disk.img");
        try (RandomAccessFile f = new RandomAccessFile(file.toFile(), "rw")) {
            f.setLength(size);
        }
        return file;
    }

    static int fileInt(Path file, long offset) throws Exception {
        try (FileChannel ch = FileChannel.open(file)) {
            ByteBuffer b = ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN);
            ch.read(b, offset);
            return b.getInt(0);
        }
    }

    @Test
    void writesAndReadsBackOverUnixWithSeveralSegmentsAndReachesTheFile() throws Exception {
        Path img = image(16 * MiB);
        Path sock = dir.resolve("nbd.sock");
        try (ServerProcess server = ServerProcess.qemuNbdUnix(img, sock, "disk0", false);
             NbdBackend disk = NbdBackend.open("nbd+unix:///disk0?socket=" + sock, NbdOptions.defaults())) {
            assertEquals(16 * MiB, disk.sizeBytes());
            assertFalse(disk.readOnly());
            Io io = new Io(disk);
            NbdBuffers a = new NbdBuffers(4096, 8192, 512);
            a.fill(7);
            Io.check(disk.prepareWrite(3 * MiB, a.vector(), 1));
            assertEquals(a.total(), io.one(30_000));
            assertEquals(0, io.flush());
            NbdBuffers b = new NbdBuffers(512, 12288);
            b.poison();
            Io.check(disk.prepareRead(3 * MiB, b.vector(), 2));
            assertEquals(a.total(), io.one(30_000));
            assertArrayEquals(a.bytes(), b.bytes());
            assertEquals(7 * 1_000_003, fileInt(img, 3 * MiB), "the write reached the image file");
        }
    }

    @Test
    void acceptsAsManySegmentsAsQemuOffersByDefault() throws Exception {
        Path sock = dir.resolve("mem.sock");
        try (ServerProcess server = ServerProcess.nbdkit(sock, List.of(), "4M", List.of());
             NbdBackend disk = NbdBackend.open("nbd+unix:///?socket=" + sock, NbdOptions.defaults())) {
            Io io = new Io(disk);
            int[] sizes = new int[254];
            java.util.Arrays.fill(sizes, 4096);
            NbdBuffers w = new NbdBuffers(sizes);
            w.fill(12);
            Io.check(disk.prepareWrite(0, w.vector(), 1));
            assertEquals(254 * 4096, io.one(30_000));
            NbdBuffers r = new NbdBuffers(sizes);
            r.poison();
            Io.check(disk.prepareRead(0, r.vector(), 2));
            assertEquals(254 * 4096, io.one(30_000));
            assertArrayEquals(w.bytes(), r.bytes());
        }
    }

    @Test
    void servesOverTcpOnLoopback() throws Exception {
        Path img = image(8 * MiB);
        int port = ServerProcess.freePort();
        try (ServerProcess server = ServerProcess.qemuNbdTcp(img, port, "tcp0");
             NbdBackend disk = NbdBackend.open("nbd://127.0.0.1:" + port + "/tcp0", NbdOptions.defaults())) {
            Io io = new Io(disk);
            NativeBuffer w = Io.buffer(65536);
            Io.fill(w, 3);
            assertEquals(65536, io.write(MiB, w));
            NativeBuffer r = Io.buffer(65536);
            assertEquals(65536, io.read(MiB, r));
            assertTrue(Io.matches(r, 3));
        }
    }

    /** TCP is not limited to 127.0.0.1: an IPv6 address (here ::1, when the host has one) works too. */
    @Test
    void servesOverTcpOnIpv6() throws Exception {
        assumeTrue(java.net.NetworkInterface.networkInterfaces().flatMap(i -> i.inetAddresses())
                .anyMatch(a -> a instanceof java.net.Inet6Address && a.isLoopbackAddress()), "no IPv6 loopback address here");
        Path img = image(8 * MiB);
        int port = ServerProcess.freePort();
        Process p = new ProcessBuilder(List.of("qemu-nbd", "-f", "raw", "-b", "::1", "-p", Integer.toString(port), "-x", "v6",
                "-t", img.toString())).redirectErrorStream(true).redirectOutput(dir.resolve("v6.log").toFile()).start();
        try {
            for (int i = 0; i < 400; i++) {
                try (java.net.Socket probe = new java.net.Socket("::1", port)) {
                    break;
                } catch (java.io.IOException e) {
                    Thread.sleep(25);
                }
            }
            try (NbdBackend disk = NbdBackend.open("nbd://[::1]:" + port + "/v6", NbdOptions.defaults())) {
                Io io = new Io(disk);
                NativeBuffer w = Io.buffer(65536);
                Io.fill(w, 6);
                assertEquals(65536, io.write(MiB, w));
                NativeBuffer r = Io.buffer(65536);
                assertEquals(65536, io.read(MiB, r));
                assertTrue(Io.matches(r, 6));
            }
        } finally {
            p.destroyForcibly();
            p.waitFor();
        }
    }

    @Test
    void manyRequestsInFlightOnOneConnection() throws Exception {
        Path img = image(32 * MiB);
        Path sock = dir.resolve("nbd.sock");
        try (ServerProcess server = ServerProcess.qemuNbdUnix(img, sock, "", false);
             NbdBackend disk = NbdBackend.open("nbd+unix:///?socket=" + sock, NbdOptions.defaults().withDepth(128))) {
            Io io = new Io(disk);
            NativeBuffer[] bufs = new NativeBuffer[128];
            for (int i = 0; i < 128; i++) {
                bufs[i] = Io.buffer(i % 3 == 0 ? 131072 : 4096);
                Io.fill(bufs[i], 100 + i);
                Io.check(disk.prepareWrite(i * 256L * 1024, Io.vector(bufs[i]), i));
            }
            assertEquals(-Errno.EAGAIN, disk.prepareFlush(999), "every slot is taken");
            Map<Long, Long> done = io.await(128, 60_000);
            assertEquals(128, done.size());
            for (int i = 0; i < 128; i++) {
                assertEquals(bufs[i].capacity(), done.get((long) i));
                Io.poison(bufs[i]);
                Io.check(disk.prepareRead(i * 256L * 1024, Io.vector(bufs[i]), 1000 + i));
            }
            io.results.clear();
            done = io.await(128, 60_000);
            assertEquals(128, done.size());
            for (int i = 0; i < 128; i++) {
                assertTrue(Io.matches(bufs[i], 100 + i), "read " + i);
            }
            assertEquals(0, disk.inFlight());
        }
    }

    /**
     * The I/O thread in blocking mode: it sleeps in epoll on the driver's completion sources only,
     * acknowledges, polls, submits. A batch far larger than the socket buffer (a partial send that
     * resumes on EPOLLOUT or the next wake), its replies, and the reconnect after the server died
     * mid-I/O must all wake it; nothing may strand a request.
     */
    @Test
    void aThreadSleepingOnlyOnTheCompletionSourceGetsEveryCompletion() throws Exception {
        Path img = image(64 * MiB);
        Path sock = dir.resolve("nbd.sock");
        int depth = 64;
        try (ServerProcess server = ServerProcess.qemuNbdUnix(img, sock, "", false);
             BlockDriver driver = NetworkDisk.open("nbd+unix:///?socket=" + sock, false).open(depth);
             Epoll epoll = new Epoll(4)) {
            for (int i = 0; i < driver.completionSources(); i++) {
                epoll.add(driver.completionFd(i), Linux.EPOLLIN, i);
            }
            NativeBuffer[] bufs = new NativeBuffer[depth];
            for (int i = 0; i < depth; i++) {
                bufs[i] = Io.buffer(512 << 10);
                Io.fill(bufs[i], 300 + i);
                assertEquals(0, driver.write(i * (512L << 10), Io.vector(bufs[i]), i));
            }
            Map<Long, Long> done = new java.util.HashMap<>();
            driver.submit();
            sleepUntil(driver, epoll, done, depth);
            for (int i = 0; i < depth; i++) {
                assertEquals(512 << 10, done.get((long) i), "write " + i);
                Io.poison(bufs[i]);
                assertEquals(0, driver.read(i * (512L << 10), Io.vector(bufs[i]), 1000 + i));
            }
            done.clear();
            driver.submit();
            sleepUntil(driver, epoll, done, depth);
            for (int i = 0; i < depth; i++) {
                assertEquals(512 << 10, done.get(1000L + i));
                assertTrue(Io.matches(bufs[i], 300 + i), "read " + i);
            }
            assertEquals(0, driver.inFlight());
            // The server dies mid-I/O and comes back: the helper's reconnect must wake the sleeper.
            for (int i = 0; i < depth; i++) {
                Io.fill(bufs[i], 700 + i);
                assertEquals(0, driver.write(i * (512L << 10), Io.vector(bufs[i]), 2000 + i));
            }
            done.clear();
            driver.submit();
            server.kill();
            java.nio.file.Files.deleteIfExists(sock);
            ServerProcess.sleep(300);
            try (ServerProcess again = ServerProcess.qemuNbdUnix(img, sock, "", false)) {
                sleepUntil(driver, epoll, done, depth);
                for (int i = 0; i < depth; i++) {
                    assertEquals(512 << 10, done.get(2000L + i), "write " + i + " after the restart");
                }
                assertEquals(0, driver.inFlight());
            }
        }
    }

    /** Sleeps in epoll (up to 30 s a time) on the sources, then acknowledges and polls, until {@code count} completions. */
    private static void sleepUntil(BlockDriver driver, Epoll epoll, Map<Long, Long> done, int count) {
        while (done.size() < count) {
            int before = done.size();
            driver.poll(done::put, 1024);
            if (done.size() > before || driver.pendingSubmit() > 0) {
                driver.submit();
                continue;
            }
            int ready = epoll.await(30_000);
            assertTrue(ready > 0, "no completion source woke the thread with " + driver.inFlight() + " requests in flight");
            for (int i = 0; i < ready; i++) {
                driver.acknowledge((int) epoll.data(i));
            }
        }
    }

    @Test
    void largeReadStreamsThroughTheReceiveBuffer() throws Exception {
        Path sock = dir.resolve("mem.sock");
        try (ServerProcess server = ServerProcess.nbdkit(sock, List.of(), "64M", List.of());
             NbdBackend disk = NbdBackend.open("nbd+unix:///?socket=" + sock, NbdOptions.defaults())) {
            Io io = new Io(disk);
            NativeBuffer w = Io.buffer(4 << 20);
            Io.fill(w, 11);
            assertEquals(4 << 20, io.write(8 * MiB, w));
            NativeBuffer r = Io.buffer(4 << 20);
            assertEquals(4 << 20, io.read(8 * MiB, r));
            assertTrue(Io.matches(r, 11));
            // A read of never-written memory: nbdkit may answer with a hole chunk.
            NativeBuffer hole = Io.buffer(1 << 20);
            Io.poison(hole);
            assertEquals(1 << 20, io.read(40 * MiB, hole));
            assertTrue(Io.zero(hole));
        }
    }

    @Test
    void writeZeroesTrimAndFuaOnNbdkit() throws Exception {
        Path sock = dir.resolve("mem.sock");
        try (ServerProcess server = ServerProcess.nbdkit(sock, List.of(), "16M", List.of());
             NbdBackend disk = NbdBackend.open("nbd+unix:///?socket=" + sock, NbdOptions.defaults())) {
            assertTrue(disk.supportsWriteZeroes());
            assertTrue(disk.supportsDiscard());
            Io io = new Io(disk);
            NativeBuffer w = Io.buffer(65536);
            Io.fill(w, 5);
            if (disk.supportsFua()) {
                Io.check(disk.prepareWrite(0, Io.vector(w), true, 1));
                assertEquals(65536, io.one(30_000));
            } else {
                assertEquals(65536, io.write(0, w));
            }
            Io.check(disk.prepareWriteZeroes(4096, 8192, false, 2));
            assertEquals(0, io.one(30_000));
            Io.check(disk.prepareDiscard(32768, 32768, 3));
            assertEquals(0, io.one(30_000));
            NativeBuffer r = Io.buffer(65536);
            assertEquals(65536, io.read(0, r));
            for (int i = 0; i < 4096; i += 4) {
                assertEquals(5 * 1_000_003 + i, r.buffer().getInt(i));
            }
            for (int i = 4096; i < 12288; i++) {
                assertEquals(0, r.buffer().getByte(i), "zeroed byte " + i);
            }
            for (int i = 12288; i < 32768; i += 4) {
                assertEquals(5 * 1_000_003 + i, r.buffer().getInt(i));
            }
            for (int i = 32768; i < 65536; i++) {
                assertEquals(0, r.buffer().getByte(i), "trimmed byte " + i + " (the memory plugin zeroes trimmed ranges)");
            }
        }
    }

    @Test
    void readOnlyExportGivesAReadOnlyDisk() throws Exception {
        Path img = image(4 * MiB);
        Path sock = dir.resolve("ro.sock");
        try (ServerProcess server = ServerProcess.qemuNbdUnix(img, sock, "ro", true);
             NbdBackend disk = NbdBackend.open("nbd+unix:///ro?socket=" + sock, NbdOptions.defaults())) {
            assertTrue(disk.readOnly());
            Io io = new Io(disk);
            NativeBuffer b = Io.buffer(4096);
            assertEquals(-Errno.EROFS, disk.prepareWrite(0, Io.vector(b), 1));
            assertEquals(-Errno.EROFS, disk.prepareDiscard(0, 4096, 1));
            assertEquals(-Errno.EROFS, disk.prepareWriteZeroes(0, 4096, true, 1));
            Io.poison(b);
            assertEquals(4096, io.read(0, b));
            assertTrue(Io.zero(b));
        }
    }

    @Test
    void severalConnectionsWhenTheServerAllowsMultiConnAndFlushCoversThemAll() throws Exception {
        Path sock = dir.resolve("mem.sock");
        try (ServerProcess server = ServerProcess.nbdkit(sock, List.of(), "16M", List.of());
             NbdBackend disk = NbdBackend.open("nbd+unix:///?socket=" + sock, NbdOptions.defaults().withConnections(3))) {
            assertEquals(3, disk.connectionCount());
            Io io = new Io(disk);
            NativeBuffer[] bufs = new NativeBuffer[30];
            for (int i = 0; i < 30; i++) {
                bufs[i] = Io.buffer(4096);
                Io.fill(bufs[i], i);
                Io.check(disk.prepareWrite(i * 8192L, Io.vector(bufs[i]), i));
            }
            assertEquals(30, io.await(30, 30_000).size());
            assertEquals(0, io.flush());
            for (int i = 0; i < 30; i++) {
                Io.poison(bufs[i]);
                assertEquals(4096, io.read(i * 8192L, bufs[i]));
                assertTrue(Io.matches(bufs[i], i));
            }
        }
    }

    @Test
    void oneConnectionWhenTheServerDoesNotAllowMultiConn() throws Exception {
        Path sock = dir.resolve("mem.sock");
        try (ServerProcess server = ServerProcess.nbdkit(sock, List.of("multi-conn"), "4M",
                List.of("multi-conn-mode=disable"));
             NbdBackend disk = NbdBackend.open("nbd+unix:///?socket=" + sock, NbdOptions.defaults().withConnections(4))) {
            assertEquals(1, disk.connectionCount());
        }
    }

    @Test
    void refusesOutOfRangeAndMisalignedRequestsBeforeTheServerSeesThem() throws Exception {
        Path img = image(MiB);
        Path sock = dir.resolve("nbd.sock");
        try (ServerProcess server = ServerProcess.qemuNbdUnix(img, sock, "x", false);
             NbdBackend disk = NbdBackend.open("nbd+unix:///x?socket=" + sock, NbdOptions.defaults().withMaxSegments(2))) {
            NativeBuffer b = Io.buffer(4096);
            assertEquals(-Errno.EINVAL, disk.prepareRead(MiB - 2048, Io.vector(b), 1));
            assertEquals(-Errno.EINVAL, disk.prepareRead(Long.MAX_VALUE - 100, Io.vector(b), 1));
            assertEquals(-Errno.EINVAL, disk.prepareWrite(-4096, Io.vector(b), 1));
            assertEquals(-Errno.EINVAL, disk.prepareDiscard(0, 1L << 40, 1));
            assertEquals(-Errno.EINVAL, disk.prepareRead(0, Io.vector(b, b, b), 1));
            if (disk.minBlockBytes() > 1) {
                assertEquals(-Errno.EINVAL, disk.prepareRead(1, Io.vector(b), 1));
            }
            assertEquals(disk.depth(), disk.freeSlots());
        }
    }

    @Test
    void unknownExportIsRefusedAtOpenWithTheServersReason() throws Exception {
        Path img = image(MiB);
        Path sock = dir.resolve("nbd.sock");
        try (ServerProcess server = ServerProcess.qemuNbdUnix(img, sock, "x", false)) {
            RuntimeException e = assertThrows(RuntimeException.class,
                    () -> NbdBackend.open("nbd+unix:///nope?socket=" + sock, NbdOptions.defaults()));
            assertTrue(e.getMessage().contains("nope"), e.getMessage());
        }
    }

    /** A vector over several buffers of given sizes, with helpers to compare their bytes. */
    static final class NbdBuffers {
        final NativeBuffer[] parts;

        NbdBuffers(int... sizes) {
            parts = new NativeBuffer[sizes.length];
            for (int i = 0; i < sizes.length; i++) {
                parts[i] = Io.buffer(sizes[i]);
            }
        }

        void fill(int seed) {
            int at = 0;
            for (NativeBuffer p : parts) {
                for (int i = 0; i < p.capacity(); i += 4) {
                    p.buffer().putInt(i, seed * 1_000_003 + at + i);
                }
                at += p.capacity();
            }
        }

        void poison() {
            for (NativeBuffer p : parts) {
                Io.poison(p);
            }
        }

        IoVector vector() {
            return Io.vector(parts);
        }

        int total() {
            int t = 0;
            for (NativeBuffer p : parts) {
                t += p.capacity();
            }
            return t;
        }

        byte[] bytes() {
            byte[] all = new byte[total()];
            int at = 0;
            for (NativeBuffer p : parts) {
                p.buffer().getBytes(0, all, at, p.capacity());
                at += p.capacity();
            }
            return all;
        }
    }
}
