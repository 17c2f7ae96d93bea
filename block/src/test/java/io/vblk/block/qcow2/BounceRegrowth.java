package io.vblk.block.qcow2;

import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import io.vblk.aio.BackendKind;
import io.vblk.sys.NativeBuffer;

/**
 * The process {@link Qcow2BounceRegrowthTest} runs under a small -XX:MaxDirectMemorySize: a
 * disk of compressed 2 MiB clusters (args[0]) opens; other direct memory (another disk's, here
 * plain direct buffers) fills the pool until no bounce buffer fits; a burst of compressed reads
 * then finds the pool unable to grow and waits for the buffers taken at open; the other memory
 * is given back (the other disk closed, its buffers collected) and a second burst runs. Prints
 * "FULL buffers=N ok=B", "FREED used=U" and "AGAIN buffers=N ok=B".
 */
public final class BounceRegrowth {
    private static final int CLUSTER = 2 << 20;
    private static final int DEPTH = 32;

    private BounceRegrowth() {
    }

    public static void main(String[] args) throws Exception {
        Qcow2Driver d = Qcow2.open(Path.of(args[0]), BackendKind.THREADS, DEPTH, Qcow2Options.defaults().direct(false));
        DriverRig rig = new DriverRig(d);
        NativeBuffer[] bufs = new NativeBuffer[DEPTH];
        for (int i = 0; i < DEPTH; i++) {
            bufs[i] = DriverRig.buffer(4096);
        }
        List<ByteBuffer> other = new ArrayList<>();
        while (DirectMemory.roomFor(1L << 20)) {
            other.add(ByteBuffer.allocateDirect(1 << 20));
        }
        System.out.println("FULL buffers=" + burst(rig, d, bufs) + " ok=" + ok);
        other.clear();
        long deadline = System.nanoTime() + 30_000_000_000L;
        while (!DirectMemory.roomFor(4L * CLUSTER * 3) && System.nanoTime() < deadline) {
            System.gc();
            Thread.sleep(50);
        }
        System.out.println("FREED used=" + DirectMemory.used());
        System.out.println("AGAIN buffers=" + burst(rig, d, bufs) + " ok=" + ok);
        System.out.flush();
        Runtime.getRuntime().halt(0);
    }

    private static boolean ok;

    /** DEPTH concurrent 4 KiB reads of the compressed clusters; returns the bounce buffers after. */
    private static int burst(DriverRig rig, Qcow2Driver d, NativeBuffer[] bufs) {
        for (int i = 0; i < DEPTH; i++) {
            DriverRig.poison(bufs[i]);
            rig.read((long) (i % 2) * CLUSTER + i * 4096L, bufs[i], 4096);
        }
        Map<Long, Long> results = rig.awaitAll();
        ok = results.size() == DEPTH && results.values().stream().allMatch(v -> v == 4096);
        for (int i = 0; i < DEPTH; i++) {
            ok &= bufs[i].buffer().getByte(0) == 0x33 && bufs[i].buffer().getByte(4095) == 0x33;
        }
        return d.bounceBuffers();
    }
}
