package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;

import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import io.vblk.aio.BackendKind;
import io.vblk.sys.NativeBuffer;
import io.vblk.testkit.QemuTools;

/**
 * Random writes, discards (advisory: old data or zeros) and write-zeroes, several in flight at
 * once, over a qcow2 overlay of a raw backing file, checked against a byte array after every batch; then {@code qemu-img check}
 * must find no error and no leak, and {@code qemu-img compare} must match the model.
 */
class Qcow2ModelTest {
    private static final int DISK = 4 << 20;
    private static final int CHUNK = 128 << 10;

    @TempDir
    Path dir;

    @ParameterizedTest(name = "{0} cluster {1} seed {2} backing {3}")
    @CsvSource({
        "io_uring, 65536, 1, raw",
        "linux-aio, 4096, 2, raw",
        "threads, 65536, 3, raw",
        "io_uring, 4096, 4, none",
        "io_uring, 65536, 5, qcow2",
        "linux-aio, 65536, 6, none",
    })
    void randomOperationsMatchTheModel(String backend, int clusterSize, long seed, String backingKind) throws Exception {
        Random rnd = new Random(seed);
        byte[] model = new byte[DISK];
        Path overlay;
        if (backingKind.equals("none")) {
            overlay = DriverRig.create(dir, "disk.qcow2", String.valueOf(DISK), "-o", "cluster_size=" + clusterSize);
        } else {
            rnd.nextBytes(model);
            Arrays2.zeroRange(model, DISK - 300 * 1024, DISK); // a backing file shorter than the overlay
            Path base = dir.resolve("base.raw");
            Files.write(base, java.util.Arrays.copyOf(model, DISK - 300 * 1024));
            if (backingKind.equals("qcow2")) {
                Path baseQ = dir.resolve("base.qcow2");
                DriverRig.qemuImg("convert", "-q", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=4096", base.toString(),
                        baseQ.toString());
                base = baseQ;
            }
            overlay = DriverRig.create(dir, "disk.qcow2", String.valueOf(DISK), "-o", "cluster_size=" + clusterSize,
                    "-b", base.getFileName().toString(), "-F", backingKind);
        }
        try (Qcow2Driver d = Qcow2.open(overlay, BackendKind.parse(backend), 32,
                Qcow2Options.defaults().l2CacheTables(2))) {
            DriverRig rig = new DriverRig(d);
            NativeBuffer[] bufs = new NativeBuffer[8];
            for (int i = 0; i < bufs.length; i++) {
                bufs[i] = DriverRig.buffer(3 * clusterSize + 8192);
            }
            List<long[]> discarded = new ArrayList<>();
            for (int batch = 0; batch < 60; batch++) {
                List<long[]> ranges = new ArrayList<>();
                int n = 1 + rnd.nextInt(bufs.length);
                for (int i = 0; i < n; i++) {
                    int len = 512 * (1 + rnd.nextInt((3 * clusterSize) / 512));
                    long off = 512L * rnd.nextInt((DISK - len) / 512 + 1);
                    if (overlaps(ranges, off, len)) {
                        continue;
                    }
                    ranges.add(new long[] {off, len});
                    int kind = rnd.nextInt(10);
                    long tag;
                    if (kind < 6) {
                        byte[] data = new byte[len];
                        rnd.nextBytes(data);
                        DriverRig.fill(bufs[i], data, 0, len);
                        System.arraycopy(data, 0, model, (int) off, len);
                        tag = rig.write(off, bufs[i], len);
                    } else if (kind < 8) {
                        Arrays2.zeroRange(model, (int) off, (int) off + len);
                        tag = rig.writeZeroes(off, len);
                    } else {
                        discarded.add(new long[] {off, len});
                        tag = rig.discard(off, len);
                    }
                    assertEquals(true, tag > 0, "refused: " + tag);
                }
                for (Map.Entry<Long, Long> e : rig.awaitAll().entrySet()) {
                    assertEquals(true, e.getValue() >= 0, "request failed: " + e.getValue() + " " + d.corruptReason());
                }
                // DISCARD is advisory: each byte reads its old value or zero; the model takes what reads.
                for (long[] x : discarded) {
                    int off = (int) x[0];
                    int len = (int) x[1];
                    assertEquals(len, rig.one(rig.read(off, bufs[0], len)));
                    byte[] got = DriverRig.bytes(bufs[0], len);
                    for (int k = 0; k < len; k++) {
                        assertEquals(true, got[k] == 0 || got[k] == model[off + k], "discarded byte at " + (off + k)
                                + " reads " + got[k] + ", neither its old value " + model[off + k] + " nor zero");
                    }
                    System.arraycopy(got, 0, model, off, len);
                }
                discarded.clear();
                // Reads, several in flight, of random ranges.
                long[] offs = new long[4];
                int[] lens = new int[4];
                for (int i = 0; i < 4; i++) {
                    lens[i] = 512 * (1 + rnd.nextInt((3 * clusterSize) / 512));
                    offs[i] = 512L * rnd.nextInt((DISK - lens[i]) / 512 + 1);
                    DriverRig.poison(bufs[i]);
                    rig.read(offs[i], bufs[i], lens[i]);
                }
                rig.awaitAll().values().forEach(v -> assertEquals(true, v >= 0, "read failed " + v));
                for (int i = 0; i < 4; i++) {
                    assertArrayEquals(java.util.Arrays.copyOfRange(model, (int) offs[i], (int) offs[i] + lens[i]),
                            DriverRig.bytes(bufs[i], lens[i]), "batch " + batch + " read at " + offs[i] + "+" + lens[i]);
                }
            }
            // Everything, read back.
            NativeBuffer all = DriverRig.buffer(CHUNK);
            for (int off = 0; off < DISK; off += CHUNK) {
                assertEquals(CHUNK, rig.one(rig.read(off, all, CHUNK)));
                assertArrayEquals(java.util.Arrays.copyOfRange(model, off, off + (CHUNK)), DriverRig.bytes(all, CHUNK),
                        "final read at " + off);
            }
            assertEquals(0, rig.one(rig.flush()));
        }
        QemuTools.Run check = DriverRig.run("qemu-img", "check", overlay.toString());
        assertEquals(0, check.code(), "qemu-img check: " + check.output());
        Path expected = dir.resolve("model.raw");
        Files.write(expected, model);
        QemuTools.Run cmp = DriverRig.run("qemu-img", "compare", "-f", "raw", "-F", "qcow2", expected.toString(),
                overlay.toString());
        assertEquals(0, cmp.code(), "qemu-img compare: " + cmp.output());
    }

    private static boolean overlaps(List<long[]> ranges, long off, long len) {
        for (long[] r : ranges) {
            if (off < r[0] + r[1] && r[0] < off + len) {
                return true;
            }
        }
        return false;
    }

    static final class Arrays2 {
        static void zeroRange(byte[] a, int from, int to) {
            java.util.Arrays.fill(a, from, to, (byte) 0);
        }
    }
}
