package io.vblk.block.qcow2;

import java.io.PrintStream;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;

import io.vblk.aio.BackendKind;
import io.vblk.aio.IoVector;
import io.vblk.sys.NativeBuffer;

/**
 * The process {@link Qcow2CrashTest} kills: allocating writes, eight in flight, each to its own
 * region of the disk, printing "DONE index" once the driver completed it. Never exits by itself.
 */
public final class CrashWriter {
    static final int REGION = 96 * 1024;
    static final int LENGTH = 20 * 1024;

    private CrashWriter() {
    }

    /** The offset of write {@code i}: unaligned to clusters, so most writes need copy-on-write. */
    static long offset(int i) {
        return (long) i * REGION + 512L * (i % 37);
    }

    /** The byte at position {@code j} of write {@code i}. */
    static byte pattern(int i, int j) {
        return (byte) (i * 31 + j / 512 + 1);
    }

    public static void main(String[] args) throws Exception {
        Path image = Path.of(args[0]);
        BackendKind kind = BackendKind.parse(args[1]);
        PrintStream out = new PrintStream(System.out, true);
        try (Qcow2Driver d = Qcow2.open(image, kind, 8, Qcow2Options.defaults())) {
            NativeBuffer[] bufs = new NativeBuffer[8];
            IoVector[] vecs = new IoVector[8];
            Map<Long, Integer> inFlight = new HashMap<>();
            int next = 0;
            int max = (int) (d.sizeBytes() / REGION) - 1;
            for (int s = 0; s < 8; s++) {
                bufs[s] = new NativeBuffer(LENGTH, 4096);
                vecs[s] = new IoVector(4);
            }
            int[] freeSlot = {0, 1, 2, 3, 4, 5, 6, 7};
            int free = 8;
            while (true) {
                while (free > 0 && next < max) {
                    int s = freeSlot[--free];
                    for (int j = 0; j < LENGTH; j++) {
                        bufs[s].buffer().putByte(j, pattern(next, j));
                    }
                    vecs[s].clear();
                    vecs[s].add(bufs[s].address(), LENGTH);
                    if (d.write(offset(next), vecs[s], ((long) s << 32) | next) != 0) {
                        throw new IllegalStateException("refused");
                    }
                    inFlight.put(((long) s << 32) | next, s);
                    next++;
                }
                d.submit();
                int[] freed = new int[8];
                int[] n = {0};
                d.poll((tag, result) -> {
                    if (result != LENGTH) {
                        throw new IllegalStateException("write failed: " + result);
                    }
                    out.println("DONE " + (int) tag);
                    freed[n[0]++] = (int) (tag >>> 32);
                    inFlight.remove(tag);
                }, 8);
                for (int k = 0; k < n[0]; k++) {
                    freeSlot[free++] = freed[k];
                }
                if (n[0] == 0) {
                    if (d.pendingSubmit() == 0) {
                        d.awaitCompletions(10);
                    }
                    if (next >= max && inFlight.isEmpty()) {
                        out.println("ALL");
                        Thread.sleep(60_000);
                    }
                }
            }
        }
    }
}
