package io.vblk.block.nbd;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.IoVector;
import io.vblk.sys.NativeBuffer;

/**
 * Requests above the server's maximum block size (proto.md NBD_INFO_BLOCK_SIZE) against a real
 * nbdkit whose blocksize-policy filter announces a 4 KiB maximum and refuses anything larger
 * (blocksize-error-policy=error): the disk sends them in parts of at most the maximum, each at
 * its place in the guest's buffers, FUA on every write part, and completes each request once.
 */
@SuppressWarnings("try") // the servers are resources the try blocks only keep alive
class NbdSplitRequestTest {
    private static final List<String> SMALL = List.of("blocksize-minimum=512", "blocksize-preferred=4096",
            "blocksize-maximum=4096", "blocksize-error-policy=error");

    @TempDir
    Path dir;

    private ServerProcess small(Path sock) throws Exception {
        assumeTrue(ServerProcess.available("nbdkit"), "nbdkit is not installed (.ci/run installs it)");
        return ServerProcess.nbdkit(sock, List.of("blocksize-policy"), "16M", SMALL);
    }

    @Test
    void splitWritesAndReadsLandInTheirPlaceAcrossOddSegments() throws Exception {
        Path sock = dir.resolve("s.sock");
        try (ServerProcess server = small(sock);
             NbdBackend disk = open("nbd+unix:///?socket=" + sock, NbdOptions.defaults().withDepth(8))) {
            assertEquals(4096, disk.maxPayloadBytes(), "the server's maximum");
            Io io = new Io(disk);
            // 3 segments whose boundaries fall inside 4 KiB parts: 1536 + 9728 + 5120 = 16 KiB.
            NativeBuffer a = Io.buffer(1536);
            NativeBuffer b = Io.buffer(9728);
            NativeBuffer c = Io.buffer(5120);
            Io.fill(a, 1);
            Io.fill(b, 2);
            Io.fill(c, 3);
            boolean fua = disk.supportsFua();
            Io.check(disk.prepareWrite(8192, vector(a, 1536, b, 9728, c, 5120), fua, 7));
            assertEquals(16384L, io.one(30_000), "one completion for the whole 16 KiB write");
            // Read it back in one buffer (4 parts) and check each byte came from its segment.
            NativeBuffer all = Io.buffer(16384);
            Io.poison(all);
            assertEquals(16384, io.read(8192, all));
            assertTrue(same(all, 0, a, 1536), "segment 1");
            assertTrue(same(all, 1536, b, 9728), "segment 2");
            assertTrue(same(all, 1536 + 9728, c, 5120), "segment 3");
            // And read into odd segments again: every part's data lands at its place, nothing past them.
            NativeBuffer x = Io.buffer(1536);
            NativeBuffer y = Io.buffer(9728);
            NativeBuffer z = Io.buffer(5120);
            Io.poison(x);
            Io.poison(y);
            Io.poison(z);
            Io.check(disk.prepareRead(8192, vector(x, 1536, y, 9728, z, 5120), 8));
            assertEquals(16384L, io.one(30_000));
            assertTrue(same(x, 0, a, 1536) && same(y, 0, b, 9728) && same(z, 0, c, 5120), "a split read into odd segments");
            assertEquals((byte) 0x5a, x.buffer().getByte(1536), "nothing written past segment 1");
            assertEquals((byte) 0x5a, y.buffer().getByte(9728), "nothing written past segment 2");
            assertEquals((byte) 0x5a, z.buffer().getByte(5120), "nothing written past segment 3");
        }
    }

    @Test
    void manySplitRequestsInFlightEachCompleteOnceWithItsData() throws Exception {
        manySplitRequests(1);
    }

    @Test
    void splitRequestsOverSeveralConnectionsEachCompleteOnceWithItsData() throws Exception {
        // nbdkit's memory plugin allows multi-conn: requests are dealt over 4 connections, and
        // each keeps all the parts of the requests it took.
        manySplitRequests(4);
    }

    private void manySplitRequests(int connections) throws Exception {
        Path sock = dir.resolve("m" + connections + ".sock");
        try (ServerProcess server = small(sock);
             NbdBackend disk = open("nbd+unix:///?socket=" + sock,
                     NbdOptions.defaults().withDepth(16).withConnections(connections))) {
            assertEquals(connections, disk.connectionCount(), "connections in use");
            Io io = new Io(disk);
            int n = 16;
            NativeBuffer[] w = new NativeBuffer[n];
            for (int i = 0; i < n; i++) {
                w[i] = Io.buffer(20480 + 512 * i);
                Io.fill(w[i], 100 + i);
                Io.check(disk.prepareWrite(i * 65536L, vector(w[i], 20480 + 512 * i), i));
            }
            Map<Long, Long> done = io.await(n, 30_000);
            assertEquals(n, done.size());
            for (int i = 0; i < n; i++) {
                assertEquals(20480L + 512 * i, done.get((long) i), "write " + i);
            }
            io.results.clear();
            NativeBuffer[] r = new NativeBuffer[n];
            for (int i = 0; i < n; i++) {
                r[i] = Io.buffer(20480 + 512 * i);
                Io.poison(r[i]);
                Io.check(disk.prepareRead(i * 65536L, vector(r[i], 20480 + 512 * i), 100 + i));
            }
            done = io.await(n, 30_000);
            assertEquals(n, done.size(), "each read completed once");
            for (int i = 0; i < n; i++) {
                assertEquals(20480L + 512 * i, done.get(100L + i), "read " + i);
                assertTrue(same(r[i], 0, w[i], 20480 + 512 * i), "data of read " + i);
            }
        }
    }

    @Test
    void writeZeroesAndTrimAboveTheMaximumSucceed() throws Exception {
        Path sock = dir.resolve("z.sock");
        try (ServerProcess server = small(sock);
             NbdBackend disk = open("nbd+unix:///?socket=" + sock, NbdOptions.defaults().withDepth(4))) {
            Io io = new Io(disk);
            assertTrue(disk.supportsWriteZeroes() && disk.supportsDiscard(), "nbdkit's memory plugin zeroes and trims");
            NativeBuffer w = Io.buffer(65536);
            Io.fill(w, 5);
            assertEquals(65536, io.write(0, w));
            Io.check(disk.prepareWriteZeroes(0, 32768, false, 1));
            assertEquals(0L, io.one(30_000), "a 32 KiB write-zeroes on a 4 KiB maximum");
            NativeBuffer r = Io.buffer(32768);
            Io.poison(r);
            assertEquals(32768, io.read(0, r));
            assertTrue(Io.zero(r), "zeroed");
            Io.check(disk.prepareDiscard(32768, 32768, 2));
            assertEquals(0L, io.one(30_000), "a 32 KiB trim on a 4 KiB maximum");
        }
    }

    @Test
    void splitWritesInFlightSurviveAServerRestart() throws Exception {
        assumeTrue(ServerProcess.available("nbdkit"), "nbdkit is not installed (.ci/run installs it)");
        Path img = dir.resolve("disk.img");
        try (RandomAccessFile f = new RandomAccessFile(img.toFile(), "rw")) {
            f.setLength(64L << 20);
        }
        Path sock = dir.resolve("r.sock");
        List<String> cmd = new ArrayList<>(List.of("nbdkit", "-f", "-U", sock.toString(), "--filter=blocksize-policy",
                "file", img.toString()));
        cmd.addAll(SMALL);
        ServerProcess[] server = {ServerProcess.start(cmd, sock, 0, dir)};
        try (NbdBackend disk = open("nbd+unix:///?socket=" + sock,
                NbdOptions.defaults().withRetryTimeoutMs(20_000))) {
            // 96 writes of 256 KiB, 64 parts each: the server dies with parts of every kind in
            // flight (done, sent, not yet sent); each part not answered is sent again.
            Io.writesInFlightSurviveARestart(disk, () -> {
                server[0].kill();
                Files.deleteIfExists(sock);
                ServerProcess.sleep(300);
                server[0] = ServerProcess.start(cmd, sock, 0, dir);
            });
        } finally {
            server[0].close();
        }
    }

    /**
     * Opens the disk; nbdkit's socket file exists a moment before it accepts (bind, then
     * listen), so a refused first connection is tried again, for up to 30 s (a hang guard).
     */
    private static NbdBackend open(String address, NbdOptions options) throws InterruptedException {
        long deadline = System.nanoTime() + 30_000_000_000L;
        while (true) {
            try {
                return NbdBackend.open(address, options);
            } catch (java.io.UncheckedIOException e) {
                if (!String.valueOf(e.getMessage()).contains("refused") || System.nanoTime() > deadline) {
                    throw e;
                }
                Thread.sleep(20);
            }
        }
    }

    private static boolean same(NativeBuffer all, int at, NativeBuffer part, int length) {
        for (int i = 0; i < length; i++) {
            if (all.buffer().getByte(at + i) != part.buffer().getByte(i)) {
                return false;
            }
        }
        return true;
    }

    /** Segments of the given lengths (a buffer's capacity is rounded up to pages). */
    private static IoVector vector(Object... bufferAndLength) {
        IoVector v = new IoVector(bufferAndLength.length / 2);
        for (int i = 0; i < bufferAndLength.length; i += 2) {
            v.add(((NativeBuffer) bufferAndLength[i]).address(), (Integer) bufferAndLength[i + 1]);
        }
        return v;
    }
}
