package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;

import org.junit.jupiter.api.Test;

import io.vblk.sys.Native;
import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.VhostUserFrontend;

/**
 * Review 11a: every live-migration attempt of QEMU 7.2 allocates a new log and sends SET_LOG_BASE
 * (hw/virtio/vhost.c vhost_migration_log -> vhost_dev_log_resize), with the rings running; a
 * cancelled or failed attempt (a migration that does not converge, a destination that goes away)
 * clears LOG_ALL and the guest runs on, its rings never stopped. LogArea keeps each replaced log
 * until no ring runs and refuses the tenth SET_LOG_BASE (MAX_RETIRED = 8), which ends the
 * connection: the tenth migration attempt of a guest that never paused costs it its disk.
 * Now SET_LOG_BASE unmaps the replaced log once every data-plane thread passed a round: a
 * hundred attempts keep one log mapped.
 */
class RepeatedMigrationTest extends OneServerCase {
    @Test
    void aHundredCancelledMigrationsOfARunningGuestKeepItsDisk() {
        try (QemuFlow qemu = qemuSession()) {
            BlkQueue q = guest.queue(0, 64, true);
            qemu.init(LogProtocolTest.PROTOCOL, q);
            long features = qemu.linuxFeatures() & ~LogProtocolTest.LOG_ALL;
            qemu.start(features, true, null, q);
            byte[] data = BlkQueue.pattern(16, 4096, 5);
            q.write(16, data);
            VhostUserFrontend f = qemu.f;
            long mappedBefore = logMappings();
            for (int attempt = 1; attempt <= 100; attempt++) {
                // Migration attempt: a new log (QEMU freed the last one), LOG_ALL, F_LOG on the ring.
                int fd = LogProtocolTest.sealedMemfd(LogProtocolTest.logBytes());
                try {
                    VhostUserFrontend.Reply reply = f.request(LogProtocolTest.SET_LOG_BASE,
                            LogProtocolTest.logDescription(LogProtocolTest.logBytes(), 0), fd);
                    assertNotNull(reply, "SET_LOG_BASE of migration attempt " + attempt + " answered (connection kept)");
                } finally {
                    Native.libc().close(fd);
                }
                // The replaced log was unmapped before the answer: only the one in force stays.
                assertEquals(mappedBefore + 1, logMappings(), "log mappings after attempt " + attempt);
                f.setFeatures(features | LogProtocolTest.LOG_ALL);
                f.post(VhostUserFrontend.SET_VRING_ADDR, LogProtocolTest.addrWithLog(0, q.descUser(), q.usedUser(),
                        q.availUser(), 1, q.driver.usedGpa()));
                assertArrayEquals(data, q.read(16, 4096), "I/O during attempt " + attempt);
                // The attempt is cancelled: logging off, the guest runs on.
                f.setFeatures(features);
                f.post(VhostUserFrontend.SET_VRING_ADDR, LogProtocolTest.addrWithLog(0, q.descUser(), q.usedUser(),
                        q.availUser(), 0, 0));
                assertArrayEquals(data, q.read(16, 4096), "I/O after attempt " + attempt);
            }
            assertEquals(0, rig.complaints(sessions).size(), String.valueOf(rig.complaints(sessions)));
        }
    }

    /** Mappings of the test's log memfds in this process (the server runs in it). */
    private static long logMappings() {
        try (java.util.stream.Stream<String> maps = java.nio.file.Files.lines(java.nio.file.Path.of("/proc/self/maps"))) {
            return maps.filter(l -> l.contains("/memfd:test-log")).count();
        } catch (java.io.IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }
}
