package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.util.concurrent.TimeUnit;
import java.util.function.Predicate;

import org.agrona.concurrent.UnsafeBuffer;
import org.junit.jupiter.api.Test;

import io.vblk.hostmem.DirtyLog;
import io.vblk.sys.EventFd;
import io.vblk.sys.Linux;
import io.vblk.sys.Mapping;
import io.vblk.sys.Memfd;
import io.vblk.sys.Native;
import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.TestGuest;
import io.vblk.testkit.VhostUserFrontend;

/**
 * Live migration as QEMU 7.2 drives it (vhost-user.rst, "Migration"): VHOST_F_LOG_ALL and
 * LOG_SHMFD are offered; SET_LOG_BASE maps the log and answers; SET_FEATURES with LOG_ALL turns
 * logging on with the ring running, SET_VRING_ADDR with VHOST_VRING_F_LOG puts the used ring's
 * marks at log_guest_addr, and without LOG_ALL nothing is marked. And every hostile log
 * description is refused (the connection ends: SET_LOG_BASE's reply carries no status), the
 * server going on with the next frontend.
 */
class LogProtocolTest extends OneServerCase {
    static final long PF_LOG_SHMFD = 1L << 1;
    static final long PROTOCOL = CrashRecoveryTest.PROTOCOL | PF_LOG_SHMFD;
    static final long LOG_ALL = 1L << 26;
    static final int SET_LOG_BASE = 6;
    static final int SET_LOG_FD = 7;
    // fcntl(2) sealing
    static final int F_ADD_SEALS = 1033;
    static final int F_SEAL_SHRINK = 0x2;
    static final int F_SEAL_GROW = 0x4;

    /** The log QEMU would allocate for the test guest: a sealed memfd covering up to its highest address. */
    static long logBytes() {
        return DirtyLog.bitmapBytes(TestGuest.HIGH_GPA + TestGuest.REGION_BYTES);
    }

    static int sealedMemfd(long bytes) {
        int fd = Native.libc().memfd_create("test-log", Linux.MFD_CLOEXEC | Linux.MFD_ALLOW_SEALING);
        assertTrue(fd >= 0);
        assertEquals(0, Native.libc().ftruncate(fd, bytes));
        assertEquals(0, Native.libc().fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW));
        return fd;
    }

    static ByteBuffer logDescription(long size, long offset) {
        return VhostUserFrontend.payload(16).putLong(0, size).putLong(8, offset);
    }

    static ByteBuffer addrWithLog(int index, long desc, long used, long avail, int flags, long logGpa) {
        return VhostUserFrontend.payload(40).putInt(0, index).putInt(4, flags).putLong(8, desc).putLong(16, used)
                .putLong(24, avail).putLong(32, logGpa);
    }

    private static boolean dirty(Mapping log, long gpa) {
        long page = gpa >>> 12;
        return (new UnsafeBuffer(log.address(), (int) log.length()).getByte((int) (page >>> 3)) & (1 << (page & 7))) != 0;
    }

    private static int countBits(Mapping log) {
        int n = 0;
        for (long i = 0; i < log.length(); i += 8) {
            n += Long.bitCount(new UnsafeBuffer(log.address(), (int) log.length()).getLong((int) i));
        }
        return n;
    }

    @Test
    void logAllAndLogShmfdAreOfferedAndAMigrationLogsEveryDeviceWrite() {
        try (QemuFlow qemu = qemuSession()) {
            BlkQueue q = guest.queue(0, 64, true);
            qemu.init(PROTOCOL, q);
            assertTrue((qemu.offered & LOG_ALL) != 0, "VHOST_F_LOG_ALL offered (QEMU refuses to migrate without it)");
            assertEquals(PF_LOG_SHMFD, qemu.protocol & PF_LOG_SHMFD, "LOG_SHMFD offered");
            long features = qemu.linuxFeatures() & ~LOG_ALL;
            qemu.start(features, true, null, q);
            byte[] data = BlkQueue.pattern(16, 8192, 5);
            q.write(16, data);

            int fd = sealedMemfd(logBytes());
            try (Mapping log = Mapping.map(fd, 0, logBytes(), false, false)) {
                VhostUserFrontend f = qemu.f;
                // Migration starts: the log, LOG_ALL, then each ring's addresses with VHOST_VRING_F_LOG.
                VhostUserFrontend.Reply reply = f.request(SET_LOG_BASE, logDescription(logBytes(), 0), fd);
                assertNotNull(reply, "SET_LOG_BASE answered");
                assertEquals(SET_LOG_BASE, reply.request());
                f.setFeatures(features | LOG_ALL);
                long usedGpa = q.driver.usedGpa();
                f.post(VhostUserFrontend.SET_VRING_ADDR, addrWithLog(0, q.descUser(), q.usedUser(), q.availUser(), 1, usedGpa));
                rig.awaitLine(l -> l.contains("dirty logging on"));

                assertArrayEquals(data, q.read(16, 8192), "the ring ran on");
                assertTrue(dirty(log, q.dataGpa) && dirty(log, q.dataGpa + 4096), "read data logged");
                assertTrue(dirty(log, usedGpa), "used ring logged at log_guest_addr");
                int marked = countBits(log);
                assertTrue(marked >= 3 && marked <= 8, "data (2), status and used ring (maybe one page); nothing wholesale: " + marked);

                // Migration cancelled: LOG_ALL cleared; nothing is marked any more.
                f.setFeatures(features);
                rig.awaitLine(l -> l.contains("dirty logging off"));
                new UnsafeBuffer(log.address(), (int) log.length()).setMemory(0, (int) log.length(), (byte) 0);
                assertArrayEquals(data, q.read(16, 8192));
                assertEquals(0, countBits(log), "logging off marks nothing");

                // On again, then the hand-over: GET_VRING_BASE drains (and syncs) the ring.
                f.setFeatures(features | LOG_ALL);
                // SET_FEATURES is not acknowledged: wait for the second "on" before relying on it.
                awaitLines(l -> l.contains("dirty logging on"), 2);
                assertArrayEquals(data, q.read(16, 8192));
                assertTrue(countBits(log) > 0);
                int[] bases = qemu.stop(q);
                assertEquals(q.driver.availIdx(), bases[0], "every request was done when GET_VRING_BASE answered");
            } finally {
                Native.libc().close(fd);
            }
            assertEquals(0, rig.complaints(sessions).size(), String.valueOf(rig.complaints(sessions)));
        }
    }

    /**
     * rev17a LOW 4: a log sized too small (here covering only low memory, the rings being high)
     * loses the marks beyond it; the first is reported while logging is still on, not only when
     * it goes off.
     */
    @Test
    void aMarkOutsideALogSizedTooSmallIsReportedWhileLogging() {
        try (QemuFlow qemu = qemuSession()) {
            BlkQueue q = guest.queue(0, 64, true);
            qemu.init(PROTOCOL, q);
            long features = qemu.linuxFeatures() & ~LOG_ALL;
            qemu.start(features, true, null, q);
            long small = DirtyLog.bitmapBytes(TestGuest.REGION_BYTES);
            int fd = sealedMemfd(small);
            try {
                VhostUserFrontend f = qemu.f;
                assertNotNull(f.request(SET_LOG_BASE, logDescription(small, 0), fd), "SET_LOG_BASE answered");
                f.setFeatures(features | LOG_ALL);
                long usedGpa = q.driver.usedGpa();
                f.post(VhostUserFrontend.SET_VRING_ADDR, addrWithLog(0, q.descUser(), q.usedUser(), q.availUser(), 1, usedGpa));
                rig.awaitLine(l -> l.contains("dirty logging on"));
                byte[] data = BlkQueue.pattern(16, 4096, 6);
                q.write(16, data);
                assertArrayEquals(data, q.read(16, 4096));
                String line = rig.awaitLine(l -> l.contains("dirty log: ") && l.contains("fell outside the log"));
                assertTrue(rig.lines().stream().noneMatch(l -> l.contains("dirty logging off")), "reported while logging");
                assertTrue(line.contains("not logged"), line);
            } finally {
                Native.libc().close(fd);
            }
        }
    }

    /** Waits (up to 30 s, a hang guard) until {@code count} server log lines match {@code p}. */
    private void awaitLines(Predicate<String> p, int count) {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (rig.lines().stream().filter(p).count() < count) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("fewer than " + count + " matching log lines in " + rig.lines());
            }
            try {
                Thread.sleep(5);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new AssertionError(e);
            }
        }
    }

    @Test
    void hostileLogDescriptionsEndTheConnectionAndTheServerGoesOn() {
        long size = logBytes();
        int good = sealedMemfd(size);
        int small = sealedMemfd(4096);
        int unsealed = Memfd.create("unsealed-log", size);
        int eventfd = EventFd.create(true).fd();
        try {
            Object[][] cases = {
                {logDescription(0, 0), new int[] {good}, "mmap_size 0"},
                {logDescription(12, 0), new int[] {good}, "mmap_size 12"},
                {logDescription(-8, 0), new int[] {good}, "mmap_size 18446744073709551608"},
                {logDescription((1L << 30) + 8, 0), new int[] {good}, "mmap_size 1073741832"},
                {logDescription(size, 100), new int[] {good}, "mmap_offset 100 is not a page-aligned"},
                {logDescription(size, -4096), new int[] {good}, "is not a page-aligned file offset"},
                {logDescription(size, 4096), new int[] {good}, "runs past the end of its file"},
                {logDescription(size, 1L << 62), new int[] {good}, "runs past the end of its file"},
                {logDescription(size, 0), new int[] {small}, "runs past the end of its file"},
                {logDescription(size, 0), new int[] {unsealed}, "not sealed against shrinking"},
                {logDescription(size, 0), new int[] {eventfd}, "not a regular file"},
                {logDescription(size, 0), new int[0], "came with 0 descriptor(s), expected 1"},
                {logDescription(size, 0), new int[] {good, good}, "came with 2 descriptor(s), expected 1"},
                {VhostUserFrontend.payload(8), new int[] {good}, "payload is 8 bytes, expected 16"},
            };
            for (Object[] c : cases) {
                try (QemuFlow qemu = qemuSession()) {
                    qemu.init(PROTOCOL, guest.queue(0, 64, true));
                    qemu.f.send(SET_LOG_BASE, VhostUserFrontend.VERSION, (ByteBuffer) c[0], (int[]) c[1]);
                    assertTrue(qemu.f.closedByBackend(), c[2] + ": connection ended");
                    String expected = (String) c[2];
                    rig.awaitLine(l -> l.startsWith("frontend " + sessions + ": ") && l.contains(expected));
                }
            }
            // Without LOG_SHMFD negotiated the log cannot come as shared memory.
            try (QemuFlow qemu = qemuSession()) {
                qemu.init(PROTOCOL & ~PF_LOG_SHMFD, guest.queue(0, 64, true));
                qemu.f.send(SET_LOG_BASE, VhostUserFrontend.VERSION, logDescription(size, 0), good);
                assertTrue(qemu.f.closedByBackend());
                rig.awaitLine(l -> l.startsWith("frontend " + sessions + ": ") && l.contains("without the LOG_SHMFD"));
            }
            // And the server still serves a good frontend, log included.
            try (QemuFlow qemu = qemuSession()) {
                BlkQueue q = guest.queue(0, 64, true);
                qemu.init(PROTOCOL, q);
                qemu.start(qemu.linuxFeatures(), true, null, q);
                VhostUserFrontend.Reply reply = qemu.f.request(SET_LOG_BASE, logDescription(size, 0), good);
                assertNotNull(reply);
                byte[] data = BlkQueue.pattern(0, 4096, 9);
                q.write(0, data);
                assertArrayEquals(data, q.read(0, 4096));
            }
        } finally {
            Native.libc().close(good);
            Native.libc().close(small);
            Native.libc().close(unsealed);
            Native.libc().close(eventfd);
        }
    }

    @Test
    void badVringLogFlagsAndAddressesAreRefusedAndSetLogFdTakesOnlyAnEventfd() {
        try (QemuFlow qemu = qemuSession()) {
            BlkQueue q = guest.queue(0, 64, true);
            qemu.init(PROTOCOL, q);
            qemu.start(qemu.linuxFeatures(), true, null, q);
            VhostUserFrontend f = qemu.f;
            long ack = f.acked(VhostUserFrontend.SET_VRING_ADDR, addrWithLog(0, q.descUser(), q.usedUser(), q.availUser(), 2, 0));
            assertTrue(ack != 0, "unknown flag refused");
            ack = f.acked(VhostUserFrontend.SET_VRING_ADDR, addrWithLog(0, q.descUser(), q.usedUser(), q.availUser(), 1, -16));
            assertTrue(ack != 0, "log_guest_addr that wraps refused");
            ack = f.acked(VhostUserFrontend.SET_VRING_ADDR, addrWithLog(0, q.descUser(), q.usedUser(), q.availUser(), 1, 1L << 50));
            assertTrue(ack != 0, "log_guest_addr beyond any log refused");
            EventFd logFd = EventFd.create(true);
            try {
                assertEquals(0, f.acked(SET_LOG_FD, VhostUserFrontend.payload(0), logFd.fd()), "an eventfd is taken");
                int notEventfd = Memfd.create("not-eventfd", 4096);
                try {
                    assertTrue(f.acked(SET_LOG_FD, VhostUserFrontend.payload(0), notEventfd) != 0, "a memfd is not");
                } finally {
                    Native.libc().close(notEventfd);
                }
            } finally {
                logFd.close();
            }
            byte[] data = BlkQueue.pattern(4, 4096, 2);
            q.write(4, data);
            assertArrayEquals(data, q.read(4, 4096), "the ring runs on");
            assertFalse(rig.complaints(sessions).isEmpty());
        }
    }
    /**
     * The hand-over: GET_VRING_BASE answers only after the ring is drained AND the image synced
     * (the destination of a migration reads the image next). The back end here counts syncs and
     * the requests still in flight at each.
     */
    @Test
    void getVringBaseSyncsTheImageAfterTheDrain() throws Exception {
        rig.close();
        java.util.concurrent.atomic.AtomicInteger syncs = new java.util.concurrent.atomic.AtomicInteger();
        rig = ServerRig.start(dir, 1, f -> new io.vblk.engine.BackendFactory() {
            @Override
            public io.vblk.aio.IoBackend open(int depth) {
                return f.open(depth);
            }

            @Override
            public void sync() {
                syncs.incrementAndGet();
                f.sync();
            }
        });
        try (QemuFlow qemu = qemuSession()) {
            BlkQueue q = guest.queue(0, 64, true);
            qemu.init(PROTOCOL, q);
            qemu.start(qemu.linuxFeatures(), true, null, q);
            q.write(0, BlkQueue.pattern(0, 4096, 1));
            int before = syncs.get();
            int[] bases = qemu.stop(q);
            assertEquals(q.driver.availIdx(), bases[0]);
            assertTrue(syncs.get() > before, "GET_VRING_BASE synced the image before answering");
        }
    }
}
