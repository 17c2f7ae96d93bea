package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import io.vblk.aio.BackendKind;
import io.vblk.aio.IoBackend;
import io.vblk.block.BlockDriver;
import io.vblk.block.qcow2.Qcow2;
import io.vblk.block.qcow2.Qcow2Options;
import io.vblk.sys.FaultPoints;

/**
 * LostBackendSlotAttackTest and LateFaultAttributionTest's lost completion, under a qcow2 disk:
 * a late guest-memory fault (GuestFaults) lands inside the qcow2 driver's back end, in a prepare
 * after the back end took its slot ({@link FaultPoints#PREPARE_TAKEN}: the L2 table load or the
 * data read of a guest read) or in its reap ({@link FaultPoints#REAP_TAKEN}). The qcow2 request
 * then waited for ever for that operation, the driver counted it in flight for good, and the
 * engine, which gives lost requests up only once the driver reports nothing in flight, waited
 * for ever too: the queue's drain never ended (stopQueue hung), and the back end's slot was
 * never given back (qcow2 did not pass {@code reclaimLostSlots} on). Now the drain ends, every
 * slot (the driver's and its back end's) is back, and the queue, reset, serves again; three
 * rounds, so a slot lost per fault would show.
 */
class Qcow2LostSlotDrainAttackTest {
    @TempDir
    Path dir;

    @AfterEach
    void disarm() {
        FaultPoints.disarm();
    }

    @ParameterizedTest
    @ValueSource(ints = {FaultPoints.PREPARE_TAKEN, FaultPoints.REAP_TAKEN})
    void aLateFaultInsideTheQcow2BackEndLetsTheDrainEndAndEverySlotComeBack(int point) throws Exception {
        byte[] data = new byte[4 << 20];
        Arrays.fill(data, (byte) 1); // every cluster allocated: a read goes to the file
        Path raw = dir.resolve("data.raw");
        Files.write(raw, data);
        Path img = dir.resolve("disk.qcow2");
        Process p = new ProcessBuilder("qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2",
                "-o", "cluster_size=65536", raw.toString(), img.toString()).inheritIO().start();
        assertEquals(0, p.waitFor());
        try (FaultPointRig rig = new FaultPointRig(dir, "qcow2-" + point, 1,
                Qcow2.factory(img, BackendKind.IO_URING, Qcow2Options.defaults()))) {
            assertEquals(S_OK, rig.roundTrip(0));
            BlockDriver driver = rig.thread().backend();
            IoBackend io = imageBackend(driver);
            for (int round = 0; round < 3; round++) {
                FaultPoints.arm(point);
                rig.addRead(0);
                rig.publishAndKick(0);
                long deadline = System.nanoTime() + 20_000_000_000L;
                while (!FaultPoints.fired()) {
                    assertTrue(System.nanoTime() < deadline, "round " + round + ": the fault never fired");
                    Thread.sleep(1);
                }
                if (point == FaultPoints.PREPARE_TAKEN) {
                    rig.awaitQuarantined(0); // caught while handing the request on
                } else {
                    rig.awaitUsed(0); // the lost read finishes with IOERR once the back end is idle
                }
                rig.stopQueue(0);
                assertEquals(driver.depth(), driver.freeSlots(), "round " + round + ": the driver's request slots");
                assertEquals(0, driver.inFlight(), "round " + round);
                assertEquals(io.depth(), io.freeSlots(), "round " + round + ": the back end's slot came back");
                rig.restartQueue(0);
                assertEquals(S_OK, rig.roundTrip(0), "round " + round + ": served again");
            }
        }
    }

    /** The qcow2 driver's back end on the image file (package-private there: read reflectively). */
    static IoBackend imageBackend(BlockDriver driver) throws ReflectiveOperationException {
        java.lang.reflect.Field f = driver.getClass().getDeclaredField("io");
        f.setAccessible(true);
        return (IoBackend) f.get(driver);
    }
}
