package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertThrows;

import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;

/** A v3 header cut short (a file of 72..103 bytes) is refused with a reason, not read past the buffer's limit. */
class Qcow2ShortHeaderTest {
    @TempDir
    Path dir;

    private Path shortV3() throws Exception {
        ByteBuffer b = ByteBuffer.allocate(80);
        b.putInt(0, Qcow2Descriptor.MAGIC).putInt(4, 3).putInt(20, 16);
        Path p = dir.resolve("short.qcow2");
        Files.write(p, b.array());
        return p;
    }

    @Test
    void openRefusesWithAReason() throws Exception {
        Path p = shortV3();
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Qcow2.open(p, BackendKind.THREADS, 8, Qcow2Options.defaults().readOnly(true)).close());
        org.junit.jupiter.api.Assertions.assertTrue(e.getMessage().contains("cut short"), e.getMessage());
    }

    @Test
    void virtualSizeRefusesWithAReason() throws Exception {
        Path p = shortV3();
        assertThrows(IllegalArgumentException.class, () -> Qcow2.virtualSize(p));
    }
}
