package io.vblk.engine.fuzz;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Random;

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
import io.vblk.engine.ThreadingMode;
import io.vblk.engine.Tuning;
import io.vblk.engine.WaitStrategy;
import io.vblk.hostmem.GuestMemory;
import io.vblk.sys.EventFd;
import io.vblk.testkit.SplitQueueDriver;

/**
 * The guest fuzzer at full depth and beyond (issue 10): three queues sharing one I/O thread; each
 * round, a random subset of them is offered a random number of well-formed chains up to the
 * whole ring (reads, writes and flushes, 512 B to 4 KiB, some with buffers that miss O_DIRECT's
 * alignment so they are bounced), plus re-offers of heads already offered in the same round (so
 * one head is in flight several times at once and the requests in flight outnumber the ring),
 * all published at once against a request pool that is often smaller than what is offered (so
 * every slot is in flight and popping stops and resumes). The threading mode, pool depth and
 * ring sizes follow from the seed.
 *
 * <p>After every round: every offered avail entry was used exactly once (used.idx), every chain
 * completed with S_OK, no queue was quarantined, and the completions counter moved by exactly
 * the entries offered; at the end each queue stops (its in-flight count is exact, or the drain
 * would never return). Seeded: a failure names its seed and round; {@code
 * -Dvblk.fuzz.depthRounds=N} runs longer (default 60 rounds per back end), {@code
 * -Dvblk.fuzz.seed=S} replays a seed.
 */
class FullDepthFuzzTest {
    private static final int QUEUES = 3;
    private static final long AREA = 4L << 20;
    private static final int MAX_DATA = 4096;

    @TempDir
    Path dir;

    @ParameterizedTest
    @CsvSource({"NULL,1", "IO_URING,2", "LINUX_AIO,3", "THREADS,4"})
    void queuesSharingAThreadAtFullDepthAndBeyondLoseNothing(BackendKind kind, long salt) throws Exception {
        long seed = Long.getLong("vblk.fuzz.seed", 0xDE97L) * 31 + salt;
        int rounds = Integer.getInteger("vblk.fuzz.depthRounds", 60);
        Random random = new Random(seed);
        // Both modes in every CI run: two back ends each (a replayed seed keeps its mode).
        ThreadingMode mode = (random.nextInt() ^ salt) % 2 == 0 ? ThreadingMode.SHARED : ThreadingMode.DEDICATED;
        int poolDepth = new int[] {8, 16, 64, 256}[random.nextInt(4)];
        int[] sizes = new int[QUEUES];
        for (int q = 0; q < QUEUES; q++) {
            sizes[q] = 16 << random.nextInt(5); // 16 .. 256
        }
        int queueSize = 256;
        String run = kind + " seed " + seed + " (" + mode + ", pool " + poolDepth + ", rings " + java.util.Arrays.toString(sizes) + ")";
        Path imagePath = dir.resolve("depth.img");
        Files.write(imagePath, new byte[8 << 20]);
        long offered = 0;
        try (Image image = Image.open(imagePath, ImageOptions.defaults());
             GuestMemory memory = GuestMemory.builder().guarded(true).addMemfd(0, QUEUES * AREA).build()) {
            BlkConfig config = BlkConfig.builder(image.sizeBytes()).numQueues(QUEUES).queueSize(queueSize).build();
            Tuning tuning = Tuning.builder().waitStrategy(WaitStrategy.BLOCKING).threadingMode(mode).queueThreads(0, 0, 0)
                    .backendDepth(poolDepth).recordLatency(false).build();
            EventFd[] kicks = new EventFd[QUEUES];
            EventFd[] irqs = new EventFd[QUEUES];
            SplitQueueDriver[] drivers = new SplitQueueDriver[QUEUES];
            long[][] header = new long[QUEUES][];
            long[][] data = new long[QUEUES][];
            long[][] status = new long[QUEUES][];
            try (BlockDevice device = BlockDevice.builder(config, BackendFactory.of(kind, image)).memory(memory).tuning(tuning)
                    .name("depth-fuzz").build()) {
                device.negotiate(config.offeredFeatures() & ~io.vblk.engine.BlkFeatures.bit(io.vblk.engine.BlkFeatures.RING_EVENT_IDX));
                for (int q = 0; q < QUEUES; q++) {
                    drivers[q] = SplitQueueDriver.builder(memory).size(sizes[q]).eventIdx(false).indirectEntries(4)
                            .area(q * AREA, AREA).build();
                    kicks[q] = EventFd.create(true);
                    irqs[q] = EventFd.create(true);
                    header[q] = new long[sizes[q]];
                    data[q] = new long[sizes[q]];
                    status[q] = new long[sizes[q]];
                    for (int h = 0; h < sizes[q]; h++) {
                        header[q][h] = drivers[q].allocate(16, 16);
                        data[q][h] = drivers[q].allocate(MAX_DATA + 64, 4096);
                        status[q][h] = drivers[q].allocate(1, 1);
                    }
                    device.configureQueue(q, sizes[q], drivers[q].descGpa(), drivers[q].availGpa(), drivers[q].usedGpa());
                    device.setKick(q, kicks[q]);
                    device.setInterrupt(q, Interrupt.of(irqs[q]));
                    device.startQueue(q);
                }
                long[] completions = new long[QUEUES];
                int[] expectedUsed = new int[QUEUES];
                int[][] heads = new int[QUEUES][];
                for (int round = 1; round <= rounds; round++) {
                    String where = run + " round " + round;
                    boolean[] touched = new boolean[QUEUES];
                    for (int q = 0; q < QUEUES; q++) {
                        touched[q] = random.nextInt(4) != 0;
                        if (!touched[q]) {
                            continue;
                        }
                        SplitQueueDriver d = drivers[q];
                        int size = sizes[q];
                        // Often the whole ring; re-offers fill what the chains leave of it.
                        int chains = random.nextInt(3) == 0 ? size : 1 + random.nextInt(size);
                        int reoffers = random.nextBoolean() ? random.nextInt(size - chains + 1) : 0;
                        heads[q] = new int[chains];
                        for (int i = 0; i < chains; i++) {
                            heads[q][i] = addChain(d, random, header[q], data[q], status[q], image.sizeBytes());
                            assertTrue(heads[q][i] >= 0, "ring full at chain " + i + " of " + chains + ", " + where);
                        }
                        for (int i = 0; i < reoffers; i++) {
                            io.vblk.testkit.RingTamperer.of(d).offerRaw(heads[q][random.nextInt(chains)]);
                        }
                        expectedUsed[q] = chains + reoffers;
                    }
                    // Publish everything, then kick: one round of the I/O thread sees all of it.
                    for (int q = 0; q < QUEUES; q++) {
                        if (touched[q]) {
                            io.vblk.testkit.RingTamperer.of(drivers[q]).writeAvailIdx(drivers[q].availIdx());
                        }
                    }
                    for (int q = 0; q < QUEUES; q++) {
                        if (touched[q]) {
                            kicks[q].signal();
                        }
                    }
                    for (int q = 0; q < QUEUES; q++) {
                        if (!touched[q]) {
                            continue;
                        }
                        awaitUsed(device, drivers[q], q, expectedUsed[q], where);
                        for (int head : heads[q]) {
                            assertEquals(BlkRequestDescriptor.S_OK, UnsafeApi.getByte(drivers[q].hostAddress(status[q][head], 1)),
                                    "status of head " + head + " on queue " + q + ", " + where);
                        }
                        completions[q] += expectedUsed[q];
                        offered += expectedUsed[q];
                        // Counted when the used element is written; used.idx is published after.
                        assertEquals(completions[q], device.counters(q).get(QueueCounters.COMPLETIONS), "queue " + q + ", " + where);
                        assertFalse(device.isBroken(q), "queue " + q + " quarantined: " + device.brokenReason(q) + ", " + where);
                        restart(device, drivers[q], q, sizes[q]);
                    }
                }
                for (int q = 0; q < QUEUES; q++) {
                    device.stopQueue(q); // returns: in-flight accounting stayed exact
                }
            } finally {
                for (int q = 0; q < QUEUES; q++) {
                    if (kicks[q] != null) {
                        kicks[q].close();
                        irqs[q].close();
                    }
                }
            }
        }
        System.out.printf("full-depth fuzz %s: %d rounds, %d avail entries used%n", run, rounds, offered);
    }

    /** A well-formed chain in one indirect table: [header][data][status]; or [header][status] for a flush. */
    private static int addChain(SplitQueueDriver d, Random random, long[] header, long[] data, long[] status, long imageBytes) {
        int type = switch (random.nextInt(5)) {
            case 0, 1 -> BlkRequestDescriptor.T_IN;
            case 2, 3 -> BlkRequestDescriptor.T_OUT;
            default -> BlkRequestDescriptor.T_FLUSH;
        };
        int length = 512 * (1 + random.nextInt(MAX_DATA / 512));
        long sector = random.nextInt((int) ((imageBytes - MAX_DATA) / 512));
        // The head the driver will hand out is its free head; buffers are indexed by it.
        int head = peekFreeHead(d);
        if (head < 0) {
            return -1;
        }
        long h = d.hostAddress(header[head], 16);
        UnsafeApi.putInt(h, type);
        UnsafeApi.putInt(h + 4, 0);
        UnsafeApi.putLong(h + 8, type == BlkRequestDescriptor.T_FLUSH ? 0 : sector);
        UnsafeApi.putByte(d.hostAddress(status[head], 1), (byte) 0x7f);
        int got;
        if (type == BlkRequestDescriptor.T_FLUSH) {
            got = d.addIndirect(new long[] {header[head], status[head]}, new int[] {16, 1}, new boolean[] {false, true}, 2);
        } else {
            long buffer = data[head] + (random.nextInt(4) == 0 ? 8 : 0); // some bounced
            got = d.addIndirect(new long[] {header[head], buffer, status[head]}, new int[] {16, length, 1},
                    new boolean[] {false, type == BlkRequestDescriptor.T_IN, true}, 3);
        }
        if (got != head) {
            throw new AssertionError("driver handed out head " + got + ", expected " + head);
        }
        return got;
    }

    /** The driver hands out descriptors from its free list in order; after initialise() that is 0, 1, 2, ... */
    private static int peekFreeHead(SplitQueueDriver d) {
        int used = d.size() - d.freeDescriptors();
        return used < d.size() ? used : -1;
    }

    private static void awaitUsed(BlockDevice device, SplitQueueDriver d, int q, int expected, String where)
            throws InterruptedException {
        long deadline = System.nanoTime() + 30_000_000_000L;
        int used;
        while ((used = d.usedIdx() & 0xffff) != expected) {
            assertFalse(device.isBroken(q), "queue " + q + " quarantined: " + device.brokenReason(q) + ", " + where);
            if (used > expected) {
                StringBuilder ids = new StringBuilder();
                for (int i = 0; i < used; i++) {
                    ids.append(d.usedId(i)).append(':').append(d.usedLength(i)).append(' ');
                }
                throw new AssertionError("more used entries (" + used + ") than offered (" + expected
                        + ") on queue " + q + "; counters " + device.counters(q) + "; used " + ids + ", " + where);
            }
            assertTrue(System.nanoTime() < deadline, "queue " + q + ": " + used + " of " + expected
                    + " used; counters " + device.counters(q) + ", " + where);
            Thread.sleep(0, 200_000);
        }
    }

    /** Stops queue q and starts it afresh on a re-initialised ring (every descriptor free again). */
    private static void restart(BlockDevice device, SplitQueueDriver d, int q, int size) {
        device.stopQueue(q);
        d.initialise();
        device.setQueueState(q, new QueueState(size, d.descGpa(), d.availGpa(), d.usedGpa(), 0, 0));
        device.startQueue(q);
    }
}
