package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertNull;

import java.nio.file.Path;
import java.util.concurrent.atomic.AtomicBoolean;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.IoBackend;
import io.vblk.engine.BackendFactory;
import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.TestGuest;
import io.vblk.testkit.VhostUserFrontend;

/**
 * ihard (irev3's reported finding): a session turn that throws an {@link Error} (here an
 * OutOfMemoryError from the image sync GET_VRING_BASE does, thrown by a wrapper around the real
 * back ends: no real sync runs out of memory on demand) still tears the session down: the
 * frontend sees the connection close instead of waiting forever, and the device is free for the
 * next frontend, which does verified I/O. Before the fix the turn's Error escaped past its
 * teardown and, with the rig's serve() running handlers on the loop's own thread, ended the
 * loop: no reply and no close (the receive below timed out after 10 s).
 */
class SessionErrorTest {
    @TempDir
    Path dir;

    @Test
    void anErrorInATurnEndsThatSessionAndFreesTheDevice() throws Exception {
        AtomicBoolean armed = new AtomicBoolean();
        try (ServerRig rig = ServerRig.start(dir, 1, f -> new BackendFactory() {
            @Override
            public IoBackend open(int depth) {
                return f.open(depth);
            }

            @Override
            public void sync() {
                if (armed.getAndSet(false)) {
                    throw new OutOfMemoryError("simulated: no heap left during the sync");
                }
                f.sync();
            }
        })) {
            try (TestGuest g = new TestGuest(); QemuFlow qemu = new QemuFlow(rig.connect(), g, 1)) {
                BlkQueue q = g.queue(0, 64, true);
                qemu.init(CrashRecoveryTest.PROTOCOL, q);
                qemu.start(qemu.linuxFeatures(), true, null, q);
                q.write(0, BlkQueue.pattern(0, 4096, 1));
                armed.set(true);
                qemu.f.send(Request.GET_VRING_BASE, VhostUserFrontend.VERSION, VhostUserFrontend.state(0, 0));
                assertNull(qemu.f.receive(), "the backend closed the connection");
            }
            rig.awaitLine(l -> l.contains("connection closed: internal error: java.lang.OutOfMemoryError"));
            try (TestGuest g = new TestGuest(); QemuFlow qemu = new QemuFlow(rig.connect(), g, 1)) {
                BlkQueue q = g.queue(0, 64, true);
                qemu.init(CrashRecoveryTest.PROTOCOL, q);
                qemu.start(qemu.linuxFeatures(), true, null, q);
                byte[] data = BlkQueue.pattern(8, 4096, 2);
                q.write(8, data);
                assertArrayEquals(data, q.read(8, 4096));
                assertArrayEquals(BlkQueue.pattern(0, 4096, 1), q.read(0, 4096), "the first session's write");
            }
        }
    }
}
