package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import io.vblk.aio.BackendKind;
import io.vblk.sys.NativeBuffer;
import io.vblk.testkit.JvmFlags;
import io.vblk.testkit.QemuTools;

/**
 * Crash consistency: a process doing allocating writes (copy-on-write from a raw backing file)
 * is killed with SIGKILL; then {@code qemu-img check} may report leaked clusters but no error,
 * and every write the process saw completed reads back intact (through QEMU's own reader,
 * {@code qemu-img convert}, and through this driver).
 */
class Qcow2CrashTest {
    private static final int DISK = 48 << 20;

    @TempDir
    Path dir;

    @ParameterizedTest(name = "{0} killed after {1} writes")
    @CsvSource({"io_uring, 40", "linux-aio, 150", "threads, 90"})
    void killedWhileAllocating(String backend, int killAfter) throws Exception {
        Path base = dir.resolve("base.raw");
        byte[] baseData = new byte[DISK];
        for (int i = 0; i < DISK; i++) {
            baseData[i] = (byte) (i * 7 + i / 4096);
        }
        Files.write(base, baseData);
        Path overlay = DriverRig.create(dir, "crash.qcow2", String.valueOf(DISK), "-o", "cluster_size=65536",
                "-b", "base.raw", "-F", "raw");
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        List<String> cmd = new ArrayList<>(List.of(java));
        cmd.addAll(JvmFlags.list());
        cmd.addAll(List.of("-cp", System.getProperty("java.class.path"), CrashWriter.class.getName(), overlay.toString(), backend));
        Process p = new ProcessBuilder(cmd)
                .redirectError(ProcessBuilder.Redirect.INHERIT).start();
        List<Integer> done = new ArrayList<>();
        try (BufferedReader in = new BufferedReader(new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8))) {
            String line;
            while ((line = in.readLine()) != null) {
                if (line.startsWith("DONE ")) {
                    done.add(Integer.parseInt(line.substring(5)));
                    if (done.size() >= killAfter) {
                        break;
                    }
                }
            }
            // SIGKILL: no shutdown hook, no close, writes in flight cut off wherever they are.
            p.destroyForcibly();
            assertTrue(p.waitFor(30, TimeUnit.SECONDS));
        }
        assertTrue(done.size() >= killAfter, "the writer stopped early: " + done.size());
        awaitLocksGone(overlay);
        QemuTools.Run check = DriverRig.run("qemu-img", "check", overlay.toString());
        assertTrue(check.code() == 0 || check.code() == 3, "qemu-img check found errors: " + check.output());
        assertTrue(!check.output().contains("ERROR"), check.output());

        Path seen = dir.resolve("seen.raw");
        DriverRig.qemuImg("convert", "-f", "qcow2", "-O", "raw", overlay.toString(), seen.toString());
        byte[] disk = Files.readAllBytes(seen);
        for (int i : done) {
            long off = CrashWriter.offset(i);
            for (int j = 0; j < CrashWriter.LENGTH; j++) {
                if (disk[(int) off + j] != CrashWriter.pattern(i, j)) {
                    throw new AssertionError("completed write " + i + " lost at byte " + j);
                }
            }
            // The copy-on-write parts of its cluster kept the backing file's bytes.
            long clusterStart = off & ~65535L;
            for (long b = clusterStart; b < off; b++) {
                assertEquals(baseData[(int) b], disk[(int) b], "COW head of write " + i);
            }
        }
        // And vblk itself reads the same after the crash.
        try (Qcow2Driver d = Qcow2.open(overlay, BackendKind.parse(backend), 8, Qcow2Options.defaults().readOnly(true))) {
            DriverRig rig = new DriverRig(d);
            NativeBuffer b = DriverRig.buffer(CrashWriter.LENGTH);
            for (int i : done.subList(0, Math.min(done.size(), 40))) {
                assertEquals(CrashWriter.LENGTH, rig.one(rig.read(CrashWriter.offset(i), b, CrashWriter.LENGTH)));
                byte[] got = DriverRig.bytes(b, CrashWriter.LENGTH);
                for (int j = 0; j < got.length; j++) {
                    assertEquals(CrashWriter.pattern(i, j), got[j]);
                }
            }
        }
        // A repair (qemu-img check -r leaks) then leaves a clean image.
        DriverRig.run("qemu-img", "check", "-q", "-r", "leaks", overlay.toString());
        assertEquals(0, DriverRig.run("qemu-img", "check", overlay.toString()).code());
    }

    /**
     * The killed writer's image locks outlive it for a moment: its io_uring ring holds the file
     * until the kernel's asynchronous ring teardown ends (vblk's own open looks again for that;
     * qemu-img does not).
     */
    private static void awaitLocksGone(Path image) throws Exception {
        try (io.vblk.sys.PosixFile probe = io.vblk.sys.PosixFile.open(image, true, false)) {
            // Up to 30 s: the teardown is kernel work queued behind whatever else the machine does
            // (5 s ran out once under a load of 10).
            for (int i = 0; i < 1200; i++) {
                if (io.vblk.sys.OfdLock.test(probe.fd(), io.vblk.sys.ImageLock.PERM_BASE, 200) == io.vblk.sys.OfdLock.F_UNLCK) {
                    return;
                }
                Thread.sleep(25);
            }
        }
        throw new AssertionError("the killed writer's locks on " + image + " stayed");
    }
}
