package io.vblk.block.nbd;

import static io.vblk.block.nbd.HostileNbdServer.request;
import static io.vblk.block.nbd.HostileNbdServer.negotiate;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import io.vblk.aio.IoVector;
import io.vblk.sys.Mapping;

/**
 * Closing an NBD disk while its reconnect thread waits in a handshake: the server hangs up on
 * the first request, then accepts the reconnect and never greets (a hung qemu-nbd). close
 * (export.remove, BlockDevice.close, shutdown) must not wait for that handshake: with a
 * connect_timeout_ms of 120 s (settable up to an hour) it used to wait in Thread.join for the
 * handshake's timeout, after a connect that had a timeout of its own (review rev12a, M2).
 */
@Timeout(value = 180, unit = TimeUnit.SECONDS)
class NbdReconnectCloseTest {
    private final HostileNbdServer server = new HostileNbdServer("reconnect-close-nbd");

    @AfterEach
    void stop() throws Exception {
        server.close();
    }

    @Test
    void closeDoesNotWaitForAReconnectsHandshake() throws Exception {
        String address = server.serve((connection, in, out) -> {
            if (connection == 1) {
                negotiate(in, out, 1 << 20);
                request(in);
                return; // hang up on the first request: the client reconnects
            }
            while (!server.closed()) {
                Thread.sleep(50); // accepted, never greets
            }
        });
        NbdOptions options = NbdOptions.defaults().withConnectTimeoutMs(120_000).withRetryTimeoutMs(0).withDepth(4);
        NbdBackend disk = NbdBackend.open(address, options);
        Mapping buffer = Mapping.anonymous(4096, false);
        IoVector v = new IoVector(1);
        v.add(buffer.address(), 4096);
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        boolean submitted = false;
        while (server.connections() < 2) {
            assertTrue(System.nanoTime() < deadline, "the client never reconnected");
            if (!submitted && disk.prepareRead(0, v, 1) == 0) {
                disk.submit();
                submitted = true;
            }
            disk.poll((u, r) -> { }, 4);
            disk.awaitCompletions(10);
        }
        Thread.sleep(300); // the helper is in the reconnect's handshake now
        Thread closer = new Thread(disk::close, "closer");
        closer.setDaemon(true);
        long start = System.nanoTime();
        closer.start();
        closer.join(20_000);
        if (closer.isAlive()) {
            StringBuilder where = new StringBuilder();
            for (StackTraceElement s : closer.getStackTrace()) {
                where.append("\n  at ").append(s);
            }
            server.close();
            fail("NbdBackend.close still waits after 20 s (connect timeout 120 s):" + where);
        }
        System.out.println("close took " + TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start) + " ms");
    }
}
