package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.Native;
import io.vblk.sys.NativeBuffer;
import io.vblk.sys.UnixSocket;
import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.TestGuest;

/**
 * irev3, outside review: the backend channel (SET_BACKEND_REQ_FD) is a socket the frontend made
 * and shares: it may be blocking, and the frontend may write into it itself through its own
 * descriptor of the same socket. "Writable" from poll(2) then says nothing about the moment of
 * the send: the frontend's writer, woken by the same room, can fill the buffer first, and a
 * blocking send would wait until the frontend reads again, which a hostile one never does. The
 * caller is an online resize: an RPC handler holding the daemon's lock for changes, and the
 * session's monitor (which the export's removal and the daemon's shutdown need).
 *
 * <p>The test plays that frontend: one thread keeps the socket's buffer full through the
 * frontend's own descriptor, the reader makes room in bursts, then stops; after each burst the
 * resize must return (told or not), never stay blocked.
 */
class BackendChannelAttackTest {
    private static final long PF_BACKEND_REQ = 1L << 5;
    private static final int SET_BACKEND_REQ_FD = 21;
    /** Rounds of the race: before the fix one in about three runs of 8 rounds hung; the unit test below is the sure one. */
    private static final int ROUNDS = 4;

    @TempDir
    Path dir;

    /**
     * The property the race needs, made deterministic: on the frontend's blocking socket with its
     * buffer full, the channel's send (what follows a poll that said "writable") returns at once,
     * not sent, instead of blocking until the frontend reads.
     */
    @Test
    void theChannelsSendNeverBlocksOnAFullBlockingSocket() throws Exception {
        Path pairPath = dir.resolve("unit.sock");
        try (UnixSocket listener = UnixSocket.listen(pairPath, 1);
             UnixSocket frontendEnd = UnixSocket.connect(pairPath);
             UnixSocket backendEnd = listener.accept()) {
            frontendEnd.setNonBlocking(); // the test's own end: its drain below must never wait
            int fd = io.vblk.sys.FileSize.duplicate(backendEnd.fd()); // the channel closes its own, as vblk's received one
            BackendChannel channel = new BackendChannel(fd);
            // Fill it through a non-blocking send of the same socket: the mode stays blocking.
            NativeBuffer junk = new NativeBuffer(4096);
            while (backendEnd.sendNonBlocking(junk.address(), 4096) > 0) {
                // until EAGAIN
            }
            CompletableFuture<Boolean> sent = CompletableFuture.supplyAsync(channel::sendConfigChange);
            boolean returned;
            try {
                // 30 s: a hang guard (a blocking send waits for ever; a loaded machine only slows the refusal).
                assertFalse(sent.get(30, TimeUnit.SECONDS), "nothing sent into a full channel");
                returned = true;
            } catch (TimeoutException e) {
                returned = false;
                NativeBuffer sink = new NativeBuffer(1 << 20);
                while (!sent.isDone()) {
                    Native.libc().read(frontendEnd.fd(), sink.address(), 1 << 20);
                    Thread.sleep(1);
                }
            }
            channel.close();
            assertTrue(returned, "the send blocked on the frontend's full, blocking socket");
        }
    }

    @Test
    void aFrontendRacingItsOwnWriterIntoTheBackendChannelNeverBlocksAResize() throws Exception {
        Path pairPath = dir.resolve("pair.sock");
        AtomicBoolean stop = new AtomicBoolean();
        try (ServerRig rig = ServerRig.start(dir, 1); TestGuest g = new TestGuest();
             QemuFlow qemu = new QemuFlow(rig.connect(), g, 1);
             UnixSocket listener = UnixSocket.listen(pairPath, 1);
             UnixSocket frontendEnd = UnixSocket.connect(pairPath);
             UnixSocket backendEnd = listener.accept()) {
            BlkQueue q = g.queue(0, 128, true);
            qemu.init(VhostUserProtocolTest.ALL_PROTOCOL | PF_BACKEND_REQ, q);
            // Blocking, as the frontend made it; vblk gets its own descriptor of the same socket.
            assertEquals(0, qemu.f.acked(SET_BACKEND_REQ_FD, null, backendEnd.fd()));
            frontendEnd.setNonBlocking(); // the test's own end: its drains never wait
            Thread filler = new Thread(() -> {
                NativeBuffer junk = new NativeBuffer(64 << 10);
                while (!stop.get()) {
                    if (Native.libc().write(backendEnd.fd(), junk.address(), 64 << 10) < 0) {
                        return;
                    }
                }
            }, "frontend-filler");
            filler.setDaemon(true);
            filler.start();
            NativeBuffer sink = new NativeBuffer(1 << 20);
            int hung = 0;
            int told = 0;
            try {
                for (int round = 0; round < ROUNDS && hung == 0; round++) {
                    Thread.sleep(20); // the filler fills the buffer again
                    long size = ServerRig.IMAGE_BYTES - 512L * (round % 2);
                    CompletableFuture<Boolean> resize = CompletableFuture.supplyAsync(() -> rig.server.resize(size));
                    Thread.sleep(5);
                    // Room: the resize's poll and the frontend's writer wake together.
                    Native.libc().read(frontendEnd.fd(), sink.address(), 1 << 20);
                    try {
                        // Past the channel's own wait (1 s) only a send blocked for good keeps it; 30 s
                        // more (a hang guard): a loaded machine may be seconds late to run the resize.
                        told += resize.get(BackendChannel.SEND_WAIT_MS + 30_000, TimeUnit.MILLISECONDS) ? 1 : 0;
                    } catch (TimeoutException e) {
                        hung++;
                        // Let it go, so the rig can close: read until the resize returns.
                        while (!resize.isDone()) {
                            Native.libc().read(frontendEnd.fd(), sink.address(), 1 << 20);
                            Thread.sleep(1);
                        }
                    }
                }
            } finally {
                stop.set(true);
                // Unblock the filler: make room until it sees the stop.
                while (filler.isAlive()) {
                    Native.libc().read(frontendEnd.fd(), sink.address(), 1 << 20);
                    filler.join(10);
                }
            }
            assertEquals(0, hung, "a resize stayed blocked in its send to the frontend's channel (told " + told + ")");
            assertFalse(filler.isAlive());
            assertTrue(rig.serving());
        }
    }
}
