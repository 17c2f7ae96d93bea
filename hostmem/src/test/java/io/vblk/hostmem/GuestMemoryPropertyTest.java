package io.vblk.hostmem;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.math.BigInteger;
import java.util.ArrayList;
import java.util.List;

import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.Combinators;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;

/**
 * Translation against a model written with {@link BigInteger} (no wrap possible): random tables
 * of many regions, with holes and adjacent runs, anywhere in the 64-bit space (the top included),
 * and random ranges around their edges. Host addresses are fake: nothing is dereferenced.
 */
class GuestMemoryPropertyTest {
    private static final BigInteger TWO_64 = BigInteger.ONE.shiftLeft(64);
    private static final long FAKE_HOST = 0x7100_0000_0000L;

    record RegionSpec(long gap, long size, boolean readOnly) {
    }

    record Query(int region, long delta, long length, boolean write) {
    }

    record Case(long base, List<RegionSpec> regions, List<Query> queries) {
    }

    @Provide
    Arbitrary<Case> tables() {
        Arbitrary<Long> base = Arbitraries.oneOf(Arbitraries.longs().between(0, 1L << 40),
                Arbitraries.longs().between(-(1L << 20), -1).map(top -> top & ~0xfffL), Arbitraries.longs());
        Arbitrary<RegionSpec> region = Combinators.combine(
                Arbitraries.frequencyOf(
                        net.jqwik.api.Tuple.of(3, Arbitraries.just(0L)),
                        net.jqwik.api.Tuple.of(1, Arbitraries.longs().between(1, 1L << 16))),
                Arbitraries.longs().between(1, 1L << 16),
                Arbitraries.integers().between(0, 5).map(i -> i == 0))
                .as(RegionSpec::new);
        Arbitrary<Query> query = Combinators.combine(
                Arbitraries.integers().between(0, 63),
                Arbitraries.oneOf(Arbitraries.longs().between(-16, 16), Arbitraries.longs().between(0, 1L << 17),
                        Arbitraries.longs()),
                Arbitraries.oneOf(Arbitraries.longs().between(-1, 32), Arbitraries.longs().between(0, 1L << 18),
                        Arbitraries.of(Long.MAX_VALUE, Long.MIN_VALUE, 1L << 32, (1L << 32) - 1)),
                Arbitraries.of(true, false))
                .as(Query::new);
        return Combinators.combine(base, region.list().ofMinSize(1).ofMaxSize(64), query.list().ofSize(16))
                .as(Case::new);
    }

    @Property(tries = 2000)
    void translationAgreesWithTheModel(@ForAll("tables") Case c) {
        List<long[]> regions = new ArrayList<>(); // {gpa, size, readOnly, host}
        BigInteger cursor = BigInteger.valueOf(c.base()).mod(TWO_64);
        long host = FAKE_HOST;
        GuestMemory.Builder b = GuestMemory.builder();
        for (RegionSpec r : c.regions()) {
            BigInteger start = cursor.add(BigInteger.valueOf(r.gap()));
            if (start.add(BigInteger.valueOf(r.size())).compareTo(TWO_64) > 0) {
                if (!regions.isEmpty()) {
                    break; // the table would run past 2^64
                }
                start = TWO_64.subtract(BigInteger.valueOf(r.size())); // a first region ending at 2^64
            }
            b.addHostMemory(start.longValue(), r.size(), host, r.readOnly());
            regions.add(new long[] {start.longValue(), r.size(), r.readOnly() ? 1 : 0, host});
            host += r.size() + 4096;
            cursor = start.add(BigInteger.valueOf(r.size()));
        }
        try (GuestMemory mem = b.build()) {
            assertEquals(regions.size(), mem.regionCount());
            for (Query q : c.queries()) {
                long[] anchor = regions.get(q.region() % regions.size());
                long gpa = anchor[0] + q.delta();
                List<long[]> expected = model(regions, gpa, q.length(), q.write());
                List<long[]> actual = new ArrayList<>();
                int rc = mem.translate(gpa, q.length(), q.write(), (h, l) -> actual.add(new long[] {h, l}));
                String what = String.format("gpa 0x%x len %d write %s", gpa, q.length(), q.write());
                if (expected == null) {
                    assertEquals(true, rc < 0, what + " should fail, got " + rc);
                    assertEquals(0, actual.size(), what);
                } else {
                    assertEquals(expected.size(), rc, what);
                    for (int i = 0; i < rc; i++) {
                        assertEquals(expected.get(i)[0], actual.get(i)[0], what + " segment " + i);
                        assertEquals(expected.get(i)[1], actual.get(i)[1], what + " segment " + i);
                    }
                }
                long fast = mem.hostAddress(gpa, q.length(), q.write());
                boolean oneRegion = expected != null && expected.size() == 1 && q.length() > 0;
                assertEquals(oneRegion ? expected.get(0)[0] : GuestMemory.NO_ADDRESS, fast, what);
            }
        }
    }

    /** Segments (in the model: lengths here stay far below 1 GiB) or null when refused. */
    private static List<long[]> model(List<long[]> regions, long gpa, long length, boolean write) {
        if (length < 0) {
            return null;
        }
        List<long[]> out = new ArrayList<>();
        BigInteger pos = BigInteger.valueOf(gpa).mod(TWO_64);
        BigInteger end = pos.add(BigInteger.valueOf(length));
        while (pos.compareTo(end) < 0) {
            long[] hit = null;
            for (long[] r : regions) {
                BigInteger start = BigInteger.valueOf(r[0]).mod(TWO_64);
                if (pos.compareTo(start) >= 0 && pos.compareTo(start.add(BigInteger.valueOf(r[1]))) < 0) {
                    hit = r;
                }
            }
            if (hit == null || (write && hit[2] == 1)) {
                return null;
            }
            BigInteger start = BigInteger.valueOf(hit[0]).mod(TWO_64);
            BigInteger stop = start.add(BigInteger.valueOf(hit[1])).min(end);
            long len = stop.subtract(pos).longValueExact();
            out.add(new long[] {hit[3] + pos.subtract(start).longValueExact(), len});
            pos = stop;
        }
        return out;
    }
}
