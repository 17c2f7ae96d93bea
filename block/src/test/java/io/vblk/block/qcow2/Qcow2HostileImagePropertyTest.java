package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.lang.management.BufferPoolMXBean;
import java.lang.management.ManagementFactory;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.stream.Stream;

import io.vblk.aio.BackendKind;
import net.jqwik.api.ForAll;
import net.jqwik.api.EdgeCasesMode;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import net.jqwik.api.lifecycle.AfterContainer;
import net.jqwik.api.lifecycle.BeforeContainer;
import net.jqwik.api.statistics.Statistics;

/**
 * Hostile images, as a cloud tenant uploads them: a real image from {@link HostileCorpus} with
 * up to three structure-aware mutations ({@link ImageMutator}) in the image or in a file of its
 * backing chain, opened read-only or writable, then random reads, writes, discards,
 * write-zeroes and flushes, a few in flight at once, then closed. Whatever the bytes say:
 *
 * <ul>
 * <li>the open returns a driver or refuses with the driver's clean refusal (an
 * IllegalArgumentException or UncheckedIOException with a message), nothing else;</li>
 * <li>the open and the requests take direct memory bounded by the cache and the files, never
 * by a header field;</li>
 * <li>every request completes (with its length, EIO or ENOSPC), and the close returns, within
 * a bound;</li>
 * <li>no read returns a sector of the image's metadata (the data is tagged, so this is seen),
 * the internal snapshots' table, L1 and L2 tables included, at which the mutations aim L2
 * entries too;</li>
 * <li>what a clean image reads is what QEMU reads; after any write, a guest sector reads what
 * was last written to it, or what it read at first: a write to one guest cluster never changes
 * another (unless the image itself maps two guest clusters onto one host cluster, which QEMU
 * serves the same way);</li>
 * <li>a read-only open and every backing file are left byte for byte as they were, the image
 * grows only by what the writes allocate, and {@code qemu-img check} finds no error in a sound
 * image the driver wrote (leaks allowed: the driver never lowers a refcount).</li>
 * </ul>
 *
 * Each try costs a few milliseconds to a few tens (images of 512 KiB to 8 MiB); 200 tries run in
 * about 20 s on a 2-core machine. Failing cases found are replayed in
 * {@link Qcow2HostileImageRegressionTest}.
 */
class Qcow2HostileImagePropertyTest {
    private static final long TRY_TIMEOUT_S = 30;
    private static final int SECTOR = 512;

    private static Path root;
    private static HostileCorpus corpus;
    private static final Map<Path, byte[]> ORIGINALS = new HashMap<>();
    private static ExecutorService runner;

    @BeforeContainer
    static void buildCorpus() throws IOException {
        root = Files.createTempDirectory("vblk-hostile");
        corpus = HostileCorpus.build(root);
        for (HostileCorpus.Image i : corpus.images) {
            for (Path p : i.files()) {
                ORIGINALS.put(p, Files.readAllBytes(p));
            }
        }
        runner = Executors.newSingleThreadExecutor(r -> {
            Thread t = new Thread(r, "hostile-image-try");
            t.setDaemon(true); // a hung try must not keep the test JVM alive
            return t;
        });
    }

    @AfterContainer
    static void removeCorpus() throws IOException {
        if (runner != null) {
            runner.shutdownNow();
        }
        if (root != null) {
            deleteTree(root);
        }
    }

    @Property(edgeCases = EdgeCasesMode.NONE) // tries: jqwik.tries.default in junit-platform.properties
    void anyImageIsRefusedOrServedSafely(@ForAll @IntRange(max = 63) int image, @ForAll @IntRange(max = 4) int mutations,
            @ForAll @IntRange(max = 5) int member, @ForAll boolean readOnly, @ForAll long seed) throws Throwable {
        HostileCorpus.Image img = corpus.images.get(image % corpus.images.size());
        Future<String> f = runner.submit(() -> new Try(img, mutations, member, readOnly, seed).run());
        try {
            Statistics.collect(f.get(TRY_TIMEOUT_S, TimeUnit.SECONDS));
        } catch (TimeoutException e) {
            fail("hung for " + TRY_TIMEOUT_S + " s (open, a request or the close): " + img.name() + " seed " + seed);
        } catch (ExecutionException e) {
            throw e.getCause();
        }
    }

    /** One image, mutated, opened, driven and closed. */
    static final class Try {
        final HostileCorpus.Image img;
        final boolean readOnly;
        final long seed;
        final java.util.Random rnd;
        final Path dir;
        final List<Path> files = new ArrayList<>();
        final List<byte[]> written = new ArrayList<>();
        final String description;
        final boolean mutated;
        final int target;
        /** Metadata sectors of the mutated files at their original places (non-zero ones only). */
        final java.util.Set<java.nio.ByteBuffer> metadataSectors = new java.util.HashSet<>();

        Try(HostileCorpus.Image img, int mutations, int member, boolean readOnly, long seed) throws IOException {
            this.img = img;
            this.readOnly = readOnly || img.snapshots() && seed % 2 == 0;
            this.seed = seed;
            this.rnd = new java.util.Random(seed);
            this.dir = Files.createTempDirectory(root, "try");
            // The image itself most of the time, a backing file now and then.
            this.target = member < 3 ? 0 : member % img.files().size();
            StringBuilder d = new StringBuilder(img.name() + (this.readOnly ? " ro" : " rw") + " seed " + seed);
            for (int i = 0; i < img.files().size(); i++) {
                Path src = img.files().get(i);
                byte[] b = ORIGINALS.get(src);
                if (i == target && mutations > 0) {
                    ImageMutator m = new ImageMutator(b, seed);
                    m.mutate(mutations);
                    b = m.bytes;
                    d.append("\n  mutated ").append(src.getFileName()).append(":\n").append(m.log().indent(4));
                }
                Path p = dir.resolve(src.getFileName());
                Files.write(p, b);
                files.add(p);
                written.add(b);
                ImageLayout pristine = new ImageLayout(ORIGINALS.get(src));
                for (long[] r : pristine.activeMetadataRanges()) {
                    for (long s = r[0]; s < r[0] + r[1] && s + SECTOR <= b.length; s += SECTOR) {
                        java.nio.ByteBuffer sector = java.nio.ByteBuffer.wrap(b, (int) s, SECTOR).slice();
                        if (!allZero(sector)) {
                            metadataSectors.add(sector);
                        }
                    }
                }
            }
            this.mutated = mutations > 0;
            this.description = d.toString();
        }

        /** How it went, for the statistics: refused, or served (and whether the image turned corrupt). */
        String run() throws IOException {
            try {
                return drive();
            } finally {
                deleteTree(dir);
            }
        }

        private String drive() throws IOException {
            BackendKind kind = rnd.nextInt(4) == 0 ? BackendKind.THREADS : BackendKind.IO_URING;
            Qcow2Options o = Qcow2Options.defaults().readOnly(readOnly).l2CacheTables(2 + rnd.nextInt(3))
                    .direct(rnd.nextInt(4) != 0);
            long directBefore = directBytes();
            Qcow2Driver d;
            try {
                d = Qcow2.open(files.get(0), kind, 8, o);
            } catch (IllegalArgumentException | UncheckedIOException e) {
                assertNotNull(e.getMessage(), "a refusal without a reason: " + description);
                assertTrue(mutated || !readOnly && img.snapshots(), "a clean image refused: " + e + "\n" + description);
                checkFilesAfter(null);
                return "refused";
            } catch (RuntimeException | Error e) {
                throw new AssertionError("open threw " + e + " instead of refusing\n" + description, e);
            }
            long bound = memoryBound(o);
            HostileSession session = null;
            try {
                assertTrue(directBytes() - directBefore <= bound, "open took " + (directBytes() - directBefore)
                        + " bytes of direct memory, over " + bound + "\n" + description);
                boolean modelHolds = !mutated || target != 0 || !new ImageLayout(written.get(0)).sharesHostClusters();
                session = new HostileSession(d, rnd, description, metadataSectors, readOnly, !mutated, modelHolds,
                        img.expected(), 1 << new ImageLayout(written.get(0)).clusterBits);
                session.run();
                assertTrue(directBytes() - directBefore <= bound, "requests took " + (directBytes() - directBefore)
                        + " bytes of direct memory, over " + bound + "\n" + description);
            } catch (RuntimeException e) {
                throw new AssertionError("a request threw " + e + "\n" + description, e);
            } finally {
                try {
                    d.close();
                } catch (UncheckedIOException e) {
                    assertNotNull(e.getMessage());
                } catch (RuntimeException e) {
                    throw new AssertionError("close threw " + e + "\n" + description, e);
                }
            }
            checkFilesAfter(d);
            if (!readOnly && !mutated) {
                // What the driver wrote into a sound image, QEMU finds sound. Leaks (exit 3) are
                // allowed: the driver never lowers a refcount (a cluster it replaced, such as a
                // compressed one shared with another, keeps its count: leaked, never reused).
                io.vblk.testkit.QemuTools.Run check = io.vblk.testkit.QemuTools.qemuImg("check", "-q", "-f", "qcow2",
                        files.get(0).toString());
                assertTrue(check.code() == 0 || check.code() == 3, "qemu-img check after the writes: " + check + "\n"
                        + description);
            }
            if (!readOnly && session != null) {
                try (Qcow2Driver again = Qcow2.open(files.get(0), kind, 8, o.readOnly(true))) {
                    session.reopened(again);
                } catch (IllegalArgumentException | UncheckedIOException e) {
                    // The image was accepted at the first open and written by the driver alone.
                    assertTrue(mutated, "a clean image refused after the driver wrote it: " + e + "\n" + description);
                }
            }
            return !mutated ? "clean" : d.corruptReason() != null ? "served, then corrupt" : "served";
        }

        /** The cache, the bounce buffers and one copy of each file's tables, per file of the chain. */
        private long memoryBound(Qcow2Options o) {
            long bound = 0;
            for (byte[] b : written) {
                bound += (long) o.l2CacheTables() * (2 << 20) + 3L * Qcow2Image.roundUp(b.length, 2 << 20)
                        + Qcow2Driver.BOUNCE_BUDGET_BYTES + (8 << 20);
            }
            return bound;
        }

        private void checkFilesAfter(Qcow2Driver d) throws IOException {
            for (int i = 1; i < files.size(); i++) {
                assertArrayEquals(written.get(i), Files.readAllBytes(files.get(i)), "a backing file changed\n" + description);
            }
            byte[] now = Files.readAllBytes(files.get(0));
            if (readOnly) {
                assertArrayEquals(written.get(0), now, "a read-only image changed\n" + description);
            } else if (d != null) {
                // Clusters for what was written (data, an L2 table, a refcount block each at most), whole clusters.
                long cluster = 1L << new ImageLayout(written.get(0)).clusterBits;
                long grown = Qcow2Image.roundUp(written.get(0).length, 2 << 20) + (long) (2 * HostileSession.MAX_OPS + 4) * 3 * (2 << 20);
                assertTrue(now.length <= grown, "the image grew to " + now.length + " (cluster " + cluster + ")\n"
                        + description);
            }
        }

        static boolean allZero(java.nio.ByteBuffer b) {
            for (int i = 0; i < b.remaining(); i += 8) {
                if (b.getLong(i) != 0) {
                    return false;
                }
            }
            return true;
        }
    }

    static long directBytes() {
        for (BufferPoolMXBean b : ManagementFactory.getPlatformMXBeans(BufferPoolMXBean.class)) {
            if (b.getName().equals("direct")) {
                return b.getMemoryUsed();
            }
        }
        return 0;
    }

    static void deleteTree(Path p) throws IOException {
        if (!Files.exists(p)) {
            return;
        }
        try (Stream<Path> s = Files.walk(p)) {
            for (Path x : s.sorted(Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(x);
            }
        }
    }
}
