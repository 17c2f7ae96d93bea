package io.vblk.block.nbd;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.block.BlockDriver;
import io.vblk.block.NetworkDisk;
import io.vblk.sys.NativeBuffer;

/**
 * A real NBD server that announces the smallest legal maximum block size (proto.md
 * NBD_INFO_BLOCK_SIZE: nbdkit's blocksize-policy filter, maximum 4 KiB, larger requests refused).
 * A guest knows nothing of that limit (virtio-blk has no field for it), so a guest request larger
 * than the server's maximum must still be served through the network disk's driver, as QEMU's
 * NBD client does by splitting it, never failed for its size.
 */
@SuppressWarnings("try") // the server is a resource the try block only keeps alive
class NbdServerLimitsAttackTest {
    @TempDir
    Path dir;

    @Test
    void aRequestAboveTheServersMaximumBlockSizeIsServed() throws Exception {
        assumeTrue(ServerProcess.available("nbdkit"), "nbdkit is not installed (.ci/run installs it)");
        Path sock = dir.resolve("small.sock");
        try (ServerProcess server = ServerProcess.nbdkit(sock, List.of("blocksize-policy"), "16M",
                List.of("blocksize-minimum=512", "blocksize-preferred=4096", "blocksize-maximum=4096",
                        "blocksize-error-policy=error"))) {
            NetworkDisk disk = NetworkDisk.open("nbd+unix:///?socket=" + sock, false);
            BlockDriver driver = disk.open(8);
            try {
                NativeBuffer w = Io.buffer(65536);
                Io.fill(w, 3);
                assertEquals(65536, one(driver, driver.write(0, Io.vector(w), 1)), "a 64 KiB write");
                NativeBuffer r = Io.buffer(65536);
                Io.poison(r);
                assertEquals(65536, one(driver, driver.read(0, Io.vector(r), 2)), "a 64 KiB read");
                assertTrue(Io.matches(r, 3));
            } finally {
                driver.close();
            }
        }
    }

    /** Submits and waits for the one completion; a prepare error is returned as it is. */
    private static long one(BlockDriver driver, int prepared) {
        if (prepared < 0) {
            return prepared;
        }
        driver.submit();
        Map<Long, Long> done = new HashMap<>();
        long deadline = System.nanoTime() + 30_000_000_000L;
        while (done.isEmpty() && System.nanoTime() < deadline) {
            if (driver.poll(done::put, 4) == 0) {
                driver.awaitCompletions(50);
                driver.acknowledgeCompletions();
            }
        }
        assertEquals(1, done.size(), "completed");
        return done.values().iterator().next();
    }
}
