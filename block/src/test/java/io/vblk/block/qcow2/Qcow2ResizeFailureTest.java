package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.sys.NativeBuffer;
import io.vblk.testkit.QemuTools;

/**
 * A resize whose header write reports an error after the header reached the disk (an fdatasync
 * failing after the write): the image now names the new L1 table, in clusters the resize counted
 * and wrote. The driver reads its metadata again rather than keep the allocation point and
 * refcount block it had before: otherwise the next allocating write was handed the new L1
 * table's clusters as fresh and wrote guest data over the table (rev14a LOW). The image has the
 * new size then, so the resize reports success (rev14c L2: it threw, and the daemon told the guest
 * a capacity the driver no longer had); a step failing after the header (freeing the old L1
 * table's clusters) only leaks them. A header write that never reached the disk fails the resize
 * and leaves the old size.
 */
class Qcow2ResizeFailureTest {
    private static final long MIB = 1 << 20;

    @TempDir
    Path dir;

    @Test
    void aHeaderWriteThatFailsAfterLandingLeavesTheDriverOnTheImagesMetadata() throws Exception {
        Path img = DriverRig.create(dir, "r.qcow2", "16M", "-o", "cluster_size=4096");
        qemuIo(img, "write -P 0x6b 1M 64k");
        HeaderFaultHost host = new HeaderFaultHost(new FileHost(img.toRealPath(), BackendKind.IO_URING, false, true));
        try (Qcow2Driver d = open(host)) {
            long oldL1 = d.l1TableOffset();
            host.failNextHeaderWrite = true;
            d.resize(3L << 30); // the header reached the disk: resized, whatever the write reported
            assertFalse(host.failNextHeaderWrite, "the header write was attempted");
            assertEquals(3L << 30, d.sizeBytes(), "the image's header, which the write reached, is the truth");
            assertFalse(d.l1TableOffset() == oldL1, "the driver follows the moved L1 table");
            writesAfterTheResize(d, false); // the failed fdatasync is sticky: see below
        }
        leaksOnly(img);
    }

    /**
     * A durable metadata write whose fdatasync failed (here a resize's header) leaves what the
     * disk holds unknown, and Linux reports the writeback error once: the failed fdatasync
     * consumed it. The guest's next FLUSH succeeded as if every write before it were durable, and
     * the image could be handed over. Now the failure is sticky, as a failed flush is: every later
     * FLUSH fails with EIO and the hand-over is refused. A write refused before it reached the
     * image (the test below) is not.
     */
    @Test
    void aFailedFdatasyncOfADurableMetadataWriteFailsEveryLaterFlush() throws Exception {
        Path img = DriverRig.create(dir, "r.qcow2", "16M", "-o", "cluster_size=4096");
        HeaderFaultHost host = new HeaderFaultHost(new FileHost(img.toRealPath(), BackendKind.IO_URING, false, true));
        try (Qcow2Driver d = open(host)) {
            DriverRig rig = new DriverRig(d);
            NativeBuffer a = DriverRig.buffer(4096);
            a.buffer().setMemory(0, 4096, (byte) 0x5a);
            assertEquals(4096, rig.one(rig.write(0, a, 4096)));
            assertEquals(0, rig.one(rig.flush()), "a flush before the failure succeeds");
            host.failNextHeaderWrite = true;
            d.resize(32 * MIB);
            assertFalse(host.failNextHeaderWrite, "the header write was attempted");
            assertEquals(4096, rig.one(rig.write(8192, a, 4096)), "writes still complete");
            assertEquals(-io.vblk.sys.Errno.EIO, rig.one(rig.flush()), "the FLUSH after the failed fdatasync");
            assertEquals(-io.vblk.sys.Errno.EIO, rig.one(rig.flush()), "and every later one");
            IOException e = assertThrows(IOException.class, d::inactivate, "nor is the image handed over");
            assertTrue(e.getMessage().contains("earlier flush failed"), e.getMessage());
        }
    }

    @Test
    void freeingTheOldL1TableFailingAfterTheHeaderLandedIsAResize() throws Exception {
        Path img = DriverRig.create(dir, "r.qcow2", "16M", "-o", "cluster_size=4096");
        qemuIo(img, "write -P 0x6b 1M 64k");
        HeaderFaultHost host = new HeaderFaultHost(new FileHost(img.toRealPath(), BackendKind.IO_URING, false, true));
        try (Qcow2Driver d = open(host)) {
            long oldL1 = d.l1TableOffset();
            host.failWriteAfterHeader = true;
            d.resize(3L << 30); // the disk has the new size: only the old table's clusters leak
            assertFalse(host.failWriteAfterHeader, "a write after the header was attempted");
            assertEquals(3L << 30, d.sizeBytes());
            assertFalse(d.l1TableOffset() == oldL1, "the driver follows the moved L1 table");
            writesAfterTheResize(d, true); // that write was refused before reaching the image: not sticky
        }
        leaksOnly(img);
    }

    @Test
    void aHeaderWriteThatNeverLandedFailsTheResizeAndKeepsTheOldSize() throws Exception {
        Path img = DriverRig.create(dir, "r.qcow2", "16M", "-o", "cluster_size=4096");
        qemuIo(img, "write -P 0x6b 1M 64k");
        HeaderFaultHost host = new HeaderFaultHost(new FileHost(img.toRealPath(), BackendKind.IO_URING, false, true));
        try (Qcow2Driver d = open(host)) {
            long oldL1 = d.l1TableOffset();
            host.dropNextHeaderWrite = true;
            assertThrows(IOException.class, () -> d.resize(3L << 30));
            assertEquals(16 * MIB, d.sizeBytes(), "the image kept its size");
            assertEquals(oldL1, d.l1TableOffset());
            DriverRig rig = new DriverRig(d);
            NativeBuffer a = DriverRig.buffer(65536);
            a.buffer().setMemory(0, 65536, (byte) 0x7c);
            assertEquals(65536, rig.one(rig.write(0, a, 65536)), "allocating write after the failed resize");
            assertEquals(0, rig.one(rig.flush()));
        }
        QemuTools.Run info = DriverRig.run("qemu-img", "info", img.toString());
        assertTrue(info.output().contains("16 MiB"), "qemu-img info: " + info.output());
        QemuTools.Run check = DriverRig.run("qemu-img", "check", img.toString());
        // 0 or 3 (the new table's clusters, counted before the header, leak), never corruption.
        assertTrue(check.code() == 0 || check.code() == 3, "qemu-img check: " + check.output());
        assertFalse(check.output().contains("ERROR"), "qemu-img check: " + check.output());
        qemuIo(img, "read -P 0x6b 1M 64k");
        qemuIo(img, "read -P 0x7c 0 64k");
    }

    private static Qcow2Driver open(HeaderFaultHost host) throws IOException {
        return host.open(Qcow2Options.defaults());
    }

    private static void writesAfterTheResize(Qcow2Driver d, boolean flushSucceeds) {
        DriverRig rig = new DriverRig(d);
        NativeBuffer a = DriverRig.buffer(65536);
        a.buffer().setMemory(0, 65536, (byte) 0x7c);
        assertEquals(65536, rig.one(rig.write(0, a, 65536)), "allocating write after the failed resize");
        assertEquals(65536, rig.one(rig.write(2048 * MIB, a, 65536)), "allocating write past the old end");
        assertEquals(flushSucceeds ? 0 : -io.vblk.sys.Errno.EIO, rig.one(rig.flush()));
    }

    private static void leaksOnly(Path img) throws Exception {
        QemuTools.Run check = DriverRig.run("qemu-img", "check", img.toString());
        // 3: leaks only (the old L1 table's cluster, freed last, was not freed), no corruption.
        assertEquals(3, check.code(), "qemu-img check: " + check.output());
        assertFalse(check.output().contains("ERROR"), "qemu-img check: " + check.output());
        qemuIo(img, "read -P 0x6b 1M 64k");
        qemuIo(img, "read -P 0x7c 0 64k");
        qemuIo(img, "read -P 0x7c 2048M 64k");
    }

    private static void qemuIo(Path img, String command) throws Exception {
        QemuTools.Run r = DriverRig.run("qemu-io", "-f", "qcow2", "-c", command, img.toString());
        assertEquals(0, r.code(), "qemu-io " + command + ": " + r.output());
        assertFalse(r.output().contains("Pattern verification failed"), "qemu-io " + command + ": " + r.output());
    }
}
