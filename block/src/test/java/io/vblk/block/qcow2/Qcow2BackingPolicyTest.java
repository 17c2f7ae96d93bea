package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.FileOutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.sys.NativeBuffer;

/**
 * The backing name comes from the (hostile) image header: what it may name. A FIFO (whose open
 * would block for ever), a character device or a socket is refused as the top-level image is; a
 * network address is refused unless the operator allows network backing, and an {@code rbd:}
 * name never carries Ceph options (librados would apply them in the daemon: a log file or admin
 * socket at a path the image chose); local backing files can be confined to a directory.
 */
class Qcow2BackingPolicyTest {
    private static final int MIB = 1 << 20;

    @TempDir
    Path dir;

    private Path overlayOn(String base, String format) throws Exception {
        Path b = dir.resolve(base);
        if ("raw".equals(format)) {
            Files.write(b, new byte[MIB]);
        } else {
            DriverRig.create(dir, base, String.valueOf(MIB));
        }
        return DriverRig.create(dir, "o.qcow2", String.valueOf(MIB), "-b", base, "-F", format);
    }

    @Test
    void aFifoAsRawBackingFileIsRefusedNotWaitedOn() throws Exception {
        Path o = overlayOn("base.raw", "raw");
        Path base = dir.resolve("base.raw");
        Files.delete(base);
        assertEquals(0, new ProcessBuilder("mkfifo", base.toString()).start().waitFor());
        assertRefusedWithoutBlocking(o, base, Qcow2Options.defaults());
    }

    @Test
    void aFifoAsQcow2BackingFileIsRefusedNotWaitedOn() throws Exception {
        Path o = overlayOn("base.qcow2", "qcow2");
        Path base = dir.resolve("base.qcow2");
        Files.delete(base);
        assertEquals(0, new ProcessBuilder("mkfifo", base.toString()).start().waitFor());
        assertRefusedWithoutBlocking(o, base, Qcow2Options.defaults());
    }

    private void assertRefusedWithoutBlocking(Path overlay, Path fifo, Qcow2Options options) throws Exception {
        ExecutorService ex = Executors.newSingleThreadExecutor();
        Future<String> f = ex.submit(() -> {
            try {
                Qcow2.open(overlay, BackendKind.THREADS, 8, options).close();
                return "opened";
            } catch (RuntimeException e) {
                return "refused: " + e.getMessage();
            }
        });
        try {
            // 30 s: a hang guard (the open of a FIFO blocks for ever; a loaded machine only slows a refusal).
            String r = f.get(30, TimeUnit.SECONDS);
            assertTrue(r.startsWith("refused") && r.contains("not a regular file or a block device"), r);
        } catch (TimeoutException e) {
            try (FileOutputStream w = new FileOutputStream(fifo.toFile())) {
                w.write(0); // unblock the open so that the JVM can end
            } catch (java.io.IOException ignored) {
                // the blocked reader may have gone already
            }
            fail("Qcow2.open blocked > 30 s in open(2) of a FIFO named as backing file " + fifo);
        } finally {
            ex.shutdownNow();
        }
    }

    @Test
    void aCharacterDeviceAsBackingFileIsRefused() throws Exception {
        Path o = DriverRig.create(dir, "c.qcow2", String.valueOf(MIB), "-u", "-b", "/dev/zero", "-F", "raw");
        for (boolean direct : new boolean[] {false, true}) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> Qcow2.open(o, BackendKind.THREADS, 8, Qcow2Options.defaults().direct(direct)).close());
            assertTrue(e.getMessage().contains("not a regular file or a block device"), e.getMessage());
        }
    }

    /** Without a backing directory a backing name reaches any readable file (as in QEMU); with one, only files under it. */
    @Test
    void aBackingDirectoryConfinesLocalBackingFiles() throws Exception {
        Path secretDir = Files.createDirectories(dir.resolve("elsewhere"));
        Path images = Files.createDirectories(dir.resolve("images"));
        Path secret = secretDir.resolve("shadow");
        byte[] s = "root:$6$secret-hash:19000:0:99999:7:::\n".getBytes(StandardCharsets.US_ASCII);
        byte[] padded = new byte[4096];
        System.arraycopy(s, 0, padded, 0, s.length);
        Files.write(secret, padded);
        Path evil = DriverRig.create(images, "evil.qcow2", String.valueOf(MIB), "-u", "-b", secret.toString(), "-F", "raw");
        Path dotdot = DriverRig.create(images, "dotdot.qcow2", String.valueOf(MIB), "-u", "-b", "../elsewhere/shadow",
                "-F", "raw");
        Files.write(images.resolve("base.raw"), padded);
        Path good = DriverRig.create(images, "good.qcow2", String.valueOf(MIB), "-u", "-b", "base.raw", "-F", "raw");
        Qcow2Options confined = Qcow2Options.defaults().backingDir(images);
        for (Path o : new Path[] {evil, dotdot}) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> Qcow2.open(o, BackendKind.THREADS, 8, confined).close());
            assertTrue(e.getMessage().contains("outside the backing directory"), e.getMessage());
        }
        try (Qcow2Driver d = Qcow2.open(good, BackendKind.THREADS, 8, confined)) {
            DriverRig rig = new DriverRig(d);
            NativeBuffer b = DriverRig.buffer(4096);
            assertEquals(4096, rig.one(rig.read(0, b, 4096)));
            assertTrue(new String(DriverRig.bytes(b, 8), StandardCharsets.US_ASCII).startsWith("root:$6$"));
        }
        try (Qcow2Driver d = Qcow2.open(evil, BackendKind.THREADS, 8, Qcow2Options.defaults())) {
            assertTrue(d != null, "unconfined (the default, as QEMU) follows an absolute name");
        }
    }

    /**
     * The backing name is checked under the backing directory, then a writer of that directory
     * swaps a directory component for a link out of it before the open: the open must not follow
     * it (openat2 RESOLVE_BENEATH). Before, the check passed and the open read the outside file.
     */
    @Test
    void aDirectoryComponentSwappedForALinkAfterTheCheckIsNotFollowed() throws Exception {
        Path secretDir = Files.createDirectories(dir.resolve("elsewhere"));
        Path images = Files.createDirectories(dir.resolve("images"));
        Path sub = Files.createDirectories(images.resolve("sub"));
        byte[] inside = new byte[4096];
        byte[] secret = new byte[4096];
        System.arraycopy("inside".getBytes(StandardCharsets.US_ASCII), 0, inside, 0, 6);
        System.arraycopy("SECRET".getBytes(StandardCharsets.US_ASCII), 0, secret, 0, 6);
        Files.write(sub.resolve("base.raw"), inside);
        Files.write(secretDir.resolve("base.raw"), secret);
        Path raw = DriverRig.create(images, "raw-over.qcow2", String.valueOf(MIB), "-u", "-b", "sub/base.raw", "-F", "raw");
        DriverRig.create(sub, "base.qcow2", String.valueOf(MIB));
        Files.copy(sub.resolve("base.qcow2"), secretDir.resolve("base.qcow2"));
        Path q2 = DriverRig.create(images, "q-over.qcow2", String.valueOf(MIB), "-u", "-b", "sub/base.qcow2", "-F", "qcow2");
        Qcow2Options confined = Qcow2Options.defaults().backingDir(images);
        try (Qcow2Driver d = Qcow2.open(raw, BackendKind.THREADS, 8, confined)) {
            DriverRig rig = new DriverRig(d);
            NativeBuffer b = DriverRig.buffer(4096);
            assertEquals(4096, rig.one(rig.read(0, b, 4096)));
            assertEquals("inside", new String(DriverRig.bytes(b, 6), StandardCharsets.US_ASCII), "unswapped, it opens");
        }
        Qcow2.afterConfine = () -> {
            try {
                Files.move(sub, images.resolve("sub.old"));
                Files.createSymbolicLink(sub, secretDir);
            } catch (java.io.IOException e) {
                throw new java.io.UncheckedIOException(e);
            }
        };
        try {
            for (Path o : new Path[] {raw, q2}) {
                IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                        () -> Qcow2.open(o, BackendKind.THREADS, 8, confined).close(), o.toString());
                assertTrue(e.getMessage().contains("outside"), e.getMessage());
                Files.delete(sub);
                Files.move(images.resolve("sub.old"), sub);
            }
        } finally {
            Qcow2.afterConfine = null;
        }
    }

    @Test
    void aNetworkBackingNameIsRefusedUnlessAllowed() throws Exception {
        Path sock = dir.resolve("any.sock");
        Path o = DriverRig.create(dir, "n.qcow2", String.valueOf(MIB), "-u", "-b", "nbd+unix:///?socket=" + sock, "-F",
                "raw");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Qcow2.open(o, BackendKind.THREADS, 8, Qcow2Options.defaults()).close());
        assertTrue(e.getMessage().contains("network backing"), e.getMessage());
    }

    /** No Ceph cluster is needed: librados applied the options before rados_connect failed. */
    @Test
    void aBackingRbdAddressCannotSetCephOptionsOnTheHost() throws Exception {
        Path victim = dir.resolve("victim");
        Files.writeString(victim, "precious data");
        Path log = dir.resolve("written-by-librados.log");
        String addr = "rbd:rbd/nosuch:mon_host=127.0.0.1\\:1:admin_socket=" + victim + ":log_file=" + log
                + ":client_mount_timeout=1:rados_mon_op_timeout=1";
        Path o = DriverRig.create(dir, "r.qcow2", String.valueOf(MIB), "-u", "-b", addr, "-F", "raw");
        for (Qcow2Options options : new Qcow2Options[] {Qcow2Options.defaults(), Qcow2Options.defaults().networkBacking(true)}) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> Qcow2.open(o, BackendKind.THREADS, 8, options).close());
            assertTrue(e.getMessage().contains(options.networkBacking() ? "Ceph options" : "network backing"),
                    e.getMessage());
        }
        assertTrue(Files.isRegularFile(victim) && "precious data".equals(Files.readString(victim)));
        assertFalse(Files.exists(log), "librados wrote a log file the image chose");
    }
}
