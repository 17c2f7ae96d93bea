package io.vblk.block.qcow2;

import static io.vblk.block.qcow2.Qcow2Descriptor.L2E_OFFSET_MASK;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.testkit.QemuTools;

/**
 * A DISCARD reads the refcounts of the host clusters it punches (in runs, see {@link
 * Qcow2DiscardRunTest}) in units of the O_DIRECT alignment. Written by qemu-io, 256 KiB of data
 * in an image of 512-byte clusters leave its third refcount block as the file's last cluster;
 * discarding the last data clusters, whose refcounts that block holds, must read the block
 * without running past the end of the file (a short read fails the DISCARD with EIO), with
 * cache none and writeback; the rest, whose refcounts span three blocks, takes a read per block,
 * not one per cluster. A 4 KiB alignment (a 4 KiB-sector disk) never meets such an image:
 * clusters smaller than the alignment are refused at open (cache writeback serves them), so the
 * read's aligned unit always lies inside its refcount block.
 */
class Qcow2DiscardRefcountAtEndOfFileTest {
    private static final int CLUSTER = 512;
    private static final int ALIGNMENT = 4096;
    private static final long KIB = 1024;

    @TempDir
    Path dir;

    @Test
    void aRefcountBlockEndingTheFileIsReadWithCacheNone() throws Exception {
        discardBesideTheLastRefcountBlock(true);
    }

    @Test
    void aRefcountBlockEndingTheFileIsReadWithCacheWriteback() throws Exception {
        discardBesideTheLastRefcountBlock(false);
    }

    @Test
    void clustersSmallerThanTheAlignmentAreRefusedAtOpen() throws Exception {
        Path img = DriverRig.create(dir, "a.qcow2", "4M", "-o", "compat=1.1,cluster_size=512");
        HeaderFaultHost host = new HeaderFaultHost(new FileHost(img.toRealPath(), BackendKind.IO_URING, false, true),
                ALIGNMENT);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> host.open(Qcow2Options.defaults()));
        assertTrue(e.getMessage().contains("without O_DIRECT"), e.getMessage());
    }

    private void discardBesideTheLastRefcountBlock(boolean direct) throws Exception {
        Path img = DriverRig.create(dir, "e.qcow2", "4M", "-o", "compat=1.1,cluster_size=512");
        qemuIo(img, "write -P 0x5a 0 256k");
        ImageLayout layout = new ImageLayout(Files.readAllBytes(img));
        long size = Files.size(img);
        long lastBlock = layout.refBlocks.get(layout.refBlocks.size() - 1);
        assertEquals(size - CLUSTER, lastBlock, "the last refcount block must end the file: " + layout.refBlocks);
        // The last guest cluster's host cluster has its refcount in that block.
        long l2 = layout.l2Tables.get(layout.l2Tables.size() - 1);
        long lastHost = layout.i64(l2 + 8L * ((256 * KIB / CLUSTER - 1) % (CLUSTER / 8))) & L2E_OFFSET_MASK;
        long perBlock = CLUSTER * 8 / 16;
        assertEquals(lastBlock, layout.refBlocks.get((int) (lastHost / CLUSTER / perBlock)),
                "the discarded cluster's refcount must lie in the last block");
        try (Qcow2Driver d = Qcow2.open(img, BackendKind.IO_URING, 8, Qcow2Options.defaults().direct(direct))) {
            DriverRig rig = new DriverRig(d);
            assertEquals(0, rig.one(rig.discard(248 * KIB, 8 * KIB)), "the DISCARD must not fail on a short read");
            long reads = d.refcountReads();
            // The rest: 496 clusters whose refcounts lie in three blocks of 256 entries.
            assertEquals(0, rig.one(rig.discard(0, 248 * KIB)));
            assertTrue(d.refcountReads() - reads <= 8, "a read per block and window, not per cluster: "
                    + (d.refcountReads() - reads));
            assertEquals(0, rig.one(rig.flush()));
        }
        QemuTools.Run check = DriverRig.run("qemu-img", "check", img.toString());
        assertEquals(0, check.code(), "qemu-img check: " + check.output());
        qemuIo(img, "read -P 0 0 256k");
    }

    private static void qemuIo(Path img, String command) {
        QemuTools.Run r = DriverRig.run("qemu-io", "-f", "qcow2", "-c", command, img.toString());
        assertEquals(0, r.code(), "qemu-io " + command + ": " + r.output());
        assertFalse(r.output().contains("Pattern verification failed"), "qemu-io " + command + ": " + r.output());
    }
}
