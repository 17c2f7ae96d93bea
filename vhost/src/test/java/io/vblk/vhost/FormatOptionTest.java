package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.block.ImageFormat;

/** {@code vblk serve --format}: named, never guessed; a raw file that looks like qcow2 is warned about. */
class FormatOptionTest {
    @TempDir
    Path dir;

    @Test
    void formatIsRawUnlessNamed() {
        assertEquals(ImageFormat.RAW, ServeOptions.parse(new String[] {"--image", "x.img", "--socket", "s"}).format);
        assertEquals(ImageFormat.QCOW2,
                ServeOptions.parse(new String[] {"--image", "x.qcow2", "--socket", "s", "--format", "qcow2"}).format);
        assertEquals(ImageFormat.QCOW2,
                ServeOptions.parse(new String[] {"--image", "x.qcow2", "--socket", "s", "--format=QCOW2"}).format);
    }

    @Test
    void unknownFormatsAndQcow2OnANullDiskAreUsageErrors() {
        UsageError e = assertThrows(UsageError.class,
                () -> ServeOptions.parse(new String[] {"--image", "x", "--socket", "s", "--format", "vmdk"}));
        assertTrue(e.getMessage().contains("raw or qcow2"), e.getMessage());
        assertThrows(UsageError.class,
                () -> ServeOptions.parse(new String[] {"--image", "null:1M", "--socket", "s", "--format", "qcow2"}));
    }

    @Test
    void aRawFileThatStartsLikeQcow2StaysRawWithOneWarning() throws Exception {
        Path p = dir.resolve("looks.img");
        byte[] data = new byte[4096];
        data[0] = 'Q';
        data[1] = 'F';
        data[2] = 'I';
        data[3] = (byte) 0xfb;
        Files.write(p, data);
        List<String> lines = new ArrayList<>();
        FormatChoice.warnIfLooksLikeQcow2(p, Log.to(lines::add));
        assertEquals(1, lines.size());
        assertTrue(lines.get(0).contains("served as raw"), lines.get(0));
        lines.clear();
        Files.write(p, new byte[4096]);
        FormatChoice.warnIfLooksLikeQcow2(p, Log.to(lines::add));
        assertEquals(0, lines.size());
    }
}
