package io.vblk.sys;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class UnixSocketTest {
    @TempDir
    Path dir;

    @Test
    void passesBytesAndDescriptors() throws Exception {
        Path path = dir.resolve("s.sock");
        try (UnixSocket server = UnixSocket.listen(path, 1);
             UnixSocket client = UnixSocket.connect(path);
             UnixSocket peer = server.accept();
             EventFd event = EventFd.create(true)) {
            NativeBuffer out = new NativeBuffer(64);
            out.buffer().putLong(0, 0x0123456789ABCDEFL);
            assertEquals(8, client.send(out.address(), 8, new int[] {event.fd(), event.fd()}, 2));

            NativeBuffer in = new NativeBuffer(64);
            int[] fds = new int[UnixSocket.MAX_FDS];
            int[] count = new int[1];
            assertEquals(8, peer.receive(in.address(), 64, fds, count));
            assertEquals(0x0123456789ABCDEFL, in.buffer().getLong(0));
            assertEquals(2, count[0]);
            // The received descriptor is a new number for the same eventfd.
            try (EventFd received = EventFd.wrap(fds[0])) {
                received.signal();
                assertEquals(1, event.read());
            }
            Native.libc().close(fds[1]);

            int[] cred = peer.peerCredentials();
            assertEquals(Native.libc().getpid(), cred[0]);
            assertEquals(Native.libc().getuid(), cred[1]);

            client.shutdown();
            assertEquals(0, peer.receive(in.address(), 64, fds, count), "end of stream");
        }
        Files.deleteIfExists(path);
    }

    @Test
    void connectToMissingSocketCarriesErrno() {
        NativeException e = assertThrows(NativeException.class, () -> UnixSocket.connect(dir.resolve("none")));
        assertEquals(Errno.ENOENT, e.errno());
    }
}
