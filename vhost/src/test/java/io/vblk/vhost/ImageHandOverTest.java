package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.ImageLock;
import io.vblk.sys.ImageLock.Locking;
import io.vblk.sys.Native;
import io.vblk.sys.OfdLock;
import io.vblk.sys.PosixFile;
import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.TestGuest;
import io.vblk.testkit.VhostUserFrontend;
import io.vblk.testkit.QemuTools;

/**
 * The image hand-over of a live migration, on real OFD locks of a real image file (and qemu-io
 * where installed): an incoming server holds only a reader's locks that let another backend
 * write, and takes the writer's locks when its device starts; a start while another writer
 * still holds them leaves the ring stopped and the image untouched; a stop with dirty logging
 * on (a migration's source) drops the writer's locks after the drain, and the next start takes
 * them back; a plain stop keeps them. Another open file description in this process conflicts
 * as another process does, so it stands for the other backend.
 */
class ImageHandOverTest {
    static final long LOG_ALL = LogProtocolTest.LOG_ALL;

    @TempDir
    Path dir;
    ServerRig rig;
    final TestGuest guest = new TestGuest();

    @AfterEach
    void close() {
        guest.close();
        if (rig != null) {
            rig.close();
        }
    }

    private Path image() {
        return dir.resolve("disk.img");
    }

    /** Whether anyone (another description) holds lock byte {@code offset} of the image. */
    private boolean held(long offset) {
        try (PosixFile f = PosixFile.open(image(), true, false)) {
            int rc = OfdLock.test(f.fd(), offset, 1);
            assertTrue(rc >= 0, "F_OFD_GETLK " + rc);
            return rc != OfdLock.F_UNLCK;
        }
    }

    /** The writer's use: "I write" (101) and "I do not share write" (201). */
    private void assertWriterLocks(boolean expected) {
        assertEquals(expected, held(ImageLock.PERM_BASE + 1), "byte 101 (write use) held");
        assertEquals(expected, held(ImageLock.SHARED_BASE + 1), "byte 201 (write not shared) held");
        assertTrue(held(ImageLock.PERM_BASE), "byte 100 (consistent read) held in either state");
    }

    /** Another backend taking the writer's use (a migration's other side). */
    private PosixFile otherWriter() {
        PosixFile f = PosixFile.open(image(), false, false);
        try {
            assertTrue(ImageLock.acquire(f.fd(), image(), ImageLock.WRITER, Locking.ON, s -> { }));
            return f;
        } catch (RuntimeException e) {
            f.close();
            throw e;
        }
    }

    private static boolean qemuIo() {
        return QemuTools.installed("qemu-io");
    }

    private static String runQemuIo(String... args) {
        return QemuTools.qemuIo(args).toString();
    }

    private QemuFlow session() {
        return new QemuFlow(rig.connect(), guest, 1);
    }

    @Test
    void incomingHoldsOnlyReadLocksAndTakesTheWritersAtTheDeviceStart() throws Exception {
        rig = ServerRig.startLocked(dir, true);
        assertFalse(rig.activation.active());
        assertWriterLocks(false);
        assertFalse(held(ImageLock.PERM_BASE + 3), "no resize use");
        assertFalse(held(ImageLock.SHARED_BASE), "consistent read shared");
        // The source's backend writes meanwhile, and a reader without -U gets in beside both.
        try (PosixFile source = otherWriter()) {
            assertTrue(source.fd() >= 0);
        }
        if (qemuIo()) {
            String r = runQemuIo("-r", "-f", "raw", "-c", "read 0 4k", image().toString());
            assertTrue(r.startsWith("0: "), "a reader beside an inactive image: " + r);
        }
        try (QemuFlow qemu = session()) {
            BlkQueue q = guest.queue(0, 64, true);
            qemu.init(CrashRecoveryTest.PROTOCOL, q);
            qemu.start(qemu.linuxFeatures() & ~LOG_ALL, true, null, q);
            rig.awaitLine(l -> l.contains("active (writer's locks taken) at the device's start"));
            assertTrue(rig.activation.active());
            assertWriterLocks(true);
            byte[] data = BlkQueue.pattern(8, 4096, 3);
            q.write(8, data);
            assertArrayEquals(data, q.read(8, 4096));
            ImageLock.LockedException e;
            try (PosixFile f = PosixFile.open(image(), false, false)) {
                e = assertThrows(ImageLock.LockedException.class,
                        () -> ImageLock.acquire(f.fd(), image(), ImageLock.WRITER, Locking.ON, s -> { }));
            }
            assertTrue(e.getMessage().startsWith("Failed to get \"write\" lock"), e.getMessage());
            if (qemuIo()) {
                String w = runQemuIo("-f", "raw", "-c", "write 0 4k", image().toString());
                assertTrue(w.contains("Failed to get \"write\" lock"), "a third writer once active: " + w);
            }
        }
    }

    @Test
    void aStartWhileAnotherWriterHoldsTheImageIsRefusedAndWritesNothing() throws Exception {
        rig = ServerRig.startLocked(dir, true);
        PosixFile source = otherWriter();
        try (QemuFlow qemu = session()) {
            BlkQueue q = guest.queue(0, 64, true);
            qemu.init(CrashRecoveryTest.PROTOCOL, q);
            qemu.start(qemu.linuxFeatures() & ~LOG_ALL, true, null, q);
            String line = rig.awaitLine(l -> l.contains("NOT started"));
            assertTrue(line.contains("Failed to get") && line.contains("held by"), line);
            assertFalse(rig.activation.active());
            // A write published and kicked meanwhile is not processed: the image stays zero.
            byte[] data = BlkQueue.pattern(0, 4096, 9);
            org.agrona.UnsafeApi.copyMemory(data, org.agrona.UnsafeApi.arrayBaseOffset(byte[].class), null,
                    q.host(q.dataGpa), data.length);
            int head = q.add(BlkQueue.T_OUT, 0, q.dataGpa, data.length, false);
            q.publish();
            q.kick.signal();
            assertFalse(rig.activation.active());
            assertArrayEquals(new byte[4096], Arrays.copyOf(Files.readAllBytes(image()), 4096), "nothing written");
            source.close();
            // The frontend starts the ring again (a new SET_VRING_KICK; the retry timer may come
            // first): now it takes the image over and the pending write goes through.
            qemu.f.setVringFd(VhostUserFrontend.SET_VRING_KICK, q.index, q.kick);
            rig.awaitLine(l -> l.contains("active (writer's locks taken)"));
            q.kick.signal();
            assertEquals(head, q.awaitUsed());
            assertEquals(0, q.statusOfHead(head));
            assertArrayEquals(data, Arrays.copyOf(Files.readAllBytes(image()), 4096));
            assertWriterLocks(true);
        } finally {
            source.close();
        }
    }

    /**
     * rev17a LOW 3: a refused start is retried on a timer, so the ring starts once the other
     * writer goes, without a new SET_VRING_KICK (QEMU sends none); the refusal is logged once.
     */
    @Test
    void aRefusedStartIsRetriedUntilTheOtherWriterLeaves() throws Exception {
        rig = ServerRig.startLocked(dir, true);
        PosixFile source = otherWriter();
        try (QemuFlow qemu = session()) {
            BlkQueue q = guest.queue(0, 64, true);
            qemu.init(CrashRecoveryTest.PROTOCOL, q);
            qemu.start(qemu.linuxFeatures() & ~LOG_ALL, true, null, q);
            rig.awaitLine(l -> l.contains("NOT started"));
            byte[] data = BlkQueue.pattern(0, 4096, 11);
            org.agrona.UnsafeApi.copyMemory(data, org.agrona.UnsafeApi.arrayBaseOffset(byte[].class), null,
                    q.host(q.dataGpa), data.length);
            int head = q.add(BlkQueue.T_OUT, 0, q.dataGpa, data.length, false);
            q.publish();
            q.kick.signal();
            Thread.sleep(2500); // retries while the other writer holds the image: refused, not logged again
            assertFalse(rig.activation.active());
            assertArrayEquals(new byte[4096], Arrays.copyOf(Files.readAllBytes(image()), 4096), "nothing written");
            source.close();
            rig.awaitLine(l -> l.contains("active (writer's locks taken)"));
            assertEquals(head, q.awaitUsed());
            assertEquals(0, q.statusOfHead(head));
            assertArrayEquals(data, Arrays.copyOf(Files.readAllBytes(image()), 4096));
            assertWriterLocks(true);
            assertEquals(1, rig.lines().stream().filter(l -> l.contains("NOT started")).count(), "the refusal logged once");
        } finally {
            source.close();
        }
    }

    /**
     * rev17e L3: a ring whose retried start (the timer's, once the image came active) is refused
     * after the activation (here its inflight region is smaller than the ring) does not sit dead
     * on an open connection: its error eventfd is signalled and the session ends, so that the
     * frontend reconnects, as when a message's start is refused and cannot be answered.
     */
    @Test
    void aStartRefusedAfterTheRetriedActivationSignalsAndEndsTheSession() throws Exception {
        rig = ServerRig.startLocked(dir, true);
        PosixFile source = otherWriter();
        try (QemuFlow qemu = session()) {
            qemu.inflightQueueSize = 32;
            BlkQueue q = guest.queue(0, 64, true);
            qemu.init(CrashRecoveryTest.PROTOCOL, q);
            qemu.start(qemu.linuxFeatures() & ~LOG_ALL, true, null, q);
            rig.awaitLine(l -> l.contains("NOT started"));
            assertEquals(1, qemu.errs[0].await(10_000), "the refused activation signalled once");
            source.close();
            rig.awaitLine(l -> l.contains("active (writer's locks taken)"));
            assertEquals(1, qemu.errs[0].await(30_000), "the ring that cannot start after the activation is signalled");
            rig.awaitLine(l -> l.contains("connection closed: vring 0 cannot start") && l.contains("after its image came active"));
            assertTrue(qemu.f.closedByBackend(), "the session ended");
        } finally {
            source.close();
        }
    }

    @Test
    void aMigrationSourceStopDropsTheWritersLocksAndTheNextStartTakesThemBack() throws Exception {
        rig = ServerRig.startLocked(dir, false);
        assertWriterLocks(true);
        int fd = LogProtocolTest.sealedMemfd(LogProtocolTest.logBytes());
        try (QemuFlow qemu = session()) {
            BlkQueue q = guest.queue(0, 64, true);
            qemu.init(LogProtocolTest.PROTOCOL, q);
            long features = qemu.linuxFeatures() & ~LOG_ALL;
            qemu.start(features, true, null, q);
            byte[] data = BlkQueue.pattern(16, 8192, 5);
            q.write(16, data);
            // Migration: the log, LOG_ALL, then the hand-over (GET_VRING_BASE drains and syncs).
            assertTrue(qemu.f.request(LogProtocolTest.SET_LOG_BASE,
                    LogProtocolTest.logDescription(LogProtocolTest.logBytes(), 0), fd) != null);
            qemu.f.setFeatures(features | LOG_ALL);
            rig.awaitLine(l -> l.contains("dirty logging on"));
            q.write(32, data);
            int[] bases = qemu.stop(q);
            assertEquals(q.driver.availIdx(), bases[0]);
            rig.awaitLine(l -> l.contains("inactive (writer's locks dropped) after a stop with dirty logging on"));
            assertFalse(rig.activation.active());
            assertWriterLocks(false);
            // The destination's backend takes the image over and finds what the guest wrote.
            try (PosixFile destination = otherWriter()) {
                assertTrue(destination.fd() >= 0);
                byte[] image = Files.readAllBytes(image());
                assertArrayEquals(data, Arrays.copyOfRange(image, 32 * 512, 32 * 512 + data.length));
            }
            // The migration failed (or the guest comes back): the source resumes and takes them again.
            qemu.start(features | LOG_ALL, false, bases, q);
            rig.awaitLine(l -> l.contains("active (writer's locks taken)"));
            assertTrue(rig.activation.active());
            assertWriterLocks(true);
            assertArrayEquals(data, q.read(32, 8192));
        } finally {
            Native.libc().close(fd);
        }
    }

    @Test
    void aPlainStopKeepsTheWritersLocks() throws Exception {
        rig = ServerRig.startLocked(dir, false);
        try (QemuFlow qemu = session()) {
            BlkQueue q = guest.queue(0, 64, true);
            qemu.init(CrashRecoveryTest.PROTOCOL, q);
            qemu.start(qemu.linuxFeatures() & ~LOG_ALL, true, null, q);
            q.write(0, BlkQueue.pattern(0, 4096, 1));
            int[] bases = qemu.stop(q);
            assertNotEquals(0, bases[0]);
            assertTrue(rig.activation.active());
            assertWriterLocks(true);
            try (PosixFile f = PosixFile.open(image(), false, false)) {
                assertThrows(ImageLock.LockedException.class,
                        () -> ImageLock.acquire(f.fd(), image(), ImageLock.WRITER, Locking.ON, s -> { }));
            }
        }
        assertTrue(rig.lines().stream().noneMatch(l -> l.contains("inactive")), String.valueOf(rig.lines()));
    }
}
