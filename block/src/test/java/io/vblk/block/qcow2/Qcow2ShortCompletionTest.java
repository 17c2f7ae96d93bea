package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.HashSet;
import java.util.Set;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.aio.CompletionSink;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoVector;
import io.vblk.sys.NativeBuffer;
import io.vblk.testkit.ForwardingBackend;

/**
 * rev14a M2: a data write the back end completes short (a positive count below the length: ENOSPC
 * or EDQUOT part way, which the kernel reports as a short count) must fail the guest's write with
 * EIO: it was taken as whole, the guest told every byte was written and the L2 entry pointed at
 * the half-written cluster.
 */
class Qcow2ShortCompletionTest {
    private static final int LEN = 4096;

    /** Completes every write of exactly {@link #LEN} bytes (the guest's data writes here) with half its length. */
    static final class ShortWrites extends ForwardingBackend {
        final Set<Long> shortened = new HashSet<>();

        ShortWrites(IoBackend real) {
            super(real);
        }

        @Override
        public int prepareWrite(long offset, IoVector buffers, long userData) {
            int rc = real.prepareWrite(offset, buffers, userData);
            if (rc == 0 && buffers.totalLength() == LEN) {
                shortened.add(userData);
            }
            return rc;
        }

        @Override
        public int poll(CompletionSink sink, int max) {
            return real.poll((userData, result) -> sink.complete(userData,
                    shortened.remove(userData) && result == LEN ? LEN / 2 : result), max);
        }
    }

    @Test
    void aShortDataWriteFailsTheGuestWrite(@TempDir Path dir) throws Exception {
        Path img = DriverRig.create(dir, "s.qcow2", "4M", "-o", "cluster_size=65536");
        FileHost host = new FileHost(img.toRealPath(), BackendKind.IO_URING, false, false);
        ShortWrites io = new ShortWrites(host.openBackend(64));
        try (Qcow2Driver d = new Qcow2Driver(Qcow2Image.read(host, 512), host, io, null, 8, Qcow2Options.defaults())) {
            DriverRig rig = new DriverRig(d);
            NativeBuffer b = DriverRig.buffer(LEN);
            b.buffer().setMemory(0, LEN, (byte) 0x77);
            long r = rig.one(rig.write(0, b, LEN)); // allocating
            assertTrue(r < 0, "a half-written allocating write completed with " + r);
            // The failed write left no L2 entry: this one allocates too, and fails the same way.
            long again = rig.one(rig.write(0, b, LEN));
            assertTrue(again < 0, "a half-written write completed with " + again);
            // Reads see nothing of the half-written clusters.
            NativeBuffer rb = DriverRig.buffer(LEN);
            assertEquals(LEN, rig.one(rig.read(0, rb, LEN)));
            assertEquals(0, rb.buffer().getLong(0), "the cluster stays unallocated");
        }
    }

    /** Completes the writes at one offset (a refcount block) with half their length. */
    static final class ShortAt extends ForwardingBackend {
        final long offset;
        final Set<Long> shortened = new HashSet<>();

        ShortAt(IoBackend real, long offset) {
            super(real);
            this.offset = offset;
        }

        @Override
        public int prepareWrite(long at, IoVector buffers, long userData) {
            int rc = real.prepareWrite(at, buffers, userData);
            if (rc == 0 && at == offset) {
                shortened.add(userData);
            }
            return rc;
        }

        @Override
        public int poll(CompletionSink sink, int max) {
            return real.poll((userData, result) -> sink.complete(userData,
                    shortened.remove(userData) && result > 1 ? result / 2 : result), max);
        }
    }

    /** The clusters a half-written refcount block claims to reserve are never handed out. */
    @Test
    void aShortRefcountBlockWriteReservesNothing(@TempDir Path dir) throws Exception {
        Path img = DriverRig.create(dir, "r.qcow2", "4M", "-o", "cluster_size=65536");
        long block;
        try (java.nio.channels.FileChannel ch = java.nio.channels.FileChannel.open(img)) {
            java.nio.ByteBuffer b = java.nio.ByteBuffer.allocate(8);
            Qcow2Image.readFully(ch, b, 48);
            long table = b.flip().getLong();
            b.clear();
            Qcow2Image.readFully(ch, b, table);
            block = b.flip().getLong();
        }
        FileHost host = new FileHost(img.toRealPath(), BackendKind.IO_URING, false, false);
        ShortAt io = new ShortAt(host.openBackend(64), block);
        try (Qcow2Driver d = new Qcow2Driver(Qcow2Image.read(host, 512), host, io, null, 8, Qcow2Options.defaults())) {
            DriverRig rig = new DriverRig(d);
            NativeBuffer b = DriverRig.buffer(LEN);
            b.buffer().setMemory(0, LEN, (byte) 0x77);
            long r = rig.one(rig.write(0, b, LEN));
            assertTrue(r < 0, "a write into a cluster whose refcount block was half written completed with " + r);
        }
    }
}
