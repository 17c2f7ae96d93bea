package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;

/**
 * The cases {@link Qcow2HostileImagePropertyTest} found, each replayed with its exact mutation
 * (the property's log of it in the javadoc) and checked for the driver's clean answer.
 */
class Qcow2HostileImageRegressionTest {
    private static final int MIB = 1 << 20;

    @TempDir
    Path dir;

    private static void truncate(Path p, long size) throws IOException {
        try (FileChannel ch = FileChannel.open(p, StandardOpenOption.WRITE)) {
            ch.truncate(size);
        }
    }

    static void putLong(Path p, long offset, long v) throws IOException {
        try (FileChannel ch = FileChannel.open(p, StandardOpenOption.WRITE)) {
            ch.write(ByteBuffer.allocate(8).putLong(0, v), offset);
        }
    }

    static long getLong(Path p, long offset) throws IOException {
        try (FileChannel ch = FileChannel.open(p)) {
            ByteBuffer b = ByteBuffer.allocate(8);
            ch.read(b, offset);
            return b.getLong(0);
        }
    }

    private static IllegalArgumentException refused(Path p, boolean readOnly) {
        return assertThrows(IllegalArgumentException.class,
                () -> Qcow2.open(p, BackendKind.IO_URING, 8, Qcow2Options.defaults().readOnly(readOnly)).close());
    }

    /**
     * {@code v3-64k-rc64 ro seed 36: truncate to 187}: the file ends inside the feature-name
     * header extension, which the parser read on to the end of the cluster, past the buffer
     * holding the file: an IndexOutOfBoundsException out of the open (and out of
     * {@link Qcow2#virtualSize}). Now refused: the extension runs past the header.
     */
    @Test
    void fileEndingInsideAHeaderExtensionIsRefused() throws Exception {
        Path p = DriverRig.create(dir, "t.qcow2", String.valueOf(4 * MIB), "-o", "compat=1.1");
        truncate(p, 187);
        assertTrue(refused(p, true).getMessage().contains("extension"));
        assertThrows(IllegalArgumentException.class, () -> Qcow2.virtualSize(p));
    }

    /** The same with the backing file name: the file ends inside it. */
    @Test
    void fileEndingInsideTheBackingNameIsRefused() throws Exception {
        DriverRig.create(dir, "base.qcow2", String.valueOf(MIB));
        Path p = DriverRig.create(dir, "t.qcow2", String.valueOf(MIB), "-b", "base.qcow2", "-F", "qcow2");
        long nameAt = getLong(p, Qcow2Descriptor.BACKING_FILE_OFFSET_OFFSET);
        truncate(p, nameAt + 3);
        assertTrue(refused(p, true).getMessage().contains("backing file name"));
    }
}
