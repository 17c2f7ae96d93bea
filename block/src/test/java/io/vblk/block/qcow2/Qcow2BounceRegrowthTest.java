package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.testkit.JvmFlags;

/**
 * "Bounce growth is not retried": once the JVM's direct-memory pool had no room for another
 * bounce buffer, a driver stayed at the buffers it had for its life, even after another disk
 * closed and gave its memory back. Now a burst that finds the pool full completes on the
 * buffers taken at open (each request waits for a pooled buffer, none for ever), and a later
 * burst grows the pool again. Run in a JVM of its own with a 64 MiB pool ({@link BounceRegrowth}).
 */
class Qcow2BounceRegrowthTest {
    @TempDir
    Path dir;

    @Test
    void theBouncePoolGrowsAgainOnceDirectMemoryIsGivenBack() throws Exception {
        Path src = DriverRig.create(dir, "src.qcow2", "4M", "-o", "cluster_size=2M");
        DriverRig.run("qemu-io", "-f", "qcow2", "-c", "write -P 0x33 0 4M", src.toString());
        Path img = dir.resolve("c2m.qcow2");
        DriverRig.qemuImg("convert", "-c", "-O", "qcow2", "-o", "cluster_size=2M", src.toString(), img.toString());
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        List<String> cmd = new ArrayList<>(List.of(java, "-XX:MaxDirectMemorySize=64m", "-Xmx256m"));
        cmd.addAll(JvmFlags.list());
        cmd.addAll(List.of("-cp", System.getProperty("java.class.path"), BounceRegrowth.class.getName(),
                img.toString()));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        p.getInputStream().transferTo(out);
        assertTrue(p.waitFor(120, TimeUnit.SECONDS));
        String output = out.toString(StandardCharsets.UTF_8);
        System.out.println(output);
        int full = buffers(output, "FULL");
        int again = buffers(output, "AGAIN");
        assertTrue(output.contains("FULL buffers=" + full + " ok=true"), "a burst on a full pool failed:\n" + output);
        assertTrue(full == Qcow2Driver.BOUNCE_RESERVED, "the pool grew with no room:\n" + output);
        assertTrue(output.contains("AGAIN buffers=" + again + " ok=true"), output);
        assertTrue(again > full, "the pool never grew again once memory was given back:\n" + output);
    }

    private static int buffers(String output, String line) {
        Matcher m = Pattern.compile(line + " buffers=(\\d+)").matcher(output);
        assertTrue(m.find(), output);
        return Integer.parseInt(m.group(1));
    }
}
