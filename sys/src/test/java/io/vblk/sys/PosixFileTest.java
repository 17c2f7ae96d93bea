package io.vblk.sys;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class PosixFileTest {
    @TempDir
    Path dir;

    @Test
    void directReadWriteAndSize() throws Exception {
        Path image = dir.resolve("img");
        Files.write(image, new byte[1 << 20]);
        try (PosixFile f = PosixFile.open(image, false, true)) {
            assertEquals(1 << 20, f.sizeBytes());
            NativeBuffer buf = new NativeBuffer(4096, 4096);
            buf.buffer().setMemory(0, 4096, (byte) 0x5A);
            assertEquals(4096, f.pwrite(buf.address(), 4096, 8192));
            assertEquals(0, f.fdatasync());
            NativeBuffer back = new NativeBuffer(4096, 4096);
            assertEquals(4096, f.pread(back.address(), 4096, 8192));
            assertEquals((byte) 0x5A, back.buffer().getByte(4095));
            assertEquals(0, f.fallocate(Linux.FALLOC_FL_PUNCH_HOLE | Linux.FALLOC_FL_KEEP_SIZE, 8192, 4096));
            assertEquals(4096, f.pread(back.address(), 4096, 8192));
            assertEquals(0, back.buffer().getByte(0));
            // O_DIRECT refuses a misaligned file offset: an error code, not a crash.
            assertEquals(-Errno.EINVAL, f.pread(back.address(), 512, 1));
        }
    }

    @Test
    void readOnlyOpenRefusesWrites() throws Exception {
        Path image = dir.resolve("ro");
        Files.write(image, new byte[4096]);
        try (PosixFile f = PosixFile.open(image, true, false)) {
            NativeBuffer buf = new NativeBuffer(4096);
            assertTrue(f.pwrite(buf.address(), 4096, 0) < 0);
        }
    }

    @Test
    void missingFileNamesThePath() {
        NativeException e = assertThrows(NativeException.class, () -> PosixFile.open(dir.resolve("nope"), true, false));
        assertEquals(Errno.ENOENT, e.errno());
        assertTrue(e.getMessage().contains("nope"), e.getMessage());
    }
}
