package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;

/**
 * A writable open of an image with internal snapshots is refused with what to do instead (rev17b
 * L1): it said "images with snapshots are served read-only", as if the open had gone on read-only.
 */
class Qcow2SnapshotWriteRefusalTest {
    @TempDir
    Path dir;

    @Test
    void writableOpenNamesTheReadOnlyOption() throws Exception {
        Path img = DriverRig.create(dir, "s.qcow2", "1M");
        DriverRig.qemuImg("snapshot", "-c", "snap1", img.toString());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Qcow2.open(img, BackendKind.IO_URING, 8, Qcow2Options.defaults()).close());
        assertTrue(e.getMessage().contains("refused for writing: open it read-only (--read-only)"), e.getMessage());
        try (Qcow2Driver d = Qcow2.open(img, BackendKind.IO_URING, 8, Qcow2Options.defaults().readOnly(true))) {
            assertEquals(true, d.readOnly());
        }
    }
}
