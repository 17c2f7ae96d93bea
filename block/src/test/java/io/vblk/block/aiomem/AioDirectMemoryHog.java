package io.vblk.block.aiomem;

import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import io.vblk.aio.BackendKind;
import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoBackends;
import io.vblk.aio.IoVector;
import io.vblk.sys.NativeBuffer;

/**
 * The process {@link AioDirectMemoryTest} runs under a small -XX:MaxDirectMemorySize: file back
 * ends opened (and serving) while memory was free face a full pool on paths that took direct
 * memory on first use: a Linux AIO back end's first offloaded flush and discard (its helper
 * thread), a thread-pool worker's first discard, an io_uring fixed-buffer registration. Prints
 * one line per step ("AIO FLUSH rc", "THREADS DISCARD rc", "REGISTER rc" or "... THREW e",
 * "... NO COMPLETION"), then, with the memory given back, "THREADS AFTER rc" and "AIO AFTER rc".
 */
public final class AioDirectMemoryHog {
    private AioDirectMemoryHog() {
    }

    public static void main(String[] args) throws Exception {
        Image image = Image.open(Path.of(args[0]), ImageOptions.defaults());
        IoBackend aio = IoBackends.open(BackendKind.LINUX_AIO, image, 4);
        IoBackend threads = IoBackends.open(BackendKind.THREADS, image, 4);
        IoBackend uring = IoBackends.open(BackendKind.IO_URING, image, 4);
        NativeBuffer data = new NativeBuffer(4096, 4096);
        IoVector v = new IoVector(1);
        v.add(data.address(), 4096);
        System.out.println("AIO READ " + one(aio, aio.prepareRead(0, v, 1)));
        System.out.println("THREADS READ " + one(threads, threads.prepareRead(0, v, 1)));

        List<ByteBuffer> hog = new ArrayList<>();
        for (int size : new int[] {1 << 20, 64 << 10, 4 << 10, 256, 16}) {
            try {
                while (true) {
                    hog.add(ByteBuffer.allocateDirect(size));
                }
            } catch (OutOfMemoryError full) {
                // next, smaller size
            }
        }
        System.out.println("direct memory full");
        step("AIO FLUSH", () -> one(aio, aio.prepareFlush(2)));
        step("AIO DISCARD", () -> one(aio, aio.prepareDiscard(0, 4096, 3)));
        step("THREADS DISCARD", () -> one(threads, threads.prepareDiscard(0, 4096, 4)));
        step("REGISTER", () -> (long) uring.registerBuffers(new long[] {data.address()}, new long[] {4096}));

        hog = null;
        System.gc();
        step("THREADS AFTER", () -> one(threads, threads.prepareDiscard(0, 4096, 5)));
        step("AIO AFTER", () -> one(aio, aio.prepareFlush(6)));
        System.out.flush();
        Runtime.getRuntime().halt(0);
    }

    interface Step {
        long run() throws Exception;
    }

    private static void step(String name, Step s) {
        try {
            long rc = s.run();
            System.out.println(name + (rc == Long.MIN_VALUE ? " NO COMPLETION" : " " + rc));
        } catch (Throwable t) {
            System.out.println(name + " THREW " + t);
        }
    }

    /** Submits what {@code prepared} prepared and waits up to 10 s for its completion. */
    private static long one(IoBackend b, int prepared) {
        if (prepared != 0) {
            return prepared;
        }
        b.submit();
        Map<Long, Long> done = new HashMap<>();
        long deadline = System.nanoTime() + 10_000_000_000L;
        while (done.isEmpty() && System.nanoTime() - deadline < 0) {
            b.completionEvent().read();
            if (b.poll(done::put, 4) == 0) {
                b.awaitCompletions(50);
            }
        }
        return done.isEmpty() ? Long.MIN_VALUE : done.values().iterator().next();
    }
}
