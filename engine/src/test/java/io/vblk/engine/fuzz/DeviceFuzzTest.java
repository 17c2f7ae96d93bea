package io.vblk.engine.fuzz;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;

import org.agrona.UnsafeApi;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import io.vblk.aio.BackendKind;
import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.engine.BackendFactory;
import io.vblk.engine.BlkConfig;
import io.vblk.engine.BlkRequestDescriptor;
import io.vblk.engine.BlockDevice;
import io.vblk.engine.Interrupt;
import io.vblk.engine.QueueCounters;
import io.vblk.vring.QueueState;
import io.vblk.engine.Tuning;
import io.vblk.engine.WaitStrategy;
import io.vblk.hostmem.GuestMemory;
import io.vblk.sys.EventFd;
import io.vblk.sys.Memfd;
import io.vblk.sys.Native;
import io.vblk.testkit.SplitQueueDriver;

/**
 * The structure-aware guest fuzzer against the real device, in process. Queue 0 gets random and
 * mutated requests; after every round: nothing escaped (the device threads are alive and the
 * queue either finished the round or is quarantined), every well-formed request completed with
 * a valid status and used length, and queue 1 of the same device still completes I/O. Guest
 * memory sits between PROT_NONE guard pages: an access outside it kills the run.
 *
 * <p>Seeded: a failure prints its seed and round. {@code -Dvblk.fuzz.cases=N} runs longer
 * (default 1,000,000 chains on the null back end, fewer on the real ones), and
 * {@code -Dvblk.fuzz.seed=S} replays one seed.
 *
 * <pre>
 *  gpa 0x0000000 - 0x0400000  A  RW   queue 0: rings, indirect tables, buffers
 *  gpa 0x0400000 - 0x0410000  B  RO   read-only region right after A
 *  gpa 0x0410000 - 0x1000000  hole
 *  gpa 0x1000000 - 0x1400000  C  RW   queue 1 (never aimed at)
 * </pre>
 */
class DeviceFuzzTest {
    private static final long A = 0;
    private static final long A_SIZE = 4L << 20;
    private static final long B = A + A_SIZE;
    private static final long B_SIZE = 64L << 10;
    private static final long C = 16L << 20;
    private static final long C_SIZE = 4L << 20;
    private static final int QUEUE_SIZE = 128;
    private static final int MAX_CHAINS_PER_ROUND = 32;

    @TempDir
    Path dir;

    @ParameterizedTest
    @CsvSource({"NULL,1000000", "IO_URING,60000", "LINUX_AIO,30000", "THREADS,30000"})
    void hostileGuestNeverEscapesAndOtherQueueKeepsWorking(BackendKind kind, long defaultCases) throws Exception {
        long cases = Long.getLong("vblk.fuzz.cases", defaultCases);
        long seed = Long.getLong("vblk.fuzz.seed", 0x5EEDL + kind.ordinal());
        Path imagePath = dir.resolve("fuzz.img");
        Files.write(imagePath, new byte[4 << 20]);
        int roFd = Memfd.create("ro", B_SIZE);
        try (Image image = Image.open(imagePath, ImageOptions.defaults());
             GuestMemory memory = GuestMemory.builder().guarded(true).addMemfd(A, A_SIZE)
                     .addRegion(B, B_SIZE, roFd, 0, 0, true).addMemfd(C, C_SIZE).build();
             EventFd kick0 = EventFd.create(true);
             EventFd irq0 = EventFd.create(true);
             EventFd irq1 = EventFd.create(true)) {
            BlkConfig config = BlkConfig.builder(image.sizeBytes()).numQueues(2).queueSize(QUEUE_SIZE).maxRangeSegments(4).build();
            try (BlockDevice device = BlockDevice.builder(config, BackendFactory.of(kind, image)).memory(memory)
                    .tuning(Tuning.builder().waitStrategy(WaitStrategy.ADAPTIVE).pollNs(20_000).recordLatency(false).build())
                    .name("fuzz").build()) {
                device.negotiate(config.offeredFeatures());
                SplitQueueDriver q0 = SplitQueueDriver.builder(memory).size(QUEUE_SIZE).eventIdx(true).indirectEntries(8)
                        .area(A, 1L << 20).build();
                SplitQueueDriver q1 = SplitQueueDriver.builder(memory).size(QUEUE_SIZE).eventIdx(true).area(C, C_SIZE).build();
                long buffers = A + (1L << 20);
                long[] interesting = {A, A + 8, B - 1, B - 16, B, B + B_SIZE - 1, B + B_SIZE, C - 16, 8L << 20,
                    -16L, -1L, 0x7FFF_FFFF_FFFF_FFF0L, buffers};
                GuestFuzzer fuzzer = new GuestFuzzer(seed, q0, config.capacitySectors(), buffers,
                        MAX_CHAINS_PER_ROUND * 8192, interesting);
                configure(device, 0, q0, kick0, irq0);
                configure(device, 1, q1, null, irq1);
                long q1Header = q1.allocate(16, 16);
                long q1Data = q1.allocate(4096, 4096);
                long q1Status = q1.allocate(1, 1);

                long done = 0;
                long round = 0;
                long quarantines = 0;
                java.util.Random shape = new java.util.Random(seed ^ 0xABCDL);
                while (done < cases) {
                    round++;
                    int k = 1 + shape.nextInt(MAX_CHAINS_PER_ROUND);
                    int kind0 = fuzzer.round(k, 0.03);
                    String where = "seed " + seed + " round " + round + " (" + kind + ")";
                    if (q0.publishAvail() || kind0 == GuestFuzzer.MUTATED) {
                        kick0.signal();
                    }
                    if (kind0 == GuestFuzzer.CLEAN) {
                        reapClean(device, q0, fuzzer, irq0, fuzzer.added, where);
                    } else {
                        if (settleMutated(device, q0, where)) {
                            quarantines++;
                        }
                        restart(device, q0, 0, kick0);
                    }
                    done += fuzzer.added;
                    if (round % 16 == 0 || kind0 == GuestFuzzer.MUTATED) {
                        assertEquals(BlkRequestDescriptor.S_OK, readOnQueue1(device, q1, q1Header, q1Data, q1Status, irq1),
                                "queue 1 after " + where);
                    }
                }
                assertTrue(device.counters(1).get(QueueCounters.COMPLETIONS) > 0);
                assertTrue(quarantines > 0, "the fuzzer reached the quarantine path");
                System.out.printf("fuzz %s: %d chains in %d rounds, %d quarantines, seed %d%n", kind, done, round, quarantines, seed);
            }
        } finally {
            Native.libc().close(roFd);
        }
    }

    private static void configure(BlockDevice device, int q, SplitQueueDriver d, EventFd kick, EventFd irq) {
        device.configureQueue(q, QUEUE_SIZE, d.descGpa(), d.availGpa(), d.usedGpa());
        device.setKick(q, kick);
        device.setInterrupt(q, Interrupt.of(irq));
        device.startQueue(q);
    }

    /** A clean round: every chain completes, with a valid status byte and used length. */
    private static void reapClean(BlockDevice device, SplitQueueDriver q0, GuestFuzzer fuzzer, EventFd irq, int expected,
                                  String where) {
        long deadline = System.nanoTime() + 10_000_000_000L;
        for (int got = 0; got < expected; ) {
            int head = q0.reap();
            if (head >= 0) {
                got++;
                byte status = UnsafeApi.getByte(q0.hostAddress(fuzzer.statusOf[head], 1));
                assertTrue(status == 0 || status == 1 || status == 2, "status " + status + " for head " + head + " at " + where);
                int len = q0.lastUsedLength();
                if (status == 0 && fuzzer.typeOf[head] == BlkRequestDescriptor.T_IN) {
                    assertEquals(fuzzer.dataOf[head] + 1, len, "used len of a good read at " + where);
                } else {
                    assertTrue(len >= 1 && len <= 21, "used len " + len + " at " + where);
                }
                continue;
            }
            assertEquals(SplitQueueDriver.NONE, head, "driver saw a corrupt used ring at " + where);
            assertTrue(!device.isBroken(0), "a clean round quarantined the queue at " + where + ": " + device.brokenReason(0));
            if (!q0.enableInterrupts()) {
                irq.await(10);
                irq.read();
            }
            assertTrue(System.nanoTime() < deadline, "lost requests: " + (expected - got) + " never completed at " + where);
        }
    }

    /** A mutated round: wait until the device consumed the ring or quarantined it; true if quarantined. */
    private static boolean settleMutated(BlockDevice device, SplitQueueDriver q0, String where) throws InterruptedException {
        long deadline = System.nanoTime() + 10_000_000_000L;
        while (true) {
            if (device.isBroken(0)) {
                return true;
            }
            QueueState s = device.queueState(0);
            if (s != null && s.nextAvail() == q0.availIdx()) {
                return false;
            }
            assertTrue(System.nanoTime() < deadline, "device neither consumed nor quarantined the ring at " + where);
            Thread.sleep(0, 50_000);
        }
    }

    /** Drains queue q and starts it afresh on a re-initialised ring (a driver reset of the queue). */
    private static void restart(BlockDevice device, SplitQueueDriver d, int q, EventFd kick) {
        device.stopQueue(q);
        device.clearQuarantine(q); // quarantine is sticky until the queue is reset
        d.initialise();
        device.setQueueState(q, new QueueState(QUEUE_SIZE, d.descGpa(), d.availGpa(), d.usedGpa(), 0, 0));
        device.startQueue(q);
    }

    private static byte readOnQueue1(BlockDevice device, SplitQueueDriver q1, long header, long data, long status, EventFd irq) {
        long h = q1.hostAddress(header, 16);
        UnsafeApi.putInt(h, BlkRequestDescriptor.T_IN);
        UnsafeApi.putLong(h + 8, 8);
        UnsafeApi.putByte(q1.hostAddress(status, 1), (byte) 0x7f);
        int head = q1.addDirect(new long[] {header, data, status}, new int[] {16, 4096, 1}, new boolean[] {false, true, true}, 3);
        if (q1.publishAvail()) {
            device.kick(1);
        }
        long deadline = System.nanoTime() + 10_000_000_000L;
        int got;
        while ((got = q1.reap()) < 0) {
            if (!q1.enableInterrupts()) {
                irq.await(10);
                irq.read();
            }
            assertTrue(System.nanoTime() < deadline, "queue 1 stopped completing");
        }
        assertEquals(head, got);
        return UnsafeApi.getByte(q1.hostAddress(status, 1));
    }
}
