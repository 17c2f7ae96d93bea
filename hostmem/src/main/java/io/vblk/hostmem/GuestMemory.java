package io.vblk.hostmem;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;

import io.vblk.sys.FileChangeWatch;
import io.vblk.sys.FileSize;
import io.vblk.sys.Linux;
import io.vblk.sys.Mapping;
import io.vblk.sys.Memfd;
import io.vblk.sys.Native;
import io.vblk.sys.PosixFile;

/**
 * The guest's memory as this process sees it: an immutable table of {@link GuestRegion}s sorted
 * by guest-physical address, never overlapping, and the translation of guest ranges into host
 * segments with every bound checked.
 *
 * <p>A table never changes once built. When the guest's memory layout changes (vhost-user
 * SET_MEM_TABLE, memory hot-plug) a new table is built and published through {@link MemoryMap};
 * the old one is {@linkplain #close() unmapped} only once no reader can still hold an address
 * derived from it (see {@link MemoryMap} for the rule).
 *
 * <p>Guest addresses and lengths come from a hostile guest. They are unsigned 64-bit values held
 * in {@code long}s, and every check here is written so that no sum can wrap: a range is accepted
 * only if each of its bytes lies in a region, which is decided by comparing lengths against the
 * room left in a region, never by computing {@code gpa + length}.
 *
 * <p>Translation methods allocate nothing and throw nothing: failures are return codes.
 *
 * <p>Lifetime: a device that reads and writes the table from its own threads {@linkplain #attach
 * attaches} to it (a {@code BlockDevice} does, for as long as it may touch it: until it is given
 * another table, forgets it, or is closed and quiesced). {@link #close()} while a user is attached
 * unmaps nothing yet: the regions stay mapped until the last user {@linkplain #detach detaches},
 * so closing the memory before the device cannot pull pages from under its I/O threads. Close
 * the device first all the same, or the memory stays mapped until it is.
 */
public final class GuestMemory implements AutoCloseable {
    /** {@link #hostAddress} result when the range is not wholly inside one accessible region. */
    public static final long NO_ADDRESS = -1;
    /** {@link #translate} error: some byte of the range lies in no region. */
    public static final int NOT_MAPPED = -1;
    /** {@link #translate} error: a write was asked of a read-only region. */
    public static final int READ_ONLY = -2;
    /** {@link #translate} error: the sink refused a segment (too many segments). */
    public static final int SINK_STOPPED = -3;
    /** {@link #translate} error: negative length. */
    public static final int BAD_LENGTH = -4;
    /**
     * The longest segment {@link #translate} emits: 1 GiB, so lengths fit an {@code int} and stay
     * aligned for O_DIRECT; longer ranges inside one region become several segments.
     */
    public static final int MAX_SEGMENT_BYTES = 1 << 30;

    private final GuestRegion[] regions;
    private final long[] firstGpa;
    private final long[] lastGpa;
    private final long[] sizeBytes;
    private final long[] hostBase;
    private final boolean[] readOnly;
    private final Mapping[] mappings;
    private final PosixFile[] ownedFiles;
    private final int[] ownedFds;
    /**
     * Per region, a descriptor of the file it maps, kept only to read the file's size when a
     * fault asks for evidence ({@link #shrinkEvidence()}): the table's own memfd or file, or a
     * duplicate of a caller's descriptor (closed with the table); -1 for host memory.
     */
    private final int[] evidenceFds;
    private final boolean[] evidenceOwned;
    /**
     * Per region, the {@link FileChangeWatch} of its file (-1: none), begun before the table can
     * be used, so a change the frontend makes afterwards stays evidence even once undone.
     */
    private final int[] changeWatches;
    /** What {@link #shrinkEvidence()} found when the table was closed (null: nothing). */
    private String evidenceAtClose;
    /** Whether {@link #close()} was called. */
    private boolean closed;
    /** Whether the regions are unmapped (at close, or when the last user let go after it). */
    private boolean unmapped;
    /** Who uses the table ({@link #attach}): close() leaves it mapped until each let go. */
    private final java.util.List<Object> users = new java.util.ArrayList<>();
    /** What runs once the regions are unmapped ({@link #whenUnmapped}); emptied then. */
    private final java.util.List<Runnable> onUnmap = new java.util.ArrayList<>();

    private GuestMemory(GuestRegion[] regions, Mapping[] mappings, PosixFile[] ownedFiles, int[] ownedFds,
            int[] evidenceFds, boolean[] evidenceOwned) {
        this.regions = regions;
        this.mappings = mappings;
        this.ownedFiles = ownedFiles;
        this.ownedFds = ownedFds;
        this.evidenceFds = evidenceFds;
        this.evidenceOwned = evidenceOwned;
        int n = regions.length;
        changeWatches = new int[n];
        for (int i = 0; i < n; i++) {
            changeWatches[i] = FileChangeWatch.watch(evidenceFds[i]);
        }
        firstGpa = new long[n];
        lastGpa = new long[n];
        sizeBytes = new long[n];
        hostBase = new long[n];
        readOnly = new boolean[n];
        for (int i = 0; i < n; i++) {
            firstGpa[i] = regions[i].guestAddress();
            lastGpa[i] = regions[i].lastGuestAddress();
            sizeBytes[i] = regions[i].size();
            hostBase[i] = regions[i].hostAddress();
            readOnly[i] = regions[i].readOnly();
        }
    }

    /** Starts a table. */
    public static Builder builder() {
        return new Builder();
    }

    /** The number of regions. */
    public int regionCount() {
        return regions.length;
    }

    /** Region {@code i}, in ascending guest-address order. */
    public GuestRegion region(int i) {
        return regions[i];
    }

    /** The index of the region holding {@code gpa}, or -1. */
    public int regionOf(long gpa) {
        int lo = 0;
        int hi = firstGpa.length - 1;
        while (lo <= hi) {
            int mid = (lo + hi) >>> 1;
            if (Long.compareUnsigned(gpa, firstGpa[mid]) < 0) {
                hi = mid - 1;
            } else if (Long.compareUnsigned(gpa, lastGpa[mid]) > 0) {
                lo = mid + 1;
            } else {
                return mid;
            }
        }
        return -1;
    }

    /**
     * The host address of {@code gpa} if the whole range {@code [gpa, gpa + length)} lies in ONE
     * region that allows the access, else {@link #NO_ADDRESS}. {@code length} must be positive.
     * The fast path for buffers and rings; a range that crosses into an adjacent region is
     * refused here and accepted by {@link #translate}.
     */
    public long hostAddress(long gpa, long length, boolean write) {
        int i = regionOf(gpa);
        if (i < 0 || length <= 0 || (write && readOnly[i])) {
            return NO_ADDRESS;
        }
        long offset = gpa - firstGpa[i];
        // room = bytes from gpa to the region's end, at least 1: no sum here can wrap
        if (length > sizeBytes[i] - offset) {
            return NO_ADDRESS;
        }
        return hostBase[i] + offset;
    }

    /**
     * Translates {@code [gpa, gpa + length)} into host segments, splitting it where it crosses
     * from one region into the adjacent one (and every {@link #MAX_SEGMENT_BYTES}), and hands them
     * to {@code sink} in order. The whole range is checked before the first segment is emitted, so
     * on {@link #NOT_MAPPED}, {@link #READ_ONLY} or {@link #BAD_LENGTH} nothing was emitted; on
     * {@link #SINK_STOPPED} the segments before the refused one were.
     *
     * @return the number of segments emitted (0 for an empty range), or a negative error code
     */
    public int translate(long gpa, long length, boolean write, SegmentSink sink) {
        if (length <= 0) {
            return length == 0 ? 0 : BAD_LENGTH;
        }
        int first = regionOf(gpa);
        if (first < 0) {
            return NOT_MAPPED;
        }
        int rc = check(first, gpa, length, write);
        return rc < 0 ? rc : emit(first, gpa, length, sink);
    }

    private int check(int first, long gpa, long length, boolean write) {
        int i = first;
        long remaining = length;
        long offset = gpa - firstGpa[i];
        while (true) {
            if (write && readOnly[i]) {
                return READ_ONLY;
            }
            long room = sizeBytes[i] - offset;
            if (remaining <= room) {
                return 0;
            }
            remaining -= room;
            // the range goes on only into a region that starts right after this one ends; a
            // region ending at 2^64 - 1 has no successor, so lastGpa + 1 wrapping to 0 never matches
            if (i + 1 == firstGpa.length || firstGpa[i + 1] != lastGpa[i] + 1) {
                return NOT_MAPPED;
            }
            i++;
            offset = 0;
        }
    }

    private int emit(int first, long gpa, long length, SegmentSink sink) {
        int count = 0;
        int i = first;
        long remaining = length;
        long offset = gpa - firstGpa[i];
        while (remaining > 0) {
            long piece = Math.min(remaining, sizeBytes[i] - offset);
            long host = hostBase[i] + offset;
            remaining -= piece;
            while (piece > 0) {
                int segment = (int) Math.min(piece, MAX_SEGMENT_BYTES);
                if (!sink.segment(host, segment)) {
                    return SINK_STOPPED;
                }
                count++;
                host += segment;
                piece -= segment;
            }
            i++;
            offset = 0;
        }
        return count;
    }

    /**
     * The guest-physical address of a host address inside one of this table's regions, or -1:
     * the reverse of {@link #hostAddress}, for dirty logging, which records what the device wrote
     * by guest page while the data path only keeps host addresses. A linear scan (tables have a
     * few regions); only called while logging is on.
     */
    public long hostToGuest(long hostAddress) {
        for (int i = 0; i < hostBase.length; i++) {
            long offset = hostAddress - hostBase[i];
            if (Long.compareUnsigned(offset, sizeBytes[i]) < 0) {
                return firstGpa[i] + offset;
            }
        }
        return -1;
    }

    /**
     * The guest-physical address of a frontend virtual address (vhost-user gives ring addresses
     * in the frontend's address space), or -1 when no region's user range holds it.
     */
    public long userToGuest(long userAddress) {
        for (GuestRegion r : regions) {
            if (r.userAddress() != 0) {
                long offset = userAddress - r.userAddress();
                if (Long.compareUnsigned(offset, r.size()) < 0) {
                    return r.guestAddress() + offset;
                }
            }
        }
        return -1;
    }

    /**
     * Evidence that this table maps past the end of a file, or may have: a description of the
     * first region whose file is now shorter than the region's end in it (a frontend truncated
     * it, so touching the rest raises SIGBUS), or else of the first region whose file was changed
     * since the table was mapped (resized, even if grown back since; see {@link FileChangeWatch}:
     * a guest's own stores through the mapping do not count), or else of the first whose file
     * has holes that cannot be filled (a size-limited file system with no room left, a frontend
     * filled /dev/shm; hugetlbfs with no free huge page, holes punched: touching a hole raises
     * SIGBUS though the file's size never changed), or null.
     * Reads each file's size with fstat(2), which changes nothing of a file a frontend shares.
     * The second kind is sticky on purpose: a fault is caught late, and a frontend that shrank
     * its file and grew it back before then must not leave the fault without an owner (rev16c:
     * another tenant's queue, where the error landed, paid for it). Once the table is
     * {@linkplain #close() closed}, answers what was true when it was unmapped: nothing of it can
     * fault after that.
     *
     * <p>For the fault path only (engine GuestFaults: a guest-memory fault the JVM delivers late
     * is attributed to the table that shows this evidence, not to whatever ran when it landed);
     * never called per request. Host memory an embedder mapped itself shows no evidence. A
     * hugetlbfs mapping does not run out of pages unless holes are punched in its file (a shared
     * mapping reserves its huge pages when mapped), and a punched hole is a change.
     */
    public synchronized String shrinkEvidence() {
        return unmapped ? evidenceAtClose : probeShrink();
    }

    private String probeShrink() {
        for (int i = 0; i < regions.length; i++) {
            int fd = evidenceFds[i];
            if (fd < 0) {
                continue;
            }
            // Only a regular file can shrink: a device file (/dev/zero) reports 0 bytes whatever
            // it maps, which would be false evidence for ever (irev2 ShrinkEvidenceAttackTest).
            long fileSize = FileSize.ofRegularFile(fd);
            long end = regions[i].fdOffset() + regions[i].size(); // validated: no wrap
            if (fileSize >= 0 && fileSize < end) {
                return regions[i] + " maps up to byte " + end + " of a file now " + fileSize + " bytes long";
            }
        }
        for (int i = 0; i < regions.length; i++) {
            if (FileChangeWatch.changed(changeWatches[i])) {
                return regions[i] + " maps a file resized or punched since it was mapped (now "
                        + FileSize.ofRegularFile(evidenceFds[i]) + " bytes)";
            }
        }
        for (int i = 0; i < regions.length; i++) {
            if (evidenceFds[i] >= 0 && FileSize.sparseOnFullFileSystem(evidenceFds[i])) {
                return regions[i] + " maps a file with holes and no room left to fill them (a full file system,"
                        + " or no free huge page)";
            }
        }
        return null;
    }

    /**
     * Unmaps every region this table mapped and closes the descriptors it opened (descriptors
     * handed to {@link Builder#addRegion} stay the caller's). Idempotent. Only call it once no
     * thread can use an address from this table: see {@link MemoryMap}. While a user is
     * {@linkplain #attach attached} (a device not yet closed) the unmap waits for its {@link
     * #detach}: nothing is pulled from under a device's I/O threads. What {@link
     * #shrinkEvidence()} finds at the unmap is kept.
     */
    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        closed = true;
        if (users.isEmpty()) {
            unmap();
        }
    }

    /**
     * Registers {@code user} (a device) as reading and writing this table from threads of its own:
     * {@link #close()} then leaves the regions mapped until {@code user} {@linkplain #detach
     * detaches}. A user may attach more than once and detaches as often.
     *
     * @throws IllegalStateException when the table is closed
     */
    public synchronized void attach(Object user) {
        java.util.Objects.requireNonNull(user, "user");
        if (closed) {
            throw new IllegalStateException("guest memory " + this + " is closed");
        }
        users.add(user);
    }

    /**
     * {@code user} no longer touches this table (and nothing it handed to the kernel can): one
     * {@link #attach} undone. When the table was closed meanwhile and this was its last user,
     * the regions are unmapped now, on this thread.
     */
    public synchronized void detach(Object user) {
        for (int i = 0; i < users.size(); i++) {
            if (users.get(i) == user) {
                users.remove(i);
                break;
            }
        }
        if (closed && users.isEmpty() && !unmapped) {
            unmap();
        }
    }

    /**
     * Runs {@code action} once the regions are unmapped: at {@link #close()} when no user is
     * attached, else at the last user's {@link #detach}, on that thread and under this table's
     * lock (keep it short: an accounting step); at once when they already are. What holds
     * something for as long as the memory stays mapped (a budget of mapped bytes) gives it back
     * here, not at close: an attached user may keep the regions mapped long after.
     */
    public void whenUnmapped(Runnable action) {
        java.util.Objects.requireNonNull(action, "action");
        synchronized (this) {
            if (!unmapped) {
                onUnmap.add(action);
                return;
            }
        }
        action.run();
    }

    /** The users attached now (for diagnostics and tests). */
    public synchronized java.util.List<String> users() {
        return users.stream().map(String::valueOf).toList();
    }

    /** Whether the regions were unmapped: closed, and no user attached any more. */
    public synchronized boolean isUnmapped() {
        return unmapped;
    }

    private void unmap() {
        evidenceAtClose = probeShrink();
        unmapped = true;
        for (int wd : changeWatches) {
            FileChangeWatch.release(wd);
        }
        for (int i = 0; i < evidenceFds.length; i++) {
            if (evidenceOwned[i] && evidenceFds[i] >= 0) {
                Native.libc().close(evidenceFds[i]);
            }
        }
        for (Mapping m : mappings) {
            if (m != null) {
                m.close();
            }
        }
        for (PosixFile f : ownedFiles) {
            f.close();
        }
        for (int fd : ownedFds) {
            Native.libc().close(fd);
        }
        RuntimeException first = null;
        for (Runnable action : onUnmap) {
            try {
                action.run();
            } catch (RuntimeException e) {
                if (first == null) {
                    first = e;
                }
            }
        }
        onUnmap.clear();
        if (first != null) {
            throw first;
        }
    }

    /**
     * Whether {@link #close()} left some region mapped (munmap(2) failed, see
     * {@link Mapping#unmapFailed()}): its memory and file stay referenced for the process's life.
     */
    public synchronized boolean unmapFailed() {
        for (Mapping m : mappings) {
            if (m != null && m.unmapFailed()) {
                return true;
            }
        }
        return false;
    }

    /** Whether {@link #close()} was called. */
    public synchronized boolean isClosed() {
        return closed;
    }

    @Override
    public String toString() {
        StringBuilder sb = new StringBuilder("GuestMemory[");
        for (int i = 0; i < regions.length; i++) {
            sb.append(i == 0 ? "" : ", ").append(regions[i]);
        }
        return sb.append(']').toString();
    }

    /**
     * Collects regions, then checks and maps them all at once in {@link #build()}. Not
     * thread-safe; used off the data path.
     */
    public static final class Builder {
        private final List<Spec> specs = new ArrayList<>();
        private boolean guarded;

        private Builder() {
        }

        /**
         * Puts a PROT_NONE guard page on both sides of every mapping this table creates, so any
         * access one byte outside a region faults at once. For tests and benchmarks.
         */
        public Builder guarded(boolean guarded) {
            this.guarded = guarded;
            return this;
        }

        /** A region backed by a new memfd of {@code size} bytes, owned and closed by the table. */
        public Builder addMemfd(long gpa, long size) {
            specs.add(new Spec(Kind.MEMFD, gpa, size, -1, 0, 0, false, null, 0));
            return this;
        }

        /**
         * A region mapped from {@code fd} at {@code fdOffset} (any offset: QEMU hands several
         * regions of one memfd at different offsets). The descriptor stays the caller's.
         *
         * @param userAddress the frontend's virtual address of {@code gpa}, or 0
         */
        public Builder addRegion(long gpa, long size, int fd, long fdOffset, long userAddress, boolean readOnly) {
            if (fd < 0) {
                throw new IllegalArgumentException("bad descriptor " + fd + " for region at gpa 0x" + Long.toHexString(gpa));
            }
            specs.add(new Spec(Kind.FD, gpa, size, fd, fdOffset, userAddress, readOnly, null, 0));
            return this;
        }

        /** A region mapped from {@code file} at {@code fileOffset}; the table opens and closes it. */
        public Builder addFile(long gpa, long size, Path file, long fileOffset, boolean readOnly) {
            specs.add(new Spec(Kind.FILE, gpa, size, -1, fileOffset, 0, readOnly, file, 0));
            return this;
        }

        /**
         * A region an embedding VMM has already mapped at {@code hostAddress}; the table never
         * unmaps it.
         */
        public Builder addHostMemory(long gpa, long size, long hostAddress, boolean readOnly) {
            if (hostAddress <= 0) {
                throw new IllegalArgumentException("bad host address 0x" + Long.toHexString(hostAddress)
                        + " for region at gpa 0x" + Long.toHexString(gpa));
            }
            specs.add(new Spec(Kind.HOST, gpa, size, -1, 0, 0, readOnly, null, hostAddress));
            return this;
        }

        /**
         * Checks the regions (positive sizes, no wrap past 2<sup>64</sup>, no overlap), sorts them
         * and maps them.
         *
         * @throws IllegalArgumentException naming the offending regions
         * @throws io.vblk.sys.NativeException when a mapping fails (nothing stays mapped)
         */
        public GuestMemory build() {
            List<Spec> sorted = new ArrayList<>(specs);
            for (Spec s : sorted) {
                s.validate();
            }
            sorted.sort(Comparator.comparing((Spec s) -> s.gpa, Long::compareUnsigned));
            for (int i = 1; i < sorted.size(); i++) {
                Spec prev = sorted.get(i - 1);
                Spec cur = sorted.get(i);
                if (Long.compareUnsigned(prev.gpa + prev.size - 1, cur.gpa) >= 0) {
                    throw new IllegalArgumentException("overlapping regions: " + prev + " and " + cur);
                }
            }
            return mapAll(sorted);
        }

        private GuestMemory mapAll(List<Spec> sorted) {
            int n = sorted.size();
            GuestRegion[] regions = new GuestRegion[n];
            Mapping[] mappings = new Mapping[n];
            int[] evidenceFds = new int[n];
            boolean[] evidenceOwned = new boolean[n];
            Arrays.fill(evidenceFds, -1);
            List<PosixFile> files = new ArrayList<>();
            List<Integer> fds = new ArrayList<>();
            try {
                for (int i = 0; i < n; i++) {
                    Spec s = sorted.get(i);
                    int fd = s.fd;
                    long host;
                    if (s.kind == Kind.HOST) {
                        host = s.hostAddress;
                    } else {
                        if (s.kind == Kind.MEMFD) {
                            fd = Memfd.create("vblk-guest-0x" + Long.toHexString(s.gpa), s.size);
                            fds.add(fd);
                        } else if (s.kind == Kind.FILE) {
                            PosixFile f = PosixFile.open(s.file, s.readOnly, false);
                            files.add(f);
                            fd = f.fd();
                            if (f.sizeBytes() - s.fdOffset < s.size) {
                                throw new IllegalArgumentException(s + " runs past the end of " + s.file + " ("
                                        + f.sizeBytes() + " bytes)");
                            }
                        }
                        // mmap wants a page-aligned offset: map from the page holding fdOffset
                        long slack = s.fdOffset & (Linux.PAGE_SIZE - 1);
                        mappings[i] = Mapping.map(fd, s.fdOffset - slack, s.size + slack, s.readOnly, guarded);
                        host = mappings[i].address() + slack;
                        if (s.kind == Kind.FD) {
                            // The caller may close its descriptor while the table lives (and the
                            // number be reused): keep our own reference to the file. Without
                            // one (EMFILE) the region just shows no evidence.
                            int dup = FileSize.duplicate(fd);
                            evidenceFds[i] = dup;
                            evidenceOwned[i] = dup >= 0;
                        } else {
                            evidenceFds[i] = fd;
                        }
                    }
                    regions[i] = new GuestRegion(s.gpa, s.size, host, s.readOnly, s.userAddress, fd, s.fdOffset);
                }
            } catch (RuntimeException e) {
                for (Mapping m : mappings) {
                    if (m != null) {
                        m.close();
                    }
                }
                files.forEach(PosixFile::close);
                fds.forEach(fd -> Native.libc().close(fd));
                for (int i = 0; i < n; i++) {
                    if (evidenceOwned[i]) {
                        Native.libc().close(evidenceFds[i]);
                    }
                }
                throw e;
            }
            return new GuestMemory(regions, mappings, files.toArray(new PosixFile[0]),
                    fds.stream().mapToInt(Integer::intValue).toArray(), evidenceFds, evidenceOwned);
        }
    }

    private enum Kind { MEMFD, FD, FILE, HOST }

    private static final class Spec {
        final Kind kind;
        final long gpa;
        final long size;
        final int fd;
        final long fdOffset;
        final long userAddress;
        final boolean readOnly;
        final Path file;
        final long hostAddress;

        Spec(Kind kind, long gpa, long size, int fd, long fdOffset, long userAddress, boolean readOnly, Path file,
                long hostAddress) {
            this.kind = kind;
            this.gpa = gpa;
            this.size = size;
            this.fd = fd;
            this.fdOffset = fdOffset;
            this.userAddress = userAddress;
            this.readOnly = readOnly;
            this.file = file;
            this.hostAddress = hostAddress;
        }

        void validate() {
            if (size <= 0) {
                throw new IllegalArgumentException("region size must be positive: " + this);
            }
            if (Long.compareUnsigned(gpa + size - 1, gpa) < 0) {
                throw new IllegalArgumentException("region wraps past 2^64: " + this);
            }
            if (fdOffset < 0) {
                throw new IllegalArgumentException("negative offset: " + this);
            }
        }

        @Override
        public String toString() {
            return String.format("%s region [gpa 0x%x, %d bytes, offset 0x%x%s]", kind, gpa, size, fdOffset,
                    readOnly ? ", ro" : "");
        }
    }
}
