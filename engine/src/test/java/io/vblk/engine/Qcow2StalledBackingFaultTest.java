package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static io.vblk.engine.Qcow2DeviceTest.exec;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.lang.management.ManagementFactory;
import java.lang.management.ThreadMXBean;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.aio.IoBackend;
import io.vblk.block.BlockDriver;
import io.vblk.block.qcow2.Qcow2;
import io.vblk.block.qcow2.Qcow2Options;
import io.vblk.sys.FaultPoints;

/**
 * A late guest-memory fault (GuestFaults, {@link FaultPoints#PREPARE_TAKEN}) goes through the
 * qcow2 driver while its backing file, on an NBD server (nbdkit with the delay filter: every read
 * takes {@link #READ_DELAY_S} s), holds a read. The driver recovers from a fault once its back
 * ends are idle; until then it counted the fault as work pending, so the I/O thread, which sleeps
 * only when nothing is pending, spun through rounds for as long as the server held the read (a
 * whole core). Now the I/O thread sleeps in the kernel until the read completes, then the driver
 * recovers: the drain ends and every slot is back. The spin shows as the I/O thread's CPU time
 * over a stretch of wall-clock time (a behaviour, not a speed: a sleeping thread uses next to
 * nothing, a spinning one all the CPU it is given).
 */
class Qcow2StalledBackingFaultTest {
    private static final int READ_DELAY_S = 6;
    private static final long WATCH_MS = 1_000;

    @Test
    void theIoThreadSleepsWhileAFaultWaitsForAStalledBackingFileThenRecovers(@TempDir Path dir) throws Exception {
        assumeTrue(exitCode("nbdkit", "--version") == 0, "nbdkit is not installed (.ci/run installs it)");
        byte[] data = new byte[4 << 20];
        Arrays.fill(data, (byte) 1);
        Path base = dir.resolve("base.raw");
        Files.write(base, data);
        Path sock = dir.resolve("base.sock");
        Path overlay = dir.resolve("overlay.qcow2");
        // Cluster 0 (sector 16) in the overlay, the rest in the backing file on the server.
        exec("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=65536", overlay.toString(), "4M");
        exec("qemu-io", "-f", "qcow2", "-c", "write -P 2 0 64k", overlay.toString());
        exec("qemu-img", "rebase", "-u", "-f", "qcow2", "-F", "raw", "-b", "nbd+unix:///?socket=" + sock, overlay.toString());
        Process server = new ProcessBuilder("nbdkit", "-f", "-U", sock.toString(), "--filter=delay", "file", base.toString(),
                "rdelay=" + READ_DELAY_S).redirectErrorStream(true).redirectOutput(dir.resolve("nbdkit.log").toFile()).start();
        try {
            // Until nbdkit takes connections (a probe connect), for up to 60 s: its start took
            // seconds on a loaded CI machine, and its socket file exists from bind, before listen.
            long listenDeadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (true) {
                try (SocketChannel probe = SocketChannel.open(StandardProtocolFamily.UNIX)) {
                    probe.connect(UnixDomainSocketAddress.of(sock));
                    break;
                } catch (java.io.IOException e) {
                    assertTrue(server.isAlive() && System.nanoTime() < listenDeadline, "nbdkit never listened: " + e
                            + "\n" + Files.readString(dir.resolve("nbdkit.log")));
                }
                Thread.sleep(20);
            }
            try (FaultPointRig rig = new FaultPointRig(dir, "qcow2-stalled", 1,
                    Qcow2.factory(overlay, BackendKind.IO_URING, Qcow2Options.defaults().networkBacking(true)))) {
                assertEquals(S_OK, rig.roundTrip(0), "a read of the overlay");
                BlockDriver driver = rig.thread().backend();
                IoBackend io = Qcow2LostSlotDrainAttackTest.imageBackend(driver);
                rig.addRead(0, 2 * 128); // cluster 2: the backing file's, held by the server
                rig.publishAndKick(0);
                long deadline = System.nanoTime() + 10_000_000_000L;
                while (rig.device.counters(0).get(QueueCounters.REQUESTS) < 2) {
                    assertTrue(System.nanoTime() < deadline, "the backing read never started");
                    Thread.sleep(1);
                }
                FaultPoints.arm(FaultPoints.PREPARE_TAKEN);
                rig.addRead(0); // the overlay's data read: the fault lands in its prepare
                rig.publishAndKick(0);
                while (!FaultPoints.fired()) {
                    assertTrue(System.nanoTime() < deadline, "the fault never fired");
                    Thread.sleep(1);
                }
                rig.awaitQuarantined(0);
                assertTrue(driver.inFlight() > 0, "the backing read is still held by the server");

                ThreadMXBean mx = ManagementFactory.getThreadMXBean();
                long tid = rig.thread().thread().getId();
                long cpu0 = mx.getThreadCpuTime(tid);
                Thread.sleep(WATCH_MS);
                long cpuMs = (mx.getThreadCpuTime(tid) - cpu0) / 1_000_000;
                assertTrue(driver.inFlight() > 0, "the backing read was held through the whole watch");
                assertTrue(cpuMs < WATCH_MS / 10, "the I/O thread used " + cpuMs + " ms of CPU in " + WATCH_MS
                        + " ms while the fault waited for the stalled backing file: it spun instead of sleeping");

                rig.stopQueue(0); // ends once the server answers and the driver recovered
                assertEquals(driver.depth(), driver.freeSlots(), "the driver's request slots");
                assertEquals(0, driver.inFlight());
                assertEquals(io.depth(), io.freeSlots(), "the slot the fault cut off came back");
                rig.restartQueue(0);
                assertEquals(S_OK, rig.roundTrip(0), "served again");
            }
        } finally {
            FaultPoints.disarm();
            server.destroyForcibly().waitFor();
        }
    }

    private static int exitCode(String... cmd) {
        try {
            Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
            p.getInputStream().readAllBytes();
            return p.waitFor();
        } catch (java.io.IOException e) {
            return -1;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return -1;
        }
    }
}
