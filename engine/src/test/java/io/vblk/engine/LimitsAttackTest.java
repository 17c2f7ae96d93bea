package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.S_IOERR;
import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;

import org.agrona.UnsafeApi;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import io.vblk.aio.BackendKind;
import io.vblk.testkit.SplitQueueDriver;

/**
 * The engine at the protocol's limits, as a hostile guest would push it (virtio 1.2 2.7): the
 * largest ring (32768 entries) offered whole with one kick, again and again past the 16-bit
 * index wrap, through a pool far smaller than the ring; the longest chain a ring of that size
 * can hold; and a request whose descriptors add up to 4 GiB (one 16 MiB buffer named 256
 * times), whose length no sum may wrap. Real io_uring on a real file, real eventfds.
 */
class LimitsAttackTest {
    private static final int MAX_RING = 32768;
    private static final long MiB = 1 << 20;

    @TempDir
    Path dir;

    @ParameterizedTest
    @EnumSource(value = ThreadingMode.class)
    void theLargestRingOfferedWholeCompletesEveryRequestPastTheIndexWrap(ThreadingMode mode) throws Exception {
        Tuning tuning = Tuning.builder().waitStrategy(WaitStrategy.BLOCKING).threadingMode(mode).build();
        try (DeviceRig rig = DeviceRig.builder(dir, BackendKind.IO_URING).imageBytes(16 * MiB)
                .config(b -> b.queueSize(MAX_RING)).tuning(tuning).build()) {
            long buf = rig.buffer(0, 512L * 1024);
            // Three whole rings: avail.idx and used.idx run 0 -> 98304, wrapping 16 bits once.
            for (int round = 0; round < 3; round++) {
                for (int i = 0; i < MAX_RING; i++) {
                    // One indirect descriptor per chain: a whole ring of requests fits the ring.
                    rig.add(0, T_IN, i % (16 * 2048), buf + 512L * (i % 1024), 512, true, true);
                }
                rig.kick(0);
                for (int i = 0; i < MAX_RING; i++) {
                    int head = rig.awaitUsed(0, 30_000);
                    assertEquals(S_OK, rig.status(0, head), "round " + round + ", head " + head);
                }
                assertFalse(rig.device.isBroken(0), rig.device.brokenReason(0));
            }
            assertEquals(3L * MAX_RING, rig.device.counters(0).get(QueueCounters.COMPLETIONS));
            rig.device.stopQueue(0); // every slot came back: the drain returns
        }
    }

    @Test
    void theLongestChainOfTheLargestRingIsOneRequestThatFailsAndTheRingGoesOn() throws Exception {
        // header + 32766 data descriptors + status: the whole descriptor table in one chain, as
        // many data segments as the default SEG_MAX (queue size - 2) allows. The back end takes
        // fewer segments per operation (BackendOptions.maxSegments); the request must fail
        // cleanly, never overrun a slot's iovecs, and the ring must stay healthy.
        try (DeviceRig rig = DeviceRig.builder(dir, BackendKind.IO_URING).imageBytes(32 * MiB)
                .config(b -> b.queueSize(MAX_RING)).build()) {
            SplitQueueDriver d = rig.driver(0);
            int count = MAX_RING;
            long header = rig.buffer(0, 16);
            long status = rig.buffer(0, 1);
            long data = rig.buffer(0, 512);
            rig.writeHeader(header, T_IN, 0);
            UnsafeApi.putByte(rig.host(status, 1), (byte) 0x7f);
            long[] gpas = new long[count];
            int[] lengths = new int[count];
            boolean[] writable = new boolean[count];
            gpas[0] = header;
            lengths[0] = 16;
            for (int i = 1; i < count - 1; i++) {
                gpas[i] = data;
                lengths[i] = 512;
                writable[i] = true;
            }
            gpas[count - 1] = status;
            lengths[count - 1] = 1;
            writable[count - 1] = true;
            int head = d.addDirect(gpas, lengths, writable, count);
            assertTrue(head >= 0, "the chain fits the table");
            rig.kick(0);
            assertEquals(head, rig.awaitUsed(0, 30_000));
            byte s = UnsafeApi.getByte(rig.host(status, 1));
            assertTrue(s == S_OK || s == S_IOERR, "status " + s);
            assertFalse(rig.device.isBroken(0), rig.device.brokenReason(0));
            // The ring goes on.
            long other = rig.buffer(0, 4096);
            assertEquals(S_OK, rig.roundTrip(0, T_IN, 8, other, 4096, true));
            rig.device.stopQueue(0);
        }
    }

    @Test
    void aReadWithinTheSegMaxTheDeviceOffersIsServed() throws Exception {
        // virtio 1.2 5.2.4: seg_max is the most segments the driver may put in a request; Linux
        // sizes its scatter lists from it. Whatever SEG_MAX the device offers by default for a
        // 1024-entry ring, a request with that many data segments must be served, not failed.
        int offered = BlkConfig.builder(16 * MiB).queueSize(1024).build().segMax();
        try (DeviceRig rig = DeviceRig.builder(dir, BackendKind.IO_URING).imageBytes(16 * MiB)
                .config(b -> b.queueSize(1024)).build()) {
            SplitQueueDriver d = rig.driver(0);
            int count = offered + 2;
            long header = rig.buffer(0, 16);
            long status = rig.buffer(0, 1);
            long data = rig.buffer(0, 512L * offered);
            rig.writeHeader(header, T_IN, 0);
            UnsafeApi.putByte(rig.host(status, 1), (byte) 0x7f);
            long[] gpas = new long[count];
            int[] lengths = new int[count];
            boolean[] writable = new boolean[count];
            gpas[0] = header;
            lengths[0] = 16;
            for (int i = 1; i < count - 1; i++) {
                gpas[i] = data + 512L * (i - 1);
                lengths[i] = 512;
                writable[i] = true;
            }
            gpas[count - 1] = status;
            lengths[count - 1] = 1;
            writable[count - 1] = true;
            int head = d.addDirect(gpas, lengths, writable, count);
            rig.kick(0);
            assertEquals(head, rig.awaitUsed(0, 30_000));
            assertEquals(S_OK, UnsafeApi.getByte(rig.host(status, 1)), "a read of " + offered
                    + " segments, the SEG_MAX the device offers");
            rig.device.stopQueue(0);
        }
    }

    @Test
    void aReadOf4GiBNamingOneBuffer256TimesIsRefusedNotWrapped() throws Exception {
        // 256 x 16 MiB = 2^32 bytes: a 32-bit sum is 0, a signed 32-bit one negative. The image
        // is 16 MiB, so the only right answer is IOERR with nothing written past the buffer.
        try (DeviceRig rig = DeviceRig.builder(dir, BackendKind.IO_URING).imageBytes(16 * MiB)
                .config(b -> b.queueSize(1024).segMax(256)).build()) {
            SplitQueueDriver d = rig.driver(0);
            for (int segments : new int[] {128, 256}) { // 2^31 and 2^32 bytes
                int count = segments + 2;
                long header = rig.buffer(0, 16);
                long status = rig.buffer(0, 1);
                long data = DeviceRig.QUEUE_AREA; // the rig's buffer area, past queue 0's: 32 MiB
                rig.writeHeader(header, T_IN, 0);
                UnsafeApi.putByte(rig.host(status, 1), (byte) 0x7f);
                long[] gpas = new long[count];
                int[] lengths = new int[count];
                boolean[] writable = new boolean[count];
                gpas[0] = header;
                lengths[0] = 16;
                for (int i = 1; i < count - 1; i++) {
                    gpas[i] = data;
                    lengths[i] = (int) (16 * MiB);
                    writable[i] = true;
                }
                gpas[count - 1] = status;
                lengths[count - 1] = 1;
                writable[count - 1] = true;
                int head = d.addDirect(gpas, lengths, writable, count);
                rig.kick(0);
                assertEquals(head, rig.awaitUsed(0, 30_000));
                assertEquals(S_IOERR, UnsafeApi.getByte(rig.host(status, 1)), segments + " x 16 MiB");
                assertFalse(rig.device.isBroken(0), rig.device.brokenReason(0));
            }
            long other = rig.buffer(0, 4096);
            assertEquals(S_OK, rig.roundTrip(0, T_IN, 8, other, 4096, true));
            rig.device.stopQueue(0);
        }
    }
}
