package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import io.vblk.sys.EventFd;
import io.vblk.sys.Native;
import io.vblk.sys.NativeBuffer;
import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.VhostUserFrontend;

/**
 * Issue 10, bug 2: descriptors a frontend hands over for call and err notifications cannot
 * block the daemon, whatever they are: a blocking eventfd with a full counter (a plain write
 * blocked the I/O thread forever, then GET_VRING_BASE and every later frontend), a full pipe, a
 * full socket. The ring keeps completing, GET_VRING_BASE answers, and the next frontend is served.
 */
class FrontendFdTest extends OneServerCase {
    static final long ALL_PROTOCOL = VhostUserProtocolTest.ALL_PROTOCOL;

    /** What the frontend passes as its call and err descriptors. */
    enum Kind {
        BLOCKING_FULL_EVENTFD, FULL_PIPE, FULL_SOCKET
    }

    @ParameterizedTest
    @EnumSource(Kind.class)
    void aCallFdThatWouldBlockNeverStopsTheDaemon(Kind kind) {
        int[] pair = open(kind);
        int hostile = pair[0];
        QemuFlow qemu = qemuSession();
        BlkQueue q = guest.queue(0, 128, true, 3);
        qemu.init(ALL_PROTOCOL, q);
        qemu.start(qemu.linuxFeatures(), true, null, q);
        // The daemon takes an eventfd and may refuse what is not one (pipes, sockets): either
        // way the connection goes on.
        long callAck = qemu.f.acked(VhostUserFrontend.SET_VRING_CALL, VhostUserFrontend.u64(0), hostile);
        long errAck = qemu.f.acked(VhostUserFrontend.SET_VRING_ERR, VhostUserFrontend.u64(0), hostile);
        assertTrue(callAck >= 0 && errAck >= 0, "the connection stays open");
        if (kind == Kind.BLOCKING_FULL_EVENTFD) {
            assertEquals(0, callAck);
            assertEquals(0, errAck);
        }
        // Every completion signals the hostile descriptor; the guest polls the used ring.
        for (int i = 0; i < 50; i++) {
            q.write(i * 8L, BlkQueue.pattern(i * 8L, 4096, 7));
        }
        assertTrue(qemu.f.getVringBase(0) >= 50, "GET_VRING_BASE answers");
        qemu.f.close();
        rig.awaitGone(1);
        VhostUserProtocolTest.assertGoodFrontendDoesIo(rig, guest);
        assertTrue(rig.serving());
        for (int fd : pair) {
            Native.libc().close(fd);
        }
    }

    /** The descriptor to hand over first, then any peer to keep open meanwhile. */
    private static int[] open(Kind kind) {
        NativeBuffer b = new NativeBuffer(8, 8);
        switch (kind) {
            case BLOCKING_FULL_EVENTFD: {
                EventFd e = EventFd.create(false);
                b.buffer().putLong(0, 0xfffffffffffffffeL);
                assertEquals(8, Native.libc().write(e.fd(), b.address(), 8));
                return new int[] {Native.libc().dup(e.fd())};
            }
            case FULL_PIPE: {
                assertEquals(0, Native.syscall(293 /* pipe2 */, b.address(), 0, 0, 0, 0));
                int read = b.buffer().getInt(0);
                int write = b.buffer().getInt(4);
                FrontendFuzzer.fill(write);
                return new int[] {write, read};
            }
            default: {
                assertEquals(0, Native.syscall(53 /* socketpair */, 1, 1, 0, b.address(), 0));
                int mine = b.buffer().getInt(0);
                int peer = b.buffer().getInt(4);
                FrontendFuzzer.fill(mine);
                return new int[] {mine, peer};
            }
        }
    }

}
