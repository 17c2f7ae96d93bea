package io.vblk.vring;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;

import org.agrona.concurrent.UnsafeBuffer;

import io.vblk.hostmem.GuestMemory;
import io.vblk.hostmem.GuestRegion;
import io.vblk.sys.Memfd;
import io.vblk.sys.Native;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.Combinators;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.Tuple;
import net.jqwik.api.lifecycle.AfterContainer;
import net.jqwik.api.statistics.Statistics;

/**
 * Random descriptor tables, indirect tables and ring indices (100,000 per run): every pop either
 * yields a chain whose segments lie inside guest memory and match a reference interpreter, or
 * quarantines the queue; nothing else escapes. Guest memory sits between PROT_NONE guard pages:
 * a stray access kills the run.
 *
 * <pre>
 *  gpa 0x00000 - 0x10000   A  RW   rings (desc 0x0, avail 0x100, used 0x200), indirect tables 0x1000, 0x1100
 *  gpa 0x10000 - 0x20000   B  RW   adjacent to A
 *  gpa 0x20000 - 0x30000   hole
 *  gpa 0x30000 - 0x31000   C  read-only
 *  gpa 2^64 - 0x10000 - 2^64   D  RW  at the very top of the address space
 * </pre>
 */
class SplitQueuePropertyTest {
    private static final long DESC = 0x0;
    private static final long AVAIL = 0x100;
    private static final long USED = 0x200;
    private static final long TABLE0 = 0x1000;
    private static final long TABLE1 = 0x1100;
    private static final int TABLE_ENTRIES = 16;
    private static final long TOP = -0x10000L;

    private static GuestMemory mem;
    private static List<long[]> regions; // {gpa, size, readOnly, host}

    private final List<QueueError> reported = new ArrayList<>();
    private final SplitQueue queue = new SplitQueue(0, 16, (i, e) -> reported.add(e));
    private final DescriptorChain chain = new DescriptorChain(256);
    private boolean coverageDeclared;

    record Desc(long addr, int len, int flags, int next) {
    }

    record Scenario(int size, boolean indirect, int nextAvail, int availDelta, List<Integer> heads, List<Desc> descs,
            List<Desc> table0, List<Desc> table1) {
    }

    private static synchronized GuestMemory memory() {
        if (mem == null) {
            int roFd = Memfd.create("ro", 0x1000);
            try {
                mem = GuestMemory.builder().guarded(true).addMemfd(0, 0x10000).addMemfd(0x10000, 0x10000)
                        .addRegion(0x30000, 0x1000, roFd, 0, 0, true).addMemfd(TOP, 0x10000).build();
            } finally {
                Native.libc().close(roFd);
            }
            regions = new ArrayList<>();
            for (int i = 0; i < mem.regionCount(); i++) {
                GuestRegion r = mem.region(i);
                regions.add(new long[] {r.guestAddress(), r.size(), r.readOnly() ? 1 : 0, r.hostAddress()});
            }
        }
        return mem;
    }

    @AfterContainer
    static void unmap() {
        if (mem != null) {
            mem.close();
            mem = null;
        }
    }

    // ---------------------------------------------------------------- generators

    /**
     * Structure-aware descriptor generation from jqwik's random source (fast enough for 100,000
     * tries): addresses around every region edge, the hole and the top of the address space;
     * lengths from 0 to 4 GiB - 1; flags mostly well-formed, sometimes arbitrary; indices mostly
     * in range; indirect descriptors mostly pointing at the two tables.
     */
    static final class DescriptorGenerator {
        private DescriptorGenerator() {
        }

        static List<Desc> table(Random r) {
            List<Desc> t = new ArrayList<>(TABLE_ENTRIES);
            for (int i = 0; i < TABLE_ENTRIES; i++) {
                t.add(r.nextInt(6) == 0 ? indirect(r) : buffer(r));
            }
            return t;
        }

        static List<Integer> heads(Random r) {
            List<Integer> h = new ArrayList<>(16);
            for (int i = 0; i < 16; i++) {
                h.add(r.nextInt(13) == 0 ? r.nextInt(0x10000) : r.nextInt(16));
            }
            return h;
        }

        private static Desc buffer(Random r) {
            int next = r.nextInt(5) < 2 ? VirtqDescriptor.F_NEXT : 0;
            int flags = switch (r.nextInt(13)) {
                case 0, 1, 2, 3, 4, 5 -> next;
                case 6, 7, 8, 9, 10, 11 -> VirtqDescriptor.F_WRITE | next;
                default -> r.nextInt(0x10000) & ~VirtqDescriptor.F_INDIRECT;
            };
            return new Desc(address(r), length(r), flags, next(r));
        }

        private static Desc indirect(Random r) {
            long[] tables = {TABLE0, TABLE1, TABLE0 + 16, TABLE1 + 32};
            long table = r.nextInt(9) == 0 ? address(r) : tables[r.nextInt(tables.length)];
            int len = switch (r.nextInt(10)) {
                case 0 -> new int[] {0, 8, 24, 32769 * 16, -16}[r.nextInt(5)];
                case 1 -> length(r);
                default -> 16 * (1 + r.nextInt(TABLE_ENTRIES));
            };
            int flags = r.nextInt(9) == 0 ? r.nextInt(0x10000) | VirtqDescriptor.F_INDIRECT
                    : VirtqDescriptor.F_INDIRECT | (r.nextBoolean() ? VirtqDescriptor.F_WRITE : 0);
            return new Desc(table, len, flags, next(r));
        }

        private static long address(Random r) {
            return switch (r.nextInt(20)) {
                case 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 -> 0x2000 + r.nextInt(0xd000);
                case 10, 11, 12 -> 0x10000 + r.nextInt(0xf000);
                case 13, 14 -> 0xffc0 + r.nextInt(0x80);           // across A | B
                case 15 -> 0x1ffc0 + r.nextInt(0x80);              // end of B | hole
                case 16 -> 0x20040 + r.nextInt(0xffc0);            // hole
                case 17 -> 0x2ffc0 + r.nextInt(0x1080);            // hole | read-only C | hole
                case 18 -> TOP - 64 + r.nextInt(0x10040);          // the top of the address space
                default -> r.nextLong();
            };
        }

        private static int length(Random r) {
            return switch (r.nextInt(40)) {
                case 0, 1, 2 -> 0;
                case 3, 4, 5, 6, 7, 8 -> new int[] {1, 16, 512, 4096}[r.nextInt(4)];
                case 36, 37, 38 -> 1 + r.nextInt(0x20000);
                case 39 -> r.nextBoolean() ? r.nextInt() : new int[] {-1, Integer.MIN_VALUE, Integer.MAX_VALUE}[r.nextInt(3)];
                default -> 1 + r.nextInt(600);
            };
        }

        private static int next(Random r) {
            return r.nextInt(13) == 0 ? r.nextInt(0x10000) : r.nextInt(17);
        }
    }

    @Provide
    Arbitrary<Scenario> scenarios() {
        Arbitrary<Integer> size = Arbitraries.of(1, 2, 4, 8, 16);
        Arbitrary<Integer> nextAvail = Arbitraries.oneOf(Arbitraries.of(0, 65535, 65534), Arbitraries.integers().between(0, 0xffff));
        Arbitrary<Integer> delta = Arbitraries.frequencyOf(
                Tuple.of(1, Arbitraries.just(0)),
                Tuple.of(8, Arbitraries.integers().between(1, 16)),
                Tuple.of(1, Arbitraries.integers().between(0, 0xffff)));
        Arbitrary<List<Integer>> heads = Arbitraries.randomValue(DescriptorGenerator::heads);
        Arbitrary<List<Desc>> table = Arbitraries.randomValue(DescriptorGenerator::table);
        Arbitrary<Boolean> indirect = Arbitraries.frequency(Tuple.of(3, true), Tuple.of(1, false));
        return Combinators.combine(size, indirect, nextAvail, delta, heads, table, table, table)
                .as(Scenario::new);
    }

    // ---------------------------------------------------------------- the property

    @Property(tries = 100_000)
    void popYieldsAChainInsideGuestMemoryOrQuarantines(@ForAll("scenarios") Scenario s) {
        GuestMemory m = memory();
        if (!coverageDeclared) {
            coverageDeclared = true; // once: each call adds a checker that runs at the end
            checkCoverage();
        }
        write(s);
        assertEquals(0, queue.activate(m, s.size(), DESC, AVAIL, USED, false, s.indirect()));
        queue.setNextAvail(s.nextAvail());
        reported.clear();
        int availIdx = availIdx(s);
        for (int k = 0; k < 3; k++) {
            int next = (s.nextAvail() + k) & 0xffff;
            List<long[]> expected = new ArrayList<>();
            int outcome = model(s.size(), s.indirect(), next, availIdx, expected);
            int rc = queue.pop(chain);
            if (k == 0) {
                Statistics.label("first pop").collect(outcome < 0 ? "quarantine" : outcome == 0 ? "nothing"
                        : expected.isEmpty() ? "chain, no segment" : chain(expected.size()));
            }
            if (outcome < 0 && rc < 0) {
                Statistics.label("quarantines").collect(QueueError.ofCode(rc));
            }
            if (outcome < 0) {
                assertTrue(rc < 0, "the model finds a violation, pop returned " + rc + " " + chain);
                assertTrue(queue.quarantined());
                assertEquals(QueueError.ofCode(rc), queue.error());
                assertEquals(List.of(queue.error()), reported);
                return;
            }
            assertEquals(outcome, rc, () -> "pop disagrees with the model: " + queue.error());
            if (rc == 0) {
                return;
            }
            checkChain(expected);
            Statistics.label("chains popped").collect(chain.indirect() ? "through an indirect table" : "direct");
        }
    }

    /** Every try must not only pass: the run as a whole must reach every rule and many valid chains. */
    private static void checkCoverage() {
        Statistics.label("first pop").coverage(c -> {
            c.check("quarantine").percentage(p -> p > 20);
            c.check("chain, 1 segment").percentage(p -> p > 10);
            c.check("chain, 2-3 segments").percentage(p -> p > 2);
            c.check("chain, 4+ segments").count(n -> n > 0);
        });
        Statistics.label("chains popped").coverage(c -> c.check("through an indirect table").percentage(p -> p > 5));
        Statistics.label("quarantines").coverage(c -> {
            for (QueueError e : QueueError.values()) {
                if (e.code() <= QueueError.AVAIL_INDEX_AHEAD.code()) {
                    c.check(e).count(n -> n > 0);
                }
            }
        });
    }

    private static String chain(int segments) {
        return segments == 1 ? "chain, 1 segment" : segments <= 3 ? "chain, 2-3 segments" : "chain, 4+ segments";
    }

    private void checkChain(List<long[]> expected) {
        assertTrue(!chain.overflowed() && chain.segmentCount() <= chain.capacity());
        assertEquals(expected.size(), chain.segmentCount(), chain::toString);
        long readable = 0;
        long writable = 0;
        for (int i = 0; i < chain.segmentCount(); i++) {
            long host = chain.address(i);
            int len = chain.length(i);
            assertTrue(len > 0);
            long[] r = regionOfHost(host, len);
            assertTrue(r != null, "segment outside guest memory: " + chain);
            assertTrue(!chain.writable(i) || r[2] == 0, "writable segment in read-only memory");
            long gpa = r[0] + (host - r[3]);
            assertEquals(expected.get(i)[0], gpa, "segment " + i);
            assertEquals(expected.get(i)[1], len, "segment " + i);
            assertEquals(expected.get(i)[2] == 1, chain.writable(i), "segment " + i);
            readable += chain.writable(i) ? 0 : len;
            writable += chain.writable(i) ? len : 0;
        }
        assertEquals(readable, chain.readableBytes());
        assertEquals(writable, chain.writableBytes());
    }

    private static long[] regionOfHost(long host, int len) {
        for (long[] r : regions) {
            if (host >= r[3] && host - r[3] < r[1] && len <= r[1] - (host - r[3])) {
                return r;
            }
        }
        return null;
    }

    // ---------------------------------------------------------------- guest memory

    private static UnsafeBuffer at(long gpa, int bytes) {
        return new UnsafeBuffer(mem.hostAddress(gpa, bytes, true), bytes);
    }

    /** Generated deltas 1 to 16 mean "some valid number of chains" and are folded to 1 to size. */
    private static int availIdx(Scenario s) {
        int delta = s.availDelta();
        int folded = delta >= 1 && delta <= 16 ? 1 + (delta - 1) % s.size() : delta;
        return (s.nextAvail() + folded) & 0xffff;
    }

    private static void write(Scenario s) {
        writeTable(DESC, s.descs(), s.size());
        writeTable(TABLE0, s.table0(), TABLE_ENTRIES);
        writeTable(TABLE1, s.table1(), TABLE_ENTRIES);
        UnsafeBuffer avail = at(AVAIL, 6 + 2 * 16);
        avail.putShort(0, (short) 0);
        avail.putShort(2, (short) availIdx(s));
        for (int i = 0; i < 16; i++) {
            avail.putShort(4 + 2 * i, (short) inRange(s.heads().get(i), s.size()));
        }
    }

    /** Generated indices below 16 mean "some valid index" and are folded into range; others stay as they are. */
    private static int inRange(int generated, int entries) {
        return generated < 16 ? generated % entries : generated;
    }

    private static void writeTable(long gpa, List<Desc> descs, int entries) {
        UnsafeBuffer t = at(gpa, 16 * descs.size());
        for (int i = 0; i < descs.size(); i++) {
            Desc d = descs.get(i);
            t.putLong(16 * i, d.addr());
            t.putInt(16 * i + 8, d.len());
            t.putShort(16 * i + 12, (short) d.flags());
            t.putShort(16 * i + 14, (short) inRange(d.next(), entries));
        }
    }

    // ---------------------------------------------------------------- reference interpreter

    /**
     * The rules of the checklist, written plainly and independently: reads guest memory through
     * its own bounds checks. Returns 1 (chain, segments in {@code out} as {gpa, len, writable}),
     * 0 (nothing available) or -1 (a rule is violated).
     */
    private static int model(int size, boolean indirectOk, int nextAvail, int availIdx, List<long[]> out) {
        int pending = (availIdx - nextAvail) & 0xffff;
        if (pending == 0) {
            return 0;
        }
        if (pending > size) {
            return -1;
        }
        int head = read(AVAIL + 4 + 2L * (nextAvail % size), 2).getShort(0) & 0xffff;
        if (head >= size) {
            return -1;
        }
        long table = DESC;
        long entries = size;
        long seen = 0;
        boolean inTable = false;
        boolean writableSeen = false;
        long index = head;
        while (true) {
            if (++seen > entries) {
                return -1;
            }
            UnsafeBuffer d = read(table + 16 * index, 16);
            long addr = d.getLong(0);
            long len = d.getInt(8) & 0xffffffffL;
            int flags = d.getShort(12) & 0xffff;
            int next = d.getShort(14) & 0xffff;
            if ((flags & 4) != 0) {
                if (inTable || !indirectOk || (flags & 1) != 0 || len == 0 || len % 16 != 0 || len / 16 > 32768
                        || !inOneRegion(addr, len)) {
                    return -1;
                }
                table = addr;
                entries = len / 16;
                seen = 0;
                index = 0;
                inTable = true;
                continue;
            }
            boolean writable = (flags & 2) != 0;
            if (!writable && writableSeen) {
                return -1;
            }
            writableSeen |= writable;
            if (len > 0 && !split(addr, len, writable, out)) {
                return -1;
            }
            if ((flags & 1) == 0) {
                return 1;
            }
            if (next >= entries) {
                return -1;
            }
            index = next;
        }
    }

    /** The model's own view of guest memory (it never asks the code under test). */
    private static UnsafeBuffer read(long gpa, int bytes) {
        for (long[] r : regions) {
            long offset = gpa - r[0];
            if (Long.compareUnsigned(offset, r[1]) < 0 && bytes <= r[1] - offset) {
                return new UnsafeBuffer(r[3] + offset, bytes);
            }
        }
        throw new AssertionError(String.format("model bug: reading gpa 0x%x outside guest memory", gpa));
    }

    private static boolean inOneRegion(long gpa, long len) {
        for (long[] r : regions) {
            long offset = gpa - r[0];
            if (Long.compareUnsigned(offset, r[1]) < 0 && Long.compareUnsigned(len, r[1] - offset) <= 0) {
                return true;
            }
        }
        return false;
    }

    /** Appends the pieces of [gpa, gpa + len) region by region; false if any byte is not usable. */
    private static boolean split(long gpa, long len, boolean writable, List<long[]> out) {
        long pos = gpa;
        long left = len;
        int added = 0;
        while (left > 0) {
            long[] hit = null;
            for (long[] r : regions) {
                if (Long.compareUnsigned(pos - r[0], r[1]) < 0) {
                    hit = r;
                }
            }
            if (hit == null || (writable && hit[2] == 1)) {
                out.subList(out.size() - added, out.size()).clear();
                return false;
            }
            long piece = Math.min(left, hit[1] - (pos - hit[0]));
            out.add(new long[] {pos, piece, writable ? 1 : 0});
            added++;
            pos += piece; // may wrap to 0 at the top: then no region matches the next byte unless
            left -= piece; // one starts at 0, which is exactly the wrap the device must refuse
            if (left > 0 && pos == 0) {
                out.subList(out.size() - added, out.size()).clear();
                return false;
            }
        }
        return true;
    }
}
