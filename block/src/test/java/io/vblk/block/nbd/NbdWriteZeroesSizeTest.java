package io.vblk.block.nbd;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.NativeBuffer;

/**
 * A guest's write-zeroes (virtio allows up to 4 GiB in one request) goes to the server in the
 * largest commands it takes. proto.md (block size constraints): the maximum payload bounds
 * commands that carry data; a WRITE_ZEROES carries none, so the client MAY ask for a larger
 * effect, and the server MAY refuse it with EOVERFLOW or EINVAL. Before the fix the disk split
 * it at the maximum payload: 16,384 sequential round trips for 1 GiB on a server announcing a
 * 64 KiB maximum (about a million for 4 GiB on a 4 KiB one). Counted in the commands nbdkit's
 * log filter saw, against real nbdkit servers; the data reads back as zeros, and nothing past
 * the range is touched.
 */
@SuppressWarnings("try") // the servers are resources the try blocks only keep alive
class NbdWriteZeroesSizeTest {
    private static final long GIB = 1L << 30;

    @TempDir
    Path dir;

    @Test
    void aGibibyteWriteZeroesIsAHandfulOfCommands() throws Exception {
        assumeTrue(ServerProcess.available("nbdkit"), "nbdkit is not installed (.ci/run installs it)");
        Path sock = dir.resolve("z.sock");
        Path log = dir.resolve("zero.log");
        try (ServerProcess server = ServerProcess.nbdkit(sock, List.of("log", "blocksize-policy"), "2G",
                List.of("blocksize-preferred=4K", "blocksize-maximum=64K", "logfile=" + log));
             NbdBackend disk = NbdBackend.open("nbd+unix:///?socket=" + sock, NbdOptions.defaults().withDepth(4))) {
            assertEquals(65536, disk.maxPayloadBytes(), "the server's maximum payload");
            assertTrue(disk.supportsWriteZeroes());
            Io io = new Io(disk);
            long[] inside = {0, 512L << 20, GIB - 65536};
            NativeBuffer data = Io.buffer(65536);
            Io.fill(data, 9);
            for (long at : inside) {
                assertEquals(65536, io.write(at, data));
            }
            assertEquals(65536, io.write(GIB, data)); // just past the range
            long before = zeroCommands(log);
            Io.check(disk.prepareWriteZeroes(0, GIB, false, 1));
            assertEquals(0L, io.one(120_000), "1 GiB zeroed");
            long commands = zeroCommands(log) - before;
            assertEquals(1, commands, "NBD commands for 1 GiB of write-zeroes");
            for (long at : inside) {
                NativeBuffer back = Io.buffer(65536);
                Io.poison(back);
                assertEquals(65536, io.read(at, back));
                assertTrue(Io.zero(back), "zeros at " + at);
            }
            NativeBuffer past = Io.buffer(65536);
            assertEquals(65536, io.read(GIB, past));
            assertTrue(Io.matches(past, 9), "the data just past the range is untouched");
        }
    }

    /**
     * Above the 32-bit length field: 3 GiB go out as two commands, the first INT_MAX rounded down
     * to the preferred size (2 GiB - 4 KiB), the second the rest; the bytes on both sides of the
     * split are zeroed and nothing past the range is touched.
     */
    @Test
    void zeroingAboveTheLengthFieldIsSplitAtItsAlignedMaximum() throws Exception {
        assumeTrue(ServerProcess.available("nbdkit"), "nbdkit is not installed (.ci/run installs it)");
        Path sock = dir.resolve("z3.sock");
        Path log = dir.resolve("zero3.log");
        long length = 3 * GIB;
        long first = Integer.MAX_VALUE - Integer.MAX_VALUE % 4096;
        try (ServerProcess server = ServerProcess.nbdkit(sock, List.of("log", "blocksize-policy"), "4G",
                List.of("blocksize-preferred=4K", "blocksize-maximum=64K", "logfile=" + log));
             NbdBackend disk = NbdBackend.open("nbd+unix:///?socket=" + sock, NbdOptions.defaults().withDepth(4))) {
            Io io = new Io(disk);
            long[] inside = {0, first - 65536, first, length - 65536};
            NativeBuffer data = Io.buffer(65536);
            Io.fill(data, 5);
            for (long at : inside) {
                assertEquals(65536, io.write(at, data));
            }
            assertEquals(65536, io.write(length, data)); // just past the range
            long before = zeroCommands(log);
            Io.check(disk.prepareWriteZeroes(0, length, false, 1));
            assertEquals(0L, io.one(120_000), "3 GiB zeroed");
            assertEquals(2, zeroCommands(log) - before, "NBD commands for 3 GiB of write-zeroes");
            List<Long> counts = Files.readAllLines(log).stream().filter(l -> l.contains(" Zero id="))
                    .map(l -> l.replaceAll(".*count=(0x[0-9a-fA-F]+).*", "$1")).map(Long::decode).toList();
            assertEquals(List.of(first, length - first), counts.subList(counts.size() - 2, counts.size()), "the two parts");
            for (long at : inside) {
                NativeBuffer back = Io.buffer(65536);
                Io.poison(back);
                assertEquals(65536, io.read(at, back));
                assertTrue(Io.zero(back), "zeros at " + at);
            }
            NativeBuffer past = Io.buffer(65536);
            assertEquals(65536, io.read(length, past));
            assertTrue(Io.matches(past, 5), "the data just past the range is untouched");
        }
    }

    /** The same against qemu-nbd (32 MiB maximum payload), counting the commands its trace decoded. */
    @Test
    void qemuNbdTakesAGibibyteOfZeroesInOneCommand() throws Exception {
        assumeTrue(ServerProcess.available("qemu-nbd"), "qemu-nbd is not installed (.ci/run installs it)");
        Path img = dir.resolve("q.img");
        try (RandomAccessFile f = new RandomAccessFile(img.toFile(), "rw")) {
            f.setLength(2 * GIB);
        }
        Path sock = dir.resolve("q.sock");
        try (ServerProcess server = ServerProcess.start(List.of("qemu-nbd", "-f", "raw", "-k", sock.toString(), "-x", "q",
                "-t", "--trace", "nbd_co_receive_request_decode_type", img.toString()), sock, 0, dir);
             NbdBackend disk = NbdBackend.open("nbd+unix:///q?socket=" + sock, NbdOptions.defaults().withDepth(4))) {
            Io io = new Io(disk);
            NativeBuffer data = Io.buffer(65536);
            Io.fill(data, 3);
            assertEquals(65536, io.write(GIB - 65536, data));
            assertEquals(65536, io.write(GIB, data));
            long before = decoded(server.log, 6);
            Io.check(disk.prepareWriteZeroes(0, GIB, false, 1));
            assertEquals(0L, io.one(120_000), "1 GiB zeroed");
            long commands = decoded(server.log, 6) - before;
            assertEquals(1, commands, "NBD commands for 1 GiB of write-zeroes");
            NativeBuffer back = Io.buffer(65536);
            Io.poison(back);
            assertEquals(65536, io.read(GIB - 65536, back));
            assertTrue(Io.zero(back), "zeroed");
            assertEquals(65536, io.read(GIB, back));
            assertTrue(Io.matches(back, 3), "the data just past the range is untouched");
        }
    }

    /** Requests of NBD command {@code type} qemu-nbd's trace decoded so far. */
    private static long decoded(Path log, int type) throws Exception {
        return Files.readAllLines(log).stream().filter(l -> l.contains("type = " + type + " (")).count();
    }

    /**
     * A server that refuses zeroing above its maximum payload (nbdkit's eval plugin over a file,
     * answering EOVERFLOW above 64 KiB): the refused part is sent again in parts of the maximum,
     * from where the request stands, and the request completes once, all zeros, nothing past it.
     */
    @Test
    void aServerThatRefusesLargeZeroingGetsItInPartsOfItsMaximum() throws Exception {
        assumeTrue(ServerProcess.available("nbdkit"), "nbdkit is not installed (.ci/run installs it)");
        Path img = dir.resolve("disk.img");
        try (RandomAccessFile f = new RandomAccessFile(img.toFile(), "rw")) {
            f.setLength(16L << 20);
        }
        Path sock = dir.resolve("e.sock");
        Path log = dir.resolve("refuse.log");
        String file = img.toString();
        List<String> cmd = new ArrayList<>(List.of("nbdkit", "-f", "-U", sock.toString(), "--filter=log",
                "--filter=blocksize-policy", "eval",
                "get_size=echo " + (16L << 20),
                "pread=dd if=" + file + " skip=$4 count=$3 iflag=skip_bytes,count_bytes status=none",
                "pwrite=dd of=" + file + " seek=$4 oflag=seek_bytes conv=notrunc status=none",
                "can_write=exit 0", "can_zero=exit 0",
                "zero=if [ $3 -gt 65536 ]; then echo EOVERFLOW too large >&2; exit 1; fi; dd if=/dev/zero of=" + file
                        + " seek=$4 count=$3 oflag=seek_bytes iflag=count_bytes conv=notrunc status=none",
                "blocksize-preferred=4K", "blocksize-maximum=64K", "logfile=" + log));
        try (ServerProcess server = ServerProcess.start(cmd, sock, 0, dir);
             NbdBackend disk = NbdBackend.open("nbd+unix:///?socket=" + sock, NbdOptions.defaults().withDepth(4))) {
            assertEquals(65536, disk.maxPayloadBytes());
            Io io = new Io(disk);
            NativeBuffer data = Io.buffer(65536);
            Io.fill(data, 4);
            for (long at = 0; at < (2L << 20) + 65536; at += 65536) {
                assertEquals(65536, io.write(at, data));
            }
            long before = zeroCommands(log);
            Io.check(disk.prepareWriteZeroes(4096, (1L << 20) + 8192, false, 1));
            assertEquals(0L, io.one(60_000), "zeroed after the refusal, in parts");
            long commands = zeroCommands(log) - before;
            // One refused, then ceil((1 MiB + 8 KiB) / 64 KiB) = 17 parts.
            assertEquals(18, commands, "zero commands");
            NativeBuffer back = Io.buffer((2 << 20) + 65536);
            assertEquals((2 << 20) + 65536, io.read(0, back));
            for (int i = 0; i < (2 << 20) + 65536; i++) {
                boolean zeroed = i >= 4096 && i < 4096 + (1 << 20) + 8192;
                byte want = zeroed ? 0 : data.buffer().getByte(i % 65536);
                if (back.buffer().getByte(i) != want) {
                    throw new AssertionError("byte " + i + ": " + back.buffer().getByte(i) + ", want " + want);
                }
            }
            // Later zeroing on this connection goes in parts at once (no refusal first).
            before = zeroCommands(log);
            Io.check(disk.prepareWriteZeroes(0, 1L << 20, false, 2));
            assertEquals(0L, io.one(60_000));
            assertEquals(16, zeroCommands(log) - before, "16 parts, none refused");
        }
    }

    /** The write-zeroes commands nbdkit's log filter recorded as received. */
    private static long zeroCommands(Path log) throws Exception {
        if (!Files.exists(log)) {
            return 0;
        }
        return Files.readAllLines(log).stream().filter(l -> l.contains(" Zero id=")).count();
    }
}
