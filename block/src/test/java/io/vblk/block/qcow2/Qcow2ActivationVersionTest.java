package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Path;
import java.util.Arrays;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.sys.NativeBuffer;
import io.vblk.testkit.QemuTools;

/**
 * Regression (review rev11c): Qcow2Driver.activate() re-reads the header after another process owned the
 * image, but compares only cluster size, virtual size and compression type with what the
 * driver fixed at its (inactive) open. The version is kept in a final field ({@code v3}): an
 * image turned v2 between the hand-over and the activation (qemu-img amend -o compat=0.10 while
 * neither backend holds the writer's locks) is activated, and the driver then writes v3-only
 * zero flags into its L2 tables, which QEMU refuses as corruption ("zero cluster entry found in
 * pre-v3 image").
 */
class Qcow2ActivationVersionTest {
    private static final long SIZE = 8L << 20;

    @TempDir
    Path dir;

    @Test
    void anActivationRefusesAnImageWhoseVersionChanged() throws Exception {
        Path img = DriverRig.create(dir, "vm.qcow2", String.valueOf(SIZE), "-o", "compat=1.1");
        Qcow2Driver src = Qcow2.open(img, BackendKind.IO_URING, 16, Qcow2Options.defaults());
        Qcow2Driver dst = null;
        try {
            NativeBuffer b = DriverRig.buffer(65536);
            byte[] data = new byte[65536];
            Arrays.fill(data, (byte) 0x5a);
            DriverRig.fill(b, data, 0, 65536);
            DriverRig rs = new DriverRig(src);
            assertEquals(65536, rs.one(rs.write(0, b, 65536)));
            dst = Qcow2.open(img, BackendKind.IO_URING, 16, Qcow2Options.defaults().incoming(true));
            assertTrue(src.inactivate());
            src.close();
            src = null;
            QemuTools.Run amend = QemuTools.qemuImg("amend", "-f", "qcow2", "-o", "compat=0.10", img.toString());
            assertEquals(0, amend.code(), amend.output());
            assertTrue(QemuTools.qemuImg("info", img.toString()).output().contains("compat: 0.10"));
            Qcow2Driver d = dst;
            IOException refused = null;
            try {
                d.activate();
            } catch (IOException e) {
                refused = e;
            }
            if (refused == null) {
                // What the activated driver does to the v2 image: a whole-cluster WRITE_ZEROES
                // sets the v3 zero flag in the L2 entry.
                DriverRig rd = new DriverRig(d);
                assertEquals(0, rd.one(rd.writeZeroes(0, 65536)));
                d.close();
                dst = null;
                QemuTools.Run read = QemuTools.qemuIo("-r", "-f", "qcow2", "-c", "read -P 0 0 65536", img.toString());
                throw new AssertionError("activated a qcow2 image that became v2 after the open; qemu-io then reads: "
                        + read.output() + " / qemu-img check: "
                        + QemuTools.qemuImg("check", "-f", "qcow2", img.toString()).output());
            }
            assertFalse(d.active());
        } finally {
            if (src != null) {
                src.close();
            }
            if (dst != null) {
                dst.close();
            }
        }
    }
}
