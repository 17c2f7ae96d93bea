package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import org.agrona.UnsafeApi;

import io.vblk.aio.IoVector;
import io.vblk.block.BlockDriver;
import io.vblk.sys.NativeBuffer;
import io.vblk.testkit.QemuTools;

/**
 * Drives a {@link BlockDriver} the way the engine's I/O thread does (request methods, one submit,
 * poll), with a batch of requests in flight at once, from a test thread. Buffers live off-heap
 * like guest memory.
 */
final class DriverRig {
    final BlockDriver driver;
    private final Map<Long, long[]> results = new HashMap<>();
    private final List<Runnable> afterBatch = new ArrayList<>();
    private long nextTag = 1;

    DriverRig(BlockDriver driver) {
        this.driver = driver;
    }

    /** A pending request's tag, or a negative errno when the driver refused it. */
    long read(long offset, NativeBuffer buf, int len) {
        IoVector v = split(buf.address(), len);
        long tag = nextTag++;
        int rc = driver.read(offset, v, tag);
        return rc < 0 ? rc : track(tag);
    }

    long write(long offset, NativeBuffer buf, int len) {
        IoVector v = split(buf.address(), len);
        long tag = nextTag++;
        int rc = driver.write(offset, v, tag);
        return rc < 0 ? rc : track(tag);
    }

    long discard(long offset, long len) {
        long tag = nextTag++;
        int rc = driver.discard(offset, len, tag);
        return rc < 0 ? rc : track(tag);
    }

    long writeZeroes(long offset, long len) {
        long tag = nextTag++;
        int rc = driver.writeZeroes(offset, len, true, tag);
        return rc < 0 ? rc : track(tag);
    }

    long flush() {
        long tag = nextTag++;
        int rc = driver.flush(tag);
        return rc < 0 ? rc : track(tag);
    }

    private long track(long tag) {
        results.put(tag, null);
        return tag;
    }

    /** Splits a buffer into segments of uneven sizes (multiples of 512) like a guest's chain. */
    private static IoVector split(long address, int len) {
        IoVector v = new IoVector(256);
        int done = 0;
        int i = 0;
        while (done < len) {
            int seg = Math.min(len - done, (i % 3 == 0 ? 512 : 4096) * (1 + i % 2));
            v.add(address + done, seg);
            done += seg;
            i++;
        }
        return v;
    }

    /** Submits and polls until every tracked request completed; returns tag -> result. */
    Map<Long, Long> awaitAll() {
        driver.submit();
        long deadline = System.nanoTime() + 60_000_000_000L;
        while (results.containsValue(null)) {
            driver.poll((tag, result) -> {
                assertTrue(results.containsKey(tag), "unknown or doubled completion " + tag);
                assertEquals(null, results.get(tag), "doubled completion " + tag);
                results.put(tag, new long[] {result});
            }, 1024);
            if (driver.pendingSubmit() > 0) {
                driver.submit();
            } else if (results.containsValue(null)) {
                driver.awaitCompletions(5);
            }
            assertTrue(System.nanoTime() < deadline, "requests never completed: " + results);
        }
        Map<Long, Long> out = new HashMap<>();
        results.forEach((k, v) -> out.put(k, v[0]));
        results.clear();
        return out;
    }

    /** One request, waited for; returns its result. */
    long one(long tag) {
        if (tag < 0) {
            return tag;
        }
        return awaitAll().get(tag);
    }

    static NativeBuffer buffer(int len) {
        return new NativeBuffer(Math.max(len, 4096), 4096);
    }

    static void fill(NativeBuffer b, byte[] src, int from, int len) {
        b.buffer().putBytes(0, src, from, len);
    }

    static byte[] bytes(NativeBuffer b, int len) {
        byte[] out = new byte[len];
        b.buffer().getBytes(0, out);
        return out;
    }

    static void poison(NativeBuffer b) {
        UnsafeApi.setMemory(b.address(), b.capacity(), (byte) 0x5a);
    }

    /** Runs a command, returns exit code and output (testkit {@link QemuTools#run}). */
    static QemuTools.Run run(String... cmd) {
        return QemuTools.run(cmd);
    }

    static void qemuImg(String... args) {
        QemuTools.Run r = QemuTools.qemuImg(args);
        assertEquals(0, r.code(), "qemu-img " + String.join(" ", args) + ": " + r.output());
    }

    /** {@code qemu-img create -f qcow2 OPTIONS dir/name size}. */
    static Path create(Path dir, String name, String size, String... options) throws IOException, InterruptedException {
        Path p = dir.resolve(name);
        List<String> args = new ArrayList<>(List.of("create", "-q", "-f", "qcow2"));
        args.addAll(List.of(options));
        args.add(p.toString());
        args.add(size);
        qemuImg(args.toArray(new String[0]));
        return p;
    }

}
