package io.vblk.block.nbd;

import static io.vblk.block.nbd.NbdProtocol.*;
import static org.junit.jupiter.api.Assertions.*;

import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import io.vblk.aio.IoVector;
import io.vblk.sys.FaultPoints;
import io.vblk.sys.NativeBuffer;

/**
 * The NBD back end under a guest-memory fault the JVM delivers late (engine GuestFaults: on a
 * shared I/O thread it can come from another device's memory and land in this disk's poll).
 * The engine's drain gives a lost completion up only once the back end reports nothing in
 * flight; the aio back ends derive that count from the kernel's and their queues' own indices
 * (aio LateFaultAccountingTest). NbdBackend used to count {@code submitted - completed}, two
 * counters updated beside its lists: a fault right after a completion was taken from the done
 * list, inside NbdConnection.finish (the slot no longer held, not yet listed) or in submit's
 * hand-over to the connections left the count above 0 for ever, and the drain of that disk's
 * queue (vhost GET_VRING_BASE, device stop) waited for ever: a hang another device's guest could
 * cause. It now derives the count from the slots' states; each window is armed here through its
 * {@link FaultPoints} seam (REAP_TAKEN, FINISHING, HANDING_OVER): the completion is lost (never
 * delivered, never twice), nothing stays counted, the slot comes back through
 * {@code reclaimLostSlots()} and the disk then serves a whole depth of requests.
 */
class NbdLateFaultAttackTest {
    private final ExecutorService pool = Executors.newCachedThreadPool(r -> {
        Thread t = new Thread(r, "nbd-late-fault");
        t.setDaemon(true);
        return t;
    });
    private ServerSocket listener;
    private volatile boolean closed;

    @AfterEach
    void stop() throws IOException {
        FaultPoints.disarm();
        closed = true;
        if (listener != null) {
            listener.close();
        }
        pool.shutdownNow();
    }

    @Test
    void aCompletionLostInsideThePollLeavesNothingCountedInFlight() throws Exception {
        NbdBackend disk = NbdBackend.open(serve(), options());
        try {
            Completions got = new Completions();
            assertEquals(0, disk.prepareRead(0, vector(), 1));
            disk.submit();
            FaultPoints.arm(FaultPoints.REAP_TAKEN);
            assertTrue(driveUntilIdle(disk, got), "the fault landed in the poll");
            assertEquals(0, disk.inFlight(), "a completion the fault took is still counted in flight: the drain would wait for ever");
            assertEquals(0, got.count, "the lost completion is never delivered");
            assertEquals(1, disk.reclaimLostSlots(), "its slot comes back");
            assertWorksWithEverySlot(disk);
        } finally {
            closeWithin30s(disk);
        }
    }

    /** The window inside NbdConnection.finish: the slot no longer held, not yet listed for delivery. */
    @Test
    void aCompletionLostAsTheConnectionFinishesItLeavesNothingCountedInFlight() throws Exception {
        NbdBackend disk = NbdBackend.open(serve(), options());
        try {
            Completions got = new Completions();
            assertEquals(0, disk.prepareRead(0, vector(), 1));
            disk.submit();
            FaultPoints.arm(FaultPoints.FINISHING);
            assertTrue(driveUntilIdle(disk, got), "the fault landed in the connection's finish");
            assertEquals(0, disk.inFlight(), "the finished request is still counted in flight");
            assertEquals(0, disk.pendingSubmit());
            assertEquals(0, got.count, "the lost completion is never delivered");
            assertEquals(1, disk.reclaimLostSlots(), "its slot comes back");
            assertEquals(0, disk.reclaimLostSlots(), "once");
            assertWorksWithEverySlot(disk);
        } finally {
            closeWithin30s(disk);
        }
    }

    /**
     * The window in submit's hand-over: the request taken off the pending list, not yet held by
     * a connection. Only that one is lost; the rest of the batch goes with the next submit.
     */
    @Test
    void aRequestLostInSubmitsHandOverLeavesNothingCountedAndTheRestOfTheBatchGoesOut() throws Exception {
        NbdBackend disk = NbdBackend.open(serve(), options());
        try {
            Completions got = new Completions();
            assertEquals(0, disk.prepareRead(0, vector(), 1));
            assertEquals(0, disk.prepareRead(4096, vector(), 2));
            FaultPoints.arm(FaultPoints.HANDING_OVER);
            assertThrows(InternalError.class, disk::submit, "the fault lands in the hand-over");
            assertEquals(0, disk.inFlight(), "the request the fault cut off is counted in flight");
            assertEquals(1, disk.pendingSubmit(), "the rest of the batch is still pending");
            assertFalse(driveUntilIdle(disk, got));
            assertEquals(1, got.count, "the rest of the batch completed");
            assertEquals(2L, got.lastUserData);
            assertEquals(4096L, got.lastResult);
            assertEquals(1, disk.reclaimLostSlots(), "the lost request's slot comes back");
            assertWorksWithEverySlot(disk);
        } finally {
            closeWithin30s(disk);
        }
    }

    /**
     * A lost completion's slot comes back only once nothing is in flight: a command sent and not
     * answered keeps its slot held (a late reply would land in its buffers), so nothing is
     * reclaimed while it waits.
     */
    @Test
    void nothingIsReclaimedWhileACommandAwaitsItsReply() throws Exception {
        java.util.concurrent.CountDownLatch hold = new java.util.concurrent.CountDownLatch(1);
        NbdBackend disk = NbdBackend.open(serve(hold), options());
        try {
            Completions got = new Completions();
            assertEquals(0, disk.prepareRead(0, vector(), 1));
            assertEquals(0, disk.prepareRead(HELD_OFFSET, vector(), 2));
            disk.submit();
            FaultPoints.arm(FaultPoints.REAP_TAKEN);
            assertTrue(pollUntilTheFaultLands(disk, got), "the fault landed in the poll");
            assertEquals(1, disk.inFlight(), "the unanswered command is held");
            assertEquals(0, disk.reclaimLostSlots(), "nothing is reclaimed while a reply can still land");
            hold.countDown();
            assertFalse(driveUntilIdle(disk, got));
            assertEquals(1, got.count);
            assertEquals(2L, got.lastUserData);
            assertEquals(4096L, got.lastResult);
            assertEquals(1, disk.reclaimLostSlots(), "now the lost one comes back");
            assertWorksWithEverySlot(disk);
        } finally {
            hold.countDown();
            closeWithin30s(disk);
        }
    }

    /**
     * Across a reconnect: the server drops the connection instead of answering a command; that
     * command stays held (requeued, sent again on the new connection), so the lost completion's
     * slot is not reclaimed until the command is answered there.
     */
    @Test
    void aCommandADroppedConnectionLeftUnansweredStaysHeldAcrossTheReconnect() throws Exception {
        dropOnce.set(true);
        NbdBackend disk = NbdBackend.open(serve(), options());
        try {
            Completions got = new Completions();
            assertEquals(0, disk.prepareRead(0, vector(), 1));
            assertEquals(0, disk.prepareRead(HELD_OFFSET, vector(), 2));
            disk.submit();
            FaultPoints.arm(FaultPoints.REAP_TAKEN);
            assertTrue(pollUntilTheFaultLands(disk, got), "the fault landed in the poll");
            assertEquals(0, got.count);
            // The fault came in the poll that read the first reply: the other command is sent
            // (or already requeued by the drop), answered only after a reconnect.
            assertEquals(1, disk.inFlight(), "the dropped command is held");
            assertEquals(0, disk.reclaimLostSlots(), "nothing is reclaimed while the dropped command is held");
            assertFalse(driveUntilIdle(disk, got));
            assertFalse(dropOnce.get(), "the server dropped the connection");
            assertEquals(1, got.count, "the dropped command was sent again and answered, once");
            assertEquals(2L, got.lastUserData);
            assertEquals(4096L, got.lastResult);
            assertEquals(1, disk.reclaimLostSlots(), "now the lost one comes back");
            assertWorksWithEverySlot(disk);
        } finally {
            closeWithin30s(disk);
        }
    }

    private static final long HELD_OFFSET = 8192;
    /** The test server drops the connection at the first read of {@link #HELD_OFFSET}, once. */
    private final java.util.concurrent.atomic.AtomicBoolean dropOnce = new java.util.concurrent.atomic.AtomicBoolean();

    private static NbdOptions options() {
        return NbdOptions.defaults().withConnectTimeoutMs(1500).withRequestTimeoutMs(5000);
    }

    private static IoVector vector() {
        NativeBuffer b = Io.buffer(4096);
        IoVector v = new IoVector(1);
        v.add(b.address(), 4096);
        return v;
    }

    /** Counts what the disk delivers. */
    private static final class Completions implements io.vblk.aio.CompletionSink {
        int count;
        long lastUserData = -1;
        long lastResult;

        @Override
        public void complete(long userData, long result) {
            count++;
            lastUserData = userData;
            lastResult = result;
        }
    }

    /** Polls (and submits) until nothing is in flight or pending; true when the armed fault was thrown. */
    private static boolean driveUntilIdle(NbdBackend disk, Completions got) {
        boolean thrown = false;
        long deadline = System.currentTimeMillis() + 60_000; // a hang guard
        while ((disk.inFlight() > 0 || disk.pendingSubmit() > 0) && System.currentTimeMillis() < deadline) {
            try {
                disk.submit();
                if (disk.poll(got, 8) == 0) {
                    disk.awaitCompletions(20);
                }
            } catch (InternalError e) {
                thrown = true;
            }
        }
        assertEquals(0, disk.inFlight(), "nothing left in flight");
        return thrown;
    }

    /** Every slot is usable once: a whole depth of reads completes, each exactly once. */
    private static void assertWorksWithEverySlot(NbdBackend disk) {
        assertEquals(disk.depth(), disk.freeSlots(), "every slot is free");
        Completions got = new Completions();
        java.util.BitSet seen = new java.util.BitSet();
        io.vblk.aio.CompletionSink sink = (userData, result) -> {
            assertFalse(seen.get((int) userData), "completed twice: " + userData);
            seen.set((int) userData);
            assertEquals(4096L, result);
            got.complete(userData, result);
        };
        IoVector v = vector();
        for (int i = 0; i < disk.depth(); i++) {
            assertEquals(0, disk.prepareRead(0, v, 100 + i));
        }
        disk.submit();
        long deadline = System.currentTimeMillis() + 60_000; // a hang guard
        while (got.count < disk.depth() && System.currentTimeMillis() < deadline) {
            if (disk.poll(sink, 64) == 0) {
                disk.awaitCompletions(20);
            }
        }
        assertEquals(disk.depth(), got.count, "every request completed");
        assertEquals(0, disk.inFlight());
        assertEquals(0, disk.reclaimLostSlots(), "nothing lost");
    }

    /** close waits for what is counted in flight: on a daemon thread, so a hang fails the test only. */
    private void closeWithin30s(NbdBackend disk) throws Exception {
        java.util.concurrent.Future<?> close = pool.submit(disk::close);
        try {
            close.get(30, java.util.concurrent.TimeUnit.SECONDS);
        } catch (java.util.concurrent.TimeoutException e) {
            fail("close never returned: it waits for the completion counted in flight for ever");
        }
    }

    private String serve() throws IOException {
        return serve(null);
    }

    /** A minimal honest server: simple replies, every read answered with zeros. */
    private String serve(java.util.concurrent.CountDownLatch hold) throws IOException {
        listener = new ServerSocket(0, 4, InetAddress.getLoopbackAddress());
        pool.submit(() -> {
            while (!closed) {
                try (Socket s = listener.accept()) {
                    DataInputStream in = new DataInputStream(s.getInputStream());
                    DataOutputStream out = new DataOutputStream(s.getOutputStream());
                    out.writeLong(NBDMAGIC);
                    out.writeLong(IHAVEOPT);
                    out.writeShort(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
                    out.flush();
                    in.readInt();
                    while (true) {
                        if (in.readLong() != IHAVEOPT) {
                            throw new IOException("bad option magic");
                        }
                        int code = in.readInt();
                        in.skipNBytes(in.readInt());
                        if (code != OPT_GO) {
                            reply(out, code, REP_ERR_UNSUP, 0); // no structured replies: simple ones
                            out.flush();
                            continue;
                        }
                        reply(out, code, REP_INFO, 12);
                        out.writeShort(INFO_EXPORT);
                        out.writeLong(1 << 20);
                        out.writeShort(FLAG_HAS_FLAGS);
                        reply(out, code, REP_ACK, 0);
                        out.flush();
                        break;
                    }
                    while (!closed) {
                        in.readInt();
                        in.readShort();
                        int type = in.readShort();
                        long cookie = in.readLong();
                        long offset = in.readLong();
                        int length = in.readInt();
                        if (type != CMD_READ) {
                            break;
                        }
                        if (offset == HELD_OFFSET && dropOnce.compareAndSet(true, false)) {
                            break; // the connection ends unanswered
                        }
                        if (hold != null && offset == HELD_OFFSET) {
                            hold.await(); // answered only when the test says so
                        }
                        out.writeInt(SIMPLE_REPLY_MAGIC);
                        out.writeInt(0);
                        out.writeLong(cookie);
                        out.write(new byte[length]);
                        out.flush();
                    }
                } catch (IOException | InterruptedException e) {
                    // the client hung up or the test ended
                }
            }
            return null;
        });
        return "nbd://127.0.0.1:" + listener.getLocalPort() + "/x";
    }

    private static void reply(DataOutputStream out, int option, int type, int length) throws IOException {
        out.writeLong(OPTION_REPLY_MAGIC);
        out.writeInt(option);
        out.writeInt(type);
        out.writeInt(length);
    }

    /** Polls (waiting between empty polls) until the armed fault throws in a poll, for up to 60 s; whether it did. */
    private static boolean pollUntilTheFaultLands(NbdBackend disk, Completions got) throws Exception {
        long deadline = System.currentTimeMillis() + 60_000; // a hang guard
        while (System.currentTimeMillis() < deadline) {
            try {
                if (disk.poll(got, 8) == 0) {
                    disk.awaitCompletions(20);
                }
            } catch (InternalError e) {
                return true;
            }
        }
        return false;
    }
}
