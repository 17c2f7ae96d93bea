package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;

import org.agrona.UnsafeApi;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.IoBackend;
import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.ForwardingBackend;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.SplitQueueDriver;
import io.vblk.testkit.TestGuest;
import io.vblk.testkit.VhostUserFrontend;

/**
 * Session 10: an I/O thread's round stalled inside a back-end call (a frozen disk, a stuck
 * io_uring_enter) while the frontend takes the guest's memory away: a disconnect, or a new
 * SET_MEM_TABLE. The round still holds a popped request whose read the kernel will DMA into
 * guest memory and whose completion writes the status byte and the used ring. If vblk unmapped
 * the table meanwhile, that write would hit unmapped memory (SIGSEGV: the JVM dies) or memory
 * mapped anew at the same address (silent corruption).
 *
 * <p>What protects it: every unmap waits for a drain that only the I/O thread itself can
 * acknowledge, between rounds (BlockDevice.stopQueue/drain/clearMemory are commands the thread
 * runs, awaited without a deadline), so no table goes while a round or the kernel may still use
 * it. These tests hold a round in {@link IoBackend#submit()} (the read not yet with the kernel),
 * take the memory away, check it stays mapped, then let the round go on: the read lands in the
 * guest's memory, its completion is published, and only then is the table unmapped. Real parts:
 * io_uring on a real file, a memfd guest, the vhost-user protocol over a socket.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS) // a hang guard, not a timed assertion
class StalledRoundUnmapTest {
    private static final long PROTOCOL = VhostUserFrontend.PF_MQ | VhostUserFrontend.PF_REPLY_ACK | VhostUserFrontend.PF_CONFIG;
    private static final int BLOCK = 4096;
    private static final long SECTOR = 512;
    /** How long the test looks for an unmap that must not come (an absence: no deadline is asserted). */
    private static final long WATCH_MS = 300;

    @TempDir
    Path dir;

    /** A real back end whose next {@link #submit()} stalls, once armed, until released. */
    static final class StallingBackend extends ForwardingBackend {
        final AtomicBoolean armed = new AtomicBoolean();
        final CountDownLatch inSubmit = new CountDownLatch(1);
        final CountDownLatch release = new CountDownLatch(1);
        /** Report an undrained close (what a stranded io_uring slot or a stuck helper call reports). */
        volatile boolean undrained;

        StallingBackend(IoBackend real) {
            super(real);
        }

        @Override
        public boolean closedDrained() {
            return !undrained && super.closedDrained();
        }

        @Override
        public int submit() {
            if (pendingSubmit() > 0 && armed.compareAndSet(true, false)) {
                inSubmit.countDown();
                try {
                    release.await();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            }
            return super.submit();
        }
    }

    private static byte[] guestBytes(BlkQueue q, long gpa, int length) {
        byte[] b = new byte[length];
        UnsafeApi.copyMemory(null, q.host(gpa), b, UnsafeApi.arrayBaseOffset(byte[].class), length);
        return b;
    }

    /** Posts a read of {@link #SECTOR} into the queue's data buffer and waits until its round stalls in submit. */
    private static int stalledRead(BlkQueue q, StallingBackend backend) throws InterruptedException {
        UnsafeApi.setMemory(q.host(q.dataGpa), BLOCK, (byte) 0x55);
        backend.armed.set(true);
        int head = q.add(BlkQueue.T_IN, SECTOR, q.dataGpa, BLOCK, true);
        q.publish();
        assertTrue(backend.inSubmit.await(30, TimeUnit.SECONDS), "the round reached the back end");
        return head;
    }

    /** A server over a real file whose back ends stall when armed ({@code backend}: the one opened). */
    private ServerRig stallingRig(AtomicReference<StallingBackend> backend) throws java.io.IOException {
        return ServerRig.start(dir, 1, f -> depth -> {
            StallingBackend b = new StallingBackend(f.open(depth));
            backend.set(b);
            return b;
        });
    }

    /** QEMU's start of queue {@code q}, then {@code data} written at {@link #SECTOR} (what the stalled read reads back). */
    private static void started(QemuFlow flow, BlkQueue q, byte[] data) {
        flow.init(PROTOCOL, q);
        flow.start(flow.linuxFeatures(), true, null, q);
        q.write(SECTOR, data);
    }

    /**
     * Bytes of {@code g}'s RAM the server has mapped: every mapping of the guest's memfd in this
     * process (read from /proc/self/maps by the memfd's inode) less the guest's own two regions.
     * Counted by identity: the process-wide count of mapped tables also moves when another
     * test's table goes (an undrained device keeps its table for the JVM's life, and a torn-down
     * session may unmap late), which made this test fail in a full run.
     */
    static long serverMapped(TestGuest g) throws java.io.IOException {
        long inode = (Long) java.nio.file.Files.getAttribute(Path.of("/proc/self/fd/" + g.fd), "unix:ino");
        long bytes = 0;
        for (String line : java.nio.file.Files.readAllLines(Path.of("/proc/self/maps"))) {
            String[] f = line.trim().split("\\s+");
            if (f.length >= 5 && f[4].equals(Long.toString(inode))) {
                String[] range = f[0].split("-");
                bytes += Long.parseUnsignedLong(range[1], 16) - Long.parseUnsignedLong(range[0], 16);
            }
        }
        return bytes - 2 * TestGuest.REGION_BYTES;
    }

    @Test
    void aDisconnectUnmapsTheGuestMemoryOnlyAfterTheStalledRoundCompletedIntoIt() throws Exception {
        AtomicReference<StallingBackend> backend = new AtomicReference<>();
        try (ServerRig rig = stallingRig(backend); TestGuest g = new TestGuest()) {
            BlkQueue q = g.queue(0, 64, true);
            byte[] data = BlkQueue.pattern(SECTOR, BLOCK, 3);
            QemuFlow flow = new QemuFlow(rig.connect(), g, 1);
            try {
                started(flow, q, data);
                long mapped = serverMapped(g);
                assertTrue(mapped > 0, "the table is mapped");
                int head = stalledRead(q, backend.get());
                flow.close(); // the frontend goes away with the read in the stalled round
                flow = null;
                Thread.sleep(WATCH_MS);
                assertEquals(mapped, serverMapped(g), "the table was unmapped under the stalled round");
                assertFalse(rig.lines().stream().anyMatch(l -> l.contains("disconnected")),
                        "the teardown ended before the round did: " + rig.lines());
                backend.get().release.countDown();
                rig.awaitLine(l -> l.contains("disconnected"));
                // The round went on after the disconnect: its read reached the guest's memory and
                // its completion was published there, before vblk let go of the table.
                assertEquals(head, q.driver.reap(), "the stalled read completed into the used ring");
                assertEquals(0, q.statusOfHead(head));
                assertArrayEquals(data, guestBytes(q, q.dataGpa, BLOCK));
                assertEquals(SplitQueueDriver.NONE, q.driver.reap());
                assertTrue(serverMapped(g) < mapped, "the table is unmapped once the round is over");
            } finally {
                backend.get().release.countDown();
                if (flow != null) {
                    flow.close();
                }
            }
        }
    }

    @Test
    void aNewMemoryTableReplacesTheOldOnlyAfterTheStalledRoundCompletedIntoIt() throws Exception {
        AtomicReference<StallingBackend> backend = new AtomicReference<>();
        try (ServerRig rig = stallingRig(backend); TestGuest g = new TestGuest(); QemuFlow flow = new QemuFlow(rig.connect(), g, 1)) {
            try {
                BlkQueue q = g.queue(0, 64, true);
                byte[] data = BlkQueue.pattern(SECTOR, BLOCK, 4);
                started(flow, q, data);
                long mapped = serverMapped(g);
                int head = stalledRead(q, backend.get());
                Thread setter = new Thread(() -> flow.sendMemory(g.regions()), "set-mem-table");
                setter.start(); // answered (REPLY_ACK) only when the table is installed
                Thread.sleep(WATCH_MS);
                assertTrue(setter.isAlive(), "SET_MEM_TABLE was answered while a round stalled");
                // The new table is mapped beside the old one; the old one is still there.
                assertEquals(2 * mapped, serverMapped(g), "the old table was unmapped under the stalled round");
                backend.get().release.countDown();
                setter.join(30_000);
                assertFalse(setter.isAlive());
                assertEquals(mapped, serverMapped(g), "the old table is unmapped once the round is over");
                assertEquals(head, q.awaitUsed(), "the stalled read completed");
                assertEquals(0, q.statusOfHead(head));
                assertArrayEquals(data, guestBytes(q, q.dataGpa, BLOCK));
                // The rings resumed on the new table.
                assertArrayEquals(data, q.read(SECTOR, BLOCK));
            } finally {
                backend.get().release.countDown();
            }
        }
    }

    /**
     * The server closes (export.remove) while a disconnect's teardown waits for the stalled
     * round: after its wait it closes the device anyway, which waits for the round too. When the
     * round ends, both finish: the device's close ends its I/O thread, and the teardown, whose
     * next device call would wait for that thread for ever, still ends, and unmaps the table only
     * because the device's back ends closed drained.
     */
    @Test
    void aServerClosedWhileTheTeardownWaitsForTheStalledRoundEndsAndUnmapsOnlyAfterIt() throws Exception {
        closeUnderATeardown(false);
    }

    /** As above, but a back end closed undrained: the kernel may still write the guest's pages, so the table stays mapped. */
    @Test
    void aDeviceClosedUndrainedUnderATeardownLeavesTheTableMapped() throws Exception {
        closeUnderATeardown(true);
    }

    private void closeUnderATeardown(boolean undrained) throws Exception {
        AtomicReference<StallingBackend> backend = new AtomicReference<>();
        try (ServerRig rig = stallingRig(backend); TestGuest g = new TestGuest()) {
            BlkQueue q = g.queue(0, 64, true);
            byte[] data = BlkQueue.pattern(SECTOR, BLOCK, 5);
            QemuFlow flow = new QemuFlow(rig.connect(), g, 1);
            Thread closer = new Thread(rig.server::close, "export-remove");
            try {
                started(flow, q, data);
                long mapped = serverMapped(g);
                int head = stalledRead(q, backend.get());
                backend.get().undrained = undrained;
                flow.close();
                flow = null;
                rig.server.closeWaitMs = 100;
                closer.start();
                rig.awaitLine(l -> l.contains("closing anyway"));
                // The device's close has begun (it marks the device closed first, then waits for
                // the stalled round) before the round goes on, so the teardown, waiting on that
                // round too, finds the device closed under it. A fixed pause was not enough on a
                // loaded machine: the closer had not reached the device when the round ended, the
                // teardown finished first and unmapped the table as a drained one (CI, 08:50).
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
                while (!rig.server.device().isClosed()) {
                    assertTrue(System.nanoTime() < deadline, "the server's close never reached the device");
                    Thread.sleep(5);
                }
                Thread.sleep(WATCH_MS);
                assertTrue(closer.isAlive(), "the device closed under the stalled round");
                assertEquals(mapped, serverMapped(g), "the table was unmapped under the stalled round");
                backend.get().release.countDown();
                closer.join(30_000);
                assertFalse(closer.isAlive(), "the server's close ended with the round");
                rig.awaitLine(l -> l.contains("disconnected")); // the teardown ended too (it used to wait for ever)
                assertEquals(head, q.driver.reap(), "the stalled read completed into the used ring");
                assertEquals(0, q.statusOfHead(head));
                assertArrayEquals(data, guestBytes(q, q.dataGpa, BLOCK));
                if (undrained) {
                    // Once the round goes on, the teardown's stop (queued before the device's
                    // close) and the close's own shutdown race: when the teardown's steps all run
                    // before the I/O threads end, it has drained the queue and the device has let
                    // go of the table, so unmapping is right (this fake back end says "undrained"
                    // though its read completed; a really stuck one never lets the stop finish).
                    // Whichever came first, the log and the mapping must agree: the table stays
                    // exactly when the teardown found the device closed undrained under it.
                    boolean kept = rig.lines().stream().anyMatch(l -> l.contains("the guest memory table stays mapped"));
                    if (kept) {
                        assertEquals(mapped, serverMapped(g), "unmapped while the kernel may still write into it");
                    } else {
                        assertTrue(serverMapped(g) < mapped, "kept without saying so: " + rig.lines());
                    }
                } else {
                    assertTrue(serverMapped(g) < mapped, "the table is unmapped once the device's back ends closed drained");
                }
            } finally {
                backend.get().release.countDown();
                if (flow != null) {
                    flow.close();
                }
                closer.join(30_000);
            }
        }
    }
}
