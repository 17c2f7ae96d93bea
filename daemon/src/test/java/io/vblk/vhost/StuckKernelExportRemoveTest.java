package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.IoBackends;
import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.TestFuse;
import io.vblk.testkit.TestGuest;
import io.vblk.testkit.VhostUserFrontend;

/**
 * export.remove of a raw export whose read the kernel holds (its image a FUSE file whose server
 * stopped answering, as a hung FUSE, NFS or iSCSI file would) never answered: past the
 * frontend's and the device's drain deadlines the device closed its io_uring or AIO back end,
 * whose close waited for the kernel without limit, so the control call (and a daemon shutdown
 * after it) hung for as long as the server did. Now it answers (locks kept: the back end closed
 * undrained, counted by {@link IoBackends#undrainedBackends()}), the guest memory table still
 * mapped; once the server answers the kernel finishes the read, the back end's reaper releases
 * it, and the table is unmapped (it used to stay mapped for the JVM's life). StuckDrainsTest covers the
 * NBD driver's user-space stall; this one the kernel's. The guards are hang guards.
 */
@Timeout(value = 180, unit = TimeUnit.SECONDS) // a hang guard
class StuckKernelExportRemoveTest {
    private static final Duration LIVENESS = Duration.ofSeconds(60);

    @TempDir
    Path dir;

    @AfterEach
    void clear() {
        System.clearProperty(VhostUserServer.CLOSE_WAIT_MS);
        System.clearProperty("vblk.aio.closeDrainMs");
    }

    @Test
    void exportRemoveAnswersWhileTheKernelHoldsAnIoUringRead() throws Exception {
        removeWhileTheKernelHoldsARead("io_uring");
    }

    @Test
    void exportRemoveAnswersWhileTheKernelHoldsALinuxAioRead() throws Exception {
        removeWhileTheKernelHoldsARead("linux-aio");
    }

    private void removeWhileTheKernelHoldsARead(String aio) throws Exception {
        Path at = Files.createDirectory(dir.resolve("mnt"));
        try (TestFuse fs = TestFuse.stalling(at, 4 << 20)) {
            assumeTrue(fs != null, "FUSE cannot be mounted here (no /dev/fuse or no CAP_SYS_ADMIN)");
            System.setProperty(VhostUserServer.CLOSE_WAIT_MS, "1000");
            System.setProperty("vblk.aio.closeDrainMs", "500");
            fs.fill((byte) 0x3c);
            Path control = dir.resolve("control.sock");
            Path socket = dir.resolve("f.sock");
            try (DaemonRig d = new DaemonRig(control); TestGuest g = new TestGuest();
                 VhostUserFrontend f = VhostUserFrontend.connect(addExport(d, socket, fs, aio));
                 QemuFlow qemu = new QemuFlow(f, g, 1)) {
                BlkQueue q = g.queue(0, 128, true);
                qemu.init(VhostUserProtocolTest.ALL_PROTOCOL, q);
                qemu.start(qemu.linuxFeatures(), true, null, q);
                byte[] expected = new byte[4096];
                Arrays.fill(expected, (byte) 0x3c);
                assertArrayEquals(expected, q.read(0, 4096), "served while the server answers");
                long mapped = StalledRoundUnmapTest.serverMapped(g);
                assertTrue(mapped > 0, "the guest memory table is mapped");

                fs.holdReads(true);
                q.add(0 /* VIRTIO_BLK_T_IN */, 8, q.dataGpa, 4096, true);
                q.publish();
                assertEquals(1, fs.awaitHeld(1, 30_000), "the read reached the FUSE server");
                int undrainedBefore = IoBackends.undrainedBackends();
                try {
                    Object removed = assertTimeoutPreemptively(LIVENESS, () -> d.result("export.remove", "{\"id\":\"f\",\"force\":true}"),
                            "export.remove hung on a back end whose read the kernel holds");
                    assertEquals(Map.of("id", "f", "removed", true, "locks_kept", true, "frontend_disconnected", true), removed);
                    assertEquals(undrainedBefore + 1, IoBackends.undrainedBackends(), "counted undrained");
                    // The session's teardown found the device closed under it, undrained (its line),
                    // before the server answers: the table's fate is then the teardown's to defer.
                    assertTimeoutPreemptively(LIVENESS, () -> {
                        while (!(d.stdout() + d.stderr()).contains("the guest memory table stays mapped")) {
                            Thread.sleep(10);
                        }
                    }, "the teardown never found the device closed undrained: " + d.stderr());
                    assertEquals(mapped, StalledRoundUnmapTest.serverMapped(g), "unmapped while the kernel holds a read into it");
                } finally {
                    fs.answerHeld(); // the kernel finishes the read (and a hung remove, before the fix, answers)
                }
                // The reaper saw it finish and released the back end.
                assertTimeoutPreemptively(LIVENESS, () -> {
                    while (IoBackends.undrainedBackends() != undrainedBefore) {
                        Thread.sleep(10);
                    }
                });
                assertTrue(((List<?>) d.result("export.list", null)).isEmpty());
                // ... and then the guest memory table went: it stayed mapped for the JVM's life.
                assertTimeoutPreemptively(LIVENESS, () -> {
                    while (StalledRoundUnmapTest.serverMapped(g) > 0) {
                        Thread.sleep(10);
                    }
                }, "the guest memory table stayed mapped after the back end was released");
            }
        }
    }

    /** Adds export {@code f} of the FUSE file (read-only, on I/O thread t0, back end {@code aio}); returns its socket. */
    private static Path addExport(DaemonRig d, Path socket, TestFuse fs, String aio) throws Exception {
        d.result("iothread.add", "{\"id\":\"t0\"}");
        d.result("export.add", DaemonRig.exportSpec("f", fs.file(), socket,
                Map.of("iothreads", List.of("t0"), "read_only", true, "aio", aio)));
        return socket;
    }
}
