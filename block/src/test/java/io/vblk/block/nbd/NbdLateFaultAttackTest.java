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
import org.junit.jupiter.api.Disabled;
import org.junit.jupiter.api.Test;

import io.vblk.aio.IoVector;
import io.vblk.sys.FaultPoints;
import io.vblk.sys.NativeBuffer;

/**
 * The NBD back end under a guest-memory fault the JVM delivers late (engine GuestFaults: on a
 * shared I/O thread it can come from another device's memory and land in this disk's poll).
 * The engine's drain gives a lost completion up only once the back end reports nothing in
 * flight; the aio back ends derive that count from the kernel's and their queues' own indices
 * (aio LateFaultAccountingTest). NbdBackend counts {@code submitted - completed}, two counters
 * updated beside its lists: a fault right after a completion was taken from the done list
 * (here, through {@link FaultPoints#REAP_TAKEN}) leaves the count at 1 for ever, and so would
 * one inside NbdConnection.finish (between {@code owned--} and the hand-over to the done list)
 * or inside submit's hand-over to the connections. The drain of that disk's queue (vhost
 * GET_VRING_BASE, device stop) then waits for ever: a hang another device's guest can cause.
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
    @Disabled("finding (irev2): NbdBackend's in-flight count is not derived from its lists; a late fault in its poll, "
            + "in NbdConnection.finish or in submit's hand-over leaves it above 0 for ever, so the engine never gives the "
            + "lost completion up and the queue's drain hangs. Needs the count derived from the slots' own states (not a small fix)")
    void aCompletionLostInsideThePollLeavesNothingCountedInFlight() throws Exception {
        String address = serve();
        NbdOptions options = NbdOptions.defaults().withConnectTimeoutMs(1500).withRequestTimeoutMs(2000);
        NbdBackend disk = NbdBackend.open(address, options);
        try {
            NativeBuffer b = Io.buffer(4096);
            IoVector v = new IoVector(1);
            v.add(b.address(), 4096);
            assertEquals(0, disk.prepareRead(0, v, 1));
            disk.submit();
            FaultPoints.arm(FaultPoints.REAP_TAKEN);
            boolean thrown = false;
            long deadline = System.currentTimeMillis() + 10_000;
            while ((disk.inFlight() > 0 || disk.pendingSubmit() > 0) && System.currentTimeMillis() < deadline) {
                try {
                    if (disk.poll((userData, result) -> { }, 8) == 0) {
                        disk.awaitCompletions(20);
                    }
                } catch (InternalError e) {
                    thrown = true;
                }
            }
            assertTrue(thrown, "the fault landed in the poll");
            assertEquals(0, disk.inFlight(), "a completion the fault took is still counted in flight: the drain would wait for ever");
            assertEquals(1, disk.reclaimLostSlots(), "its slot comes back");
        } finally {
            // close waits for what is counted in flight: on a daemon thread, so a hang fails the test only
            java.util.concurrent.Future<?> close = pool.submit(disk::close);
            try {
                close.get(30, java.util.concurrent.TimeUnit.SECONDS);
            } catch (java.util.concurrent.TimeoutException e) {
                fail("close never returned: it waits for the completion counted in flight for ever");
            }
        }
    }

    /** A minimal honest server: simple replies, every read answered with zeros. */
    private String serve() throws IOException {
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
                        in.readLong();
                        int length = in.readInt();
                        if (type != CMD_READ) {
                            break;
                        }
                        out.writeInt(SIMPLE_REPLY_MAGIC);
                        out.writeInt(0);
                        out.writeLong(cookie);
                        out.write(new byte[length]);
                        out.flush();
                    }
                } catch (IOException e) {
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
}
