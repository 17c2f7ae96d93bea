package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import io.vblk.aio.BackendKind;

/**
 * Every header field that sizes something the open allocates or loops over, set to an absurd
 * value in a small image: the open refuses it with a reason, before it allocates by the field
 * (direct memory grows by far less than the field asks for). The bounds: L1 table (QEMU's
 * 32 MiB, and inside the file), refcount table (8 MiB, inside the file), refcount width
 * (64 bits), backing file name (1023 bytes), header extensions (1024, inside the first
 * cluster), internal snapshots (65536; their table and L1 tables: Qcow2SnapshotMetadataTest),
 * virtual size (2^55).
 */
class Qcow2AllocationBoundsTest {
    @TempDir
    Path dir;

    @ParameterizedTest(name = "{0} = {2}")
    @CsvSource({
        "l1_size, 36:4, 2147483647, l1_size",
        "l1_size at QEMU's limit past the end, 36:4, 4194304, L1 table",
        "l1_size negative, 36:4, -1, l1_size",
        "refcount_table_clusters, 56:4, 2147483647, refcount_table_clusters",
        "refcount_table_clusters at the limit past the end, 56:4, 128, refcount table",
        "refcount_order, 96:4, 7, refcount_order",
        "refcount_order huge, 96:4, 2147483647, refcount_order",
        "backing name length, 16:4, 1024, backing file name",
        "backing name length huge, 16:4, 2147483647, backing file name",
        "nb_snapshots, 60:4, 2147483647, nb_snapshots",
        "virtual size, 24:8, 72057594037927936, virtual size",
        "header extensions, ext, 1100, too many header extensions",
    })
    void absurdSizesAreRefusedBeforeAllocating(String what, String field, long value, String message) throws Exception {
        Path p = DriverRig.create(dir, "b.qcow2", "4M", "-o", "compat=1.1,cluster_size=65536");
        try (FileChannel ch = FileChannel.open(p, StandardOpenOption.WRITE)) {
            if (field.equals("ext")) {
                // value zero-length extensions of an unknown type right after the header, then the end.
                ByteBuffer b = ByteBuffer.allocate((int) value * 8 + 8);
                for (int i = 0; i < value; i++) {
                    b.putInt(i * 8, 0x7e57e57e);
                }
                ch.write(b, 112);
            } else {
                if (field.startsWith("16:")) {
                    ch.write(ByteBuffer.allocate(8).putLong(0, 512), Qcow2Descriptor.BACKING_FILE_OFFSET_OFFSET);
                }
                String[] f = field.split(":");
                ByteBuffer b = f[1].equals("8") ? ByteBuffer.allocate(8).putLong(0, value)
                        : ByteBuffer.allocate(4).putInt(0, (int) value);
                ch.write(b, Integer.parseInt(f[0]));
            }
        }
        long before = Qcow2HostileImagePropertyTest.directBytes();
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Qcow2.open(p, BackendKind.IO_URING, 8, Qcow2Options.defaults().readOnly(true)).close());
        assertTrue(e.getMessage().contains(message), e.getMessage());
        long grown = Qcow2HostileImagePropertyTest.directBytes() - before;
        assertTrue(grown < (4 << 20), what + ": the refused open took " + grown + " bytes of direct memory");
    }
}
