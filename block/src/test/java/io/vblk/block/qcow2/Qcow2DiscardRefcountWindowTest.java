package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;

import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.testkit.QemuTools;

/**
 * A DISCARD's refcount read covers a window of REFCOUNT_WINDOW (1024) entries. It was counted
 * from the start of the aligned unit holding the cluster's entry, but a unit may hold more
 * entries than that (4 KiB of 16-bit entries: 2048; 512 bytes of 1-bit entries: 4096), so a
 * cluster whose entry lay 1024 or more entries past its unit's start was outside the window and
 * its DISCARD failed with EIO although its refcount was 1. Now the window reaches past the
 * DISCARD's own entry. Each case writes 10 MiB of 4 KiB clusters with qemu-io (about 2600 host
 * clusters, so entries far into a unit) and discards it 1 MiB at a time: every DISCARD succeeds,
 * the image checks clean and reads back as zeros.
 */
class Qcow2DiscardRefcountWindowTest {
    private static final long MIB = 1 << 20;

    @TempDir
    Path dir;

    @Test
    void bits16At4k() throws Exception {
        discardAll(16, 4096);
    }

    @Test
    void bits1At4k() throws Exception {
        discardAll(1, 4096);
    }

    @Test
    void bits1At512() throws Exception {
        discardAll(1, 512);
    }

    @Test
    void bits2At512() throws Exception {
        discardAll(2, 512);
    }

    @Test
    void bits4At512() throws Exception {
        discardAll(4, 512);
    }

    @Test
    void bits64At4k() throws Exception {
        discardAll(64, 4096);
    }

    @Test
    void bits1Writeback() throws Exception {
        Path img = written(1, "w");
        try (Qcow2Driver d = Qcow2.open(img, BackendKind.IO_URING, 8, Qcow2Options.defaults().direct(false))) {
            discardEach(d);
        }
        checkZeros(img);
    }

    private void discardAll(int bits, int alignment) throws Exception {
        Path img = written(bits, "a" + alignment);
        HeaderFaultHost host = new HeaderFaultHost(new FileHost(img.toRealPath(), BackendKind.IO_URING, false, true), alignment);
        try (Qcow2Driver d = host.open(Qcow2Options.defaults())) {
            discardEach(d);
        }
        checkZeros(img);
    }

    private Path written(int bits, String name) throws Exception {
        Path img = DriverRig.create(dir, name + "_" + bits + ".qcow2", "12M", "-o",
                "compat=1.1,cluster_size=4096,refcount_bits=" + bits);
        qemuIo(img, "write -P 0x5a 0 10M");
        return img;
    }

    private static void discardEach(Qcow2Driver d) throws Exception {
        DriverRig rig = new DriverRig(d);
        for (long at = 0; at < 10 * MIB; at += MIB) {
            assertEquals(0, rig.one(rig.discard(at, MIB)), "DISCARD at " + (at / MIB) + " MiB");
        }
        assertEquals(0, rig.one(rig.flush()));
    }

    private static void checkZeros(Path img) {
        QemuTools.Run check = DriverRig.run("qemu-img", "check", img.toString());
        assertEquals(0, check.code(), "qemu-img check: " + check.output());
        qemuIo(img, "read -P 0 0 10M");
    }

    private static void qemuIo(Path img, String command) {
        QemuTools.Run r = DriverRig.run("qemu-io", "-f", "qcow2", "-c", command, img.toString());
        assertEquals(0, r.code(), "qemu-io " + command + ": " + r.output());
        assertFalse(r.output().contains("Pattern verification failed"), "qemu-io " + command + ": " + r.output());
    }
}
