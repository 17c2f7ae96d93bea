package io.vblk.block.qcow2;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;

import io.vblk.sys.Errno;
import io.vblk.sys.NativeBuffer;

/**
 * Random requests against one opened (possibly hostile) image, checked against a model: what
 * every guest sector reads now, as far as it is known. The model starts from a first read of
 * the whole disk (for a clean image: what QEMU reads); a write or write-zeroes that succeeded
 * sets its sectors, one that failed (or a discard, which is advisory) makes them unknown.
 */
final class HostileSession {
    static final int MAX_OPS = 24;
    private static final int SECTOR = 512;
    private static final int MAX_LEN = 256 << 10;
    private static final int SLOTS = 4;

    private Qcow2Driver d;
    private DriverRig rig;
    private final Random rnd;
    private final String description;
    private final Set<ByteBuffer> metadataSectors;
    private final boolean readOnly;
    private final boolean clean;
    /** Whether the model is checked: the image does not map two guest clusters onto one host cluster. */
    private final boolean modelHolds;
    private final byte[] expected;
    private final int cluster;
    private final long span;
    private final byte[] model;
    private final boolean[] known;
    private final NativeBuffer[] bufs = new NativeBuffer[SLOTS];
    private int gen = 16;

    HostileSession(Qcow2Driver d, Random rnd, String description, Set<ByteBuffer> metadataSectors, boolean readOnly,
                   boolean clean, boolean modelHolds, byte[] expected, int cluster) {
        this.d = d;
        this.rig = new DriverRig(d);
        this.rnd = rnd;
        this.description = description;
        this.metadataSectors = metadataSectors;
        this.readOnly = readOnly;
        this.clean = clean;
        this.modelHolds = modelHolds;
        this.expected = expected;
        this.cluster = cluster;
        // The whole disk of every corpus image; a mutated size field may claim more, of which the start is used.
        this.span = Math.min(d.sizeBytes(), 16L << 20) & ~(long) (SECTOR - 1);
        this.model = new byte[(int) span];
        this.known = new boolean[(int) (span / SECTOR)];
        for (int i = 0; i < SLOTS; i++) {
            bufs[i] = DriverRig.buffer(MAX_LEN);
        }
    }

    void run() {
        if (span == 0) {
            return;
        }
        readAll(true);
        int batches = 2 + rnd.nextInt(6);
        for (int b = 0; b < batches; b++) {
            if (!readOnly) {
                writeBatch();
            }
            readBatch();
        }
        readAll(false);
        long f = rig.one(rig.flush());
        assertTrue(f == 0 || f == -Errno.EIO, "flush gave " + f + "\n" + description);
        assertTrue(!clean || f == 0, "a clean image's flush failed: " + f + " " + d.corruptReason() + "\n" + description);
    }

    /**
     * After the close, the image opened again (read-only): everything the model knows must read
     * the same, so what was written reached the image and its tables, not only the cache.
     */
    void reopened(Qcow2Driver again) {
        this.d = again;
        this.rig = new DriverRig(again);
        if (span > 0 && again.sizeBytes() >= span) {
            readAll(false);
        }
    }

    /** The whole span, in pieces of up to MAX_LEN, several in flight; the first time it seeds the model. */
    private void readAll(boolean first) {
        for (long off = 0; off < span; off += (long) SLOTS * MAX_LEN) {
            long[][] reqs = new long[SLOTS][];
            for (int i = 0; i < SLOTS; i++) {
                long o = off + (long) i * MAX_LEN;
                if (o < span) {
                    int len = (int) Math.min(MAX_LEN, span - o);
                    DriverRig.poison(bufs[i]);
                    reqs[i] = new long[] {rig.read(o, bufs[i], len), o, len};
                }
            }
            Map<Long, Long> results = rig.awaitAll();
            for (int i = 0; i < SLOTS; i++) {
                if (reqs[i] == null) {
                    continue;
                }
                long rc = result(reqs[i][0], results);
                checkRead(i, reqs[i][1], (int) reqs[i][2], rc, first);
            }
        }
    }

    private void readBatch() {
        int n = 1 + rnd.nextInt(SLOTS);
        long[][] reqs = new long[n][];
        for (int i = 0; i < n; i++) {
            long[] r = range();
            DriverRig.poison(bufs[i]);
            reqs[i] = new long[] {rig.read(r[0], bufs[i], (int) r[1]), r[0], r[1]};
        }
        Map<Long, Long> results = rig.awaitAll();
        for (int i = 0; i < n; i++) {
            checkRead(i, reqs[i][1], (int) reqs[i][2], result(reqs[i][0], results), false);
        }
    }

    private void checkRead(int slot, long off, int len, long rc, boolean first) {
        assertTrue(rc == len || rc == -Errno.EIO, "read at " + off + "+" + len + " gave " + rc + "\n" + description);
        assertTrue(!clean || rc == len, "a clean image's read failed: " + rc + " " + d.corruptReason() + "\n" + description);
        if (rc != len) {
            return;
        }
        byte[] got = DriverRig.bytes(bufs[slot], len);
        ByteBuffer g = ByteBuffer.wrap(got);
        for (int s = 0; s < len; s += SECTOR) {
            ByteBuffer sector = g.slice(s, SECTOR);
            assertTrue(!metadataSectors.contains(sector), "the read at " + off + "+" + len + " returned a metadata sector"
                    + " at guest offset " + (off + s) + "\n" + description);
        }
        int base = (int) off;
        if (first) {
            System.arraycopy(got, 0, model, base, len);
            Arrays.fill(known, base / SECTOR, (base + len) / SECTOR, true);
            if (clean) {
                for (int s = 0; s < len; s += SECTOR) {
                    if (base + s < expected.length && !Arrays.equals(got, s, s + SECTOR, expected, base + s, base + s + SECTOR)) {
                        throw new AssertionError("a clean image reads otherwise than QEMU at " + (base + s) + ": "
                                + word(got, s) + " instead of " + word(expected, base + s) + "\n" + description);
                    }
                }
            }
            return;
        }
        if (!modelHolds) {
            return;
        }
        for (int s = 0; s < len; s += SECTOR) {
            if (known[(base + s) / SECTOR] && !Arrays.equals(got, s, s + SECTOR, model, base + s, base + s + SECTOR)) {
                throw new AssertionError("guest sector " + (base + s) / SECTOR + " reads " + word(got, s) + ", not "
                        + word(model, base + s) + " (a write to one cluster changed another, or data was lost)\n"
                        + description);
            }
        }
    }

    private void writeBatch() {
        int n = 1 + rnd.nextInt(SLOTS);
        List<long[]> ranges = new ArrayList<>();
        List<long[]> reqs = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            long[] r = range();
            if (overlaps(ranges, r)) {
                continue;
            }
            ranges.add(r);
            int kind = rnd.nextInt(10);
            long tag;
            int g = 0;
            if (kind < 6) {
                g = gen;
                gen = gen == 255 ? 16 : gen + 1;
                byte[] data = HostileCorpus.tagged(r[0], (int) r[1], g);
                DriverRig.fill(bufs[i], data, 0, data.length);
                tag = rig.write(r[0], bufs[i], (int) r[1]);
            } else if (kind < 8) {
                tag = rig.writeZeroes(r[0], r[1]);
            } else if (kind < 9) {
                tag = rig.discard(r[0], r[1]);
            } else {
                tag = rig.flush();
                kind = -1;
            }
            reqs.add(new long[] {tag, r[0], r[1], kind, g});
        }
        Map<Long, Long> results = rig.awaitAll();
        for (long[] q : reqs) {
            long rc = result(q[0], results);
            int off = (int) q[1];
            int len = (int) q[2];
            if (q[3] < 0) {
                assertTrue(rc == 0 || rc == -Errno.EIO, "flush gave " + rc + "\n" + description);
                continue;
            }
            long ok = q[3] < 6 ? len : 0;
            assertTrue(rc == ok || rc == -Errno.EIO || rc == -Errno.ENOSPC, "a write at " + off + "+" + len + " gave "
                    + rc + "\n" + description);
            assertTrue(!clean || rc == ok, "a clean image's write failed: " + rc + " " + d.corruptReason() + "\n" + description);
            if (rc == ok && q[3] == 8) {
                // DISCARD is advisory: the sectors read their old data or zeros afterwards.
                Arrays.fill(known, off / SECTOR, (off + len) / SECTOR, false);
            } else if (rc == ok) {
                byte[] data = q[3] < 6 ? HostileCorpus.tagged(off, len, (int) q[4]) : new byte[len];
                System.arraycopy(data, 0, model, off, len);
                Arrays.fill(known, off / SECTOR, (off + len) / SECTOR, true);
            } else {
                Arrays.fill(known, off / SECTOR, (off + len) / SECTOR, false);
            }
        }
    }

    /** A random range: whole clusters half the time (the zero-flag and full-cluster paths), else any sectors. */
    private long[] range() {
        if (cluster <= MAX_LEN && rnd.nextBoolean() && span >= cluster) {
            long clusters = span / cluster;
            long c = (long) (rnd.nextDouble() * clusters);
            long n = 1 + rnd.nextInt((int) Math.min(clusters - c, MAX_LEN / cluster));
            return new long[] {c * cluster, n * cluster};
        }
        int len = SECTOR * (1 + rnd.nextInt((int) Math.min(MAX_LEN, span) / SECTOR));
        long off = SECTOR * (long) (rnd.nextDouble() * ((span - len) / SECTOR + 1));
        return new long[] {off, len};
    }

    private static boolean overlaps(List<long[]> ranges, long[] r) {
        for (long[] x : ranges) {
            if (r[0] < x[0] + x[1] && x[0] < r[0] + r[1]) {
                return true;
            }
        }
        return false;
    }

    /** A request's result: its completion, or the refusal its submission returned. */
    private long result(long tag, Map<Long, Long> results) {
        if (tag < 0) {
            assertTrue(tag == -Errno.EIO, "a request was refused with " + tag + "\n" + description);
            return tag;
        }
        Long r = results.get(tag);
        assertTrue(r != null, "no completion for " + tag + "\n" + description);
        return r;
    }

    private static String word(byte[] b, int at) {
        return at + 8 <= b.length ? "0x" + Long.toHexString(ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN).getLong(at))
                : "(past the end)";
    }
}
