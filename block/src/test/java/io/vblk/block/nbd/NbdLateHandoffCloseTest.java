package io.vblk.block.nbd;

import static io.vblk.block.nbd.HostileNbdServer.negotiate;
import static io.vblk.block.nbd.HostileNbdServer.request;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.EOFException;
import java.io.IOException;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import io.vblk.aio.IoVector;
import io.vblk.sys.Mapping;

/**
 * A reconnect that passed its stop check just before close set it, and handed its socket over
 * only after close had given up waiting for the reconnect thread and closed the connections
 * (rev14c L3): nobody adopts that socket any more, so the reconnect thread closes it as it ends;
 * it used to stay open for good (a descriptor and its TLS state leaked, the server's connection
 * never ended). The window is forced with the reconnect thread's test hook.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class NbdLateHandoffCloseTest {
    private final HostileNbdServer server = new HostileNbdServer("late-handoff-nbd");

    @AfterEach
    void stop() throws Exception {
        server.close();
    }

    @Test
    void aSocketHandedOverAfterCloseIsClosed() throws Exception {
        CountDownLatch reconnectEnded = new CountDownLatch(1);
        String address = server.serve((connection, in, out) -> {
            negotiate(in, out, 1 << 20);
            if (connection == 1) {
                request(in);
                return; // hang up on the first request: the client reconnects
            }
            try {
                while (true) {
                    request(in); // whatever the client says, until it closes the socket
                }
            } catch (EOFException | java.net.SocketException e) {
                reconnectEnded.countDown();
            }
        });
        NbdOptions options = NbdOptions.defaults().withRetryTimeoutMs(0).withDepth(4);
        NbdBackend disk = NbdBackend.open(address, options);
        CountDownLatch atHandoff = new CountDownLatch(1);
        CountDownLatch closed = new CountDownLatch(1);
        disk.beforeHandoff = () -> {
            atHandoff.countDown();
            try {
                closed.await(60, TimeUnit.SECONDS); // hands over only once close has returned
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        };
        Mapping buffer = Mapping.anonymous(4096, false);
        IoVector v = new IoVector(1);
        v.add(buffer.address(), 4096);
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        boolean submitted = false;
        while (atHandoff.getCount() > 0) {
            assertTrue(System.nanoTime() < deadline, "the client never reconnected");
            if (!submitted && disk.prepareRead(0, v, 1) == 0) {
                disk.submit();
                submitted = true;
            }
            disk.poll((u, r) -> { }, 4);
            disk.awaitCompletions(10);
        }
        disk.closeWithin(TimeUnit.MILLISECONDS.toNanos(100)); // gives up on the reconnect thread after its join
        closed.countDown();
        assertTrue(reconnectEnded.await(20, TimeUnit.SECONDS),
                "the socket the reconnect thread handed over after close was never closed");
        buffer.close();
    }
}
