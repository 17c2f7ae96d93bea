package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.List;
import java.util.stream.Collectors;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.FaultPoints;
import io.vblk.sys.Memfd;
import io.vblk.sys.Native;
import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.TestGuest;
import io.vblk.testkit.VhostUserFrontend;

/**
 * The late fault FrontendFuzzTest met (engine GuestFaults, "late faults"): a frontend's memory
 * file shrinks under the mapping, the frontend goes, and the JVM delivers the fault only while
 * the same I/O thread serves the NEXT frontend's queue. Attributed by evidence, it quarantines
 * nothing: the gone frontend's table is the only one that maps past the end of its file.
 * Deterministic: the first frontend's extra, data-only region really is truncated; the JVM's
 * error is thrown through {@link FaultPoints} in the next frontend's pop. Before the
 * attribution the next frontend's queue was quarantined and its write never completed.
 */
class LateFaultNextFrontendTest {
    private static final long EXTRA_GPA = 8L << 30;
    private static final long EXTRA_BYTES = 1L << 20;

    @TempDir
    Path dir;

    @AfterEach
    void disarm() {
        FaultPoints.disarm();
    }

    @Test
    void aLateFaultOfTheFrontendThatWentDoesNotQuarantineTheNext() throws Exception {
        try (ServerRig rig = ServerRig.start(dir, 1);
             TestGuest guest = new TestGuest()) {
            int extra = Memfd.create("extra", EXTRA_BYTES);
            try {
                BlkQueue q1 = guest.queue(0, 64, true, 1);
                try (QemuFlow first = new QemuFlow(rig.connect(), guest, 1)) {
                    first.init(VhostUserProtocolTest.ALL_PROTOCOL, q1);
                    first.start(first.linuxFeatures(), true, null, q1);
                    // A data-only region the guest never uses, then cut from under the mapping.
                    VhostUserFrontend.Region r = new VhostUserFrontend.Region(EXTRA_GPA, EXTRA_BYTES, 0x7100_0000_0000L, 0);
                    assertEquals(0, first.f.acked(VhostUserFrontend.ADD_MEM_REG, VhostUserFrontend.singleRegion(r), extra));
                    writeAndRead(q1, 8, 1);
                    assertEquals(0, Native.libc().ftruncate(extra, 0));
                    first.stop(q1);
                }
                rig.awaitGone(1);

                BlkQueue q2 = guest.queue(0, 64, true, 2);
                try (QemuFlow next = new QemuFlow(rig.connect(), guest, 1)) {
                    next.init(VhostUserProtocolTest.ALL_PROTOCOL, q2);
                    next.start(next.linuxFeatures(), true, null, q2);
                    writeAndRead(q2, 16, 2);
                    FaultPoints.arm(FaultPoints.POP);
                    writeAndRead(q2, 24, 3); // meets the error, and completes
                    assertTrue(FaultPoints.fired(), "the error was thrown in the next frontend's pop");
                    writeAndRead(q2, 32, 4);
                    next.stop(q2);
                }
                String report = rig.awaitLine(l -> l.contains("attributed by evidence"));
                assertTrue(report.contains("nothing quarantined"), report);
                List<String> quarantined = rig.lines().stream().filter(l -> l.contains("quarantined:")).collect(Collectors.toList());
                assertEquals(List.of(), quarantined, "no queue quarantined");
            } finally {
                Native.libc().close(extra);
            }
        }
    }

    private static void writeAndRead(BlkQueue q, long sector, int seed) {
        byte[] data = BlkQueue.pattern(sector, 4096, seed);
        q.write(sector, data);
        assertArrayEquals(data, q.read(sector, 4096), "read-back of sector " + sector);
    }
}
