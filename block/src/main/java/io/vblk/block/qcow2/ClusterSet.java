package io.vblk.block.qcow2;

import java.util.Arrays;

/**
 * A set of cluster indexes that hold metadata, as sorted runs of consecutive clusters: a run of
 * two or more is kept as its first and last index, a lone cluster as its index. So a table of
 * many clusters (an L1 or refcount table, the snapshot table, the snapshots' L1 tables) or
 * consecutive refcount blocks or L2 tables (QEMU's refcount areas, preallocated metadata) take
 * two indexes, not one per cluster, and no set takes more than one index per cluster it holds.
 * Ints while every index fits (files below 2^31 clusters), else longs. Looked up by binary
 * search; nothing allocated per lookup.
 *
 * <p>Built once by a {@link Builder}: the tables added as ranges, the clusters named one per
 * table entry collected into one array sized once from the table (never grown), sorted in place,
 * then merged with the ranges into the exactly sized result. The builder's array is garbage
 * once the set is built.
 */
final class ClusterSet {
    private static final int[] NO_INTS = new int[0];
    private static final long[] NO_LONGS = new long[0];

    /** Lone clusters, sorted; exactly one of the pair is non-null. */
    private final int[] singleInts;
    private final long[] singleLongs;
    /** Runs of two or more clusters, sorted: first and last index of each, in pairs. */
    private final int[] runInts;
    private final long[] runLongs;
    /** The clusters in the set. */
    private final long size;
    /** The highest index, or -1 for an empty set. */
    private final long last;

    private ClusterSet(int[] singleInts, long[] singleLongs, int[] runInts, long[] runLongs, long size, long last) {
        this.singleInts = singleInts;
        this.singleLongs = singleLongs;
        this.runInts = runInts;
        this.runLongs = runLongs;
        this.size = size;
        this.last = last;
    }

    /** Whether cluster index {@code c} is in the set. */
    boolean contains(long c) {
        if (singleInts != null) {
            if (c < 0 || c >= Integer.MAX_VALUE) {
                return false;
            }
            int v = (int) c;
            if (Arrays.binarySearch(singleInts, v) >= 0) {
                return true;
            }
            // The last run starting at or before v.
            int lo = 0;
            int hi = runInts.length / 2 - 1;
            while (lo <= hi) {
                int mid = (lo + hi) >>> 1;
                if (runInts[2 * mid] <= v) {
                    lo = mid + 1;
                } else {
                    hi = mid - 1;
                }
            }
            return hi >= 0 && v <= runInts[2 * hi + 1];
        }
        if (Arrays.binarySearch(singleLongs, c) >= 0) {
            return true;
        }
        int lo = 0;
        int hi = runLongs.length / 2 - 1;
        while (lo <= hi) {
            int mid = (lo + hi) >>> 1;
            if (runLongs[2 * mid] <= c) {
                lo = mid + 1;
            } else {
                hi = mid - 1;
            }
        }
        return hi >= 0 && c <= runLongs[2 * hi + 1];
    }

    /** How many clusters the set holds. */
    long size() {
        return size;
    }

    /** The highest cluster index in the set, or -1 when it is empty. */
    long last() {
        return last;
    }

    /** The heap its arrays take. */
    long heapBytes() {
        return singleInts != null ? 4L * (singleInts.length + runInts.length) : 8L * (singleLongs.length + runLongs.length);
    }

    /** How many runs of two or more clusters it keeps (tests). */
    int runs() {
        return (singleInts != null ? runInts.length : runLongs.length) / 2;
    }

    /**
     * Collects a set: ranges of clusters (tables) and single clusters (what table entries name),
     * up to the capacity of singles given at construction.
     */
    static final class Builder {
        private final int clusterBits;
        /** Whether two entries in one cluster are refused (the image's own structures) or merged. */
        private final boolean distinct;
        private final int[] ints;
        private final long[] longs;
        private int n;
        /** Ranges as first and one-past-last cluster, in pairs. */
        private long[] ranges = new long[8];
        private int rangeCount;

        /**
         * A builder for clusters of a file of {@code fileSize} bytes, with room for
         * {@code capacity} single clusters; with {@code distinct}, a cluster named twice (two
         * structures in one cluster) is refused at {@link #build}, else duplicates are merged.
         */
        Builder(int clusterBits, long fileSize, int capacity, boolean distinct) {
            this.clusterBits = clusterBits;
            this.distinct = distinct;
            boolean fits = Qcow2Image.roundUp(fileSize, 1L << clusterBits) >>> clusterBits < Integer.MAX_VALUE;
            ints = fits ? new int[capacity] : null;
            longs = fits ? null : new long[capacity];
        }

        /** Every cluster the bytes {@code [from, to)} touch. */
        void addBytes(long from, long to) {
            if (to > from) {
                addClusters(from >>> clusterBits, ((to - 1) >>> clusterBits) + 1);
            }
        }

        /** Clusters {@code [first, end)}. */
        void addClusters(long first, long end) {
            if (end <= first) {
                return;
            }
            if (rangeCount * 2 == ranges.length) {
                ranges = Arrays.copyOf(ranges, ranges.length * 2);
            }
            ranges[2 * rangeCount] = first;
            ranges[2 * rangeCount + 1] = end;
            rangeCount++;
        }

        /** Adds cluster index {@code c}; the capacity was counted for every add. */
        void add(long c) {
            if (ints != null) {
                if (c >= Integer.MAX_VALUE) {
                    throw Qcow2Header.bad("metadata at cluster " + c + " lies past the end of the file");
                }
                ints[n++] = (int) c;
            } else {
                longs[n++] = c;
            }
        }

        /**
         * Sorts the singles in place (a heapsort: the JDK's sort may take a merge buffer as large
         * as the array for the few ascending runs tables usually hold) and merges them with the
         * ranges into the set.
         *
         * @throws IllegalArgumentException with {@code distinct}, when two entries share a cluster
         */
        ClusterSet build() {
            if (ints != null) {
                heapSort(ints, n);
            } else {
                heapSort(longs, n);
            }
            sortRanges();
            for (int r = 0; ints != null && r < rangeCount; r++) {
                if (ranges[2 * r + 1] > Integer.MAX_VALUE) {
                    throw Qcow2Header.bad("metadata at cluster " + (ranges[2 * r + 1] - 1) + " lies past the end of the file");
                }
            }
            merge(null, null, null, null);
            int singles = outSingles;
            int runs = outRuns;
            int[] si = null;
            long[] sl = null;
            int[] ri = null;
            long[] rl = null;
            if (ints != null) {
                si = singles == 0 ? NO_INTS : new int[singles];
                ri = runs == 0 ? NO_INTS : new int[2 * runs];
            } else {
                sl = singles == 0 ? NO_LONGS : new long[singles];
                rl = runs == 0 ? NO_LONGS : new long[2 * runs];
            }
            long[] counts = merge(si, sl, ri, rl);
            return new ClusterSet(si, sl, ri, rl, counts[0], counts[1]);
        }

        private long single(int i) {
            return ints != null ? ints[i] : longs[i];
        }

        /** What {@link #merge} counted or filled so far. */
        private int outSingles;
        private int outRuns;

        /**
         * Walks the singles and ranges in order, merging touching ones into runs; counts them
         * ({@link #outSingles}, {@link #outRuns}) and, given arrays, fills them. Returns
         * {clusters, last}.
         */
        private long[] merge(int[] si, long[] sl, int[] ri, long[] rl) {
            outSingles = 0;
            outRuns = 0;
            long clusters = 0;
            long curStart = -1;
            long curEnd = -1; // one past the current run's last cluster
            int i = 0;
            int j = 0;
            while (true) {
                long s;
                long e;
                if (i < n && (j >= rangeCount || single(i) < ranges[2 * j])) {
                    s = single(i++);
                    e = s + 1;
                } else if (j < rangeCount) {
                    s = ranges[2 * j];
                    e = ranges[2 * j + 1];
                    j++;
                } else {
                    break;
                }
                if (curStart >= 0 && s < curEnd) {
                    if (distinct) {
                        throw Qcow2Header.bad("metadata structures overlap at cluster offset " + (s << clusterBits));
                    }
                    curEnd = Math.max(curEnd, e);
                    continue;
                }
                if (curStart >= 0 && s == curEnd) {
                    curEnd = e;
                    continue;
                }
                if (curStart >= 0) {
                    emit(curStart, curEnd, si, sl, ri, rl);
                    clusters += curEnd - curStart;
                }
                curStart = s;
                curEnd = e;
            }
            if (curStart >= 0) {
                emit(curStart, curEnd, si, sl, ri, rl);
                clusters += curEnd - curStart;
            }
            return new long[] {clusters, curStart >= 0 ? curEnd - 1 : -1};
        }

        private void emit(long start, long end, int[] si, long[] sl, int[] ri, long[] rl) {
            if (end - start == 1) {
                if (si != null) {
                    si[outSingles] = (int) start;
                } else if (sl != null) {
                    sl[outSingles] = start;
                }
                outSingles++;
                return;
            }
            if (ri != null) {
                ri[2 * outRuns] = (int) start;
                ri[2 * outRuns + 1] = (int) (end - 1);
            } else if (rl != null) {
                rl[2 * outRuns] = start;
                rl[2 * outRuns + 1] = end - 1;
            }
            outRuns++;
        }

        /** Sorts the ranges by their first cluster (a heapsort of pairs: few, and no buffer). */
        private void sortRanges() {
            int m = rangeCount;
            for (int i = m / 2 - 1; i >= 0; i--) {
                siftRange(i, m);
            }
            for (int end = m - 1; end > 0; end--) {
                swapRange(0, end);
                siftRange(0, end);
            }
        }

        private void siftRange(int i, int m) {
            for (int c = 2 * i + 1; c < m; c = 2 * i + 1) {
                if (c + 1 < m && ranges[2 * (c + 1)] > ranges[2 * c]) {
                    c++;
                }
                if (ranges[2 * c] <= ranges[2 * i]) {
                    break;
                }
                swapRange(i, c);
                i = c;
            }
        }

        private void swapRange(int a, int b) {
            long s = ranges[2 * a];
            long e = ranges[2 * a + 1];
            ranges[2 * a] = ranges[2 * b];
            ranges[2 * a + 1] = ranges[2 * b + 1];
            ranges[2 * b] = s;
            ranges[2 * b + 1] = e;
        }

        private static void heapSort(int[] a, int n) {
            for (int i = n / 2 - 1; i >= 0; i--) {
                siftDown(a, i, n);
            }
            for (int end = n - 1; end > 0; end--) {
                int t = a[0];
                a[0] = a[end];
                a[end] = t;
                siftDown(a, 0, end);
            }
        }

        private static void siftDown(int[] a, int i, int n) {
            int v = a[i];
            for (int c = 2 * i + 1; c < n; c = 2 * i + 1) {
                if (c + 1 < n && a[c + 1] > a[c]) {
                    c++;
                }
                if (a[c] <= v) {
                    break;
                }
                a[i] = a[c];
                i = c;
            }
            a[i] = v;
        }

        private static void heapSort(long[] a, int n) {
            for (int i = n / 2 - 1; i >= 0; i--) {
                siftDown(a, i, n);
            }
            for (int end = n - 1; end > 0; end--) {
                long t = a[0];
                a[0] = a[end];
                a[end] = t;
                siftDown(a, 0, end);
            }
        }

        private static void siftDown(long[] a, int i, int n) {
            long v = a[i];
            for (int c = 2 * i + 1; c < n; c = 2 * i + 1) {
                if (c + 1 < n && a[c + 1] > a[c]) {
                    c++;
                }
                if (a[c] <= v) {
                    break;
                }
                a[i] = a[c];
                i = c;
            }
            a[i] = v;
        }
    }
}
