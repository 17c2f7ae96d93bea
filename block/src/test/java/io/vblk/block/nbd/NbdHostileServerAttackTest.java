package io.vblk.block.nbd;

import static io.vblk.block.nbd.HostileNbdServer.greet;
import static io.vblk.block.nbd.HostileNbdServer.negotiate;
import static io.vblk.block.nbd.HostileNbdServer.option;
import static io.vblk.block.nbd.HostileNbdServer.reply;
import static io.vblk.block.nbd.HostileNbdServer.request;
import static io.vblk.block.nbd.NbdProtocol.*;
import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * An NBD server written to attack the client's negotiation: each case is a real TCP server on
 * the loopback whose handshake is hostile (no real server misbehaves on purpose, so this one is
 * scripted on the {@link HostileNbdServer} rig; the client side is the production code, over a
 * real socket). The contract under test: opening a disk is bounded by the connect timeout
 * whatever the server sends, whether it stalls, trickles or never stops talking.
 */
class NbdHostileServerAttackTest {
    private static final int CONNECT_TIMEOUT_MS = 1500;
    /** How long a test waits before calling the open hung: far beyond the connect timeout. */
    private static final long HUNG_S = 60;

    private final HostileNbdServer server = new HostileNbdServer("hostile-nbd");

    /** What a connection says (one connection's script: every connection runs the same). */
    interface Script {
        void run(DataInputStream in, DataOutputStream out) throws IOException, InterruptedException;
    }

    @AfterEach
    void stop() throws IOException {
        server.close();
    }

    private String serve(Script script) throws IOException {
        return server.serve((connection, in, out) -> script.run(in, out));
    }

    /** Opens {@code address} on another thread; returns the failure, or fails the test if it hangs or succeeds. */
    private UncheckedIOException openFails(String address) throws Exception {
        NbdOptions options = NbdOptions.defaults().withConnectTimeoutMs(CONNECT_TIMEOUT_MS);
        Future<Object> open = server.pool().submit(() -> {
            try (NbdBackend disk = NbdBackend.open(address, options)) {
                return disk;
            } catch (UncheckedIOException e) {
                return e;
            }
        });
        Object result;
        try {
            result = open.get(HUNG_S, TimeUnit.SECONDS);
        } catch (TimeoutException e) {
            open.cancel(true);
            server.close();
            throw new AssertionError("the open is still negotiating " + HUNG_S + " s after a connect timeout of "
                    + CONNECT_TIMEOUT_MS + " ms: a hostile server holds the opening thread for as long as it likes");
        }
        assertInstanceOf(UncheckedIOException.class, result, "the open of a hostile server must fail");
        return (UncheckedIOException) result;
    }

    @Test
    void aServerThatNeverEndsItsGoRepliesCannotHoldTheOpenPastTheConnectTimeout() throws Exception {
        // proto.md: replies before the final ACK of NBD_OPT_GO may be of any number; a server
        // that sends them without end (here: zero-length REP_INFO, 20 bytes each, written in
        // bulk, so the client's socket never runs dry and the client never waits) must still
        // cost the client no more than its connect timeout.
        byte[] block = new byte[20 * 4096];
        ByteBuffer b = ByteBuffer.wrap(block);
        for (int i = 0; i < 4096; i++) {
            b.putLong(OPTION_REPLY_MAGIC).putInt(OPT_GO).putInt(REP_INFO).putInt(0);
        }
        String address = serve((in, out) -> {
            greet(in, out);
            int code = option(in);
            reply(out, code, REP_ACK, 0); // structured replies
            out.flush();
            option(in); // NBD_OPT_GO
            while (!server.closed()) {
                out.write(block);
            }
        });
        UncheckedIOException e = openFails(address);
        assertTrue(e.getMessage().contains("in time"), e.getMessage());
    }

    @Test
    void aServerThatTricklesItsGreetingIsCutOffAtTheConnectTimeout() throws Exception {
        String address = serve((in, out) -> {
            byte[] greeting = ByteBuffer.allocate(18).putLong(NBDMAGIC).putLong(IHAVEOPT)
                    .putShort((short) (FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)).array();
            for (byte g : greeting) {
                out.write(g);
                out.flush();
                Thread.sleep(400);
            }
            in.readInt();
            Thread.sleep(HUNG_S * 1000);
        });
        UncheckedIOException e = openFails(address);
        assertTrue(e.getMessage().contains("in time"), e.getMessage());
    }

    @Test
    void anOptionReplyAnnouncingGigabytesIsSkippedOnlyWithinTheConnectTimeout() throws Exception {
        // A reply longer than the client reads is skipped; the server streams its 2 GiB as fast
        // as it can, then garbage: the open fails (at the deadline or at the garbage), never hangs.
        byte[] block = new byte[256 << 10];
        String address = serve((in, out) -> {
            greet(in, out);
            int code = option(in);
            reply(out, code, REP_ACK, Integer.MAX_VALUE);
            while (!server.closed()) {
                out.write(block);
            }
        });
        openFails(address);
    }

    @Test
    void aServerThatAcceptsStartTlsThenFallsSilentIsCutOffAtTheConnectTimeout() throws Exception {
        String address = serve((in, out) -> {
            greet(in, out);
            int code = option(in);
            assertEquals(OPT_STARTTLS, code);
            reply(out, code, REP_ACK, 0);
            out.flush();
            in.readNBytes(1 << 20); // swallows the ClientHello, answers nothing
        });
        UncheckedIOException e = openFails(address.replace("nbd://", "nbds://"));
        assertTrue(e.getMessage().contains("in time"), e.getMessage());
    }

    @Test
    void aServerThatAnswersStartTlsWithGarbageFailsTheOpenNeverHangsIt() throws Exception {
        byte[] garbage = new byte[64 << 10];
        java.util.Arrays.fill(garbage, (byte) 0x16); // a handshake record type, then nonsense lengths
        String address = serve((in, out) -> {
            greet(in, out);
            int code = option(in);
            reply(out, code, REP_ACK, 0);
            while (!server.closed()) {
                out.write(garbage);
            }
        });
        openFails(address.replace("nbd://", "nbds://"));
    }

    @Test
    void aNegativeOptionReplyLengthIsRefused() throws Exception {
        String address = serve((in, out) -> {
            greet(in, out);
            int code = option(in);
            reply(out, code, REP_ACK, -4);
            out.flush();
            Thread.sleep(HUNG_S * 1000);
        });
        UncheckedIOException e = openFails(address);
        assertTrue(e.getMessage().contains("out of range"), e.getMessage());
    }

    @Test
    void aServerThatFloodsChunksForOneReadCannotHoldTheIoThreadsPoll() throws Exception {
        // In the transmission phase the server answers a read with structured NONE chunks that
        // never say DONE, as fast as it can (proto.md allows several chunks per request). Each
        // is well formed, so nothing ends the connection; the I/O thread must still return from
        // its poll (other queues and devices share that thread) and time the read out.
        byte[] flood = new byte[20 * 8192];
        String address = serve((in, out) -> {
            negotiate(in, out, 1 << 20);
            long cookie = request(in).cookie();
            ByteBuffer b = ByteBuffer.wrap(flood);
            while (b.hasRemaining()) {
                b.putInt(STRUCTURED_REPLY_MAGIC).putShort((short) 0).putShort((short) REPLY_TYPE_NONE).putLong(cookie)
                        .putInt(0);
            }
            while (!server.closed()) {
                out.write(flood);
            }
        });
        NbdOptions options = NbdOptions.defaults().withConnectTimeoutMs(CONNECT_TIMEOUT_MS).withRequestTimeoutMs(1000)
                .withRetryTimeoutMs(0);
        try (NbdBackend disk = NbdBackend.open(address, options)) {
            io.vblk.sys.NativeBuffer buffer = Io.buffer(4096);
            assertEquals(0, disk.prepareRead(0, Io.vector(buffer), 7));
            disk.submit();
            Future<Long> polls = server.pool().submit(() -> {
                java.util.Map<Long, Long> results = new java.util.HashMap<>();
                while (results.isEmpty()) {
                    disk.poll(results::put, 16);
                }
                return results.get(7L);
            });
            try {
                assertEquals(-io.vblk.sys.Errno.EIO, polls.get(HUNG_S, TimeUnit.SECONDS), "the flooded read times out");
            } catch (TimeoutException e) {
                server.close();
                throw new AssertionError("a server flooding well-formed chunks held the I/O thread's poll for " + HUNG_S
                        + " s, past a request timeout of 1 s");
            }
        }
    }

    @Test
    @SuppressWarnings("try") // the nbdkit server is a resource the try block only keeps alive
    void aFloodingServerCannotStarveAnotherDiskOnTheSameIoThread() throws Exception {
        // One thread drives two disks, as an I/O thread does. Disk A's server answers a read
        // with zero-length data chunks that never say DONE, written in bulk without end (each
        // well formed, so nothing drops the connection, and the request timeout is far off):
        // every poll of A finds a full socket. A poll reads at most a round's worth
        // (NbdConnection.READS_PER_CALL) and returns, so disk B, on a real nbdkit, keeps
        // completing its reads.
        assumeTrue(ServerProcess.available("nbdkit"), "nbdkit is not installed (.ci/run installs it)");
        byte[] flood = new byte[28 * 8192]; // whole 28-byte chunks
        String address = serve((in, out) -> {
            negotiate(in, out, 1 << 20);
            HostileNbdServer.Request read = request(in);
            long cookie = read.cookie();
            long offset = read.offset();
            ByteBuffer b = ByteBuffer.wrap(flood);
            while (b.hasRemaining()) {
                b.putInt(STRUCTURED_REPLY_MAGIC).putShort((short) 0).putShort((short) REPLY_TYPE_OFFSET_DATA)
                        .putLong(cookie).putInt(8).putLong(offset);
            }
            while (!server.closed()) {
                out.write(flood);
            }
        });
        java.nio.file.Path dir = java.nio.file.Files.createTempDirectory("vblk-flood");
        java.nio.file.Path sock = dir.resolve("b.sock");
        NbdOptions flooded = NbdOptions.defaults().withConnectTimeoutMs(CONNECT_TIMEOUT_MS).withRequestTimeoutMs(120_000)
                .withRetryTimeoutMs(0);
        try (ServerProcess nbdkit = ServerProcess.nbdkit(sock, java.util.List.of(), "1M", java.util.List.of());
             NbdBackend a = NbdBackend.open(address, flooded);
             NbdBackend b = NbdBackend.open("nbd+unix:///?socket=" + sock, NbdOptions.defaults())) {
            io.vblk.sys.NativeBuffer abuf = Io.buffer(4096);
            io.vblk.sys.NativeBuffer bbuf = Io.buffer(4096);
            assertEquals(0, a.prepareRead(0, Io.vector(abuf), 1));
            a.submit();
            int reads = 200;
            Future<Integer> thread = server.pool().submit(() -> {
                java.util.Map<Long, Long> results = new java.util.HashMap<>();
                int done = 0;
                for (int i = 0; i < reads; i++) {
                    assertEquals(0, b.prepareRead(4096L * (i % 256), Io.vector(bbuf), 100 + i));
                    b.submit();
                    while (!results.containsKey(100L + i)) {
                        a.acknowledgeCompletions(); // as if A's socket woke the thread: it is always readable
                        a.poll(results::put, 16);
                        b.acknowledgeCompletions();
                        b.poll(results::put, 16);
                    }
                    assertEquals(4096L, results.get(100L + i), "disk B's read " + i);
                    done++;
                }
                assertFalse(results.containsKey(1L), "disk A's flooded read is still open");
                return done;
            });
            try {
                assertEquals(reads, thread.get(HUNG_S, TimeUnit.SECONDS));
            } catch (TimeoutException e) {
                server.close();
                throw new AssertionError("a server flooding disk A held the shared thread: disk B's reads did not"
                        + " complete in " + HUNG_S + " s");
            }
            server.close();
        }
    }

    /** One chunk of a structured reply. */
    private static void chunk(DataOutputStream out, int flags, int type, long cookie, int length) throws IOException {
        out.writeInt(STRUCTURED_REPLY_MAGIC);
        out.writeShort(flags);
        out.writeShort(type);
        out.writeLong(cookie);
        out.writeInt(length);
    }

    interface Reply {
        /** Answers the read of {@code length} bytes at {@code offset} with {@code cookie}. */
        void answer(DataOutputStream out, long cookie, long offset, int length) throws IOException;
    }

    private static final int READ_OFFSET = 64 << 10;
    private static final int READ_LENGTH = 4096;

    /**
     * Reads 4 KiB at 64 KiB from a server that answers with {@code reply}, into the middle page
     * of three poisoned pages; returns the read's result and checks that neither neighbour page
     * was touched (a chunk outside its read must never reach memory outside the read).
     */
    private long readAnsweredBy(Reply reply) throws Exception {
        String address = serve((in, out) -> {
            negotiate(in, out, 1 << 20);
            while (!server.closed()) {
                HostileNbdServer.Request r = request(in);
                if (r.type() != CMD_READ) {
                    continue; // a disconnect
                }
                reply.answer(out, r.cookie(), r.offset(), r.length());
                out.flush();
            }
        });
        NbdOptions options = NbdOptions.defaults().withConnectTimeoutMs(CONNECT_TIMEOUT_MS).withRequestTimeoutMs(2000)
                .withRetryTimeoutMs(0);
        try (NbdBackend disk = NbdBackend.open(address, options)) {
            io.vblk.sys.NativeBuffer pages = Io.buffer(3 * 4096);
            Io.poison(pages);
            io.vblk.aio.IoVector v = new io.vblk.aio.IoVector(1);
            v.add(pages.address() + 4096, READ_LENGTH);
            assertEquals(0, disk.prepareRead(READ_OFFSET, v, 9));
            Io io = new Io(disk);
            long result = io.await(1, 30_000).getOrDefault(9L, Long.MIN_VALUE);
            assertTrue(result != Long.MIN_VALUE, "the read completed");
            for (int i = 0; i < 4096; i++) {
                assertEquals((byte) 0x5a, pages.buffer().getByte(i), "byte " + i + " before the read's buffer");
                assertEquals((byte) 0x5a, pages.buffer().getByte(8192 + i), "byte " + i + " after the read's buffer");
            }
            return result;
        }
    }

    private static void data(DataOutputStream out, int flags, long cookie, long offset, int payload) throws IOException {
        chunk(out, flags, REPLY_TYPE_OFFSET_DATA, cookie, 8 + payload);
        out.writeLong(offset);
        out.write(new byte[payload]);
    }

    @Test
    void aDataChunkBeforeItsReadFailsTheReadAndTouchesNothing() throws Exception {
        assertEquals(-io.vblk.sys.Errno.EIO, readAnsweredBy((out, cookie, offset, length) ->
                data(out, REPLY_FLAG_DONE, cookie, offset - 512, length)));
    }

    @Test
    void aDataChunkPastTheEndOfItsReadFailsTheReadAndTouchesNothing() throws Exception {
        assertEquals(-io.vblk.sys.Errno.EIO, readAnsweredBy((out, cookie, offset, length) ->
                data(out, REPLY_FLAG_DONE, cookie, offset + 512, length)));
    }

    @Test
    void aDataChunkShorterThanItsOffsetFieldFailsTheRead() throws Exception {
        assertEquals(-io.vblk.sys.Errno.EIO, readAnsweredBy((out, cookie, offset, length) -> {
            chunk(out, REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, cookie, 4);
            out.writeInt((int) offset);
        }));
    }

    @Test
    void aDataChunkAnnouncing4GiBFailsTheRead() throws Exception {
        assertEquals(-io.vblk.sys.Errno.EIO, readAnsweredBy((out, cookie, offset, length) -> {
            chunk(out, REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, cookie, -1);
            out.writeLong(offset);
            out.write(new byte[length]);
        }));
    }

    @Test
    void aHoleChunkOutsideItsReadOrOfTheWrongLengthFailsTheRead() throws Exception {
        assertEquals(-io.vblk.sys.Errno.EIO, readAnsweredBy((out, cookie, offset, length) -> {
            chunk(out, REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_HOLE, cookie, 12);
            out.writeLong(offset + 2048);
            out.writeInt(length); // 2 KiB past the read's end
        }));
        assertEquals(-io.vblk.sys.Errno.EIO, readAnsweredBy((out, cookie, offset, length) -> {
            chunk(out, REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_HOLE, cookie, 8);
            out.writeLong(offset);
        }));
    }

    @Test
    void aReadDoneBeforeItIsCoveredFails() throws Exception {
        assertEquals(-io.vblk.sys.Errno.EIO, readAnsweredBy((out, cookie, offset, length) ->
                data(out, REPLY_FLAG_DONE, cookie, offset, length / 2)));
    }

    @Test
    void anErrorChunkWithoutItsErrorFieldFailsTheReadWithEio() throws Exception {
        assertEquals(-io.vblk.sys.Errno.EIO, readAnsweredBy((out, cookie, offset, length) ->
                chunk(out, REPLY_FLAG_DONE, REPLY_TYPE_ERROR, cookie, 0)));
    }

    @Test
    void aReadCoveredByChunksInAnyOrderSucceeds() throws Exception {
        // The control case: the same server, well-behaved (two chunks, second half first).
        assertEquals(READ_LENGTH, readAnsweredBy((out, cookie, offset, length) -> {
            data(out, 0, cookie, offset + length / 2, length / 2);
            data(out, REPLY_FLAG_DONE, cookie, offset, length / 2);
        }));
    }

    @Test
    void overlappingChunksThatAddUpToTheReadDoNotPassForAWholeRead() throws Exception {
        // proto.md: a server MUST NOT send overlapping chunks for a read; a client that counts
        // bytes only is fooled: [0, 2 KiB) twice "covers" 4 KiB, and [2 KiB, 4 KiB) keeps
        // whatever the guest's buffer held before.
        assertEquals(-io.vblk.sys.Errno.EIO, readAnsweredBy((out, cookie, offset, length) -> {
            data(out, 0, cookie, offset, length / 2);
            data(out, REPLY_FLAG_DONE, cookie, offset, length / 2);
        }));
    }

    @Test
    void aReadInManySmallChunksInOrderSucceeds() throws Exception {
        // In order, every chunk extends the one before: 64 chunks of 64 bytes stay one range.
        assertEquals(READ_LENGTH, readAnsweredBy((out, cookie, offset, length) -> {
            for (int i = 0; i < 64; i++) {
                data(out, i == 63 ? REPLY_FLAG_DONE : 0, cookie, offset + 64L * i, 64);
            }
        }));
    }

    @Test
    void aReadScatteredBeyondTheRangeLimitFails() throws Exception {
        // Every other 64-byte piece first: more disjoint ranges than a slot keeps; the read fails
        // (EIO and a reconnect) rather than the client allocating to track them.
        assertEquals(-io.vblk.sys.Errno.EIO, readAnsweredBy((out, cookie, offset, length) -> {
            for (int i = 0; i < 64; i += 2) {
                data(out, 0, cookie, offset + 64L * i, 64);
            }
            for (int i = 1; i < 64; i += 2) {
                data(out, i == 63 ? REPLY_FLAG_DONE : 0, cookie, offset + 64L * i, 64);
            }
        }));
    }
}
