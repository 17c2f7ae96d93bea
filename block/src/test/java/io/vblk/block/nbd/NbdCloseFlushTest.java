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

import io.vblk.sys.Errno;
import io.vblk.sys.NativeBuffer;

/**
 * A clean close of a writable raw image ends with an fdatasync (QEMU's bdrv_close flushes; its
 * NBD client sends NBD_CMD_FLUSH before NBD_CMD_DISC). An NBD disk closed with writes the server
 * acknowledged and no FLUSH covered left them in the server's cache. Now its close sends one
 * FLUSH before saying goodbye; nbdkit's log filter shows every command the server saw, in order.
 * Nothing unflushed, a read-only disk, or a server that offers no flush: no FLUSH at close. A
 * FLUSH that fails at close is logged, and close still ends.
 */
class NbdCloseFlushTest {
    private static final long MiB = 1 << 20;
    @TempDir
    Path dir;

    /** nbdkit's file plugin (which offers flush) behind its log filter, plus {@code filters}. */
    private ServerProcess nbdkit(Path sock, Path log, List<String> filters, List<String> params) throws Exception {
        Path img = dir.resolve("disk.img");
        try (RandomAccessFile f = new RandomAccessFile(img.toFile(), "rw")) {
            f.setLength(8 * MiB);
        }
        List<String> cmd = new ArrayList<>(List.of("nbdkit", "-f", "-U", sock.toString(), "--filter=log"));
        for (String f : filters) {
            cmd.add("--filter=" + f);
        }
        cmd.addAll(List.of("file", img.toString(), "logfile=" + log));
        cmd.addAll(params);
        return ServerProcess.start(cmd, sock, 0, dir);
    }

    /** The commands (Write, Flush, Read, ...) the server received, once the client said goodbye. */
    static List<String> commands(Path log) throws Exception {
        long deadline = System.currentTimeMillis() + 10_000;
        String text = "";
        while (System.currentTimeMillis() < deadline) {
            text = Files.exists(log) ? Files.readString(log) : "";
            if (text.contains("Disconnect")) {
                break;
            }
            ServerProcess.sleep(20);
        }
        assertTrue(text.contains("Disconnect"), "the client never disconnected: " + text);
        List<String> out = new ArrayList<>();
        java.util.regex.Matcher m = java.util.regex.Pattern.compile("connection=\\d+ (\\w+) id=").matcher(text);
        while (m.find()) {
            out.add(m.group(1));
        }
        return out;
    }

    @Test
    void aCleanCloseFlushesWritesTheServerAcknowledged() throws Exception {
        assumeTrue(ServerProcess.available("nbdkit"));
        Path sock = dir.resolve("n.sock");
        Path log = dir.resolve("n.log");
        ServerProcess server = nbdkit(sock, log, List.of(), List.of());
        try {
            NbdBackend disk = NbdBackend.open("nbd+unix:///?socket=" + sock, NbdOptions.defaults());
            Io io = new Io(disk);
            NativeBuffer b = Io.buffer(4096);
            Io.fill(b, 7);
            assertEquals(4096, io.write(MiB, b));
            assertEquals(4096, io.read(MiB, b));
            disk.close();
            assertEquals(1, disk.closeFlushes());
            assertEquals(List.of("Write", "Read", "Flush"), commands(log), "the close's FLUSH ends the session");
        } finally {
            server.close();
        }
    }

    @Test
    void nothingUnflushedNothingFlushedAtClose() throws Exception {
        assumeTrue(ServerProcess.available("nbdkit"));
        Path sock = dir.resolve("n.sock");
        Path log = dir.resolve("n.log");
        ServerProcess server = nbdkit(sock, log, List.of(), List.of());
        try {
            NbdBackend disk = NbdBackend.open("nbd+unix:///?socket=" + sock, NbdOptions.defaults());
            Io io = new Io(disk);
            NativeBuffer b = Io.buffer(4096);
            Io.fill(b, 7);
            assertEquals(4096, io.write(MiB, b));
            assertEquals(0, io.flush());
            assertEquals(4096, io.read(MiB, b));
            disk.close();
            assertEquals(0, disk.closeFlushes());
            assertEquals(List.of("Write", "Flush", "Read"), commands(log), "the guest's FLUSH covered everything");
        } finally {
            server.close();
        }
    }

    @Test
    void aReadOnlyDiskNeverFlushes() throws Exception {
        assumeTrue(ServerProcess.available("nbdkit"));
        Path sock = dir.resolve("n.sock");
        Path log = dir.resolve("n.log");
        ServerProcess server = nbdkit(sock, log, List.of(), List.of());
        try {
            NbdBackend disk = NbdBackend.open("nbd+unix:///?socket=" + sock, NbdOptions.defaults().withReadOnly(true));
            Io io = new Io(disk);
            NativeBuffer b = Io.buffer(4096);
            assertEquals(4096, io.read(MiB, b));
            assertEquals(-Errno.EROFS, disk.prepareWrite(MiB, Io.vector(b), false, 1));
            disk.close();
            assertEquals(0, disk.closeFlushes());
            assertEquals(List.of("Read"), commands(log));
        } finally {
            server.close();
        }
    }

    @Test
    void aFailedFlushAtCloseIsLoggedAndCloseEnds() throws Exception {
        assumeTrue(ServerProcess.available("nbdkit"));
        Path sock = dir.resolve("n.sock");
        Path log = dir.resolve("n.log");
        // nbdkit's eval plugin: writes go nowhere, every FLUSH fails with EIO.
        Files.deleteIfExists(sock);
        ServerProcess server = ServerProcess.start(List.of("nbdkit", "-f", "-U", sock.toString(), "--filter=log", "eval",
                "get_size=echo 8M", "pread=dd if=/dev/zero count=$3 iflag=count_bytes 2>/dev/null",
                "pwrite=cat >/dev/null", "can_write=exit 0", "can_flush=exit 0", "flush=echo EIO injected >&2; exit 1",
                "logfile=" + log), sock, 0, dir);
        try {
            NbdBackend disk = NbdBackend.open("nbd+unix:///?socket=" + sock, NbdOptions.defaults());
            Io io = new Io(disk);
            NativeBuffer b = Io.buffer(4096);
            Io.fill(b, 7);
            assertEquals(4096, io.write(MiB, b));
            disk.close();
            assertEquals(1, disk.closeFlushes());
            assertEquals(List.of("Write", "Flush"), commands(log));
            assertTrue(Files.readString(log).contains("Flush id=2 return=-1 error=EIO"), Files.readString(log));
        } finally {
            server.close();
        }
    }
}
