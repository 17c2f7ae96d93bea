package io.vblk.block.rbd;

import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;

import org.agrona.UnsafeApi;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import io.vblk.sys.NativeBuffer;

/**
 * The OSD dies under the RBD driver (a bluestore OSD, so it comes back with its data): writes in
 * flight complete once it is back, within the retry time; past the retry time they fail.
 */
class RbdFaultTest {
    private static CephCluster ceph;

    @BeforeAll
    static void startCluster() throws Exception {
        assumeTrue(CephCluster.installed(),
                "Ceph is not installed here (ceph-mon, ceph-osd, librbd1; .ci/run installs them): RBD tests skipped");
        ceph = CephCluster.start(Files.createTempDirectory("vblk-ceph").resolve("cluster"), "bluestore");
    }

    @AfterAll
    static void stopCluster() throws Exception {
        if (ceph != null) {
            ceph.close();
        }
    }

    private static void killOsd() throws Exception {
        ProcessHandle.of(ceph.osdPid()).ifPresent(p -> {
            p.destroyForcibly();
            p.onExit().join();
        });
    }

    @Test
    void writesInFlightWhenTheOsdIsKilledCompleteAfterItRestarts() throws Exception {
        ceph.run("rbd", "create", "rbd/f1", "--size", "64M");
        try (RbdBackend disk = RbdBackend.open(ceph.address("f1"), RbdOptions.defaults().withRetryTimeoutSeconds(60))) {
            int count = 64;
            NativeBuffer[] bufs = new NativeBuffer[count];
            for (int i = 0; i < count; i++) {
                bufs[i] = RbdBackendTest.buffer(65536);
                RbdBackendTest.fill(bufs[i], 70 + i);
                assertEquals(0, disk.prepareWrite(i * 1_048_576L, RbdBackendTest.vector(bufs[i]), i));
            }
            disk.submit();
            killOsd();
            Thread.sleep(500);
            ceph.restartOsd();
            Map<Long, Long> done = RbdBackendTest.await(disk, count);
            assertEquals(count, done.size());
            done.forEach((tag, result) -> assertEquals(65536L, result, "write " + tag));
            assertEquals(0, RbdBackendTest.one(disk, disk.prepareFlush(500)));
            for (int i = 0; i < count; i++) {
                UnsafeApi.setMemory(bufs[i].address(), 65536, (byte) 0x5a);
                assertEquals(65536, RbdBackendTest.one(disk, disk.prepareRead(i * 1_048_576L, RbdBackendTest.vector(bufs[i]), 1000 + i)));
                assertTrue(RbdBackendTest.matches(bufs[i], 70 + i), "write " + i + " read back");
            }
        }
    }

    @Test
    void anOsdThatStaysDownFailsRequestsAfterTheRetryTimeThenTheDiskRecovers() throws Exception {
        ceph.run("rbd", "create", "rbd/f2", "--size", "16M");
        try (RbdBackend disk = RbdBackend.open(ceph.address("f2"), RbdOptions.defaults().withRetryTimeoutSeconds(3))) {
            NativeBuffer b = RbdBackendTest.buffer(4096);
            RbdBackendTest.fill(b, 5);
            assertEquals(4096, RbdBackendTest.one(disk, disk.prepareWrite(0, RbdBackendTest.vector(b), 1)));
            killOsd();
            long t0 = System.nanoTime();
            long rc = RbdBackendTest.one(disk, disk.prepareWrite(8192, RbdBackendTest.vector(b), 2));
            long ms = (System.nanoTime() - t0) / 1_000_000;
            assertTrue(rc < 0, "failed: " + rc);
            assertTrue(ms >= 2000, "waited for the retry time first (" + ms + " ms)");
            ceph.restartOsd();
            // librbd's op timeout is per attempt: after the OSD is back, new requests succeed.
            long deadline = System.currentTimeMillis() + 60_000;
            long ok;
            do {
                ok = RbdBackendTest.one(disk, disk.prepareWrite(8192, RbdBackendTest.vector(b), 3));
            } while (ok < 0 && System.currentTimeMillis() < deadline);
            assertEquals(4096, ok);
        }
    }
}
