package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.sys.NativeBuffer;

/**
 * A raw backing file whose size is not a multiple of 512 (QEMU reads it as if padded with
 * zeros to the sector). Reads and copy-on-write of the first cluster must give its bytes then zeros.
 */
class Qcow2OddSizedBackingTest {
    @TempDir
    Path dir;

    @Test
    void anOddSizedRawBackingFileReadsAsPaddedWithZeros() throws Exception {
        java.util.List<String> failures = new java.util.ArrayList<>();
        for (BackendKind kind : new BackendKind[] {BackendKind.THREADS, BackendKind.IO_URING}) {
            for (boolean direct : new boolean[] {true, false}) {
                byte[] base = new byte[1000];
                java.util.Arrays.fill(base, (byte) 0x42);
                Files.write(dir.resolve("odd.raw"), base);
                Path o = DriverRig.create(dir, "o-" + kind + direct + ".qcow2", "1M", "-b", "odd.raw", "-F", "raw");
                try {
                try (Qcow2Driver d = Qcow2.open(o, kind, 8, Qcow2Options.defaults().direct(direct))) {
                    DriverRig rig = new DriverRig(d);
                    NativeBuffer b = DriverRig.buffer(4096);
                    DriverRig.poison(b);
                    long rc = rig.one(rig.read(0, b, 4096));
                    String where = kind + " direct=" + direct;
                    assertEquals(4096, rc, where + " read of the first 4 KiB");
                    byte[] got = DriverRig.bytes(b, 4096);
                    assertEquals(0x42, got[999], where + " byte 999");
                    assertEquals(0, got[1000], where + " byte 1000 (past the backing file: zero)");
                    assertEquals(0, got[4095], where + " byte 4095");
                    // copy-on-write of the same cluster: a 512-byte write at 2048
                    NativeBuffer w = DriverRig.buffer(512);
                    DriverRig.fill(w, new byte[512], 0, 512);
                    assertEquals(512, rig.one(rig.write(2048, w, 512)), where + " COW write");
                    DriverRig.poison(b);
                    rig.one(rig.read(0, b, 4096));
                    got = DriverRig.bytes(b, 4096);
                    assertEquals(0x42, got[999], where + " byte 999 after COW");
                    assertEquals(0, got[1000], where + " byte 1000 after COW");
                }
                } catch (AssertionError e) {
                    failures.add(e.getMessage());
                }
            }
        }
        org.junit.jupiter.api.Assertions.assertTrue(failures.isEmpty(), String.join("; ", failures));
    }
}
