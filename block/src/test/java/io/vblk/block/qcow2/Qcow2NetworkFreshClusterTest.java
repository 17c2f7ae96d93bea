package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;
import java.util.List;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.block.NetworkDisk;
import io.vblk.sys.NativeBuffer;

/**
 * On a network disk, clusters past the allocation point (the last non-zero refcount) are not known
 * to read as zeros: a partial write into a fresh cluster writes the whole cluster, zeros around the
 * guest's piece, so the rest of the cluster never shows what the disk held there (rev14a M1).
 */
class Qcow2NetworkFreshClusterTest {
    private static final int MIB = 1 << 20;

    @TempDir
    Path dir;

    private Process nbd;

    @AfterEach
    void stop() throws Exception {
        if (nbd != null) {
            io.vblk.testkit.QemuTools.stop(nbd);
        }
    }

    @Test
    void aPartialWriteIntoAFreshClusterOnAnNbdExportReadsZerosAroundIt() throws Exception {
        Path img = DriverRig.create(dir, "n.qcow2", "64M");
        // The export is larger than the image, and its tail holds old bytes (a reused volume).
        byte[] stale = new byte[8 * MIB];
        Arrays.fill(stale, (byte) 0xee);
        Files.write(img, stale, StandardOpenOption.APPEND);
        Path sock = dir.resolve("nbd.sock");
        nbd = new ProcessBuilder(List.of("qemu-nbd", "-f", "raw", "-k", sock.toString(), "-x", "q", "-t", "-e", "4",
                "--cache=none", "--aio=threads", img.toString())).redirectErrorStream(true)
                .redirectOutput(dir.resolve("qemu-nbd.log").toFile()).start();
        Qcow2NetworkTest.awaitListening(nbd, sock, dir.resolve("qemu-nbd.log"));
        try (Qcow2Driver d = Qcow2.open(NetworkDisk.open("nbd+unix:///q?socket=" + sock, false), 8, Qcow2Options.defaults())) {
            DriverRig rig = new DriverRig(d);
            NativeBuffer b = DriverRig.buffer(65536);
            b.buffer().setMemory(0, 4096, (byte) 0x33);
            assertEquals(4096, rig.one(rig.write(32L * MIB + 4096, b, 4096)));
            assertEquals(4096, rig.one(rig.read(32L * MIB, b, 4096)));
            assertEquals(0, b.buffer().getByte(0) & 0xff,
                    "the guest never wrote [32M, 32M+4k): it must read zeros, not the disk's old bytes");
        }
    }
}
