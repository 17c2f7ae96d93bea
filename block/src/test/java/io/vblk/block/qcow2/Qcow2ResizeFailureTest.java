package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.io.IOException;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.aio.Image;
import io.vblk.aio.IoBackend;
import io.vblk.sys.NativeBuffer;
import io.vblk.testkit.QemuTools;

/**
 * A resize whose header write reports an error after the header reached the disk (an fdatasync
 * failing after the write): the image now names the new L1 table, in clusters the resize counted
 * and wrote. The driver reads its metadata again rather than keep the allocation point and
 * refcount block it had before: otherwise the next allocating write was handed the new L1
 * table's clusters as fresh and wrote guest data over the table (rev14a LOW).
 */
class Qcow2ResizeFailureTest {
    private static final long MIB = 1 << 20;

    @TempDir
    Path dir;

    @Test
    void aHeaderWriteThatFailsAfterLandingLeavesTheDriverOnTheImagesMetadata() throws Exception {
        Path img = DriverRig.create(dir, "r.qcow2", "16M", "-o", "cluster_size=4096");
        qemuIo(img, "write -P 0x6b 1M 64k");
        HeaderFaultHost host = new HeaderFaultHost(new FileHost(img.toRealPath(), BackendKind.IO_URING, false, true));
        IoBackend io = host.openBackend(64);
        Qcow2Image meta = Qcow2Image.read(host, Math.max(512, host.offsetAlignment()), true, false,
                Qcow2Options.CHAIN_L1_BUDGET_BYTES);
        try (Qcow2Driver d = new Qcow2Driver(meta, host, io, null, 16, Qcow2Options.defaults())) {
            long oldL1 = d.l1TableOffset();
            host.failNextHeaderWrite = true;
            assertThrows(IOException.class, () -> d.resize(3L << 30));
            assertFalse(host.failNextHeaderWrite, "the header write was attempted");
            assertEquals(3L << 30, d.sizeBytes(), "the image's header, which the write reached, is the truth");
            assertFalse(d.l1TableOffset() == oldL1, "the driver follows the moved L1 table");
            DriverRig rig = new DriverRig(d);
            NativeBuffer a = DriverRig.buffer(65536);
            a.buffer().setMemory(0, 65536, (byte) 0x7c);
            assertEquals(65536, rig.one(rig.write(0, a, 65536)), "allocating write after the failed resize");
            assertEquals(65536, rig.one(rig.write(2048 * MIB, a, 65536)), "allocating write past the old end");
            assertEquals(0, rig.one(rig.flush()));
        }
        QemuTools.Run check = DriverRig.run("qemu-img", "check", img.toString());
        // 3: leaks only (the old L1 table's cluster, freed last, was not freed), no corruption.
        assertEquals(3, check.code(), "qemu-img check: " + check.output());
        assertFalse(check.output().contains("ERROR"), "qemu-img check: " + check.output());
        qemuIo(img, "read -P 0x6b 1M 64k");
        qemuIo(img, "read -P 0x7c 0 64k");
        qemuIo(img, "read -P 0x7c 2048M 64k");
    }

    private static void qemuIo(Path img, String command) throws Exception {
        QemuTools.Run r = DriverRig.run("qemu-io", "-f", "qcow2", "-c", command, img.toString());
        assertEquals(0, r.code(), "qemu-io " + command + ": " + r.output());
        assertFalse(r.output().contains("Pattern verification failed"), "qemu-io " + command + ": " + r.output());
    }

    /** A file host whose next header write lands, then reports an error. */
    private static final class HeaderFaultHost extends Qcow2Host {
        private final FileHost file;
        boolean failNextHeaderWrite;

        HeaderFaultHost(FileHost file) {
            this.file = file;
        }

        @Override
        void writeDurably(long position, NativeBuffer src, int length) throws IOException {
            file.writeDurably(position, src, length);
            if (position == 0 && failNextHeaderWrite) {
                failNextHeaderWrite = false;
                throw new IOException("injected: fdatasync after the header write failed");
            }
        }

        @Override
        String name() {
            return file.name();
        }

        @Override
        long sizeBytes() {
            return file.sizeBytes();
        }

        @Override
        long storedBytes() throws IOException {
            return file.storedBytes();
        }

        @Override
        boolean readOnly() {
            return file.readOnly();
        }

        @Override
        int offsetAlignment() {
            return file.offsetAlignment();
        }

        @Override
        boolean file() {
            return true;
        }

        @Override
        Image image() {
            return file.image();
        }

        @Override
        int syncData() {
            return file.syncData();
        }

        @Override
        void refreshSize() {
            file.refreshSize();
        }

        @Override
        IoBackend openBackend(int depth) {
            return file.openBackend(depth);
        }

        @Override
        void read(long position, NativeBuffer dst, int length) throws IOException {
            file.read(position, dst, length);
        }

        @Override
        int extendTo(long newSizeBytes) {
            return file.extendTo(newSizeBytes);
        }

        @Override
        void truncate(long sizeBytes) throws IOException {
            file.truncate(sizeBytes);
        }

        @Override
        public void close() {
            file.close();
        }
    }
}
