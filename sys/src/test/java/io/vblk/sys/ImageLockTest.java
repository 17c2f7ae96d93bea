package io.vblk.sys;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.ImageLock.Locking;
import io.vblk.sys.ImageLock.LockedException;

/**
 * QEMU's image locks both ways, with real qemu-io, qemu-img and qemu-storage-daemon processes
 * (.ci/run installs them), and between two descriptions and two processes of vblk.
 */
class ImageLockTest {
    @TempDir
    Path dir;

    private final List<Process> started = new ArrayList<>();

    @AfterEach
    void stop() throws Exception {
        for (Process p : started) {
            p.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
        }
    }

    private Path raw(String name) throws Exception {
        Path p = dir.resolve(name);
        Files.write(p, new byte[1 << 20]);
        return p;
    }

    private static void assumeQemu() {
        assumeTrue(Files.isExecutable(Path.of("/usr/bin/qemu-io")), "qemu-utils is not installed (.ci/run installs it)");
    }

    /** Runs a command to its end: exit status and output. */
    private static Result run(String... cmd) throws Exception {
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        assertTrue(p.waitFor(60, TimeUnit.SECONDS), String.join(" ", cmd));
        return new Result(p.exitValue(), out);
    }

    record Result(int status, String output) {
    }

    private static PosixFile lockedWriter(Path image) {
        PosixFile f = PosixFile.open(image, false, false);
        try {
            assertTrue(ImageLock.acquire(f.fd(), image, ImageLock.WRITER, Locking.ON, s -> { }));
            return f;
        } catch (RuntimeException e) {
            f.close();
            throw e;
        }
    }

    private static LockedException refused(Path image, boolean readOnly, ImageLock.Use use) {
        try (PosixFile f = PosixFile.open(image, readOnly, false)) {
            return assertThrows(LockedException.class, () -> ImageLock.acquire(f.fd(), image, use, Locking.ON, s -> { }));
        }
    }

    @Test
    void twoWritersRefuseEachOtherAndAReaderIsRefusedBesideAWriter() throws Exception {
        Path image = raw("a.raw");
        try (PosixFile writer = lockedWriter(image)) {
            assertFalse(writer.isClosed());
            LockedException w = refused(image, false, ImageLock.WRITER);
            assertTrue(w.getMessage().startsWith("Failed to get \"write\" lock on " + image), w.getMessage());
            assertTrue(w.heldByThisProcess(), w.getMessage());
            LockedException r = refused(image, true, ImageLock.READER);
            assertTrue(r.getMessage().startsWith("Failed to get shared \"write\" lock"), r.getMessage());
        }
        // Closing the writer's description released every byte.
        try (PosixFile again = lockedWriter(image)) {
            assertFalse(again.isClosed());
        }
    }

    @Test
    void readersShareAndKeepWritersOut() throws Exception {
        Path image = raw("ro.raw");
        try (PosixFile a = PosixFile.open(image, true, false); PosixFile b = PosixFile.open(image, true, false)) {
            assertTrue(ImageLock.acquire(a.fd(), image, ImageLock.READER, Locking.ON, s -> { }));
            assertTrue(ImageLock.acquire(b.fd(), image, ImageLock.READER, Locking.ON, s -> { }));
            LockedException w = refused(image, false, ImageLock.WRITER);
            assertTrue(w.getMessage().startsWith("Failed to get \"write\" lock"), w.getMessage());
        }
    }

    @Test
    void offTakesNothingAndTestsNothing() throws Exception {
        Path image = raw("off.raw");
        try (PosixFile writer = lockedWriter(image); PosixFile other = PosixFile.open(image, false, false)) {
            assertFalse(ImageLock.acquire(other.fd(), image, ImageLock.WRITER, Locking.OFF, s -> { }));
            assertEquals(OfdLock.F_UNLCK, OfdLock.test(writer.fd(), ImageLock.PERM_BASE, 300));
        }
    }

    @Test
    void autoTakesTheLocksSilentlyWhereTheFileSystemHasThem() throws Exception {
        Path image = raw("auto.raw");
        List<String> said = new ArrayList<>();
        try (PosixFile auto = PosixFile.open(image, false, false)) {
            assertTrue(ImageLock.acquire(auto.fd(), image, ImageLock.WRITER, Locking.AUTO, said::add), "locked, as on");
            LockedException w = refused(image, false, ImageLock.WRITER);
            assertTrue(w.getMessage().startsWith("Failed to get \"write\" lock on " + image), w.getMessage());
            if (Files.isExecutable(Path.of("/usr/bin/qemu-io"))) {
                Result rw = run("qemu-io", "-f", "raw", "-c", "write 0 512", image.toString());
                assertTrue(rw.output().contains("Failed to get \"write\" lock"), rw.output());
            }
        }
        assertEquals(List.of(), said, "nothing to report where the locks work");
        assertEquals(Locking.AUTO, Locking.parse("auto"));
    }

    @Test
    void qemuIsRefusedWhileVblkWritesAndLetInWithForceShare() throws Exception {
        assumeQemu();
        Path image = raw("q.raw");
        try (PosixFile writer = lockedWriter(image)) {
            assertFalse(writer.isClosed());
            Result rw = run("qemu-io", "-f", "raw", "-c", "write 0 512", image.toString());
            assertNotEquals(0, rw.status(), rw.output());
            assertTrue(rw.output().contains("Failed to get \"write\" lock"), rw.output());
            Result resize = run("qemu-img", "resize", "-f", "raw", image.toString(), "2M");
            assertNotEquals(0, resize.status(), resize.output());
            assertTrue(run("qemu-io", "-U", "-r", "-f", "raw", "-c", "read 0 512", image.toString()).status() == 0);
            assertEquals(0, run("qemu-img", "info", "-U", image.toString()).status());
        }
        assertEquals(0, run("qemu-io", "-f", "raw", "-c", "write 0 512", image.toString()).status(), "released at close");
    }

    @Test
    void qemuReadsBesideAVblkReaderButDoesNotWrite() throws Exception {
        assumeQemu();
        Path image = raw("r.raw");
        try (PosixFile reader = PosixFile.open(image, true, false)) {
            assertTrue(ImageLock.acquire(reader.fd(), image, ImageLock.READER, Locking.ON, s -> { }));
            Result info = run("qemu-img", "info", "-f", "raw", image.toString());
            assertEquals(0, info.status(), info.output());
            assertEquals(0, run("qemu-io", "-r", "-f", "raw", "-c", "read 0 512", image.toString()).status());
            Result rw = run("qemu-io", "-f", "raw", "-c", "write 0 512", image.toString());
            assertTrue(rw.output().contains("Failed to get \"write\" lock"), rw.output());
        }
    }

    @Test
    void vblkRefusesAnImageQemuStorageDaemonExportsWritableAndNamesIt() throws Exception {
        assumeTrue(Files.isExecutable(Path.of("/usr/bin/qemu-storage-daemon")), "qemu-storage-daemon is not installed");
        Path image = raw("qsd.raw");
        Path socket = dir.resolve("qsd.sock");
        Process qsd = new ProcessBuilder("qemu-storage-daemon",
                "--blockdev", "driver=file,node-name=f0,filename=" + image,
                "--export", "type=vhost-user-blk,id=e0,node-name=f0,addr.type=unix,addr.path=" + socket + ",writable=on")
                .redirectErrorStream(true).redirectOutput(dir.resolve("qsd.log").toFile()).start();
        started.add(qsd);
        awaitLock(image);
        LockedException e = refused(image, false, ImageLock.WRITER);
        assertTrue(e.getMessage().contains("Failed to get shared \"write\" lock"), e.getMessage());
        assertTrue(e.holder().startsWith("qemu-storage-daemon (pid " + qsd.pid() + ")"), e.getMessage());
        // A reader beside a writer is refused too (the guest's disk would change under it).
        LockedException r = refused(image, true, ImageLock.READER);
        assertTrue(r.getMessage().contains("Failed to get shared \"write\" lock"), r.getMessage());
        qsd.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
        try (PosixFile w = lockedWriter(image)) {
            assertFalse(w.isClosed(), "the locks died with the process");
        }
    }

    @Test
    void twoVblkProcessesRefuseEachOtherAndAKilledHolderReleases() throws Exception {
        assumeQemu();
        Path image = raw("two.raw");
        Process child = holder(image);
        LockedException e = refused(image, false, ImageLock.WRITER);
        assertTrue(e.holder().startsWith("vblk (pid " + child.pid() + ")"), e.getMessage());
        Result rw = run("qemu-io", "-f", "raw", "-c", "write 0 512", image.toString());
        assertTrue(rw.output().contains("Failed to get \"write\" lock"), rw.output());
        child.destroyForcibly().waitFor(10, TimeUnit.SECONDS); // SIGKILL: no close ran
        assertEquals(0, run("qemu-io", "-f", "raw", "-c", "write 0 512", image.toString()).status());
        try (PosixFile w = lockedWriter(image)) {
            assertFalse(w.isClosed());
        }
    }

    /** A second JVM that takes a writer's locks on {@code image} and waits (killed by the test). */
    private Process holder(Path image) throws Exception {
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        // The parent pom's one list, as surefire passes it (sys is below the test kit's JvmFlags).
        String flags = System.getProperty("vblk.jvm.flags");
        if (flags == null || flags.isBlank()) {
            throw new IllegalStateException("no -Dvblk.jvm.flags (the parent pom's list; surefire sets it)");
        }
        List<String> cmd = new ArrayList<>();
        cmd.add(java);
        cmd.addAll(List.of(flags.trim().split("\\s+")));
        cmd.addAll(List.of("-cp", System.getProperty("java.class.path"), LockHolderMain.class.getName(), image.toString()));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        started.add(p);
        BufferedReader out = new BufferedReader(new InputStreamReader(p.getInputStream()));
        String line = out.readLine();
        assertEquals("locked", line, "the holder process took the locks");
        return p;
    }

    /**
     * Waits (up to 60 s, a hang guard: a QEMU process's start took seconds on a loaded CI machine,
     * and 15 s was tight) until someone holds byte 100 of {@code image} (qemu-storage-daemon's start).
     */
    private static void awaitLock(Path image) throws Exception {
        try (PosixFile probe = PosixFile.open(image, true, false)) {
            for (int i = 0; i < 1200; i++) {
                if (OfdLock.test(probe.fd(), ImageLock.PERM_BASE, 1) != OfdLock.F_UNLCK) {
                    return;
                }
                Thread.sleep(50);
            }
        }
        throw new AssertionError("nobody locked " + image);
    }

    /** The second process of {@link #twoVblkProcessesRefuseEachOtherAndAKilledHolderReleases}. */
    public static final class LockHolderMain {
        public static void main(String[] args) throws Exception {
            Path image = Path.of(args[0]);
            PosixFile f = PosixFile.open(image, false, false);
            ImageLock.acquire(f.fd(), image, ImageLock.WRITER, Locking.ON, s -> { });
            System.out.println("locked");
            System.out.flush();
            Thread.sleep(120_000);
        }
    }
}
