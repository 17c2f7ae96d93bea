package io.vblk.block.nbd;

import static io.vblk.block.nbd.NbdProtocol.*;
import static org.junit.jupiter.api.Assertions.*;

import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

import org.agrona.UnsafeApi;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import io.vblk.aio.IoVector;
import io.vblk.sys.Errno;
import io.vblk.sys.NativeBuffer;

/**
 * A hostile NBD server that answers a write as soon as it has read the command's header, while
 * the payload (24 MiB, more than the loopback socket buffers hold) is still leaving the client.
 * Before the fix the reply was taken: the write completed successfully with its payload half
 * sent, its slot and buffer went back for reuse, and the socket went on sending from them (the
 * next request's bytes, or a reused header, in the middle of the old payload). The contract: a
 * reply to a request still being sent is a protocol error; the connection is closed at once (no
 * byte of the buffer is sent after the request completed), the write fails with EIO exactly
 * once, and the disk reconnects and serves the next write whole. A real loopback socket and the
 * production client; the server is hand-written because no real server can be made to lie this
 * way.
 */
class NbdEarlyWriteReplyAttackTest {
    private static final int WRITE = 24 << 20;
    private static final byte DATA = 0x11;
    private static final byte REUSED = 0x66;

    private final HostileNbdServer server = new HostileNbdServer("hostile-nbd-early-reply");
    /** Released by the test once the first write completed: the lying connection reads on. */
    private final CountDownLatch drain = new CountDownLatch(1);
    /** Payload bytes the lying connection received after the release, and how many were the reused buffer's. */
    private final AtomicLong drained = new AtomicLong(-1);
    private final AtomicLong reusedBytesSent = new AtomicLong();
    /** Writes the honest connections received whole: {offset, length, first byte}. */
    private final List<long[]> honestWrites = new ArrayList<>();

    @AfterEach
    void stop() throws IOException {
        server.close();
    }

    private String serve() throws IOException {
        return server.serve((n, in, out) -> {
            HostileNbdServer.negotiate(in, out, 64 << 20, 512, 4096, 32 << 20); // the write goes in one command
            if (n == 1) {
                lie(in, out);
            } else {
                honest(in, out);
            }
        });
    }

    /** Reads the write's header only, answers it at once, then (released) reads what still comes. */
    private void lie(DataInputStream in, DataOutputStream out) throws IOException, InterruptedException {
        HostileNbdServer.Request r = HostileNbdServer.request(in);
        if (r.type() != CMD_WRITE) {
            return;
        }
        HostileNbdServer.simpleReply(out, r.cookie(), 0);
        drain.await(60, TimeUnit.SECONDS);
        // Whatever is still in flight from before the completion is the old payload; anything
        // the client sends after it from the reused buffer would carry REUSED.
        long total = 0;
        byte[] b = new byte[1 << 16];
        int got;
        while ((got = in.read(b)) > 0) {
            for (int i = 0; i < got; i++) {
                if (b[i] == REUSED) {
                    reusedBytesSent.incrementAndGet();
                }
            }
            total += got;
        }
        drained.set(total);
    }

    private void honest(DataInputStream in, DataOutputStream out) throws IOException {
        while (true) {
            HostileNbdServer.Request r = HostileNbdServer.request(in);
            if (r.type() != CMD_WRITE) {
                return; // a disconnect
            }
            byte[] payload = in.readNBytes(r.length());
            boolean uniform = true;
            for (byte x : payload) {
                uniform &= x == payload[0];
            }
            synchronized (honestWrites) {
                honestWrites.add(new long[] {r.offset(), payload.length, uniform ? payload[0] : -1});
            }
            HostileNbdServer.simpleReply(out, r.cookie(), 0);
        }
    }

    @Test
    void aReplyToAWriteStillBeingSentFailsItClosesTheConnectionAndNothingMoreIsSentFromItsBuffer()
            throws Exception {
        String address = serve();
        NbdOptions options = NbdOptions.defaults().withConnectTimeoutMs(1500).withRequestTimeoutMs(10_000)
                .withRetryTimeoutMs(10_000);
        try (NbdBackend disk = NbdBackend.open(address, options)) {
            assertEquals(32 << 20, disk.maxPayloadBytes());
            NativeBuffer buf = Io.buffer(WRITE);
            UnsafeApi.setMemory(buf.address(), WRITE, DATA);
            IoVector v = new IoVector(1);
            v.add(buf.address(), WRITE);
            assertEquals(0, disk.prepareWrite(0, v, 5));
            disk.submit();
            List<long[]> done = new ArrayList<>();
            long deadline = System.currentTimeMillis() + 30_000;
            while (done.isEmpty() && System.currentTimeMillis() < deadline) {
                disk.completionEvent().read();
                if (disk.poll((userData, result) -> done.add(new long[] {userData, result}), 64) == 0) {
                    disk.awaitCompletions(20);
                }
            }
            assertEquals(1, done.size(), "the write completed");
            assertEquals(5, done.get(0)[0]);
            assertEquals(-Errno.EIO, done.get(0)[1], "a write whose reply came before its payload left must fail");
            // The guest reuses the buffer at once; the lying connection reads on.
            UnsafeApi.setMemory(buf.address(), WRITE, REUSED);
            drain.countDown();
            for (int i = 0; i < 50; i++) {
                disk.poll((userData, result) -> done.add(new long[] {userData, result}), 64);
                disk.awaitCompletions(10);
            }
            assertEquals(1, done.size(), "completed exactly once");
            long waitUntil = System.currentTimeMillis() + 10_000;
            while (drained.get() < 0 && System.currentTimeMillis() < waitUntil) {
                Thread.sleep(10);
            }
            assertTrue(drained.get() >= 0, "the client never closed the lying connection");
            assertTrue(drained.get() < WRITE, "the payload was not fully sent (" + drained.get() + " bytes)");
            assertEquals(0, reusedBytesSent.get(), "bytes of the reused buffer went out after the completion");
            // The disk reconnects (an honest server now) and the next write goes whole.
            NativeBuffer next = Io.buffer(65536);
            UnsafeApi.setMemory(next.address(), 65536, (byte) 0x22);
            IoVector w = new IoVector(1);
            w.add(next.address(), 65536);
            assertEquals(0, disk.prepareWrite(1 << 20, w, 6));
            done.clear();
            disk.submit();
            deadline = System.currentTimeMillis() + 30_000;
            while (done.isEmpty() && System.currentTimeMillis() < deadline) {
                disk.submit();
                disk.completionEvent().read();
                if (disk.poll((userData, result) -> done.add(new long[] {userData, result}), 64) == 0) {
                    disk.awaitCompletions(20);
                }
            }
            assertEquals(1, done.size(), "the next write completed");
            assertEquals(65536, done.get(0)[1], "the next write, over the new connection");
            assertTrue(server.connections() >= 2, "reconnected");
            synchronized (honestWrites) {
                assertEquals(1, honestWrites.size());
                assertArrayEquals(new long[] {1 << 20, 65536, 0x22}, honestWrites.get(0));
            }
        }
    }
}
