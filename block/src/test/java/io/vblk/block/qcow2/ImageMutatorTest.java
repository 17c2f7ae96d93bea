package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertDoesNotThrow;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The hostile-image property's mutator itself: whatever an earlier mutation left (a file cut
 * inside its header, say), the next one edits what is there and never throws. A throw here
 * fails a property try before the driver is even opened.
 */
class ImageMutatorTest {
    @TempDir
    Path dir;

    private byte[] image() throws IOException {
        Path img = dir.resolve("a.qcow2");
        io.vblk.testkit.QemuTools.qemuImg("create", "-q", "-f", "qcow2", img.toString(), "1M");
        return Files.readAllBytes(img);
    }

    /**
     * CI's failing case: a truncation to 94 bytes, then the one-byte compression type at 104
     * read as {@code bytes[104]} (ArrayIndexOutOfBoundsException). Seed 8580 cuts to 20 bytes
     * and then picks that field.
     */
    @Test
    void aHeaderFieldPastATruncatedEndIsSkipped() throws IOException {
        byte[] b = image();
        ImageMutator m = new ImageMutator(b, 8580);
        assertDoesNotThrow(() -> m.mutate(4));
        assertTrue(m.log().contains("truncate to"), m.log());
    }

    @Test
    void noSeedThrows() throws IOException {
        byte[] b = image();
        for (long seed = 0; seed < 10_000; seed++) {
            long s = seed;
            assertDoesNotThrow(() -> new ImageMutator(b, s).mutate(4), "seed " + seed);
        }
    }
}
