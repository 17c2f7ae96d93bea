package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;

import org.junit.jupiter.api.Test;

import io.vblk.testkit.VhostUserFrontend;

/**
 * Memory-table messages at the edges of 64-bit arithmetic (vhost-user SET_MEM_TABLE and
 * ADD_MEM_REG): a guest range that wraps past 2^64, a size with the top bit set, a file offset
 * just under 2^63, and the legal region that ends exactly at 2^64 - 1. Every bad one is refused
 * with one log line, the connection goes on, and a good frontend then does I/O.
 */
class MemoryTableEdgeAttackTest extends OneServerCase {
    private static final long USER = 0x7f00_0000_0000L;
    private static final long SIZE = 4L << 20;

    private VhostUserFrontend owned() {
        VhostUserFrontend f = newSession();
        f.setProtocolFeatures(BadFrontendTest.ALL_PROTOCOL);
        f.setOwner();
        return f;
    }

    private static void refused(VhostUserFrontend f, int request, ByteBuffer payload, int... fds) {
        long ack = f.acked(request, payload, fds);
        assertTrue(ack > 0, "request " + request + " answered " + ack + " (-1: connection closed)");
    }

    @Test
    void regionsAtTheEdgesOf64BitArithmeticAreRefusedAndTheServerGoesOn() {
        VhostUserFrontend f = owned();
        VhostUserFrontend.Region[] bad = {
            new VhostUserFrontend.Region(-4096L, SIZE, USER, 0),                      // gpa + size wraps
            new VhostUserFrontend.Region(-SIZE + 4096, SIZE, USER, 0),                // ends one page past 2^64
            new VhostUserFrontend.Region(0, Long.MIN_VALUE, USER, 0),                 // size 2^63
            new VhostUserFrontend.Region(0, -4096L, USER, 0),                         // size 2^64 - 4096
            new VhostUserFrontend.Region(0, SIZE, USER, Long.MAX_VALUE & -4096L),     // offset just under 2^63
            new VhostUserFrontend.Region(0, SIZE, USER, SIZE * 2 - 4096),             // one page past the file
        };
        for (VhostUserFrontend.Region r : bad) {
            refused(f, VhostUserFrontend.SET_MEM_TABLE, VhostUserFrontend.memTable(r), guest.fd);
            refused(f, VhostUserFrontend.ADD_MEM_REG, VhostUserFrontend.singleRegion(r), guest.fd);
        }
        // The last page of the guest-physical space is a legal place for memory: accepted, and
        // removed again, without any end computed as gpa + size.
        VhostUserFrontend.Region top = new VhostUserFrontend.Region(-SIZE, SIZE, USER, 0);
        assertEquals(0, f.acked(VhostUserFrontend.SET_MEM_TABLE, VhostUserFrontend.memTable(top), guest.fd));
        VhostUserFrontend.Region below = new VhostUserFrontend.Region(-2 * SIZE, SIZE, USER + SIZE, SIZE);
        assertEquals(0, f.acked(VhostUserFrontend.ADD_MEM_REG, VhostUserFrontend.singleRegion(below), guest.fd));
        assertEquals(0, f.acked(VhostUserFrontend.REM_MEM_REG, VhostUserFrontend.singleRegion(top)));
        f.close();
        rig.awaitGone(sessions);
        assertEquals(2 * bad.length, rig.complaints(sessions).size(), "one line per refused region: "
                + rig.complaints(sessions));
        VhostUserProtocolTest.assertGoodFrontendDoesIo(rig, guest);
    }
}
