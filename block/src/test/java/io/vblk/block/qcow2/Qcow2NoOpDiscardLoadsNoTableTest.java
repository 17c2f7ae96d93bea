package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoVector;
import io.vblk.sys.NativeBuffer;
import io.vblk.testkit.QemuTools;
import io.vblk.testkit.ForwardingBackend;

/**
 * A DISCARD that changes nothing (part of a cluster, or any of a v2 image) completes without
 * loading the L2 table that maps it (rev14e LOW): it was decided after the lookup, so an fstrim
 * over a large image read every table into the cache, evicting the ones the guest uses.
 */
class Qcow2NoOpDiscardLoadsNoTableTest {
    private static final int CLUSTER = 64 << 10;

    static final class ReadCounter extends ForwardingBackend {
        int reads;

        ReadCounter(IoBackend real) {
            super(real);
        }

        @Override
        public int prepareRead(long offset, IoVector buffers, long userData) {
            reads++;
            return real.prepareRead(offset, buffers, userData);
        }
    }

    @Test
    void aPartialClusterDiscardReadsNothing(@TempDir Path dir) throws Exception {
        Path img = DriverRig.create(dir, "d.qcow2", "4M", "-o", "cluster_size=65536");
        QemuTools.Run w = QemuTools.qemuIo("-f", "qcow2", "-c", "write -P 0x11 0 64k", img.toString());
        assertEquals(0, w.code(), w.output()); // an L2 table for the first 512 MiB
        FileHost host = new FileHost(img.toRealPath(), BackendKind.IO_URING, false, false);
        ReadCounter io = new ReadCounter(host.openBackend(8));
        try (Qcow2Driver d = new Qcow2Driver(Qcow2Image.read(host, 512), host, io, null, 8, Qcow2Options.defaults())) {
            DriverRig rig = new DriverRig(d);
            assertEquals(0, rig.one(rig.discard(CLUSTER + 4096, 8192)));
            assertEquals(0, io.reads, "a no-op DISCARD loaded the L2 table");
            NativeBuffer b = DriverRig.buffer(4096);
            assertEquals(4096, rig.one(rig.read(0, b, 4096)));
            assertEquals(0x11, b.buffer().getByte(0));
        }
    }
}
