package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoBackends;
import io.vblk.aio.IoVector;
import io.vblk.block.BlockDriver;
import io.vblk.block.RawDriver;
import io.vblk.sys.NativeBuffer;
import io.vblk.testkit.ForwardingBackend;

/**
 * rev14a M4: a DISCARD over an overlay (v2, or parts of clusters over a backing file) allocated a
 * cluster per discarded cluster and wrote zeros into it: fstrim grew the image, outside the bytes
 * throttle. DISCARD is advisory: it never allocates and never writes data; the guest keeps
 * reading what it read before.
 */
class Qcow2DiscardNeverAllocatesTest {
    private static final int CLUSTER = 64 << 10;

    static final class Recorder extends ForwardingBackend {
        final List<String> ops = new ArrayList<>();

        Recorder(IoBackend real) {
            super(real);
        }

        @Override
        public int prepareWrite(long offset, IoVector buffers, long userData) {
            ops.add("W" + offset + "+" + buffers.totalLength());
            return real.prepareWrite(offset, buffers, userData);
        }

        @Override
        public int prepareWriteZeroes(long offset, long length, boolean mayUnmap, long userData) {
            ops.add("Z" + offset + "+" + length);
            return real.prepareWriteZeroes(offset, length, mayUnmap, userData);
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"0.10", "1.1"})
    void aDiscardOverAnOverlayWritesNothing(String compat, @TempDir Path dir) throws Exception {
        Path base = dir.resolve("base.raw");
        byte[] data = new byte[4 << 20];
        Arrays.fill(data, (byte) 0x5b);
        Files.write(base, data);
        Path img = DriverRig.create(dir, "o.qcow2", "4M", "-o", "cluster_size=65536,compat=" + compat,
                "-b", "base.raw", "-F", "raw");
        FileHost host = new FileHost(img.toRealPath(), BackendKind.IO_URING, false, false);
        Recorder rec = new Recorder(host.openBackend(64));
        Image baseImage = Image.open(base, ImageOptions.defaults().readOnly(true).direct(false));
        BlockDriver backing = RawDriver.owning(IoBackends.open(BackendKind.IO_URING, baseImage, 8), baseImage);
        try (Qcow2Driver d = new Qcow2Driver(Qcow2Image.read(host, 512), host, rec, backing, 8, Qcow2Options.defaults())) {
            DriverRig rig = new DriverRig(d);
            NativeBuffer b = DriverRig.buffer(4096);
            assertEquals(4096, rig.one(rig.read(0, b, 4096))); // the open's own work (whole clusters) done
            long sizeBefore = host.sizeBytes();
            // Parts of clusters (v2 and v3), and on v2 whole clusters too.
            assertEquals(0, rig.one(rig.discard(CLUSTER + 4096, 8192)));
            assertEquals(0, rig.one(rig.discard(2L * CLUSTER + 512, 3L * CLUSTER)));
            if (compat.equals("0.10")) {
                assertEquals(0, rig.one(rig.discard(0, 1 << 20)));
            }
            assertEquals(List.of(), rec.ops, "a DISCARD wrote to the image");
            assertEquals(sizeBefore, host.sizeBytes(), "a DISCARD grew the image");
            assertEquals(4096, rig.one(rig.read(CLUSTER + 4096, b, 4096)));
            assertTrue(b.buffer().getByte(0) == 0x5b || b.buffer().getByte(0) == 0, "old data or zeros");
        }
    }
}
