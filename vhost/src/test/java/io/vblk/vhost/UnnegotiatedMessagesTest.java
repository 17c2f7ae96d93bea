package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.EventFd;
import io.vblk.sys.Memfd;
import io.vblk.sys.Native;
import io.vblk.testkit.VhostUserFrontend;

/**
 * rev16c F3: the memory-slot messages (GET_MAX_MEM_SLOTS, ADD_MEM_REG, REM_MEM_REG) exist only
 * with CONFIGURE_MEM_SLOTS negotiated, SET_LOG_FD only with LOG_SHMFD; a frontend that did not
 * negotiate them is refused (as SET_BACKEND_REQ_FD without BACKEND_REQ already was), and the same
 * messages are taken once the feature is negotiated.
 */
class UnnegotiatedMessagesTest {
    private static final long PF_LOG_SHMFD = 1L << 1;
    private static final int SET_LOG_FD = 7;
    private static final long REGION_BYTES = 1 << 20;
    private static final VhostUserFrontend.Region REGION = new VhostUserFrontend.Region(0, REGION_BYTES, 0x7000_0000L, 0);

    @TempDir
    Path dir;

    private static VhostUserFrontend owned(ServerRig rig, long protocol) {
        VhostUserFrontend f = rig.connect();
        f.setProtocolFeatures(protocol);
        f.setOwner();
        return f;
    }

    @Test
    void memorySlotMessagesNeedConfigureMemSlots() throws Exception {
        long without = VhostUserFrontend.PF_REPLY_ACK | VhostUserFrontend.PF_CONFIG;
        int fd = Memfd.create("region", REGION_BYTES);
        try (ServerRig rig = ServerRig.start(dir, 1)) {
            try (VhostUserFrontend f = owned(rig, without)) {
                assertNotEquals(0, f.acked(VhostUserFrontend.ADD_MEM_REG, VhostUserFrontend.singleRegion(REGION), fd),
                        "ADD_MEM_REG without CONFIGURE_MEM_SLOTS refused");
                assertNotEquals(0, f.acked(VhostUserFrontend.REM_MEM_REG, VhostUserFrontend.singleRegion(REGION)),
                        "REM_MEM_REG without CONFIGURE_MEM_SLOTS refused");
                // GET_MAX_MEM_SLOTS has a reply of its own, so a refusal cannot be told: the connection ends.
                f.send(VhostUserFrontend.GET_MAX_MEM_SLOTS, VhostUserFrontend.VERSION, null);
                assertNull(f.receive(), "GET_MAX_MEM_SLOTS without CONFIGURE_MEM_SLOTS ends the connection");
            }
            try (VhostUserFrontend f = owned(rig, without | VhostUserFrontend.PF_CONFIGURE_MEM_SLOTS)) {
                assertEquals(FrontendState.MAX_MEM_SLOTS, f.getU64(VhostUserFrontend.GET_MAX_MEM_SLOTS));
                assertEquals(0, f.acked(VhostUserFrontend.ADD_MEM_REG, VhostUserFrontend.singleRegion(REGION), fd));
                assertEquals(0, f.acked(VhostUserFrontend.REM_MEM_REG, VhostUserFrontend.singleRegion(REGION)));
            }
        } finally {
            Native.libc().close(fd);
        }
    }

    @Test
    void setLogFdNeedsLogShmfd() throws Exception {
        try (ServerRig rig = ServerRig.start(dir, 1); EventFd logFd = EventFd.create(true)) {
            long without = VhostUserFrontend.PF_REPLY_ACK | VhostUserFrontend.PF_CONFIG;
            try (VhostUserFrontend f = owned(rig, without)) {
                assertNotEquals(0, f.acked(SET_LOG_FD, VhostUserFrontend.payload(0), logFd.fd()),
                        "SET_LOG_FD without LOG_SHMFD refused");
                assertTrue(rig.awaitLine(l -> l.contains("SET_LOG_FD without the LOG_SHMFD")) != null);
            }
            try (VhostUserFrontend f = owned(rig, without | PF_LOG_SHMFD)) {
                assertEquals(0, f.acked(SET_LOG_FD, VhostUserFrontend.payload(0), logFd.fd()));
            }
        }
    }
}
