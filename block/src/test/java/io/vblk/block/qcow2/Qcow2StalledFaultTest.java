package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoVector;
import io.vblk.sys.FaultPoints;
import io.vblk.sys.NativeBuffer;
import io.vblk.testkit.GatedBackend;
import io.vblk.testkit.QemuTools;

/**
 * A late fault (engine GuestFaults) goes through the qcow2 driver while its back end holds an
 * operation that does not complete (a stalled disk: a held write of {@link GatedBackend}). The
 * driver recovers from a fault only once its back ends are idle; until then it used to count the
 * fault as work pending, so the I/O thread, which sleeps only when nothing is pending, polled the
 * whole time the write stalled (a core at 100 %). Now it waits in the kernel for the completion,
 * and still recovers once the write completes: the slot the fault cut off comes back. Driven as
 * the I/O thread drives the driver (sleep only when nothing is pending), on real io_uring and a
 * real image.
 */
class Qcow2StalledFaultTest {
    private static final int DEPTH = 4;
    private static final int CLUSTER = 64 << 10;
    private static final int LEN = 4096;
    /** How long the stalled write is held while the thread's polls are counted. */
    private static final long STALL_NS = 300_000_000L;
    /** The thread's wait for a completion: a sleeping thread polls about once per wait. */
    private static final int WAIT_MS = 50;

    @Test
    void aFaultWhileTheBackEndStallsSleepsUntilTheBackEndIsIdleThenRecovers(@TempDir Path dir) throws Exception {
        byte[] raw = new byte[4 << 20];
        new Random(5).nextBytes(raw); // every cluster allocated
        Path rawFile = dir.resolve("data.raw");
        Files.write(rawFile, raw);
        Path img = dir.resolve("disk.qcow2");
        DriverRig.qemuImg("convert", "-q", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=" + CLUSTER,
                rawFile.toString(), img.toString());
        long heldAt = hostOffset(img, 2L * CLUSTER);

        FileHost host = new FileHost(img.toRealPath(), BackendKind.IO_URING, false, false);
        GatedBackend.Holder holder = new GatedBackend.Holder(Set.of(heldAt));
        IoBackend io = holder.wrap(host.openBackend(64));
        Qcow2Driver d = new Qcow2Driver(Qcow2Image.read(host, 512), host, io, null, DEPTH, Qcow2Options.defaults());
        try {
            DriverRig rig = new DriverRig(d);
            NativeBuffer buf = DriverRig.buffer(LEN);
            assertEquals(LEN, rig.one(rig.read(0, buf, LEN)), "the L2 table loaded: the next requests go to the data");

            // The write to guest cluster 2 reaches the back end and stalls there.
            List<long[]> done = new ArrayList<>();
            assertEquals(0, d.write(2L * CLUSTER, vec(buf), 1));
            d.submit();
            assertEquals(1, holder.held(), "the write is held by the stalled back end");
            // A fault lands in the next request's prepare, after the back end took its slot.
            FaultPoints.arm(FaultPoints.PREPARE_TAKEN);
            try {
                d.read(CLUSTER, vec(buf), 2);
            } catch (InternalError e) {
                assertEquals(FaultPoints.MESSAGE, e.getMessage());
            }
            assertTrue(FaultPoints.fired(), "the fault landed");
            FaultPoints.disarm();

            // The thread, as the engine's: polls, submits what is pending, sleeps only when nothing is.
            long polls = 0;
            long sleeps = 0;
            long cpu0 = java.lang.management.ManagementFactory.getThreadMXBean().getCurrentThreadCpuTime();
            long end = System.nanoTime() + STALL_NS;
            while (System.nanoTime() < end) {
                if (d.pendingSubmit() > 0) {
                    d.submit();
                }
                d.poll((tag, result) -> done.add(new long[] {tag, result}), 16);
                polls++;
                if (d.pendingSubmit() == 0) {
                    if (d.awaitCompletions(WAIT_MS) == 0) {
                        sleeps++;
                    } else {
                        d.acknowledgeCompletions(); // what woke it, as the engine's epoll wait does
                    }
                }
            }
            long cpuMs = (java.lang.management.ManagementFactory.getThreadMXBean().getCurrentThreadCpuTime() - cpu0) / 1_000_000;
            assertEquals(1, done.size(), "the faulted read finished: " + done.size());
            assertEquals(2, done.get(0)[0]);
            assertEquals(-5, done.get(0)[1], "the faulted read fails with EIO");
            // A sleeping thread wakes about once per wait (6 here); a polling one, thousands of times.
            long mostPolls = 4 * (STALL_NS / 1_000_000 / WAIT_MS) + 4;
            assertTrue(polls <= mostPolls, polls + " polls in " + STALL_NS / 1_000_000 + " ms with the back end stalled: it spun"
                    + " (at most " + mostPolls + " expected from a thread that sleeps; slept " + sleeps + " times; " + cpuMs + " ms of CPU)");
            assertEquals(0, d.pendingSubmit(), "a fault waiting for a stalled back end is no work to poll for");
            assertTrue(sleeps > 0, "the thread slept in the kernel");
            assertEquals(1, d.inFlight(), "the stalled write is still in flight");

            // The write completes: the back ends are idle, the fault is recovered, the lost slot comes back.
            holder.release();
            long deadline = System.nanoTime() + 60_000_000_000L; // a hang guard (real I/O on a loaded machine)
            while (done.size() < 2 || d.pendingSubmit() > 0) {
                assertTrue(System.nanoTime() < deadline, "never recovered: " + done.size() + " done, in flight " + d.inFlight());
                if (d.pendingSubmit() > 0) {
                    d.submit();
                }
                d.poll((tag, result) -> done.add(new long[] {tag, result}), 16);
                if (d.pendingSubmit() == 0 && done.size() < 2 && d.awaitCompletions(WAIT_MS) > 0) {
                    d.acknowledgeCompletions();
                }
            }
            assertEquals(1, done.get(1)[0]);
            assertEquals(LEN, done.get(1)[1], "the held write completed");
            assertEquals(0, d.inFlight());
            assertEquals(io.depth(), io.freeSlots(), "the slot the fault cut off came back once the back end was idle");
            assertEquals(0, d.reclaimLostSlots(), "the driver took the lost slot back itself: nothing left for the engine");
        } finally {
            FaultPoints.disarm();
            holder.release();
            d.close();
        }
    }

    /** Where guest offset {@code guest} lies in the image file ({@code qemu-img map}). */
    private static long hostOffset(Path img, long guest) throws Exception {
        QemuTools.Run r = DriverRig.run("qemu-img", "map", "--output=json", img.toString());
        assertEquals(0, r.code(), r.output());
        Matcher m = Pattern.compile("\"start\": (\\d+), \"length\": (\\d+),[^}]*\"data\": true[^}]*\"offset\": (\\d+)")
                .matcher(r.output());
        while (m.find()) {
            long start = Long.parseLong(m.group(1));
            long length = Long.parseLong(m.group(2));
            if (guest >= start && guest < start + length) {
                return Long.parseLong(m.group(3)) + guest - start;
            }
        }
        throw new AssertionError("guest offset " + guest + " not mapped: " + r.output());
    }

    private static IoVector vec(NativeBuffer buf) {
        IoVector v = new IoVector(1);
        v.add(buf.address(), LEN);
        return v;
    }
}
