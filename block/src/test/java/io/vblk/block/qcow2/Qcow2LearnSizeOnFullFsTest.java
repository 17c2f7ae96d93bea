package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.sys.ImageLock;
import io.vblk.sys.NativeBuffer;

/**
 * The first request learns the size another writer (a migration's source) grew the file to
 * since the open, on a full file system (rev14e M-b). reloadAtStart learned it with
 * host.extendTo, which fallocates from the size cached at open and no longer falls back to
 * ftruncate on ENOSPC: the sparse range the other writer added could not be allocated, the
 * size stayed stale and every table or data cluster past it was refused (EINVAL), failing the
 * image; an unaligned grown file could not be rounded to whole clusters and was marked corrupt.
 * The file system is a small tmpfs this test mounts (root, as the CI runs); skipped where it
 * cannot mount.
 */
class Qcow2LearnSizeOnFullFsTest {
    @Test
    void theFirstRequestLearnsTheGrownSizeOnAFullFileSystem(@TempDir Path tmp) throws Exception {
        Path dir = mountTmpfs(tmp);
        try {
            Path img = dir.resolve("g.qcow2");
            assertEquals(0, DriverRig.run("qemu-img", "create", "-f", "qcow2", "-o", "cluster_size=65536", img.toString(), "4M")
                    .code());
            Qcow2Options o = Qcow2Options.defaults().direct(false).locking(ImageLock.Locking.OFF);
            try (Qcow2Driver d = Qcow2.open(img, BackendKind.IO_URING, 8, o)) {
                long opened = Files.size(img);
                // Another writer (a migration's source) grows the file: a sparse tail, then a table and a cluster in it.
                try (RandomAccessFile f = new RandomAccessFile(img.toFile(), "rw")) {
                    f.setLength(opened + (1 << 20));
                }
                QemuRun q = new QemuRun(DriverRig.run("qemu-io", "-f", "qcow2", "-c", "write -P 0x42 0 64k", img.toString()));
                assertEquals(0, q.rc, q.out);
                // The file system fills up (another tenant).
                try (RandomAccessFile f = new RandomAccessFile(dir.resolve("filler").toFile(), "rw")) {
                    byte[] mb = new byte[1 << 16];
                    try {
                        while (true) {
                            f.write(mb);
                        }
                    } catch (java.io.IOException full) {
                        // ENOSPC
                    }
                }
                System.out.println("opened " + opened + ", now " + Files.size(img));
                DriverRig rig = new DriverRig(d);
                NativeBuffer b = DriverRig.buffer(65536);
                long rc = rig.one(rig.read(0, b, 65536));
                assertEquals(65536, rc, "reading the cluster the other writer wrote (corrupt: " + d.corruptReason() + ")");
                assertEquals(0x42, b.buffer().getByte(100));
            }
        } finally {
            umount(dir);
        }
    }

    @Test
    void anUnalignedGrownFileOnAFullFileSystemIsNotMarkedCorrupt(@TempDir Path tmp) throws Exception {
        Path dir = mountTmpfs(tmp);
        try {
            Path img = dir.resolve("g.qcow2");
            assertEquals(0, DriverRig.run("qemu-img", "create", "-f", "qcow2", "-o", "cluster_size=65536", img.toString(), "4M")
                    .code());
            Qcow2Options o = Qcow2Options.defaults().direct(false).locking(ImageLock.Locking.OFF);
            try (Qcow2Driver d = Qcow2.open(img, BackendKind.IO_URING, 8, o)) {
                long opened = Files.size(img);
                // Another writer (a migration's source) grows the file: a sparse tail, then a table and a cluster in it.
                try (RandomAccessFile f = new RandomAccessFile(img.toFile(), "rw")) {
                    f.setLength(opened + (1 << 20) + 4096); // ends inside a cluster
                }
                QemuRun q = new QemuRun(DriverRig.run("qemu-io", "-f", "qcow2", "-c", "write -P 0x42 0 64k", img.toString()));
                assertEquals(0, q.rc, q.out);
                // The file system fills up (another tenant).
                try (RandomAccessFile f = new RandomAccessFile(dir.resolve("filler").toFile(), "rw")) {
                    byte[] mb = new byte[1 << 16];
                    try {
                        while (true) {
                            f.write(mb);
                        }
                    } catch (java.io.IOException full) {
                        // ENOSPC
                    }
                }
                System.out.println("opened " + opened + ", now " + Files.size(img));
                DriverRig rig = new DriverRig(d);
                NativeBuffer b = DriverRig.buffer(65536);
                long rc = rig.one(rig.read(0, b, 65536));
                System.out.println("unaligned: read " + rc + ", corrupt: " + d.corruptReason());

                QemuRun info = new QemuRun(DriverRig.run("qemu-img", "info", "-U", img.toString()));
                System.out.println("" + info.out);
                assertEquals(null, d.corruptReason(), "a full file system is no corruption");
                assertEquals(65536, rc);
                assertEquals(0x42, b.buffer().getByte(100));
            }
        } finally {
            umount(dir);
        }
    }

    /** An 8 MiB tmpfs at {@code tmp/fs}, or the test skipped with the reason. */
    private static Path mountTmpfs(Path tmp) throws Exception {
        Path mnt = Files.createDirectories(tmp.resolve("fs"));
        QemuRun r = new QemuRun(DriverRig.run("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", mnt.toString()));
        Assumptions.assumeTrue(r.rc == 0, "skipped: cannot mount a small tmpfs (needs root and mount permission): "
                + r.out.trim());
        return mnt;
    }

    private static void umount(Path mnt) {
        if (DriverRig.run("umount", mnt.toString()).code() != 0) {
            DriverRig.run("umount", "-l", mnt.toString());
        }
    }

    record QemuRun(int rc, String out) {
        QemuRun(io.vblk.testkit.QemuTools.Run r) {
            this(r.code(), r.output());
        }
    }
}
