package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.block.NetworkDisk;

/**
 * On a network disk the qcow2 driver finds where the allocated clusters end from the refcount
 * blocks. A hostile image (2 MiB clusters, 1-bit refcounts, a refcount table naming 1 Mi distinct
 * all-zero refcount blocks: 8 MiB of real data, 2 TiB sparse) made that scan read every block
 * (2 TiB over NBD) and test 16 Mi bits in each: hours in export.add. Only the blocks describing
 * clusters below the disk's end can matter, so the open reads one block and ends at once.
 */
class Qcow2NetworkAllocationScanTest {
    @TempDir
    Path dir;

    /** Writes the image described above (sparse) and returns its path. */
    private Path scanBomb() throws Exception {
        int cb = 21;
        long cs = 1L << cb;
        int rtClusters = 4;
        long rtEntries = rtClusters * cs / 8;
        long l1Off = cs;
        long rtOff = 2 * cs;
        long blocksBase = (2 + rtClusters) * cs;
        Path p = dir.resolve("scan.qcow2");
        try (FileChannel ch = FileChannel.open(p, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
            ByteBuffer h = ByteBuffer.allocate(4096);
            h.putInt(0, Qcow2Descriptor.MAGIC).putInt(4, 3).putInt(20, cb).putLong(24, 1L << 30)
                    .putInt(36, 1).putLong(40, l1Off).putLong(48, rtOff).putInt(56, rtClusters)
                    .putInt(96, 0).putInt(100, 104);
            ch.write(h, 0);
            ByteBuffer rt = ByteBuffer.allocate((int) (rtEntries * 8));
            for (long i = 0; i < rtEntries; i++) {
                rt.putLong(blocksBase + i * cs);
            }
            rt.flip();
            ch.write(rt, rtOff);
            ch.truncate(blocksBase + rtEntries * cs);
            ch.write(ByteBuffer.allocate(1), blocksBase + rtEntries * cs - 1);
        }
        return p;
    }

    @Test
    void openingAHostileNetworkQcow2ReadsOnlyTheBlocksBelowTheDiskEnd() throws Exception {
        assumeTrue(new ProcessBuilder("qemu-nbd", "--version").start().waitFor() == 0, "qemu-nbd is not installed");
        Path img = scanBomb();
        Path sock = dir.resolve("nbd.sock");
        Process nbd = new ProcessBuilder(List.of("qemu-nbd", "-r", "-f", "raw", "-k", sock.toString(), "-x", "q", "-t",
                img.toString())).redirectErrorStream(true).redirectOutput(dir.resolve("qemu-nbd.log").toFile()).start();
        ExecutorService ex = Executors.newSingleThreadExecutor(r -> {
            Thread t = new Thread(r, "scan-open");
            t.setDaemon(true);
            return t;
        });
        try {
            Qcow2NetworkTest.awaitListening(nbd, sock, dir.resolve("qemu-nbd.log"));
            Future<Long> f = ex.submit(() -> Qcow2.virtualSize(NetworkDisk.open("nbd+unix:///q?socket=" + sock, true)));
            try {
                assertEquals(1L << 30, f.get(60, TimeUnit.SECONDS));
            } catch (TimeoutException e) {
                f.cancel(true);
                throw new AssertionError("Qcow2.virtualSize of a network qcow2 image still running after 60 s (the"
                        + " allocation-end scan of 1 Mi zero refcount blocks)");
            }
        } finally {
            ex.shutdownNow();
            io.vblk.testkit.QemuTools.stop(nbd); // SIGKILL after 10 s if SIGTERM did not end it
        }
    }
}
