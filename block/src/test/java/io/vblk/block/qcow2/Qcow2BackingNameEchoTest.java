package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;

/**
 * rev15a (LOW): an image's writer chooses its backing file name (up to 1023 bytes, newlines and
 * ESC included) and its backing format name (an extension QEMU bounds at 15 bytes, vblk did
 * not), both echoed into open errors and logs: a forged log line, terminal escapes, a megabyte
 * of format name in an error. The format extension is refused past QEMU's bound, and the names
 * are echoed with their control characters escaped.
 */
class Qcow2BackingNameEchoTest {
    private static final int MIB = 1 << 20;

    @TempDir
    Path dir;

    /**
     * An overlay whose header extensions are replaced by one backing format extension holding
     * {@code format}, followed by the backing name {@code name}.
     */
    private Path overlay(String format, String name) throws Exception {
        Files.write(dir.resolve("base.raw"), new byte[MIB]);
        Path o = DriverRig.create(dir, "o.qcow2", String.valueOf(MIB), "-b", "base.raw", "-F", "raw");
        byte[] f = format.getBytes(StandardCharsets.UTF_8);
        byte[] n = name.getBytes(StandardCharsets.UTF_8);
        try (FileChannel ch = FileChannel.open(o, StandardOpenOption.READ, StandardOpenOption.WRITE)) {
            ByteBuffer h = ByteBuffer.allocate(4);
            ch.read(h, Qcow2Descriptor.HEADER_LENGTH_OFFSET);
            int at = h.flip().getInt();
            int nameAt = at + 8 + ((f.length + 7) & ~7) + 8;
            ByteBuffer ext = ByteBuffer.allocate(nameAt - at + n.length);
            ext.putInt(Qcow2Descriptor.EXT_BACKING_FORMAT).putInt(f.length).put(f);
            ext.position(8 + ((f.length + 7) & ~7)).putInt(Qcow2Descriptor.EXT_END).putInt(0).put(n).flip();
            ch.write(ext, at);
            ch.write(ByteBuffer.allocate(8).putLong((long) nameAt).flip(), Qcow2Descriptor.BACKING_FILE_OFFSET_OFFSET);
            ch.write(ByteBuffer.allocate(4).putInt(n.length).flip(), Qcow2Descriptor.BACKING_FILE_SIZE_OFFSET);
        }
        return o;
    }

    private static IllegalArgumentException refused(Path o) {
        return assertThrows(IllegalArgumentException.class,
                () -> Qcow2.open(o, BackendKind.THREADS, 8, Qcow2Options.defaults().readOnly(true)).close());
    }

    private static void assertPrintable(String message) {
        for (char c : message.toCharArray()) {
            assertFalse(Character.isISOControl(c), "a control character 0x" + Integer.toHexString(c) + " in: " + message);
        }
    }

    @Test
    void theWellFormedOverlayOpens() throws Exception {
        Qcow2.open(overlay("raw", "base.raw"), BackendKind.THREADS, 8, Qcow2Options.defaults().readOnly(true)).close();
    }

    @Test
    void aBackingFormatNameOfQemusLengthOrMoreIsRefusedWithoutEchoingIt() throws Exception {
        String format = "raw" + "\n\u001b[2Jvblk: forged line ".repeat(400);
        IllegalArgumentException e = refused(overlay(format, "base.raw"));
        assertTrue(e.getMessage().contains("backing format extension of " + format.length() + " bytes"), e.getMessage());
        assertTrue(e.getMessage().length() < 300, e.getMessage());
        refused(overlay("qcow2-but-longer", "base.raw")); // 16 bytes: QEMU's limit too
    }

    @Test
    void aShortUnknownFormatNameIsEchoedEscaped() throws Exception {
        IllegalArgumentException e = refused(overlay("r\n\u001b[31m", "base.raw"));
        assertPrintable(e.getMessage());
        assertTrue(e.getMessage().contains("'r\\x0a\\x1b[31m'"), e.getMessage());
    }

    @Test
    void aBackingNameWithControlCharactersIsEchoedEscaped() throws Exception {
        String name = "missing\nvblk: forged line \u001b[31mred\u202e";
        IllegalArgumentException e = refused(overlay("raw", name));
        assertPrintable(e.getMessage());
        assertFalse(e.getMessage().contains("\u202e"), e.getMessage());
        assertTrue(e.getMessage().contains("missing\\x0avblk: forged line \\x1b[31mred\\u202e"), e.getMessage());
        assertEquals(1, e.getMessage().lines().count(), e.getMessage());
    }
}
