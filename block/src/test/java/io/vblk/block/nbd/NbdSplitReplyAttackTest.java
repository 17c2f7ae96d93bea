package io.vblk.block.nbd;

import static io.vblk.block.nbd.NbdProtocol.*;
import static org.junit.jupiter.api.Assertions.*;

import java.io.DataOutputStream;
import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import io.vblk.aio.IoVector;
import io.vblk.sys.Errno;
import io.vblk.sys.NativeBuffer;

/**
 * A hostile NBD server against requests split above its maximum block size (NbdConnection
 * nextPart: a 16 KiB read goes out as four 4 KiB parts, one after the other, in one slot). The
 * server announces min 512 / preferred 4096 / max 4096 and then answers the parts wrongly: a
 * reply repeated after its part is done, a reply for the next part before that part was sent
 * (its cookie guessed: the sequence is only 32 bits plus the slot), a chunk that reaches into
 * the neighbouring part. The contract: the read fails with EIO (the protocol is broken, retry
 * timeout 0), completes exactly once, and no byte outside its buffer is written. Hand-written
 * server on a real loopback socket; the client is the production code.
 */
class NbdSplitReplyAttackTest {
    private static final int PART = 4096;
    private static final int READ = 4 * PART;
    private static final long READ_OFFSET = 64 << 10;

    private final HostileNbdServer server = new HostileNbdServer("hostile-nbd-split");
    /** Offsets and lengths of the read commands the server received, in order. */
    private final List<long[]> commands = new CopyOnWriteArrayList<>();

    interface Reply {
        void answer(DataOutputStream out, long cookie, long offset, int length, int index) throws IOException;
    }

    @AfterEach
    void stop() throws IOException {
        server.close();
    }

    private String serve(Reply reply) throws IOException {
        return server.serve((n, in, out) -> {
            // The maximum is a part: a 16 KiB read goes in four parts.
            HostileNbdServer.negotiate(in, out, 1 << 20, 512, PART, PART);
            int index = 0;
            while (true) {
                HostileNbdServer.Request r = HostileNbdServer.request(in);
                if (r.type() != CMD_READ) {
                    break; // a disconnect
                }
                commands.add(new long[] {r.offset(), r.length()});
                reply.answer(out, r.cookie(), r.offset(), r.length(), index++);
                out.flush();
            }
        });
    }

    private static void data(DataOutputStream out, int flags, long cookie, long offset, int payload, int fill)
            throws IOException {
        out.writeInt(STRUCTURED_REPLY_MAGIC);
        out.writeShort(flags);
        out.writeShort(REPLY_TYPE_OFFSET_DATA);
        out.writeLong(cookie);
        out.writeInt(8 + payload);
        out.writeLong(offset);
        byte[] b = new byte[payload];
        java.util.Arrays.fill(b, (byte) fill);
        out.write(b);
    }

    /** Byte the honest answer to the part at {@code offset} fills with. */
    private static int fillOf(long offset) {
        return (int) (1 + (offset - READ_OFFSET) / PART);
    }

    /**
     * Reads 16 KiB at 64 KiB into the middle of poisoned pages; returns the completions
     * (userData, result pairs), after checking that the pages around the buffer are untouched.
     */
    private List<long[]> read(Reply reply, NativeBuffer[] keep) throws Exception {
        String address = serve(reply);
        NbdOptions options = NbdOptions.defaults().withConnectTimeoutMs(1500).withRequestTimeoutMs(2000)
                .withRetryTimeoutMs(0);
        List<long[]> done = new ArrayList<>();
        try (NbdBackend disk = NbdBackend.open(address, options)) {
            assertEquals(PART, disk.maxPayloadBytes(), "the server's maximum was taken");
            NativeBuffer pages = Io.buffer(READ + 2 * PART);
            keep[0] = pages;
            Io.poison(pages);
            // Two segments, cut off the part boundary (6 KiB + 10 KiB), to exercise partStart.
            IoVector v = new IoVector(2);
            v.add(pages.address() + PART, 6 << 10);
            v.add(pages.address() + PART + (6 << 10), 10 << 10);
            assertEquals(0, disk.prepareRead(READ_OFFSET, v, 9));
            disk.submit();
            long deadline = System.currentTimeMillis() + 30_000;
            while (done.isEmpty() && System.currentTimeMillis() < deadline) {
                disk.completionEvent().read();
                if (disk.poll((userData, result) -> done.add(new long[] {userData, result}), 64) == 0) {
                    disk.awaitCompletions(50);
                }
            }
            // Whatever else the server sends, nothing completes a second time.
            for (int i = 0; i < 10; i++) {
                disk.poll((userData, result) -> done.add(new long[] {userData, result}), 64);
                disk.awaitCompletions(20);
            }
            assertEquals(1, done.size(), "the read completed exactly once");
            for (int i = 0; i < PART; i++) {
                assertEquals((byte) 0x5a, pages.buffer().getByte(i), "byte " + i + " before the read's buffer");
                assertEquals((byte) 0x5a, pages.buffer().getByte(PART + READ + i), "byte " + i + " after the read's buffer");
            }
        }
        return done;
    }

    /** Holds (the baseline): an honest server gets four parts in order, and each lands where it belongs. */
    @Test
    void anHonestServerSeesFourPartsAndEachLandsInPlace() throws Exception {
        NativeBuffer[] keep = new NativeBuffer[1];
        List<long[]> done = read((out, cookie, offset, length, index) ->
                data(out, REPLY_FLAG_DONE, cookie, offset, length, fillOf(offset)), keep);
        assertEquals(READ, done.get(0)[1]);
        assertEquals(4, commands.size());
        for (int p = 0; p < 4; p++) {
            assertEquals(READ_OFFSET + (long) p * PART, commands.get(p)[0]);
            assertEquals(PART, commands.get(p)[1]);
            for (int i = 0; i < PART; i++) {
                assertEquals((byte) (p + 1), keep[0].buffer().getByte(PART + p * PART + i), "part " + p + " byte " + i);
            }
        }
    }

    /**
     * Holds: the server repeats its reply to the first part after that part is done. The
     * repeat names the old sequence: whether the slot is between parts (a protocol error, the
     * request sent on after the reconnect) or has sent the next part (a protocol error that
     * fails what was on the wire), the repeat's bytes never land, and the read completes once.
     */
    @Test
    void aReplyRepeatedAfterItsPartIsDoneNeverLandsAndTheReadCompletesOnce() throws Exception {
        NativeBuffer[] keep = new NativeBuffer[1];
        List<long[]> done = read((out, cookie, offset, length, index) -> {
            data(out, REPLY_FLAG_DONE, cookie, offset, length, fillOf(offset));
            if (index == 0) {
                data(out, REPLY_FLAG_DONE, cookie, offset, length, 0x77);
            }
        }, keep);
        long result = done.get(0)[1];
        assertTrue(result == READ || result == -Errno.EIO, "completed or failed: " + result);
        for (int i = 0; i < PART; i++) {
            assertEquals((byte) 1, keep[0].buffer().getByte(PART + i), "part 0 byte " + i + ": the repeat landed");
        }
    }

    /**
     * Holds: the server answers the next part (guessing its cookie: sequence + 1) right after
     * the current one, before its command arrived. If the guess is parsed while the slot is
     * between parts (QUEUED) it names no request on the wire: a protocol error and a reconnect,
     * the request (not on the wire) sent on from where it stands; if it is parsed once the part
     * was sent, the client cannot tell it from a fast server, and the data is the server's to
     * choose anyway; its real answer then names an old sequence: a protocol error. Either way
     * the read completes once, whole or EIO, with nothing outside its buffer written, and each
     * part holds one answer of the server for that part.
     */
    @Test
    void aReplyForTheNextPartBeforeItsCommandCompletesTheReadOnce() throws Exception {
        NativeBuffer[] keep = new NativeBuffer[1];
        List<long[]> done = read((out, cookie, offset, length, index) -> {
            data(out, REPLY_FLAG_DONE, cookie, offset, length, fillOf(offset));
            if (index == 0) {
                data(out, REPLY_FLAG_DONE, cookie + (1L << 32), offset + PART, length, 0x77);
            }
        }, keep);
        long result = done.get(0)[1];
        assertTrue(result == READ || result == -Errno.EIO, "completed or failed: " + result);
        if (result == READ) {
            for (int p = 0; p < 4; p++) {
                byte first = keep[0].buffer().getByte(PART + p * PART);
                assertTrue(first == p + 1 || first == 0x77, "part " + p + ": " + first);
                for (int i = 0; i < PART; i++) {
                    assertEquals(first, keep[0].buffer().getByte(PART + p * PART + i), "part " + p + " byte " + i);
                }
            }
        }
    }

    /** Holds: a chunk of part 2 that reaches back into part 1 (relative to the request it would fit). */
    @Test
    void aChunkReachingIntoTheNeighbouringPartFailsTheReadOnce() throws Exception {
        List<long[]> done = read((out, cookie, offset, length, index) -> {
            if (index == 1) {
                data(out, REPLY_FLAG_DONE, cookie, offset - 512, length, 0x77);
            } else {
                data(out, REPLY_FLAG_DONE, cookie, offset, length, fillOf(offset));
            }
        }, new NativeBuffer[1]);
        assertEquals(-Errno.EIO, done.get(0)[1]);
    }

    /** Holds: an error chunk for the third part fails the whole read, and no fourth part is sent. */
    @Test
    void anErrorInAMiddlePartFailsTheReadAndSendsNoMoreParts() throws Exception {
        List<long[]> done = read((out, cookie, offset, length, index) -> {
            if (index == 2) {
                out.writeInt(STRUCTURED_REPLY_MAGIC);
                out.writeShort(REPLY_FLAG_DONE);
                out.writeShort(REPLY_TYPE_ERROR);
                out.writeLong(cookie);
                out.writeInt(6);
                out.writeInt(Errno.ENOSPC);
                out.writeShort(0);
            } else {
                data(out, REPLY_FLAG_DONE, cookie, offset, length, fillOf(offset));
            }
        }, new NativeBuffer[1]);
        assertTrue(done.get(0)[1] < 0, "failed: " + done.get(0)[1]);
        assertEquals(3, commands.size(), "no part after the failed one");
    }
}
