package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static io.vblk.engine.BlkRequestDescriptor.T_OUT;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.sys.FaultPoints;
import io.vblk.sys.Native;

/**
 * rev16c F1: a frontend shrinks its memfd (its device's access faults, and the JVM delivers the
 * error late) and grows it back before the error is caught. Evidence read only at catch time
 * ("the file is now shorter than the mapping") found none, so the queue the error landed in was
 * quarantined: on a shared I/O thread, another tenant's. The change is now sticky (hostmem
 * GuestMemory, sys FileChangeWatch: the kernel's IN_MODIFY, which the guest's own stores do not
 * raise): A's table shows it, A is quarantined, B is spared and its request completes.
 * Deterministic: the error is thrown
 * through {@link FaultPoints} in B's pop loop or right after B's submit.
 */
class GrownBackEvidenceTest {
    @TempDir
    Path dir;

    @AfterEach
    void disarm() {
        FaultPoints.disarm();
    }

    @ParameterizedTest
    @ValueSource(ints = {FaultPoints.POP, FaultPoints.SUBMIT_RETURNED})
    void aFileShrunkAndGrownBackIsStillEvidenceAgainstItsOwner(int point) throws Exception {
        try (Image image = Image.open(DeviceRig.createImage(dir, 4L << 20), ImageOptions.defaults());
             SharedIoThread shared = new SharedIoThread("grownback", WaitStrategy.BLOCKING, 0);
             ShrinkableDeviceRig a = new ShrinkableDeviceRig("dev-a", image, shared);
             ShrinkableDeviceRig b = new ShrinkableDeviceRig("dev-b", image, shared)) {
            assertEquals(S_OK, a.roundTrip(T_IN));
            assertEquals(S_OK, b.roundTrip(T_IN));
            a.shrink();
            assertEquals(0, Native.libc().ftruncate(a.fd, 2 * ShrinkableDeviceRig.AREA)); // grown back
            FaultPoints.arm(point); // A's late error lands in B's round
            assertEquals(S_OK, b.roundTrip(T_OUT), "B's request completes");
            assertTrue(FaultPoints.fired());
            assertFalse(b.device.isBroken(0), "B (another tenant) quarantined for A's fault: " + b.broken);
            assertTrue(a.device.isBroken(0), "A, whose file changed, pays: " + a.reports + " " + b.reports);
            assertEquals(S_OK, b.roundTrip(T_IN), "B goes on");
        }
    }
}
