package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.VhostUserFrontend;

/**
 * Review 11a (low): the inflight region is sized by GET_INFLIGHT_FD for the ring size then; a
 * frontend that stops the ring, grows it with SET_VRING_NUM and restarts it WITHOUT a new
 * SET_INFLIGHT_FD keeps the old region, and heads at or beyond its size would run untracked (a
 * crash then loses them). Recovery refuses such a ring; a restart must too.
 */
class InflightRingGrownTest extends OneServerCase {
    @Test
    void aRingGrownPastItsInflightRegionDoesNotRestartWithoutANewBuffer() {
        try (QemuFlow qemu = qemuSession()) {
            BlkQueue small = guest.queue(0, 32, true);
            qemu.init(CrashRecoveryTest.PROTOCOL, small);
            qemu.start(qemu.linuxFeatures(), true, null, small);
            byte[] data = BlkQueue.pattern(16, 4096, 7);
            small.write(16, data);
            assertArrayEquals(data, small.read(16, 4096), "I/O on the ring the region was sized for");
            int base = qemu.stop(small)[0];
            // The same ring index, grown to 64 entries in another ring area; no SET_INFLIGHT_FD.
            BlkQueue big = guest.queue(0, 64, true, 3);
            VhostUserFrontend f = qemu.f;
            f.ackEverything(true);
            f.setVringNum(0, 64);
            f.setVringBase(0, base);
            f.setVringAddr(0, big.descUser(), big.usedUser(), big.availUser());
            f.setVringFd(VhostUserFrontend.SET_VRING_KICK, 0, big.kick);
            long ack = f.acked(VhostUserFrontend.SET_VRING_ENABLE, VhostUserFrontend.state(0, 1));
            assertTrue(ack > 0, "SET_VRING_ENABLE of a ring grown past its inflight region answered " + ack
                    + " (0: it started untracked; -1: connection closed)");
            complained("its inflight region only 32");
        }
    }
}
