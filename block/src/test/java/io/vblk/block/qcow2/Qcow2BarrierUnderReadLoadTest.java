package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.ArrayDeque;
import java.util.HashMap;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.aio.IoVector;
import io.vblk.sys.NativeBuffer;

/**
 * A copy-on-write piece waiting for its barrier flush gets it while reads keep the back end full
 * (rev14e M-a). The barrier was prepared only after every runnable request had taken the slots
 * the reap freed (end of advance, and at submit after the engine's new requests): the write (and
 * its cluster lock) waited as long as the load lasted. Now it is prepared first in each round.
 */
class Qcow2BarrierUnderReadLoadTest {
    static final int C = 65536;

    static final class Counting extends io.vblk.testkit.ForwardingBackend {
        boolean armed;
        int clusterWrites;
        int barrierRefused;
        int barrierPrepared;

        Counting(io.vblk.aio.IoBackend real) {
            super(real);
        }

        @Override
        public int prepareWrite(long offset, IoVector buffers, long userData) {
            int rc = real.prepareWrite(offset, buffers, userData);
            if (armed && rc == 0 && buffers.totalLength() == C) {
                clusterWrites++;
            }
            return rc;
        }

        @Override
        public int prepareFlush(long userData) {
            int rc = real.prepareFlush(userData);
            if (armed && userData == (7L << 24)) {
                if (rc == 0) {
                    barrierPrepared++;
                } else {
                    barrierRefused++;
                }
            }
            return rc;
        }
    }

    @Test
    void aCowWaitsForItsBarrierWhileReadsKeepTheBackEndFull(@TempDir Path dir) throws Exception {
        Path img = DriverRig.create(dir, "s.qcow2", "16M", "-o", "cluster_size=65536");
        FileHost host = new FileHost(img.toRealPath(), BackendKind.IO_URING, false, false);
        Counting io = new Counting(host.openBackend(4));
        try (Qcow2Driver d = new Qcow2Driver(Qcow2Image.read(host, 512), host, io, null, 32,
                Qcow2Options.defaults())) {
            DriverRig rig = new DriverRig(d);
            NativeBuffer big = DriverRig.buffer(4 * C);
            big.buffer().setMemory(0, 4 * C, (byte) 0x11);
            for (int i = 0; i < 16; i++) {
                assertEquals(4 * C, rig.one(rig.write((long) i * 4 * C, big, 4 * C))); // clusters 0..63 allocated
            }
            NativeBuffer b = DriverRig.buffer(4096);
            b.buffer().setMemory(0, 4096, (byte) 0x77);
            assertEquals(4096, rig.one(rig.write(100L * C, b, 4096)));
            assertEquals(0, rig.one(rig.writeZeroes(100L * C, C))); // ZERO|COPIED: the next write reuses it, with a barrier

            int outstanding = 20;
            NativeBuffer[] bufs = new NativeBuffer[outstanding];
            ArrayDeque<Integer> freeBufs = new ArrayDeque<>();
            for (int i = 0; i < outstanding; i++) {
                bufs[i] = DriverRig.buffer(4 * C);
                freeBufs.add(i);
            }
            Map<Long, Integer> reading = new HashMap<>();
            long[] nextTag = {1000};
            java.util.Random rnd = new java.util.Random(1);
            Runnable issueRead = () -> {
                int bi = freeBufs.poll();
                IoVector v = new IoVector(1);
                v.add(bufs[bi].address(), 4 * C);
                long tag = nextTag[0]++;
                int rc = d.read((long) rnd.nextInt(16) * 4 * C, v, tag);
                assertEquals(0, rc);
                reading.put(tag, bi);
            };
            for (int i = 0; i < outstanding - 2; i++) {
                issueRead.run();
            }
            IoVector wv = new IoVector(1);
            wv.add(b.address(), 4096);
            long writeTag = 7;
            io.armed = true;
            assertEquals(0, d.write(100L * C + 8192, wv, writeTag));
            long[] writeResult = {Long.MIN_VALUE};
            int reads = 0;
            d.submit();
            while (reads < 5000 && writeResult[0] == Long.MIN_VALUE) {
                int[] completedReads = {0};
                d.poll((tag, result) -> {
                    if (tag == writeTag) {
                        writeResult[0] = result;
                    } else {
                        assertEquals(4L * C, result);
                        freeBufs.add(reading.remove(tag));
                        completedReads[0]++;
                    }
                }, 1024);
                for (int i = 0; i < completedReads[0]; i++) {
                    issueRead.run(); // the guest keeps its queue full
                }
                reads += completedReads[0];
                d.submit();
                if (completedReads[0] == 0 && writeResult[0] == Long.MIN_VALUE) {
                    d.awaitCompletions(5);
                }
            }
            System.out.println("reads completed while the COW write waited: " + reads + ", write result "
                    + writeResult[0] + "; reused-cluster data writes " + io.clusterWrites + ", barrier flush refused (EAGAIN) "
                    + io.barrierRefused + " times, prepared " + io.barrierPrepared + " times");
            if (writeResult[0] == Long.MIN_VALUE) {
                // The load stops: the barrier gets a slot and the write completes at once.
                for (int i = 0; i < 2000 && (writeResult[0] == Long.MIN_VALUE || !reading.isEmpty()); i++) {
                    d.poll((tag, result) -> {
                        if (tag == writeTag) {
                            writeResult[0] = result;
                        } else {
                            freeBufs.add(reading.remove(tag));
                        }
                    }, 1024);
                    d.submit();
                    d.awaitCompletions(5);
                }
                System.out.println("after the reads stopped: write result " + writeResult[0] + ", barrier prepared "
                        + io.barrierPrepared);
                writeResult[0] = Long.MIN_VALUE;
            }
            assertTrue(writeResult[0] != Long.MIN_VALUE, "the copy-on-write write did not complete while "
                    + reads + " reads completed: its barrier flush never found a free back-end slot");
        }
    }
}
