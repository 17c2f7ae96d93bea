package io.vblk.block.nbd;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.Errno;
import io.vblk.sys.NativeBuffer;

/**
 * rev16a H1: a server with a volatile write cache (nbdkit's cache filter, cache=writeback, over a
 * file: an acknowledged write stays in the process until a flush) acknowledges a write and is
 * killed (SIGKILL: its cache is gone), then comes back. The disk reconnects; the guest's next
 * FLUSH must not succeed, since the write it covers is not on the server, nor any FLUSH after it
 * (the guest cannot know which writes were lost), with strict flushes ({@link
 * NbdOptions#withStrictFlush}). Without them (the default, as QEMU's client: qemu-nbd's writes
 * outlive its process) the FLUSH succeeds. A server killed with everything flushed loses nothing,
 * and FLUSH keeps working there.
 */
class NbdFlushAcrossReconnectTest {
    private static final long MiB = 1 << 20;
    @TempDir
    Path dir;

    private ServerProcess start(Path file, Path sock) throws Exception {
        Files.deleteIfExists(sock);
        return ServerProcess.start(List.of("nbdkit", "-f", "-U", sock.toString(), "--filter=cache",
                "file", file.toString(), "cache=writeback"), sock, 0, dir);
    }

    private Path image() throws Exception {
        Path img = dir.resolve("disk.img");
        try (RandomAccessFile f = new RandomAccessFile(img.toFile(), "rw")) {
            f.setLength(8 * MiB);
        }
        return img;
    }

    @Test
    void withStrictFlushAFlushAfterAServerLostAcknowledgedWritesFailsForGood() throws Exception {
        assumeTrue(ServerProcess.available("nbdkit"));
        Path img = image();
        Path sock = dir.resolve("n.sock");
        ServerProcess[] server = {start(img, sock)};
        try (NbdBackend disk = NbdBackend.open("nbd+unix:///?socket=" + sock,
                NbdOptions.defaults().withRetryTimeoutMs(20_000).withStrictFlush(true))) {
            Io io = new Io(disk);
            NativeBuffer b = Io.buffer(4096);
            Io.fill(b, 7);
            assertEquals(4096, io.write(MiB, b), "the write is acknowledged (into the server's cache)");
            server[0].kill(); // the server crashes: its write-back cache is lost
            server[0] = start(img, sock);
            assertEquals(-Errno.EIO, io.flush(), "FLUSH after the reconnect cannot cover the write the server lost");
            Io.poison(b);
            assertEquals(4096, io.read(MiB, b), "reads are served by the new server");
            assertFalse(Io.matches(b, 7), "the write is gone indeed");
            Io.fill(b, 9);
            assertEquals(4096, io.write(2 * MiB, b), "writes are served by the new server");
            assertEquals(-Errno.EIO, io.flush(), "FLUSH fails for good: a retry must not report the lost write durable");
        } finally {
            server[0].close();
        }
    }

    @Test
    void byDefaultAFlushAfterAReconnectIsTrustedAsQemusClientDoes() throws Exception {
        assumeTrue(ServerProcess.available("nbdkit"));
        Path img = image();
        Path sock = dir.resolve("n.sock");
        ServerProcess[] server = {start(img, sock)};
        try (NbdBackend disk = NbdBackend.open("nbd+unix:///?socket=" + sock, NbdOptions.defaults().withRetryTimeoutMs(20_000))) {
            Io io = new Io(disk);
            NativeBuffer b = Io.buffer(4096);
            Io.fill(b, 7);
            assertEquals(4096, io.write(MiB, b));
            server[0].kill();
            server[0] = start(img, sock);
            assertEquals(0, io.flush(), "not strict: a server restart during writes does not fail the guest's flushes");
            Io.fill(b, 9);
            assertEquals(4096, io.write(2 * MiB, b));
            assertEquals(0, io.flush());
        } finally {
            server[0].close();
        }
    }

    @Test
    void aServerKilledWithEverythingFlushedLosesNothingAndFlushStillWorks() throws Exception {
        assumeTrue(ServerProcess.available("nbdkit"));
        Path img = image();
        Path sock = dir.resolve("n.sock");
        ServerProcess[] server = {start(img, sock)};
        try (NbdBackend disk = NbdBackend.open("nbd+unix:///?socket=" + sock,
                NbdOptions.defaults().withRetryTimeoutMs(20_000).withStrictFlush(true))) {
            Io io = new Io(disk);
            NativeBuffer b = Io.buffer(4096);
            Io.fill(b, 7);
            assertEquals(4096, io.write(MiB, b));
            assertEquals(0, io.flush(), "the write is durable");
            Io.poison(b);
            assertEquals(4096, io.read(MiB, b), "a read: nothing left unflushed");
            server[0].kill();
            server[0] = start(img, sock);
            assertEquals(0, io.flush(), "nothing acknowledged was unflushed: FLUSH after the reconnect succeeds");
            Io.poison(b);
            assertEquals(4096, io.read(MiB, b));
            assertEquals(true, Io.matches(b, 7), "the flushed write survived the crash");
            Io.fill(b, 9);
            assertEquals(4096, io.write(2 * MiB, b));
            assertEquals(0, io.flush());
        } finally {
            server[0].close();
        }
    }
}
