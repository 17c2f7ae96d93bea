package io.vblk.block.nbd;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.NativeBuffer;

/**
 * Closing an NBD disk whose server is connected and silent: it took the handshake, then answers
 * no read (a real nbdkit whose delay filter holds every read for an hour; writes still answer,
 * so the connection is live, not lost). Close (export.remove, BlockDevice.close(ms), shutdown)
 * waited for the request timeout, which may be set to hours: here 600 s, so a close that still
 * waits for it fails the 20 s hang guard. Now close keeps to its own bound (the caller's, or
 * {@code vblk.aio.closeDrainMs}), shuts the sockets down, and fails what the server held. The
 * waits are hang guards, not timed assertions.
 */
@Timeout(value = 180, unit = TimeUnit.SECONDS)
@SuppressWarnings("try") // the server is a resource the try blocks only keep alive
class NbdSilentServerCloseTest {
    @TempDir
    Path dir;

    @BeforeAll
    static void serverPresent() {
        assumeTrue(ServerProcess.available("nbdkit"), "nbdkit is not installed (.ci/run installs it)");
    }

    @AfterEach
    void clear() {
        System.clearProperty("vblk.aio.closeDrainMs");
    }

    /** closeWithin, as BlockDevice.close(ms) calls it with what is left of its deadline. */
    @Test
    void closeWithinKeepsToItsBoundWhateverTheRequestTimeout() throws Exception {
        try (ServerProcess server = silentServer()) {
            NbdBackend disk = NbdBackend.open("nbd+unix:///?socket=" + dir.resolve("silent.sock"),
                    NbdOptions.defaults().withRequestTimeoutMs(600_000).withDepth(8));
            readsHeld(disk, 4);
            closeWithinGuard(disk, () -> disk.closeWithin(TimeUnit.MILLISECONDS.toNanos(500)), "closeWithin(500 ms)");
            assertEquals(0, disk.inFlight(), "the held reads failed at close");
            assertTrue(disk.closedDrained());
        }
    }

    /**
     * Plain close (no deadline of the caller's) keeps to {@code vblk.aio.closeDrainMs}; here the
     * request timeout is short, so the client is dropping its silent connection and reconnecting
     * (resending the reads to a server that holds them again) while close runs: no socket is
     * left open behind it, whether a reconnect was in flight or not.
     */
    @Test
    void closeWhileReconnectingToASilentServerLeavesNoSocket() throws Exception {
        try (ServerProcess server = silentServer()) {
            long socketsBefore = sockets();
            System.setProperty("vblk.aio.closeDrainMs", "1500");
            NbdBackend disk = NbdBackend.open("nbd+unix:///?socket=" + dir.resolve("silent.sock"),
                    NbdOptions.defaults().withRequestTimeoutMs(200).withRetryTimeoutMs(600_000).withDepth(8));
            readsHeld(disk, 4);
            // A few rounds of drop, reconnect and resend.
            long until = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(1200);
            while (System.nanoTime() - until < 0) {
                disk.poll((u, r) -> fail("a held read completed: " + u + " " + r), 8);
                disk.awaitCompletions(10);
            }
            closeWithinGuard(disk, disk::close, "close()");
            assertEquals(0, disk.inFlight());
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (sockets() != socketsBefore) {
                assertTrue(System.nanoTime() < deadline, "a socket stayed open after close: " + sockets() + " now, "
                        + socketsBefore + " before");
                Thread.sleep(10);
            }
        }
    }

    private ServerProcess silentServer() throws IOException {
        return ServerProcess.nbdkit(dir.resolve("silent.sock"), List.of("delay"), "8M", List.of("rdelay=3600"));
    }

    /** Writes one block (answered: the connection is live), then submits {@code n} reads the server holds. */
    private static void readsHeld(NbdBackend disk, int n) {
        Io io = new Io(disk);
        NativeBuffer b = Io.buffer(4096);
        Io.fill(b, 3);
        assertEquals(4096, io.write(0, b), "writes are answered");
        for (int i = 0; i < n; i++) {
            Io.check(disk.prepareRead(4096L * i, Io.vector(Io.buffer(4096)), 100 + i));
        }
        disk.submit();
        disk.poll((u, r) -> fail("a held read completed: " + u + " " + r), 8);
        assertEquals(n, disk.inFlight(), "the reads are with the server");
    }

    private static void closeWithinGuard(NbdBackend disk, Runnable close, String what) throws InterruptedException {
        Thread closer = new Thread(close, "closer");
        closer.setDaemon(true);
        closer.start();
        closer.join(20_000);
        if (closer.isAlive()) {
            StringBuilder where = new StringBuilder();
            for (StackTraceElement s : closer.getStackTrace()) {
                where.append("\n  at ").append(s);
            }
            fail(what + " of a disk on a silent server still waits after 20 s (request timeout or retry time 600 s):" + where);
        }
    }

    /** The process's open sockets (/proc/self/fd links to socket:[...]). */
    private static long sockets() throws IOException {
        try (Stream<Path> fds = Files.list(Path.of("/proc/self/fd"))) {
            return fds.filter(fd -> {
                try {
                    return Files.readSymbolicLink(fd).toString().startsWith("socket:");
                } catch (IOException e) {
                    return false; // closed meanwhile
                }
            }).count();
        }
    }
}
