package io.vblk.perf;

import java.io.IOException;
import java.io.PrintStream;
import java.io.RandomAccessFile;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;

import org.agrona.concurrent.UnsafeBuffer;

import io.vblk.perf.report.ResultTable;
import io.vblk.sys.Mapping;
import io.vblk.sys.PosixFile;

/**
 * The benchmark's own image: a file in /var/tmp written full of random data once and reused
 * (a marker file next to it says it is complete). Written, never fallocated: ext4 answers
 * O_DIRECT reads of unwritten extents with zeros without touching the disk, and a benchmark on
 * them measures nothing. The 1 GiB image is the one {@code io.vblk.perf.aio.BackendBench} uses.
 */
final class BenchImage {
    static final long DEFAULT_BYTES = 1L << 30;
    private static final int CHUNK = 4 << 20;

    private BenchImage() {
    }

    /** Where the image of {@code sizeBytes} lives. */
    static Path pathFor(long sizeBytes) {
        Path dir = Path.of("/var/tmp");
        if (!Files.isDirectory(dir) || !Files.isWritable(dir)) {
            dir = Path.of(System.getProperty("java.io.tmpdir"));
        }
        return dir.resolve("vblk-bench-" + ResultTable.size(sizeBytes) + ".img");
    }

    /** Creates and fills the image of {@code sizeBytes} unless a complete one is there; returns its path. */
    static Path ensure(long sizeBytes, PrintStream log) throws IOException {
        Path path = pathFor(sizeBytes);
        Path marker = path.resolveSibling(path.getFileName() + ".filled");
        if (Files.exists(marker) && Files.exists(path) && Files.size(path) == sizeBytes) {
            return path;
        }
        log.printf(Locale.ROOT, "creating %s: writing %s of random data (once; later runs reuse it)%n", path,
                ResultTable.size(sizeBytes));
        Files.deleteIfExists(marker);
        try (RandomAccessFile file = new RandomAccessFile(path.toFile(), "rw")) {
            file.setLength(sizeBytes);
        }
        long start = System.nanoTime();
        try (PosixFile file = PosixFile.open(path, false, true);
             Mapping chunk = Mapping.anonymous(CHUNK, false)) {
            UnsafeBuffer bytes = new UnsafeBuffer(chunk.address(), CHUNK);
            long seed = System.nanoTime() | 1;
            for (int i = 0; i < CHUNK; i += Long.BYTES) {
                seed ^= seed << 13;
                seed ^= seed >>> 7;
                seed ^= seed << 17;
                bytes.putLong(i, seed);
            }
            int lastPercent = -1;
            for (long offset = 0; offset < sizeBytes; offset += CHUNK) {
                bytes.putLong(0, offset);
                int length = (int) Math.min(CHUNK, sizeBytes - offset);
                long rc = file.pwrite(chunk.address(), length, offset);
                if (rc != length) {
                    throw new IOException("writing " + path + " at " + offset + " returned " + rc);
                }
                int percent = (int) ((offset + length) * 100 / sizeBytes);
                if (percent / 10 != lastPercent / 10) {
                    log.printf(Locale.ROOT, "  %d%%%n", percent);
                    lastPercent = percent;
                }
            }
            if (file.fdatasync() != 0) {
                throw new IOException("fdatasync of " + path + " failed");
            }
        }
        Files.write(marker, "filled\n".getBytes(StandardCharsets.US_ASCII));
        log.printf(Locale.ROOT, "  done in %.1f s%n", (System.nanoTime() - start) / 1e9);
        return path;
    }
}
