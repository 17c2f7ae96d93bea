package io.vblk.block.nbd;

import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The test rig's server start returns only once the server takes connections (NbdFaultTest once
 * failed with "Connection refused": the rig returned when the socket file existed, which a server
 * creates at bind, before listen). Here a socket file a killed server left behind exists before
 * the new server even starts: a rig that looks at the file alone returns at once, every time.
 */
@SuppressWarnings("try") // the server is a resource the try block only keeps alive
class ServerProcessTest {
    @TempDir
    Path dir;

    @Test
    void aUnixSocketServerTakesConnectionsOnceStartReturnsEvenOverAStaleSocketFile() throws Exception {
        assumeTrue(ServerProcess.available("nbdkit"), "nbdkit is not installed (.ci/run installs it)");
        Path sock = dir.resolve("late.sock");
        // A stale socket file: bound, closed, never unlinked (as a SIGKILLed server leaves it).
        try (ServerSocketChannel stale = ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
            stale.bind(UnixDomainSocketAddress.of(sock));
        }
        assertTrue(Files.exists(sock));
        // The server comes up late and replaces the stale file.
        try (ServerProcess server = ServerProcess.start(List.of("sh", "-c",
                "sleep 0.5; rm -f '" + sock + "'; exec nbdkit -f -U '" + sock + "' memory 1M"), sock, 0, dir);
             SocketChannel probe = SocketChannel.open(StandardProtocolFamily.UNIX)) {
            assertTrue(probe.connect(UnixDomainSocketAddress.of(sock)), "connected");
        }
    }
}
