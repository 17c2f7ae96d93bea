package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static io.vblk.engine.BlkRequestDescriptor.T_DISCARD;
import static io.vblk.engine.BlkRequestDescriptor.T_FLUSH;
import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static io.vblk.engine.BlkRequestDescriptor.T_OUT;
import static io.vblk.engine.BlkRequestDescriptor.T_WRITE_ZEROES;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Random;

import org.agrona.UnsafeApi;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import io.vblk.aio.BackendKind;
import io.vblk.block.qcow2.Qcow2;
import io.vblk.block.qcow2.Qcow2Options;

/**
 * The device serving a qcow2 overlay of a raw file through the qcow2 driver, on every back end
 * that stores data: batches of requests in flight, checked against a byte array, and the file
 * afterwards against qemu-img check and compare (the backing file untouched).
 */
class Qcow2DeviceTest {
    private static final int DISK = 8 << 20;

    @TempDir
    Path dir;

    @ParameterizedTest
    @EnumSource(value = BackendKind.class, names = {"IO_URING", "LINUX_AIO", "THREADS"})
    void guestRequestsOnAnOverlay(BackendKind kind) throws Exception {
        byte[] model = new byte[DISK];
        Random rnd = new Random(kind.ordinal());
        rnd.nextBytes(model);
        Path base = dir.resolve("base.raw");
        Files.write(base, model);
        byte[] baseCopy = model.clone();
        Path overlay = dir.resolve("disk.qcow2");
        exec("qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", overlay.toString());
        try (DeviceRig rig = DeviceRig.builder(dir, kind).image(overlay)
                .drivers(Qcow2.factory(overlay, kind, Qcow2Options.defaults().l2CacheTables(4)), DISK).build()) {
            int len = 64 * 1024;
            long[] bufs = new long[8];
            for (int i = 0; i < bufs.length; i++) {
                bufs[i] = rig.buffer(0, len);
            }
            for (int round = 0; round < 20; round++) {
                // Eight writes in flight at once, in distinct 128 KiB windows.
                int[] heads = new int[bufs.length];
                for (int i = 0; i < bufs.length; i++) {
                    int n = 512 * (1 + rnd.nextInt(len / 512));
                    long off = (long) (i * (DISK / bufs.length)) + 512L * rnd.nextInt((DISK / bufs.length - n) / 512);
                    byte[] data = new byte[n];
                    rnd.nextBytes(data);
                    UnsafeApi.copyMemory(data, UnsafeApi.arrayBaseOffset(byte[].class), null, rig.host(bufs[i], n), n);
                    System.arraycopy(data, 0, model, (int) off, n);
                    heads[i] = rig.add(0, T_OUT, off / 512, bufs[i], n, false);
                }
                rig.kick(0);
                for (int i = 0; i < bufs.length; i++) {
                    rig.awaitUsed(0, 10_000);
                }
                for (int h : heads) {
                    assertEquals(S_OK, rig.status(0, h));
                }
                long off = 512L * rnd.nextInt((DISK - len) / 512);
                assertEquals(S_OK, rig.roundTrip(0, T_IN, off / 512, bufs[0], len, true));
                byte[] back = new byte[len];
                UnsafeApi.copyMemory(null, rig.host(bufs[0], len), back, UnsafeApi.arrayBaseOffset(byte[].class), len);
                assertArrayEquals(Arrays.copyOfRange(model, (int) off, (int) off + len), back, "round " + round);
            }
            long seg = rig.buffer(0, 16);
            segment(rig, seg, 100, 300, 0);
            assertEquals(S_OK, rig.roundTrip(0, T_DISCARD, 0, seg, 16, false));
            // DISCARD is advisory: each byte reads its old value or zero; the model takes what reads.
            for (int sector = 100; sector < 400; sector += 100) {
                int n = 100 * 512;
                assertEquals(S_OK, rig.roundTrip(0, T_IN, sector, bufs[0], n, true));
                byte[] got = new byte[n];
                UnsafeApi.copyMemory(null, rig.host(bufs[0], n), got, UnsafeApi.arrayBaseOffset(byte[].class), n);
                for (int k = 0; k < n; k++) {
                    assertEquals(true, got[k] == 0 || got[k] == model[sector * 512 + k], "discarded byte " + k);
                }
                System.arraycopy(got, 0, model, sector * 512, n);
            }
            segment(rig, seg, 4096, 1000, 1);
            assertEquals(S_OK, rig.roundTrip(0, T_WRITE_ZEROES, 0, seg, 16, false));
            Arrays.fill(model, 4096 * 512, 5096 * 512, (byte) 0);
            assertEquals(S_OK, rig.roundTrip(0, T_FLUSH, 0, 0, 0, false));
        }
        assertArrayEquals(baseCopy, Files.readAllBytes(base), "the backing file never changes");
        assertEquals("", exec("qemu-img", "check", "-q", overlay.toString()).trim());
        Path expected = dir.resolve("expected.raw");
        Files.write(expected, model);
        exec("qemu-img", "compare", "-q", "-f", "raw", "-F", "qcow2", expected.toString(), overlay.toString());
    }

    private static void segment(DeviceRig rig, long gpa, long sector, int sectors, int flags) {
        long h = rig.host(gpa, 16);
        UnsafeApi.putLong(h, sector);
        UnsafeApi.putInt(h + 8, sectors);
        UnsafeApi.putInt(h + 12, flags);
    }

    static String exec(String... cmd) throws Exception {
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertEquals(0, p.waitFor(), String.join(" ", cmd) + ": " + out);
        return out;
    }
}
