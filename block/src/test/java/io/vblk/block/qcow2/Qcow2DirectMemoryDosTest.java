package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.testkit.JvmFlags;

/**
 * rev15a (HIGH): every image shares the JVM's direct-memory pool. Hostile images whose L1
 * tables fill it (4 KiB clusters: 28 MiB of L1 for 7 TiB) used to leave a benign disk that
 * already served with no memory for the L2 tables and bounce buffers it allocated on first use:
 * its next request threw OutOfMemoryError on the I/O thread (which quarantines the disk). Now a
 * driver takes its cache and first bounce buffers at open, so the image that would go over is
 * refused there, with a reason naming the limit, and the benign disk serves on. Run in a JVM
 * of its own with a 64 MiB pool ({@link DirectMemoryHog}).
 */
class Qcow2DirectMemoryDosTest {
    @TempDir
    Path dir;

    @Test
    void hostileImagesFillingDirectMemoryAreRefusedAtOpenAndTheServingDiskGoesOn() throws Exception {
        Path benign = DriverRig.create(dir, "benign.qcow2", "64G", "-o", "cluster_size=65536");
        Path big = DriverRig.create(dir, "big.qcow2", "7T", "-o", "cluster_size=4096");
        Path medium = DriverRig.create(dir, "medium.qcow2", "256G", "-o", "cluster_size=4096");
        Path small = DriverRig.create(dir, "small.qcow2", "8G", "-o", "cluster_size=4096");
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        List<String> cmd = new ArrayList<>(List.of(java, "-XX:MaxDirectMemorySize=64m", "-Xmx256m"));
        cmd.addAll(JvmFlags.list());
        cmd.addAll(List.of("-cp", System.getProperty("java.class.path"), DirectMemoryHog.class.getName(),
                benign.toString(), big.toString(), medium.toString(), small.toString()));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        p.getInputStream().transferTo(out);
        assertTrue(p.waitFor(120, TimeUnit.SECONDS));
        String output = out.toString(StandardCharsets.UTF_8);
        System.out.println(output);
        assertTrue(output.contains("first write: 4096"), output);
        assertTrue(output.contains("BENIGN OK"), "the serving disk failed once hostile images filled direct memory:\n"
                + output);
        long refusals = output.lines().filter(l -> l.startsWith("REFUSED")).count();
        assertEquals(3, refusals, output);
        output.lines().filter(l -> l.startsWith("REFUSED")).forEach(l -> {
            assertTrue(l.startsWith("REFUSED IllegalStateException: qcow2 "), l);
            assertTrue(l.contains("MaxDirectMemorySize"), l);
        });
        assertFalse(output.contains("OutOfMemoryError"), output);
    }
}
