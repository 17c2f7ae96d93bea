package io.vblk.block.qcow2;

import static io.vblk.block.qcow2.Qcow2Descriptor.*;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.concurrent.TimeUnit;
import java.util.zip.DataFormatException;
import java.util.zip.Inflater;

import com.github.luben.zstd.ZstdDecompressCtx;
import com.github.luben.zstd.ZstdException;

import org.agrona.UnsafeApi;
import org.agrona.concurrent.UnsafeBuffer;

import io.vblk.aio.CompletionSink;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoVector;
import io.vblk.block.BlockDriver;
import io.vblk.sys.Errno;
import io.vblk.sys.NativeBuffer;

/**
 * The qcow2 driver: guest requests become state machines over one {@link IoBackend} on the
 * image file (and a read-only {@link BlockDriver} for the backing file). Every step a request
 * takes (an L2 table load, a copy-on-write read, the data write, the L2 update) is prepared on
 * the I/O thread, either in the request method or in {@link #poll}, and reaches the kernel with
 * the round's one {@link #submit()}. Requests, L2 cache slots and the first bounce buffers are
 * allocated at open, further bounce buffers once on need while direct memory has room
 * ({@link DirectMemory}); nothing is allocated per request afterwards.
 *
 * <h2>Crash-safe ordering of an allocating write</h2>
 * <ol>
 *   <li>Clusters are reserved in batches at the end of the file: their refcounts are set to 1 in
 *       the refcount block, the block is written and flushed (a new refcount block is written and
 *       flushed before the refcount table entry naming it is written). Only then are they handed
 *       out. A crash leaves reserved, unreferenced clusters: leaks, never errors.</li>
 *   <li>The data (with the copy-on-write parts from the backing file, zeros or the old
 *       cluster) is written to the new cluster.</li>
 *   <li>Only after that write completed is the L2 table written with the new entry (a new L2
 *       table is written, all zeros but its entry, before the L1 entry naming it).</li>
 *   <li>Copied-on-write data (the backing file's or the old cluster's bytes), data in a reused
 *       zero cluster and a new L2 table are flushed before the entry naming them: one barrier
 *       flush per batch of such pieces ({@link #issueBarrier}). A fresh cluster needs none: its
 *       old content is zeros that no entry names.</li>
 *   <li>The guest sees its write completed only after the L2 (and L1) write completed. A FLUSH
 *       first waits for every L2 and L1 table write under way or wanted at its start
 *       ({@link #tablesWrittenUpTo}): an in-place write can complete while the table write of
 *       the allocating write it depends on is still in flight, which fdatasync does not cover.</li>
 * </ol>
 * A clean close returns unused reserved clusters (refcount 0) and truncates the file, so
 * {@code qemu-img check} finds a cleanly closed image without leaks. The dirty bit is never set
 * (refcounts are always ahead of references), so no repair is needed on open.
 *
 * <h2>Hostile images</h2>
 * The header, L1 and refcount tables are checked at open ({@link Qcow2Image}); each L2 table is
 * checked the first time it is loaded: reserved bits, alignment, offsets past the end of the
 * file as opened, and data clusters in metadata (the internal snapshots' tables included:
 * {@link Qcow2Snapshots}) mark the image corrupt (the corrupt bit is set
 * in a writable v3 image) and every later request fails with EIO. In-place writes only go to
 * clusters whose L2 entry passed that check and carries COPIED; every other write allocates.
 *
 * <p>DISCARD is advisory: it never allocates and never writes data; only a whole cluster of a
 * v3 image with an L2 table becomes a zero cluster (keeping its host cluster, refcount 1), the
 * rest is left. On a local file the kept cluster's host range is then punched
 * ({@link #punchDiscarded}), once its refcount was read to be 1 (an entry whose COPIED flag lies
 * marks the image corrupt), adjacent clusters in one punch: the space goes back, the refcount
 * stays, so no entry ever names a freed cluster.
 *
 * <p>Not done: reuse of freed clusters (the file only grows; discard marks clusters zero rather
 * than freeing them; a replaced compressed cluster's references are given back at a clean close:
 * {@link #releaseFreed}), internal snapshots (refused for writing). The refcount table is grown
 * where it cannot cover what the disk may need ({@link #growRefcountTableIfShort}).
 */
public final class Qcow2Driver implements BlockDriver {
    static final int OP_READ = 0;
    static final int OP_WRITE = 1;
    static final int OP_FLUSH = 2;
    static final int OP_DISCARD = 3;
    static final int OP_WRITE_ZEROES = 4;

    static final int PH_START = 0;
    static final int PH_FINISH = 1;
    static final int PH_DRAIN = 2;
    static final int PH_DECOMPRESS = 3;
    static final int PH_COW_FILL = 4;
    static final int PH_COW_DECOMPRESS = 5;
    static final int PH_DATA_WRITTEN = 6;
    static final int PH_L2_WRITTEN = 7;
    static final int PH_NEW_L2_WRITTEN = 8;
    static final int PH_L1_WRITTEN = 9;
    /** A FLUSH waiting for the table writes its start found unwritten (rev14a H1). */
    static final int PH_FLUSH_TABLES = 10;
    /** Copied (or reused-cluster) data made durable by a barrier flush: the L2 entry may follow. */
    static final int PH_COW_FLUSHED = 11;
    /** A new L2 table made durable by a barrier flush: the L1 entry may follow. */
    static final int PH_NEW_L2_FLUSHED = 12;
    /** A DISCARD's zero entry written: the host cluster's range is to be punched ({@link Req#punch}). */
    static final int PH_PUNCH = 13;
    /** The punch of a discarded run's host range in flight; its clusters stay locked until it ends. */
    static final int PH_PUNCHED = 14;
    /** A DISCARD's read of the refcount of the host cluster it would punch in flight ({@link #readRefcount}). */
    static final int PH_REFCOUNT = 15;
    /**
     * The refcounts one read of a DISCARD takes in (a window of a refcount block, see {@link
     * #readRefcount}): 1024 adjacent host clusters (64 MiB of 64 KiB clusters) per read, where
     * it was one read per cluster. 128 bytes per request slot.
     */
    static final int REFCOUNT_WINDOW = 1024;
    /**
     * The most a DISCARD's run of adjacent host clusters grows to before it is punched: its
     * clusters stay locked until then (a guest write into one waits).
     */
    static final long PUNCH_RUN_BYTES = 64L << 20;

    private static final long K_REQ = 1;
    private static final long K_L2_LOAD = 2;
    private static final long K_L2_WRITE = 3;
    private static final long K_L1_WRITE = 4;
    private static final long K_REFILL = 5;
    private static final long K_HEADER = 6;
    private static final long K_BARRIER = 7;
    private static final long NO_LOCK = Long.MIN_VALUE;
    /** Clusters reserved per refcount update (one refcount-block write and flush each). */
    private static final int RESERVE_CLUSTERS = 256;

    private Qcow2Image meta;
    private final Qcow2Host host;
    private final IoBackend io;
    private final BlockDriver backing;
    private final long backingSize;
    private final boolean readOnly;
    /** Read as another image's backing file: its L1 table counts against the chain's budget. */
    private final boolean backingLevel;
    /**
     * The bytes of L1 tables the open charged to the chain's budget for this image
     * ({@link Qcow2Image#l1Charge}): the metadata read again at the first request may take no more.
     */
    private final long l1Allowance;
    /** As {@link #l1Allowance}, for the metadata set ({@link Qcow2Image#setCharge}). */
    private final long setAllowance;
    private final int clusterBits;
    private final int cluster;
    private final long clusterMask;
    private final int l2Bits;
    private final int alignment;
    /** The unit an L2 table is written back in: the O_DIRECT alignment, at least a sector. */
    private final int l2Chunk;
    /** Volatile: {@link #resize} changes it on the I/O thread, {@link #sizeBytes()} is read anywhere. */
    private volatile long virtualSize;
    private long openedFileSize;
    /**
     * Where clusters an entry read from the image may name end: the file's end, or on a network
     * disk the allocation point ({@link Qcow2Image#allocationEnd}), past which every refcount is 0
     * and the driver places new tables and data. An entry naming a cluster there is corrupt: served
     * in place, a guest write would land in a table the driver puts there later.
     */
    private long entryLimit;
    private final boolean v3;
    private final Req[] reqs;
    private final int[] freeReqs;
    private int freeReqCount;
    private int accepted;
    /** The L2 cache: all allocated at open ({@link #slotsFor}); more only by an online grow ({@link #growSlots}). */
    private L2Slot[] slots;
    /** The most slots the options give this level. */
    private final int slotLimit;
    private int clockHand;
    private long[] validatedL2;
    private final ReqList runnable = new ReqList();
    private final ReqList done = new ReqList();
    private final ReqList cacheWaiters = new ReqList();
    private final ReqList allocWaiters = new ReqList();
    private final ReqList l1Waiters = new ReqList();
    private final ReqList ioWaiters = new ReqList();
    /** FLUSHes waiting for table writes ({@link #PH_FLUSH_TABLES}), woken by every L2 or L1 write's completion. */
    private final ReqList flushWaiters = new ReqList();
    /** Pieces waiting for the next barrier flush ({@link #issueBarrier}). */
    private final ReqList barrierWaiters = new ReqList();
    /** Pieces the barrier flush in flight covers. */
    private final ReqList barrierFlushing = new ReqList();
    private boolean barrierInFlight;
    /**
     * Sticky: an fdatasync of this image failed (a barrier, a refcount reservation's, a guest
     * FLUSH's). Linux reports a writeback error once per open file (errseq): the failed flush
     * consumed it, so a later one would succeed although data written before may be lost.
     * Every later guest FLUSH fails with EIO instead (QEMU file-posix page_cache_inconsistent).
     */
    private boolean flushFailed;
    /**
     * Numbers every change to a table in memory (an L2 entry or new table, an L1 entry). A
     * FLUSH notes it at its start and waits until no change numbered up to that is unwritten
     * ({@link #tablesWrittenUpTo}): a guest write that completed in place into a cluster whose
     * L2 entry (or the L1 entry of its new table) was still being written depends on that
     * table write, which fdatasync does not cover while it is in flight.
     */
    private long metaSeq;
    /**
     * L2 slots holding a change not yet written ({@link L2Slot#unwritten}), kept by
     * {@link #settle}: {@link #tablesWrittenUpTo} scans the slots only when one is.
     */
    private int unwrittenSlots;
    /**
     * Requests that used up the round's piece budget ({@link #PIECES_PER_ROUND}): a DISCARD or
     * WRITE_ZEROES of 2 GiB over clusters that need no I/O would otherwise walk millions of
     * pieces in one call, holding an I/O thread other disks share. They go on at the next poll.
     */
    private final ReqList yielded = new ReqList();
    /** Pieces one round may still start before requests yield (reset by every {@link #poll}). */
    private int piecesLeft = PIECES_PER_ROUND;
    /** Counts {@link #advance} rounds, so that a request knows whether it started a piece in this one. */
    private int round;
    /** About a quarter of a millisecond of pieces that need no I/O. */
    static final int PIECES_PER_ROUND = 1 << 16;
    /** Requests waiting for a bounce buffer ({@link #acquireBounce}). */
    private final ReqList bounceWaiters = new ReqList();
    /**
     * The lists of requests that wait for a completion, directly or not (all but {@link #done}
     * and {@link #yielded}, whose requests wait only for the next poll).
     */
    private final ReqList[] waitLists = {runnable, cacheWaiters, allocWaiters, l1Waiters, ioWaiters, bounceWaiters,
            flushWaiters, barrierWaiters, barrierFlushing};
    /**
     * Bounce buffers (a decompressed cluster and up to two clusters of compressed input each),
     * shared by the requests: a request takes one for a copy-on-write or a compressed read and
     * gives it back as soon as the piece's data is written or copied to the guest. At most
     * {@link #bounceMax} exist (within {@link #BOUNCE_BUDGET_BYTES}): {@link #BOUNCE_RESERVED}
     * taken at open, the others created on need (whenever direct memory has room, {@link #growBounce})
     * and kept; a request that finds none free waits in {@link #bounceWaiters}. A holder only waits
     * for back-end completions and slots, never for a lock or a table, so the wait always ends.
     */
    private final Bounce[] bouncePool;
    private int bounceFree;
    private int bounceCreated;
    private final int bounceMax;
    /**
     * {@link System#nanoTime} before which the pool does not try to grow: set when a direct
     * allocation failed although the pool seemed to have room (another disk took it meanwhile),
     * so that {@code Bits.reserveMemory}'s collection and sleeps (up to half a second) run on
     * this I/O thread at most once per {@link #BOUNCE_GROW_BACKOFF_NANOS}.
     */
    private long bounceGrowAfter;
    /** Punches issued ({@link #punches}). */
    private long punches;
    /** Refcount reads a DISCARD issued before a punch ({@link #refcountReads}). */
    private long refcountReads;
    private boolean bounceGrowBackoff;
    /** How long growth pauses after a failed allocation (see {@link #bounceGrowAfter}). */
    static final long BOUNCE_GROW_BACKOFF_NANOS = 10_000_000_000L;
    /**
     * Bounce buffers a top image takes at open (a backing level takes one); the rest up to
     * {@link #bounceMax} are created on need while the direct-memory pool has room: all of them
     * at open would be up to 32 MiB per disk (a depth-128 disk of 64 KiB clusters: 25 MiB).
     */
    static final int BOUNCE_RESERVED = 2;
    /** Direct memory one driver's bounce buffers may take (2 MiB clusters: 5 buffers of 6 MiB). */
    static final long BOUNCE_BUDGET_BYTES = 32L << 20;
    /**
     * The same for a backing level, which needs a bounce buffer only to read a compressed
     * cluster (never for copy-on-write): at least one buffer (2 MiB clusters: one of 6 MiB).
     */
    static final long BACKING_BOUNCE_BUDGET_BYTES = 4L << 20;
    private final Inflater inflater = new Inflater(true);
    /** The header's compression_type, fixed for the driver's life (a reload that changes it is corruption). */
    private final int compressionType;
    /** One zstd streaming context for the driver's life, reset per cluster; null for deflate images. */
    private final ZstdDecompressCtx zstd;
    private final UnsafeBuffer view = new UnsafeBuffer(0, 0);
    private final CompletionSink ioSink = this::onIo;
    private final CompletionSink backingSink = this::onBacking;

    // L1 write-back
    private final IoVector l1Vec = new IoVector(1);
    private long l1Gen;
    private long l1Written;
    private boolean l1Writing;
    private long l1WritingGen;
    /** The first L1 change ({@link #metaSeq}) since the L1 write in flight began; 0: none. */
    private long l1DirtySeq;
    /** The first L1 change the L1 write in flight carries; 0: none in flight. */
    private long l1WritingSeq;

    // cluster allocation (see the class comment)
    private Refill refill;

    /**
     * Host clusters whose reference an overwritten, zeroed or discarded compressed cluster gave
     * up (its L2 entry replaced: QEMU's qcow2_free_any_cluster), one entry per reference (several
     * compressed clusters share a host cluster; a descriptor spans up to three). Their refcounts
     * are lowered by {@link #releaseFreed}, with the allocator's block, when the reserved clusters
     * are handed back (a clean close, a hand-over, a resize), after an fdatasync made the new
     * entries durable: a crash before leaves leaks, never an entry naming a freed cluster. Grown
     * by doubling up to {@link #FREED_MAX}; past it the rest leak (logged once).
     */
    private long[] freed;
    private int freedCount;
    private boolean freedOverflowLogged;
    static final int FREED_MAX = 1 << 20;

    /**
     * An exception went through this driver (a late guest-memory fault: engine GuestFaults) and
     * may have cut a completion off: {@link #poll} recovers once the back ends are idle
     * ({@link #recoverAfterFault}); until then the thread sleeps for their completions
     * ({@link #recoverable}). Reaping thread.
     */
    private boolean faulted;
    /** A metadata write met a full back end (EAGAIN): {@link #poll} tries it again. */
    private boolean metadataRetry;
    /** The slot the last lookup found: consecutive requests mostly share an L2 table. */
    private L2Slot lastSlot;
    private boolean corrupt;
    private String corruptReason;
    private int fatalError;
    private final NativeBuffer headerSector;
    private final IoVector headerVec = new IoVector(1);
    private boolean closed;
    /** Whether the metadata was read again at the first request (see {@link #reloadAtStart}). */
    private boolean started;
    /** Whether a reload at the first request found no memory (logged once). */
    private boolean reloadStarved;
    /**
     * Whether the driver owns the image (BDRV_O_INACTIVE's opposite): false for an image opened
     * {@link Qcow2Options#incoming} and after {@link #inactivate}, when it writes nothing,
     * refuses requests and trusts none of its metadata until {@link #activate}.
     */
    private boolean active;

    /** A driver for the top image {@code meta} (see below). */
    Qcow2Driver(Qcow2Image meta, Qcow2Host host, IoBackend io, BlockDriver backing, int depth, Qcow2Options options) {
        this(meta, host, io, backing, depth, options, false);
    }

    /**
     * A driver for {@code meta}; {@code backingLevel} for an image read as another's backing
     * file, which gets a backing level's small share of the cache and bounce buffers
     * ({@link Qcow2Options#backingL2CacheTables}, {@link #BACKING_BOUNCE_BUDGET_BYTES}).
     */
    Qcow2Driver(Qcow2Image meta, Qcow2Host host, IoBackend io, BlockDriver backing, int depth, Qcow2Options options,
                boolean backingLevel) {
        this.meta = meta;
        this.host = host;
        this.io = io;
        this.backing = backing;
        this.backingSize = backing == null ? 0 : backing.sizeBytes();
        this.readOnly = options.readOnly() || host.readOnly();
        this.backingLevel = backingLevel;
        this.l1Allowance = meta.l1Charge;
        this.setAllowance = meta.setCharge;
        this.clusterBits = meta.clusterBits;
        this.cluster = meta.clusterSize;
        this.clusterMask = cluster - 1L;
        this.l2Bits = meta.l2Bits;
        this.alignment = Math.max(SECTOR_BYTES, host.offsetAlignment());
        this.l2Chunk = alignment;
        this.virtualSize = meta.header.virtualSize;
        this.openedFileSize = meta.fileSize;
        this.entryLimit = Math.min(meta.fileSize, meta.allocationEnd);
        this.v3 = meta.header.version >= 3;
        this.compressionType = meta.header.compressionType;
        this.zstd = compressionType == COMPRESSION_ZSTD ? new ZstdDecompressCtx() : null;
        if (depth <= 0 || depth >= 0xffffff) {
            throw new IllegalArgumentException("qcow2: depth " + depth + " out of 1.." + (0xffffff - 1));
        }
        // One request more than the depth: the driver's own (zeroGrownArea), never handed to a guest.
        this.reqs = new Req[depth + 1];
        this.freeReqs = new int[depth];
        for (int i = 0; i <= depth; i++) {
            reqs[i] = new Req(i);
        }
        for (int i = 0; i < depth; i++) {
            freeReqs[i] = depth - 1 - i;
        }
        freeReqCount = depth;
        long bounceBytes = 3L * cluster + 2L * alignment;
        this.bounceMax = (int) (backingLevel ? Math.max(1, Math.min(depth, BACKING_BOUNCE_BUDGET_BYTES / bounceBytes))
                : Math.max(1, Math.min(depth, Math.max(2, BOUNCE_BUDGET_BYTES / bounceBytes))));
        this.bouncePool = new Bounce[bounceMax];
        // The slots' tables and the first bounce buffers are taken now, from the direct-memory
        // pool every disk shares: a disk that opened never fails later for want of them, and
        // the image that would fill the pool is refused at its open (rev15a).
        // No more slots than the virtual size has L2 tables (at least 2): a small disk does not
        // hold 32 tables it can never fill (a resize that grows the disk adds slots: growSlots).
        this.slotLimit = backingLevel ? options.backingL2CacheTables(cluster) : options.l2CacheTables();
        this.slots = new L2Slot[slotsFor(virtualSize)];
        try {
            for (int i = 0; i < slots.length; i++) {
                slots[i] = new L2Slot(i, cluster, Math.max(alignment, 8));
                slots[i].allocate();
            }
            int reserved = Math.min(bounceMax, backingLevel ? 1 : BOUNCE_RESERVED);
            for (int i = 0; i < reserved; i++) {
                bouncePool[bounceFree++] = new Bounce(cluster, alignment);
                bounceCreated++;
            }
        } catch (OutOfMemoryError e) {
            throw DirectMemory.exhausted(meta.path, (long) slots.length * cluster + (long) Math.min(bounceMax,
                    backingLevel ? 1 : BOUNCE_RESERVED) * bounceBytes, "its " + slots.length + " L2 cache tables of "
                    + cluster + " bytes (l2_cache_tables) and its first bounce buffers", e);
        }
        this.validatedL2 = new long[(meta.header.l1Size + 63) / 64 + 1];
        l1Vec.add(meta.l1.address(), meta.l1WriteBytes);
        this.refill = new Refill();
        this.headerSector = new NativeBuffer(alignment, alignment);
        headerVec.add(headerSector.address(), alignment);
        this.active = readOnly || !options.incoming();
        if (!readOnly) {
            try {
                host.read(0, headerSector, alignment);
                if (active) {
                    clearAutoclear();
                }
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }
    }

    /**
     * {@link Qcow2Host#writeDurably} of the synchronous metadata steps (the autoclear bits, a
     * resize's header, L1 table and refcounts, the reserved clusters handed back). A failure
     * after which the image may hold part of the write, or holds it only in a cache whose
     * writeback failed (a failed fdatasync reports its error once: it is consumed), is sticky as a
     * failed flush is ({@link #flushFailed}): every later guest FLUSH fails with EIO and the image
     * is not handed over, since what the disk holds, and whether the guest's earlier writes
     * reached it, is unknown. A write the host refused before any of it reached the image
     * ({@link Qcow2Host.NotWritten}) changes nothing and is only reported.
     */
    private void writeDurably(long position, NativeBuffer src, int length) throws IOException {
        try {
            host.writeDurably(position, src, length);
        } catch (Qcow2Host.NotWritten e) {
            throw e;
        } catch (IOException | RuntimeException e) {
            if (!flushFailed) {
                System.err.println("vblk: qcow2 " + meta.path + ": a durable metadata write at " + position
                        + " failed, every later FLUSH fails with EIO: " + e.getMessage());
            }
            flushFailed = true;
            throw e;
        }
    }

    /**
     * Clears the header's autoclear feature bits, durably, before anything is written (as QEMU
     * does at a writable open). qcow2.txt: a writer that does not maintain what they describe
     * (persistent dirty bitmaps) must clear them first, or QEMU later trusts a bitmap that misses
     * this writer's writes (incremental backups silently incomplete). Writable v3 images only.
     */
    private void clearAutoclear() throws IOException {
        if (readOnly || !v3) {
            return;
        }
        UnsafeBuffer h = headerSector.buffer();
        long bits = h.getLong(AUTOCLEAR_FEATURES_OFFSET, ByteOrder.BIG_ENDIAN);
        if (bits == 0) {
            return;
        }
        h.putLong(AUTOCLEAR_FEATURES_OFFSET, 0L, ByteOrder.BIG_ENDIAN);
        writeDurably(0, headerSector, alignment);
        System.err.println("vblk: qcow2 " + meta.path + ": autoclear features 0x" + Long.toHexString(bits)
                + " cleared (bitmaps are not maintained)");
    }

    // ------------------------------------------------------------------ identity

    @Override
    public String format() {
        return "qcow2";
    }

    @Override
    public long sizeBytes() {
        return virtualSize;
    }

    @Override
    public boolean readOnly() {
        return readOnly;
    }

    /**
     * Whether a flush of the image failed: every later FLUSH fails, and so does the factory's
     * sync (a hand-over's). Written by the I/O thread; read once it has stopped.
     */
    public boolean flushFailed() {
        return flushFailed;
    }

    @Override
    public int depth() {
        return freeReqs.length;
    }

    @Override
    public int freeSlots() {
        return freeReqCount;
    }

    /** Why the image was marked corrupt, or null. */
    public String corruptReason() {
        return corruptReason;
    }

    /** Where the L1 table lies in the image (tests and diagnostics). */
    long l1TableOffset() {
        return meta.header.l1TableOffset;
    }

    /** The metadata in use (tests: the snapshots' cluster set it holds). */
    Qcow2Image metadata() {
        return meta;
    }

    /** The header this driver opened (for tests and diagnostics). */
    public String describe() {
        return meta.header.toString();
    }

    // ------------------------------------------------------------------ requests

    @Override
    public int read(long offset, IoVector buffers, long tag) {
        return accept(OP_READ, offset, buffers.totalLength(), buffers, tag);
    }

    @Override
    public int write(long offset, IoVector buffers, long tag) {
        if (readOnly) {
            return -Errno.EROFS;
        }
        return accept(OP_WRITE, offset, buffers.totalLength(), buffers, tag);
    }

    @Override
    public int flush(long tag) {
        return accept(OP_FLUSH, 0, 0, null, tag);
    }

    @Override
    public int discard(long offset, long length, long tag) {
        if (readOnly) {
            return -Errno.EROFS;
        }
        return accept(OP_DISCARD, offset, length, null, tag);
    }

    @Override
    public int writeZeroes(long offset, long length, boolean mayUnmap, long tag) {
        if (readOnly) {
            return -Errno.EROFS;
        }
        return accept(OP_WRITE_ZEROES, offset, length, null, tag);
    }

    private int accept(int op, long offset, long length, IoVector buffers, long tag) {
        if (closed) {
            return -Errno.EBADF;
        }
        if (!active) {
            // Inactive: another backend owns the image and the tables here may be stale.
            return op == OP_READ || op == OP_FLUSH ? -Errno.EIO : -Errno.EROFS;
        }
        if (!started) {
            reloadAtStart();
            if (!started) {
                return -Errno.EIO;
            }
        }
        if (corrupt || fatalError != 0) {
            return -Errno.EIO;
        }
        if (offset < 0 || length < 0 || offset > virtualSize || length > virtualSize - offset
                || ((offset | length) & (SECTOR_BYTES - 1)) != 0) {
            return -Errno.EINVAL;
        }
        if (freeReqCount == 0) {
            return -Errno.EAGAIN;
        }
        Req r = reqs[freeReqs[--freeReqCount]];
        r.busy = true;
        accepted++;
        r.begin(op, offset, length, buffers, tag);
        run(r);
        return 0;
    }

    /**
     * Reads the metadata again when the first request arrives, once, on the I/O thread (a few
     * small file reads; the internal snapshots' scan, up to 64 MiB of L1 tables, is not repeated
     * while the header names the same snapshot table: {@link Qcow2Image#snapshots}). A migration's
     * destination opens the image while the source still writes to it; the source stops, drains
     * and syncs before the destination's guest runs, so the tables as they are at the first
     * request are the ones to use. Nothing read at open (L1, refcount table, the end of the file
     * where clusters are allocated) is trusted past it.
     */
    private void reloadAtStart() {
        started = true;
        Qcow2Image fresh;
        try {
            // The snapshots are taken over, not scanned again, while the header names the same table.
            fresh = Qcow2Image.read(host, alignment, true, backingLevel, l1Allowance, setAllowance, meta);
        } catch (DirectMemory.Exhausted | OutOfMemoryError e) {
            // No room now (the direct-memory pool every disk shares, or the heap): this request
            // fails (EIO, accept) and the next one reads again; the disk is not given up.
            started = false;
            if (!reloadStarved) {
                reloadStarved = true;
                System.err.println("vblk: qcow2 " + meta.path + ": no memory to read the metadata again at the first"
                        + " request, failing requests with EIO until there is: " + e.getMessage());
            }
            return;
        } catch (RuntimeException e) {
            // Not marked corrupt: that would write back the header sector read at open (old
            // size, L1 and refcount offsets) over whoever changed the image since.
            changedBeforeStart("its metadata is now unacceptable: " + e.getMessage());
            return;
        }
        if (fresh.clusterSize != cluster || fresh.header.virtualSize != virtualSize
                || fresh.header.compressionType != compressionType || (fresh.header.version >= 3) != v3) {
            changedBeforeStart("its version, cluster size, virtual size or compression type changed");
            return;
        }
        // What a writable open refused (Qcow2.open) is refused here too; unknown incompatible
        // features were refused by the parse above. Not marked corrupt: the image is not.
        Qcow2Header h = fresh.header;
        String refused = readOnly ? null
                : h.corrupt() ? "it is marked corrupt"
                : h.dirty() ? "its dirty bit is set (lazy refcounts not written back)"
                : h.nbSnapshots > 0 ? "it has internal snapshots now" : null;
        if (refused != null) {
            changedBeforeStart(refused);
            return;
        }
        if (fresh.fileSize > host.sizeBytes() && !readOnly && host.extendTo(fresh.fileSize) < 0) {
            // Qcow2Image.read learnt the size the file has; one that grew since cannot be relied on.
            System.err.println("vblk: qcow2 " + meta.path + " changed size before the first request, failing its"
                    + " requests with EIO: " + host.sizeBytes() + " bytes, its metadata read from " + fresh.fileSize);
            fatal(-Errno.EIO);
            return;
        }
        adopt(fresh);
        if (corrupt || fatalError != 0) {
            return; // the header sector was not read again: never written back
        }
        try {
            clearAutoclear(); // set again since the open (a migration's source): before any write
        } catch (IOException e) {
            System.err.println("vblk: qcow2 " + meta.path + ": cannot clear the autoclear features: " + e.getMessage());
            fatal(-Errno.EIO);
            return;
        }
        growRefcountTableIfShort();
    }

    /**
     * The image changed since the open into something this driver does not take (another writer
     * was at it): its requests fail with EIO, and nothing is written to it, the corrupt bit
     * included (the header sector in memory is the one read at open: writing it back would put
     * the old size and table offsets over the other writer's header; nor is the image corrupt).
     */
    private void changedBeforeStart(String why) {
        System.err.println("vblk: qcow2 " + meta.path + " changed before the first request, failing its requests"
                + " with EIO: " + why);
        fatal(-Errno.EIO);
    }

    /**
     * Takes metadata read afresh: caches emptied, allocation restarting where the image now ends.
     * A header sector that cannot be read again fails the image (EIO), never marks it corrupt:
     * that would write the sector, whose contents are then unknown, over the header.
     */
    private void adopt(Qcow2Image fresh) {
        try {
            resetTo(fresh);
        } catch (IOException e) {
            System.err.println("vblk: qcow2 " + meta.path + ": cannot read the header again, failing its requests with EIO: "
                    + e.getMessage());
            fatal(-Errno.EIO);
        }
    }

    /**
     * Replaces every piece of state derived from the image's metadata with one built from
     * {@code fresh} (as a new driver would open it): the header, the L1 and refcount tables,
     * every L2 cache slot emptied and zeroed, the tables checked so far, the L1 write-back's
     * generations, the allocation point and its reservation, the header sector. Only with
     * nothing in flight (the first request, or an activation with the queues stopped).
     */
    private void resetTo(Qcow2Image fresh) throws IOException {
        meta = fresh;
        openedFileSize = fresh.fileSize;
        entryLimit = Math.min(fresh.fileSize, fresh.allocationEnd);
        validatedL2 = new long[(fresh.header.l1Size + 63) / 64 + 1];
        for (L2Slot s : slots) {
            s.forget();
        }
        unwrittenSlots = 0;
        lastSlot = null;
        clockHand = 0;
        l1Vec.clear();
        l1Vec.add(meta.l1.address(), meta.l1WriteBytes);
        l1Gen = 0;
        l1Written = 0;
        l1Writing = false;
        l1WritingGen = 0;
        l1DirtySeq = 0;
        l1WritingSeq = 0;
        metadataRetry = false;
        freedCount = 0; // what the old tables gave up: they are another writer's now
        refill = new Refill();
        if (!readOnly) {
            host.read(0, headerSector, alignment);
        }
    }

    // ------------------------------------------------------------------ migration hand-over

    @Override
    public boolean active() {
        return active;
    }

    /**
     * Takes the image over (QEMU's bdrv_activate, qcow2_co_invalidate_cache): the writer's
     * locks first (refused while another backend holds them: the driver stays inactive), then
     * the header, L1 and refcount tables read afresh and checked as at open, and every cached
     * L2 table, checked-table mark and allocation point dropped ({@link #resetTo}): the source
     * changed the file while this driver was inactive. Nothing read before is trusted. A header
     * that changed shape (cluster size, virtual size, compression), a dirty or corrupt image, or
     * internal snapshots refuse the activation and give the locks back.
     */
    @Override
    public boolean activate() throws IOException {
        if (active) {
            return false;
        }
        if (closed) {
            throw new IOException("qcow2 " + meta.path + ": closed");
        }
        host.activateLocks();
        try {
            host.refreshSize();
            // Read into the tables it replaces (nothing is in flight, nothing served while
            // inactive): the ones read at the inactive open are not held beside the new ones.
            Qcow2Image fresh = readAgain(false, meta); // nothing written until the image is found acceptable
            Qcow2Header h = fresh.header;
            String refused = (h.version >= 3) != v3 ? "its version changed to " + h.version
                    : fresh.clusterSize != cluster ? "its cluster size changed"
                    : h.virtualSize != virtualSize ? "its virtual size changed from " + virtualSize + " to " + h.virtualSize
                    : h.compressionType != compressionType ? "its compression type changed"
                    : h.corrupt() ? "it is marked corrupt"
                    : h.dirty() ? "the dirty bit is set (the source did not write its refcounts back)"
                    : h.nbSnapshots > 0 ? "it has internal snapshots now" : null;
            if (refused != null) {
                throw new IOException("qcow2 " + meta.path + " not activated: " + refused);
            }
            if ((fresh.fileSize & clusterMask) != 0) {
                fresh = readAgain(true, fresh); // now the file may be rounded to whole clusters, as at an open
            }
            if (fresh.fileSize > host.sizeBytes() && host.extendTo(fresh.fileSize) < 0) {
                // Qcow2Image.read learnt the size the file has; one that grew since cannot be relied on.
                throw new IOException("qcow2 " + meta.path + " not activated: its file is " + host.sizeBytes()
                        + " bytes, not the " + fresh.fileSize + " its metadata was read from");
            }
            resetTo(fresh);
            clearAutoclear(); // before this side's first write
        } catch (IOException | RuntimeException e) {
            try {
                host.inactivateLocks();
            } catch (RuntimeException suppressed) {
                e.addSuppressed(suppressed);
            }
            throw e;
        }
        started = true;
        active = true;
        growRefcountTableIfShort(); // the source may have left it too small for this side's allocator
        return true;
    }

    /** Whether an L1 or L2 table in memory has changes not yet written to the image. */
    private boolean metadataUnwritten() {
        if (metadataRetry || l1Writing || l1Gen != l1Written) {
            return true;
        }
        for (L2Slot s : slots) {
            if (s.writing || s.writeWanted || s.gen != s.writtenGen) {
                return true;
            }
        }
        return false;
    }

    /**
     * The image's metadata read again for an activation, into {@code previous}'s L1 and
     * refcount tables when their sizes still fit, its metadata set dropped first
     * ({@link Qcow2Image#read(Qcow2Host, int, boolean, boolean, long, long, Qcow2Image)}): a
     * 32 MiB L1 table was held twice for the moment. {@code previous} is used up; an inactive
     * driver serves and writes nothing from it, and a refused activation leaves the driver
     * inactive (the next one reads again).
     */
    private Qcow2Image readAgain(boolean mayWrite, Qcow2Image previous) throws IOException {
        try {
            return Qcow2Image.read(host, alignment, mayWrite, false, Qcow2Options.CHAIN_L1_BUDGET_BYTES,
                    Qcow2Options.CHAIN_METADATA_SET_BUDGET_BYTES, previous);
        } catch (RuntimeException e) {
            throw new IOException("qcow2 " + meta.path + ": cannot read the image again at activation: " + e.getMessage(), e);
        }
    }

    /**
     * Hands the image over (QEMU's bdrv_inactivate, qcow2_inactivate): requests and metadata
     * writes finished, the clusters reserved but unused returned (their refcounts back to 0,
     * the file cut back to the allocation point), all of it made durable, then the writer's
     * locks dropped to the inactive set. An inactive driver writes nothing, not even at close
     * (a close after the hand-over would otherwise cut off clusters the destination allocated).
     * The dirty bit is never set by this driver, so there is none to clear.
     */
    @Override
    public boolean inactivate() throws IOException {
        if (!active || readOnly) {
            return false;
        }
        if (closed) {
            throw new IOException("qcow2 " + meta.path + ": closed");
        }
        quiesce();
        writeBackMetadata("not handed over");
        if (!corrupt && fatalError == 0) {
            refill.release();
        }
        int rc = host.syncData();
        if (rc < 0 || flushFailed) {
            // An earlier failed fdatasync consumed the error this one would report (flushFailed).
            flushFailed = true;
            throw new IOException("qcow2 " + meta.path + ": fdatasync before the hand-over: "
                    + Errno.describe(rc < 0 ? -rc : Errno.EIO) + (rc < 0 ? "" : " (an earlier flush failed)"));
        }
        host.inactivateLocks();
        active = false;
        return true;
    }

    /**
     * After {@link #quiesce}: a table write that met a full back end waits for a retry, which
     * quiesce does not wait for. Written now, before the tables in memory are dropped (a hand-over,
     * a resize's {@link #resetTo}), or refused with {@code refusal} (the tables would be lost).
     */
    private void writeBackMetadata(String refusal) throws IOException {
        for (int i = 0; metadataUnwritten() && !corrupt && fatalError == 0; i++) {
            if (i == 100) {
                throw new IOException("qcow2 " + meta.path + ": metadata could not be written back: " + refusal);
            }
            for (L2Slot s : slots) {
                s.writeWanted |= !s.writing && s.gen != s.writtenGen;
            }
            metadataRetry = true;
            retryMetadataWrites();
            quiesce();
        }
    }

    // ------------------------------------------------------------------ online resize

    /**
     * Online resize (qcow2.txt): growing writes the new L1 entries (zeros) durably, in the L1
     * table's clusters when they have room, else in a new table at the end of the image whose
     * clusters are counted first (the old table's are freed last, so a crash leaks at most);
     * then the header's {@code size}, {@code l1_size} and {@code l1_table_offset} in one sector
     * write, made durable. Shrinking only drops a tail that holds no L2 table (nothing allocated
     * past the new end); anything else is refused: {@code qemu-img resize --shrink} offline does
     * it. Runs on the I/O thread: requests in flight finish first (their completions are
     * delivered by the next {@link #poll}).
     */
    @Override
    public void resize(long newSizeBytes) throws IOException {
        if (closed) {
            throw new IOException("qcow2 " + meta.path + " is closed");
        }
        if (readOnly) {
            throw new IOException("qcow2 " + meta.path + " is read-only: it cannot be resized");
        }
        if (!active) {
            throw new IOException("qcow2 " + meta.path + " is inactive (a migration's other side owns it): it cannot be resized");
        }
        if (newSizeBytes <= 0 || (newSizeBytes & (SECTOR_BYTES - 1)) != 0 || newSizeBytes > MAX_VIRTUAL_SIZE) {
            throw new IllegalArgumentException("qcow2: size " + newSizeBytes + " is not a positive multiple of 512 up to "
                    + MAX_VIRTUAL_SIZE);
        }
        if (!started) {
            reloadAtStart();
            if (!started) {
                throw new IOException("qcow2 " + meta.path + ": no memory to read its metadata again: not resized");
            }
        }
        if (corrupt || fatalError != 0) {
            throw new IOException("qcow2 " + meta.path + " failed earlier (" + (corrupt ? corruptReason : "errno "
                    + -fatalError) + "): not resized");
        }
        if (meta.header.nbSnapshots > 0) {
            throw new IOException("qcow2 " + meta.path + " has internal snapshots: not resized");
        }
        if (newSizeBytes == virtualSize) {
            return;
        }
        if (!v3 && newSizeBytes > virtualSize && backing != null && backingSize > virtualSize) {
            // The new area must read zeros, not the backing file's bytes (zeroOverBacking), and
            // a version 2 image has no zero clusters: it would take clusters of zeros written here.
            throw new IOException("qcow2 " + meta.path + " (version 2) is shorter than its backing file: growing it"
                    + " online would show the backing file's bytes in the new area; grow the stopped image with"
                    + " qemu-img resize, or make it version 3 first (qemu-img amend -o compat=1.1)");
        }
        quiesce();
        writeBackMetadata("not resized"); // resetTo below drops every slot
        if (corrupt || fatalError != 0) {
            throw new IOException("qcow2 " + meta.path + " failed (" + (corrupt ? corruptReason : "errno "
                    + -fatalError) + "): not resized");
        }
        refill.release(); // reserved clusters back to refcount 0: allocation restarts after the resize
        long oldSize = virtualSize;
        long l2Span = (long) cluster << l2Bits;
        int oldL1 = meta.header.l1Size;
        long neededL1 = (newSizeBytes + l2Span - 1) / l2Span;
        long l1Offset = meta.header.l1TableOffset;
        int newL1 = oldL1;
        if (newSizeBytes < virtualSize) {
            for (long i = newSizeBytes / l2Span; i < oldL1; i++) {
                if (meta.l1Entry((int) i) != 0) {
                    throw new IOException("qcow2 " + meta.path + ": shrinking to " + newSizeBytes + " bytes would drop"
                            + " allocated clusters (an L2 table at L1 index " + i + "); online shrink only drops an"
                            + " unallocated tail: use qemu-img resize --shrink on the stopped image");
                }
            }
        } else if (neededL1 > oldL1) {
            if (neededL1 * 8 > MAX_L1_BYTES) {
                throw new IllegalArgumentException("qcow2: " + newSizeBytes + " bytes need an L1 table over QEMU's limit");
            }
            newL1 = (int) neededL1;
        }
        growSlots(newSizeBytes);
        try {
            if (newL1 != oldL1) {
                l1Offset = growL1(oldL1, newL1);
            }
            UnsafeBuffer h = headerSector.buffer();
            h.putLong(SIZE_OFFSET, newSizeBytes, ByteOrder.BIG_ENDIAN);
            h.putInt(L1_SIZE_OFFSET, newL1, ByteOrder.BIG_ENDIAN);
            h.putLong(L1_TABLE_OFFSET_OFFSET, l1Offset, ByteOrder.BIG_ENDIAN);
            writeDurably(0, headerSector, alignment);
            if (l1Offset != meta.header.l1TableOffset) {
                long oldClusters = Qcow2Image.roundUp((long) oldL1 * 8, cluster) >>> clusterBits;
                setRefcountsDurably(meta.header.l1TableOffset, oldClusters, 0); // the old table: freed last
            }
        } catch (IOException | RuntimeException e) {
            if (recoverFromFailedResize(e, newSizeBytes, oldL1)) {
                zeroOverBacking(oldSize); // the header reached the disk: the image has the new size, as the guest is told
                return;
            }
            throw e;
        }
        Qcow2Image fresh;
        try {
            fresh = Qcow2Image.read(host, alignment);
        } catch (DirectMemory.Exhausted | OutOfMemoryError e) {
            // Not corruption: the image is resized on disk, its tables here stale; never marked.
            fatal(-Errno.EIO);
            throw new IOException("qcow2 " + meta.path + ": resized, but no memory to read its metadata again:"
                    + " failing its requests with EIO until it is opened again (" + e.getMessage() + ")");
        } catch (RuntimeException e) {
            markCorrupt("metadata unacceptable after a resize: " + e.getMessage());
            throw new IOException("qcow2 " + meta.path + ": " + corruptReason, e);
        }
        virtualSize = fresh.header.virtualSize;
        adopt(fresh);
        growRefcountTableIfShort();
        zeroOverBacking(oldSize);
    }

    /**
     * After a grow from {@code oldSize}: where the backing file is longer than the old disk, the
     * new area would show its bytes (reads go to the backing file wherever the overlay has no
     * cluster). QEMU's bdrv_co_truncate makes them zeros (BDRV_REQ_ZERO_WRITE, qcow2_co_truncate:
     * qcow2_subcluster_zeroize, then explicit zeros for the partial cluster at the old end);
     * so does this over {@code [oldSize, min(new size, backing size rounded up to a cluster))}:
     * ZERO entries for the whole clusters ({@link #zeroWholeClusters}), and a WRITE_ZEROES of the
     * driver's own for a cluster the range starts or ends inside (copied on write with the part
     * in the range zeroed). A version 2 image, which has no zero flag, is refused such a grow
     * before anything changes ({@link #resize}). The header already holds the new size (as in QEMU): a crash before the
     * zeroing ends can show the backing file's bytes there after a restart. A zeroing that fails
     * fails the image (EIO), rather than serve the backing file's bytes in the new area.
     */
    private void zeroOverBacking(long oldSize) throws IOException {
        long to = Math.min(virtualSize, Qcow2Image.roundUp(backingSize, cluster));
        if (backing == null || !v3 || to <= oldSize || corrupt || fatalError != 0) {
            return;
        }
        long aligned = Math.min(to, Qcow2Image.roundUp(oldSize, cluster));
        long wholeEnd = Math.max(aligned, to & ~clusterMask); // a new size inside a cluster: its head is a piece too
        long rc = aligned > oldSize ? zeroGrownArea(oldSize, aligned) : 0;
        if (rc >= 0 && wholeEnd > aligned) {
            rc = zeroWholeClusters(aligned, wholeEnd);
        }
        if (rc >= 0 && to > wholeEnd) {
            rc = zeroGrownArea(wholeEnd, to);
        }
        if (rc < 0) {
            String why = rc == Long.MIN_VALUE ? "it did not finish in 120 s" : Errno.describe((int) -rc);
            System.err.println("vblk: qcow2 " + meta.path + ": grown to " + virtualSize + " bytes, but the area past"
                    + " the old end, where the backing file is longer, could not be zeroed (" + why + "): failing its"
                    + " requests with EIO");
            fatal(rc == Long.MIN_VALUE ? -Errno.EIO : (int) rc);
            throw new IOException("qcow2 " + meta.path + ": grown, but the new area over the longer backing file could"
                    + " not be zeroed (" + why + "): the image fails its requests with EIO until it is opened again");
        }
    }

    /**
     * ZERO entries for the whole clusters {@code [from, to)} (both cluster-aligned) of the grown area, an L2 table at a
     * time: its first cluster through {@link #zeroGrownArea} (which creates the table when there
     * is none, with the allocator and the ordering of a guest's request), the rest of its entries,
     * all 0 (no cluster, reads the backing file), set in the table and the table written durably
     * in one go, in the cache slot holding it when there is one (every slot is clean: nothing
     * else runs). One request per cluster took 7 ms each (2 minutes for 1 GiB of 64 KiB
     * clusters). A table with any other entry in the range goes through the request whole.
     */
    private long zeroWholeClusters(long from, long to) throws IOException {
        long l2Span = (long) cluster << l2Bits;
        NativeBuffer read = null;
        for (long pos = from; pos < to; ) {
            long spanEnd = Math.min(to, (pos / l2Span + 1) * l2Span);
            long rc = zeroGrownArea(pos, pos + cluster);
            if (rc < 0 || pos + cluster >= spanEnd) {
                if (rc < 0) {
                    return rc;
                }
                pos = spanEnd;
                continue;
            }
            long l2Offset = meta.l1Entry((int) (pos / l2Span)) & L1E_OFFSET_MASK;
            NativeBuffer table = null;
            for (L2Slot sl : slots) {
                if (sl.l2Offset == l2Offset && sl.buffer != null && !sl.loading) {
                    table = sl.buffer;
                }
            }
            if (table == null) {
                read = read != null ? read : resizeBuffer(cluster, "an L2 table");
                table = read;
                host.read(l2Offset, table, cluster);
            }
            UnsafeBuffer t = table.buffer();
            int firstIndex = (int) (((pos + cluster) >>> clusterBits) & ((1L << l2Bits) - 1));
            int endIndex = firstIndex + (int) ((spanEnd - pos - cluster) >>> clusterBits);
            boolean allFree = true;
            for (int i = firstIndex; i < endIndex && allFree; i++) {
                allFree = t.getLong(i * 8, ByteOrder.BIG_ENDIAN) == 0;
            }
            if (!allFree) {
                rc = zeroGrownArea(pos + cluster, spanEnd);
                if (rc < 0) {
                    return rc;
                }
            } else {
                for (int i = firstIndex; i < endIndex; i++) {
                    t.putLong(i * 8, OFLAG_ZERO, ByteOrder.BIG_ENDIAN);
                }
                writeDurably(l2Offset, table, cluster);
            }
            pos = spanEnd;
        }
        return 0;
    }

    /**
     * Runs a WRITE_ZEROES of {@code [from, to)} through the state machine on the driver's own
     * request (the one past the depth, never handed to a guest) and waits for it here, on the
     * I/O thread, as {@link #quiesce} waits; returns its result, or Long.MIN_VALUE when it did
     * not finish in 120 s (it then finishes unseen: {@link #poll} drops it).
     */
    private long zeroGrownArea(long from, long to) throws IOException {
        Req r = reqs[freeReqs.length];
        r.busy = true;
        accepted++;
        r.begin(OP_WRITE_ZEROES, from, to - from, null, -1L);
        run(r);
        long deadline = System.nanoTime() + 120_000_000_000L;
        while (true) {
            submit();
            poll((tag, result) -> { }, 0);
            if (r.phase == PH_FINISH && r.pending == 0 && listed(done, r)) {
                break;
            }
            if (System.nanoTime() > deadline) {
                return Long.MIN_VALUE;
            }
            if (io.awaitCompletions(5) > 0) {
                io.acknowledgeCompletions();
            }
        }
        // Out of the done list, never delivered.
        Req x;
        int n = done.size;
        for (int i = 0; i < n && (x = done.poll()) != null; i++) {
            if (x != r) {
                done.add(x);
            }
        }
        r.busy = false;
        r.end();
        accepted--;
        return r.result;
    }

    private static boolean listed(ReqList list, Req r) {
        for (Req x = list.head; x != null; x = x.next) {
            if (x == r) {
                return true;
            }
        }
        return false;
    }

    /**
     * After a resize step failed part-way: some of it may be on the image (new L1 clusters
     * counted and written, a header whose write reported an error after it reached the disk, the
     * old L1 table's clusters not freed), so the header sector, the L1 table, the allocation
     * point and the refill's refcount block in memory may no longer match it (clusters holding
     * the new L1 table handed out as fresh). Reads the metadata again and takes it, the virtual
     * size included (the image's header is the truth). Returns true when that header has the new
     * size: the resize happened, and what failed after it only leaked the old L1 table's clusters
     * (logged; {@code qemu-img check -r leaks} reclaims them). False when the image kept its old
     * size (the resize failed), or when it is unreadable: then the image is failed (EIO), not
     * marked corrupt, which would write back a header sector holding the new size the disk may
     * not have.
     */
    private boolean recoverFromFailedResize(Exception e, long newSizeBytes, int oldL1) {
        Qcow2Header old = meta.header;
        try {
            Qcow2Image fresh = Qcow2Image.read(host, alignment);
            virtualSize = fresh.header.virtualSize;
            adopt(fresh);
        } catch (RuntimeException re) {
            e.addSuppressed(re);
            System.err.println("vblk: qcow2 " + meta.path + ": metadata unreadable after a failed resize, failing its"
                    + " requests with EIO: " + re.getMessage());
            fatal(-Errno.EIO);
            return false;
        }
        if (corrupt || fatalError != 0 || virtualSize != newSizeBytes) {
            return false;
        }
        String leaked = meta.header.l1TableOffset == old.l1TableOffset ? "nothing leaked"
                : "up to " + (Qcow2Image.roundUp((long) oldL1 * 8, cluster) >>> clusterBits)
                        + " cluster(s) of the old L1 table at offset " + old.l1TableOffset
                        + " leaked (qemu-img check -r leaks reclaims them)";
        System.err.println("vblk: qcow2 " + meta.path + ": resized to " + newSizeBytes + " bytes, but a step after the"
                + " header write failed (" + e.getMessage() + "): " + leaked);
        return true;
    }

    /**
     * Grows the refcount table (as QEMU's qcow2_refcount_area does on need) when it cannot cover
     * the file this disk may grow to: the file as it is, a new cluster for every guest cluster and
     * L2 table, the allocator's reservation, and the refcount blocks for all of it. qemu-img makes
     * a one-cluster table and QEMU grows it on need; the allocator here never did (ENOSPC once the
     * file passed it: 4 GiB with 4 KiB clusters, 2 MiB with 512-byte ones and 64-bit refcounts).
     * With nothing in flight (the first request, an activation, a resize), synchronously, each step
     * durable before the next names it: the new table and the refcount blocks it needs for its own
     * clusters at the allocation point, counting themselves; the table with the old entries and
     * the new blocks; the header's refcount_table_offset and refcount_table_clusters in one sector;
     * then the old table's clusters freed; the metadata read again. A crash leaks at most. Up to
     * QEMU's 8 MiB table; a failure is logged and the image goes on as before (ENOSPC later).
     */
    private void growRefcountTableIfShort() {
        if (readOnly || !active || corrupt || fatalError != 0 || meta.reftable == null) {
            return;
        }
        int order = meta.header.refcountOrder;
        long perBlock = ((long) cluster * 8) >>> order;
        long blockSpan = perBlock << clusterBits; // file bytes one refcount block covers
        long l2Span = (long) cluster << l2Bits;
        long maxEntries = MAX_REFTABLE_BYTES / 8;
        long need = Qcow2Image.roundUp(Math.max(refill.next, openedFileSize), cluster)
                + Qcow2Image.roundUp(virtualSize, cluster) + ((virtualSize + l2Span - 1) / l2Span) * cluster
                + (RESERVE_CLUSTERS + 16L) * cluster;
        long entries = (need + blockSpan - 1) / blockSpan;
        for (int i = 0; i < 8; i++) { // the blocks and the table count too: a fixed point in a few steps
            long tableBytes = Qcow2Image.roundUp(entries * 8, cluster);
            long total = need + entries * cluster + tableBytes;
            long e = (total + blockSpan - 1) / blockSpan;
            if (e <= entries) {
                break;
            }
            entries = e;
        }
        entries = Math.min(entries, maxEntries);
        if (entries <= meta.reftableEntries) {
            return;
        }
        Qcow2Header old = meta.header;
        try {
            growRefcountTable((int) entries);
        } catch (IOException | RuntimeException e) {
            System.err.println("vblk: qcow2 " + meta.path + ": cannot grow the refcount table to cover " + entries
                    + " refcount blocks (allocation fails with ENOSPC past what it covers): " + e.getMessage());
        }
        try {
            Qcow2Image fresh = Qcow2Image.read(host, alignment);
            adopt(fresh);
        } catch (RuntimeException e) {
            System.err.println("vblk: qcow2 " + meta.path + ": metadata unreadable after growing the refcount table,"
                    + " failing its requests with EIO: " + e.getMessage());
            fatal(-Errno.EIO);
            return;
        }
        if (meta.header.refcountTableOffset != old.refcountTableOffset) {
            System.err.println("vblk: qcow2 " + meta.path + ": refcount table grown from " + old.refcountTableClusters
                    + " to " + meta.header.refcountTableClusters + " cluster(s)");
        }
    }

    private void growRefcountTable(int entries) throws IOException {
        int order = meta.header.refcountOrder;
        long perBlock = ((long) cluster * 8) >>> order;
        long tableBytes = Qcow2Image.roundUp((long) entries * 8, cluster);
        long tableClusters = tableBytes >>> clusterBits;
        long at = Qcow2Image.roundUp(Math.max(refill.next, host.file() ? host.storedBytes() : 0), cluster);
        long first = at >>> clusterBits;
        // New refcount blocks after the table, for the block indices of the area that have none.
        long blocks = 0;
        for (int i = 0; i < 16; i++) {
            long last = first + tableClusters + blocks - 1;
            long missing = 0;
            for (long bi = first / perBlock; bi <= last / perBlock; bi++) {
                if (bi >= meta.reftableEntries || (meta.reftableEntry((int) bi) & REFT_OFFSET_MASK) == 0) {
                    missing++;
                }
            }
            if (missing == blocks) {
                break;
            }
            blocks = missing;
        }
        long areaClusters = tableClusters + blocks;
        long end = (first + areaClusters) << clusterBits;
        if (end / ((long) cluster * perBlock) >= entries) {
            throw new IOException("the new table would not cover itself");
        }
        int rc = host.extendTo(end);
        if (rc < 0) {
            throw new IOException("no room for it (" + Errno.describe(-rc) + ")");
        }
        NativeBuffer table = resizeBuffer((int) tableBytes, "a refcount table");
        UnsafeApi.copyMemory(meta.reftable.address(), table.address(),
                Math.min((long) meta.reftableEntries * 8, meta.reftable.capacity()));
        // 1. The new blocks, each counting the area's clusters it covers (itself among them).
        NativeBuffer block = resizeBuffer(cluster, "a refcount block");
        long nextBlock = first + tableClusters;
        for (long bi = first / perBlock; bi <= (first + areaClusters - 1) / perBlock; bi++) {
            boolean exists = bi < meta.reftableEntries && (meta.reftableEntry((int) bi) & REFT_OFFSET_MASK) != 0;
            long from = Math.max(first, bi * perBlock);
            long to = Math.min(first + areaClusters, (bi + 1) * perBlock);
            if (exists) {
                setRefcountsDurably(from << clusterBits, to - from, 1);
                continue;
            }
            UnsafeApi.setMemory(block.address(), cluster, (byte) 0);
            for (long c = from; c < to; c++) {
                setRefcount(block.buffer(), order, (int) (c - bi * perBlock), 1);
            }
            writeDurably(nextBlock << clusterBits, block, cluster);
            table.buffer().putLong((int) (bi * 8), nextBlock << clusterBits, ByteOrder.BIG_ENDIAN);
            nextBlock++;
        }
        // 2. The table, then the header naming it.
        writeDurably(at, table, (int) tableBytes);
        UnsafeBuffer h = headerSector.buffer();
        h.putLong(REFCOUNT_TABLE_OFFSET_OFFSET, at, ByteOrder.BIG_ENDIAN);
        h.putInt(REFCOUNT_TABLE_CLUSTERS_OFFSET, (int) tableClusters, ByteOrder.BIG_ENDIAN);
        writeDurably(0, headerSector, alignment);
        // 3. The old table's clusters freed last (its blocks are the new table's too).
        setRefcountsDurably(meta.header.refcountTableOffset, meta.header.refcountTableClusters, 0);
    }

    /**
     * Writes an L1 table of {@code newL1} entries (the old ones, then zeros) durably and returns
     * its offset: in place when the old table's clusters hold it, else in new clusters at the
     * end of the image, counted before the table is written.
     */
    private long growL1(int oldL1, int newL1) throws IOException {
        long oldBytes = Qcow2Image.roundUp((long) oldL1 * 8, cluster);
        long newBytes = Qcow2Image.roundUp((long) newL1 * 8, cluster);
        int writeBytes = (int) Math.max(alignment, Qcow2Image.roundUp((long) newL1 * 8, alignment));
        NativeBuffer table = resizeBuffer(writeBytes, "the grown L1 table");
        UnsafeApi.copyMemory(meta.l1.address(), table.address(), Math.min((long) oldL1 * 8, meta.l1.capacity()));
        long at = meta.header.l1TableOffset;
        if (newBytes > oldBytes) {
            at = Qcow2Image.roundUp(host.file() ? host.storedBytes() : refill.next, cluster);
            int rc = host.extendTo(at + newBytes);
            if (rc < 0) {
                throw new IOException("qcow2 " + meta.path + ": no room for a larger L1 table (" + Errno.describe(-rc) + ")");
            }
            setRefcountsDurably(at, newBytes >>> clusterBits, 1);
        } else if (host.extendTo(at + newBytes) < 0) {
            throw new IOException("qcow2 " + meta.path + ": the L1 table's cluster lies past the end of the disk");
        }
        writeDurably(at, table, writeBytes);
        return at;
    }

    /**
     * A buffer for a resize step; an IOException (the resize refused or reported, never an
     * OutOfMemoryError on the I/O thread) when the direct-memory pool every disk shares is used up.
     */
    private NativeBuffer resizeBuffer(int bytes, String what) throws IOException {
        try {
            return new NativeBuffer(bytes, Math.max(alignment, 8));
        } catch (OutOfMemoryError e) {
            throw new IOException(DirectMemory.exhausted(meta.path, bytes, what, e).getMessage());
        }
    }

    /**
     * Sets the refcounts of {@code count} clusters from {@code first} to {@code value}, block by
     * block, each written durably. Only within refcount blocks that exist: placing a new one
     * during a resize is not done (refused, the image unchanged).
     */
    private void setRefcountsDurably(long first, long count, long value) throws IOException {
        long entriesPerBlock = ((long) cluster * 8) >>> meta.header.refcountOrder;
        NativeBuffer block = resizeBuffer(cluster, "a refcount block");
        long c = first >>> clusterBits;
        long end = c + count;
        while (c < end) {
            long bi = c / entriesPerBlock;
            long blockOffset = bi < meta.reftableEntries ? meta.reftableEntry((int) bi) & REFT_OFFSET_MASK : 0;
            if (blockOffset == 0) {
                throw new IOException("qcow2 " + meta.path + ": clusters at " + (c << clusterBits) + " have no refcount"
                        + " block yet; this online resize would need a new one: resize the stopped image with qemu-img resize");
            }
            host.read(blockOffset, block, cluster);
            long last = Math.min(end, (bi + 1) * entriesPerBlock);
            for (; c < last; c++) {
                setRefcount(block.buffer(), meta.header.refcountOrder, (int) (c - bi * entriesPerBlock), value);
            }
            writeDurably(blockOffset, block, cluster);
        }
    }

    /**
     * Lets every accepted request and metadata write finish (completions stay queued for the
     * next {@link #poll}), so the metadata can change under nobody.
     */
    private void quiesce() throws IOException {
        long deadline = System.nanoTime() + 120_000_000_000L;
        while (accepted > done.size || io.inFlight() > 0 || io.pendingSubmit() > 0 || l1Writing
                || refill.state != Refill.IDLE || (backing != null && backing.inFlight() > 0)) {
            submit();
            poll((tag, result) -> { }, 0);
            if (accepted <= done.size && io.inFlight() == 0 && io.pendingSubmit() == 0 && !l1Writing
                    && refill.state == Refill.IDLE) {
                break;
            }
            if (System.nanoTime() > deadline) {
                throw new IOException("qcow2 " + meta.path + ": requests in flight did not finish in 120 s: not resized");
            }
            if (io.awaitCompletions(5) > 0) {
                io.acknowledgeCompletions();
            }
        }
    }

    // ------------------------------------------------------------------ the state machine

    /**
     * Advances {@code r} as far as it can go now. An exception out of a step (a guest-memory
     * fault the JVM delivered late: engine GuestFaults; it can land in a prepare after the back
     * end took a slot, or in a copy into guest memory) leaves the request half advanced: its
     * cursor, phase and locks can no longer be trusted, so it is poisoned and finishes with EIO
     * once the operations it has in flight complete (never resumed: a resumed piece could write
     * the wrong guest bytes). Free when nothing is thrown (an exception table entry).
     */
    private void run(Req r) {
        try {
            step(r);
        } catch (RuntimeException | Error e) {
            faulted = true;
            if (r.error == 0) {
                r.error = -Errno.EIO;
            }
            if (r.pending == 0) {
                runnable.add(r); // no-op when it is parked: waking it finishes it
            }
            throw e;
        }
    }

    private void step(Req r) {
        while (true) {
            switch (r.phase) {
                case PH_START:
                    if (r.punchLen != 0 && !runGoesOn(r)) {
                        r.phase = PH_PUNCH; // the run ends here: punched before anything else
                        continue;
                    }
                    if (r.error == 0 && (corrupt || fatalError != 0)) {
                        r.error = corrupt ? -Errno.EIO : fatalError;
                    }
                    if (r.error != 0 || r.pos >= r.end) {
                        r.phase = PH_FINISH;
                        continue;
                    }
                    if (r.op == OP_FLUSH) {
                        // Every table change made so far must be written before the fdatasync.
                        r.waitGen = metaSeq;
                        r.phase = PH_FLUSH_TABLES;
                        continue;
                    }
                    if (piecesLeft <= 0 && r.pending == 0 && r.pieceRound == round) {
                        yielded.add(r); // the round's budget is spent: on at the next poll
                        return;
                    }
                    // Each request starts at least one piece a round, so that a small one never
                    // waits behind a large one that spends the budget first (review 10c).
                    piecesLeft--;
                    r.pieceRound = round;
                    if (!startPiece(r)) {
                        return;
                    }
                    continue;
                case PH_FINISH:
                    if (r.pending > 0) {
                        return;
                    }
                    finish(r);
                    return;
                default:
                    if (r.pending > 0) {
                        return;
                    }
                    if (r.error != 0) {
                        unlock(r);
                        releaseBounce(r);
                        r.phase = PH_FINISH;
                        continue;
                    }
                    if (!resume(r)) {
                        return;
                    }
            }
        }
    }

    /** Continues a request whose operations all completed; false when it waits again. */
    private boolean resume(Req r) {
        switch (r.phase) {
            case PH_DRAIN:
                r.phase = PH_START;
                return true;
            case PH_DECOMPRESS:
                if (decompressInto(r)) {
                    copyToGuest(r, r.bounce.address() + (r.pos & clusterMask), r.pieceLen);
                    r.pos += r.pieceLen;
                }
                releaseBounce(r);
                r.phase = PH_START;
                return true;
            case PH_COW_DECOMPRESS:
                if (!decompressInto(r)) {
                    unlock(r);
                    releaseBounce(r);
                    r.phase = PH_START;
                    return true;
                }
                return cowWrite(r);
            case PH_COW_FILL:
                return cowWrite(r);
            case PH_FLUSH_TABLES:
                if (corrupt || fatalError != 0 || flushFailed) {
                    r.error = corrupt || fatalError == 0 ? -Errno.EIO : fatalError;
                    r.phase = PH_FINISH;
                    return true;
                }
                if (!tablesWrittenUpTo(r.waitGen)) {
                    park(r, flushWaiters);
                    return false;
                }
                if (io.freeSlots() == 0) {
                    // Another request's pieces fill the back end: prepared into it, the
                    // flush failed with EAGAIN (a guest's FLUSH failing under load).
                    park(r, ioWaiters);
                    return false;
                }
                prepare(r, io.prepareFlush(reqTag(r, 0)));
                r.pos = r.end;
                r.phase = PH_FINISH;
                return true;
            case PH_DATA_WRITTEN:
                releaseBounce(r); // the piece's data is on disk: the copy-on-write buffer is free
                if (r.needBarrier) {
                    // Copied or reused-cluster data must be durable before the entry naming it
                    // (QEMU: qcow2_cache_depends_on_flush in perform_cow): else a crash can
                    // leave the entry on disk over a cluster without the base's bytes.
                    r.phase = PH_COW_FLUSHED;
                    park(r, barrierWaiters);
                    return false;
                }
                return updateL2(r);
            case PH_COW_FLUSHED:
                if (failedMeanwhile(r)) {
                    return true;
                }
                return updateL2(r);
            case PH_L2_WRITTEN:
                if (r.slot.l2Offset == r.l2Offset && r.slot.writtenGen < r.waitGen) {
                    park(r, r.slot.waiters);
                    return false;
                }
                r.slot = null;
                if (r.discardHost != 0) {
                    // Joins the request's run of adjacent host clusters, punched in one go when
                    // it ends (runGoesOn); the cluster stays locked until then.
                    if (r.punchLen == 0) {
                        r.punch = r.discardHost;
                    }
                    r.punchLen += cluster;
                    r.discardHost = 0;
                    r.host = 0;
                    r.pos += r.pieceLen;
                    r.phase = PH_START;
                    return true;
                }
                endPiece(r);
                return true;
            case PH_PUNCH:
                return punchDiscarded(r);
            case PH_PUNCHED:
                endRun(r); // the clusters may be reused now: the punch can no longer land after their data
                return true;
            case PH_REFCOUNT:
                return checkRefcount(r);
            case PH_NEW_L2_WRITTEN:
                if (r.slot.l2Offset == r.l2Offset && r.slot.writtenGen < r.waitGen) {
                    park(r, r.slot.waiters);
                    return false;
                }
                r.slot = null;
                // The new table durable before the L1 entry names it (QEMU's l2_allocate).
                r.phase = PH_NEW_L2_FLUSHED;
                park(r, barrierWaiters);
                return false;
            case PH_NEW_L2_FLUSHED:
                if (failedMeanwhile(r)) {
                    return true; // no L1 entry for a table whose write may have failed
                }
                meta.setL1Entry(r.l1Index, r.host | OFLAG_COPIED);
                r.host = 0;
                l1Gen++;
                metaSeq++;
                if (l1DirtySeq == 0) {
                    l1DirtySeq = metaSeq;
                }
                r.waitGen = l1Gen;
                writeL1();
                r.phase = PH_L1_WRITTEN;
                park(r, l1Waiters);
                return false;
            case PH_L1_WRITTEN:
                if (l1Written < r.waitGen) {
                    park(r, l1Waiters);
                    return false;
                }
                unlock(r);
                r.phase = PH_START;
                return true;
            default:
                throw new IllegalStateException("phase " + r.phase);
        }
    }

    /**
     * Whether the image failed (a table write, a corrupt mark) while {@code r} waited for its
     * barrier: then its entry is not written (rev14e: an L1 entry written after its new table's
     * write failed). Sets the error; {@link #step} unlocks and finishes it.
     */
    private boolean failedMeanwhile(Req r) {
        if (corrupt || fatalError != 0) {
            r.error = corrupt ? -Errno.EIO : fatalError;
            return true;
        }
        return false;
    }

    /** Starts the piece of {@code r} at {@code r.pos} (within one cluster); false when it waits. */
    private boolean startPiece(Req r) {
        long pos = r.pos;
        int inOff = (int) (pos & clusterMask);
        long len = Math.min(r.end - pos, cluster - inOff);
        r.pieceLen = len;
        int l1i = (int) (pos >>> (clusterBits + l2Bits));
        int l2i = (int) ((pos >>> clusterBits) & ((1 << l2Bits) - 1));
        r.l1Index = l1i;
        r.l2Index = l2i;
        long l1e = meta.l1Entry(l1i);
        if (r.op == OP_DISCARD && (inOff != 0 || len != cluster || !v3 || l1e == 0)) {
            // DISCARD is advisory: it never allocates (a cluster, an L2 table) and never writes
            // data. Only a whole cluster of a v3 image with an L2 table changes (a ZERO entry);
            // decided before the lookup, so a no-op loads no table.
            r.pos += len;
            return true;
        }
        long entry = 0;
        L2Slot slot = null;
        if (l1e != 0) {
            slot = lookup(r, l1e & L1E_OFFSET_MASK, l1i);
            if (slot == null) {
                return false;
            }
            entry = slot.entry(l2i);
        }
        if (r.op == OP_READ) {
            return readPiece(r, entry, inOff, len);
        }
        return writePiece(r, l1e, entry, inOff, len);
    }

    private boolean readPiece(Req r, long entry, int inOff, long len) {
        if ((entry & OFLAG_COMPRESSED) != 0) {
            return readCompressed(r, entry, PH_DECOMPRESS);
        }
        long off = entry & L2E_OFFSET_MASK;
        if ((entry & OFLAG_ZERO) != 0) {
            zeroGuest(r, len);
        } else if (off != 0) {
            if (io.freeSlots() == 0) {
                park(r, ioWaiters);
                return false;
            }
            carve(r, len);
            if (!prepare(r, io.prepareRead(off + inOff, r.vec, reqTag(r, len)))) {
                return true;
            }
        } else if (backing != null && r.pos < backingSize) {
            if (backing.freeSlots() == 0 || r.pending > 0) {
                // The backing driver keeps the vector until it completes: one at a time.
                if (r.pending > 0) {
                    r.phase = PH_DRAIN;
                } else {
                    park(r, ioWaiters);
                }
                return false;
            }
            long n = Math.min(len, backingSize - r.pos);
            carve(r, n);
            // The backing driver may keep the vector until it completes: hand it a copy of its own.
            r.backingVec.clear();
            for (int i = 0, c = r.vec.count(); i < c; i++) {
                r.backingVec.add(r.vec.address(i), r.vec.length(i));
            }
            r.backingExpected = n;
            int rc = backing.read(r.pos, r.backingVec, r.index);
            if (rc < 0) {
                r.error = rc;
                return true;
            }
            r.pending++;
            r.pos += n;
            if (n < len) {
                zeroGuest(r, len - n);
                r.pos += len - n;
            }
            r.phase = PH_DRAIN;
            return false;
        } else {
            zeroGuest(r, len);
        }
        r.pos += len;
        return true;
    }

    private boolean writePiece(Req r, long l1e, long entry, int inOff, long len) {
        boolean zeroOp = r.op != OP_WRITE;
        boolean full = inOff == 0 && len == cluster;
        boolean compressed = (entry & OFLAG_COMPRESSED) != 0;
        long off = compressed ? 0 : entry & L2E_OFFSET_MASK;
        boolean zeroFlag = !compressed && (entry & OFLAG_ZERO) != 0;
        boolean copied = (entry & OFLAG_COPIED) != 0;
        if (r.punchLen != 0 && (zeroFlag || off == 0 || !copied || off != r.punch + r.punchLen
                || !holdsOrExtends(r, r.pos >>> clusterBits))) {
            // A DISCARD whose run this cluster does not continue (its host cluster is not the
            // next, or another request holds it): the run is punched first, never kept while
            // this piece waits for anything.
            r.phase = PH_PUNCH;
            return true;
        }
        if (!compressed && !zeroFlag && off != 0 && copied && !(zeroOp && full && v3)) {
            // In place: the cluster is ours alone (COPIED) and was checked when its table loaded.
            if (io.freeSlots() == 0) {
                park(r, ioWaiters);
                return false;
            }
            int rc;
            if (zeroOp) {
                rc = io.prepareWriteZeroes(off + inOff, len, false, reqTag(r, 0));
            } else {
                carve(r, len);
                rc = io.prepareWrite(off + inOff, r.vec, reqTag(r, len));
            }
            if (!prepare(r, rc)) {
                return true;
            }
            r.pos += len;
            return true;
        }
        if (zeroOp && readsAsZero(r.pos, entry, compressed, zeroFlag, off)) {
            r.pos += len;
            return true;
        }
        if (l1e == 0) {
            return newL2Table(r);
        }
        if (!lock(r, r.pos >>> clusterBits)) {
            return false;
        }
        if (zeroOp && full && v3) {
            if (r.op == OP_DISCARD && off != 0 && copied && this.host.file()) {
                // A DISCARD gives the kept cluster's space back to the file system once the
                // entry is written (see punchDiscarded), only after its refcount says it is ours alone.
                return readRefcount(r, off);
            }
            // A whole cluster reads as zeros: keep an allocation of our own, drop anything else.
            r.newEntry = (off != 0 && copied) ? (off | OFLAG_COPIED | OFLAG_ZERO) : OFLAG_ZERO;
            r.needBarrier = false; // no data: nothing to make durable first
            r.phase = PH_DATA_WRITTEN;
            return true;
        }
        if (r.host == 0) {
            if (zeroFlag && off != 0 && copied) {
                r.host = off;
                r.hostFresh = false;
            } else {
                long host = allocate(r);
                if (host == 0) {
                    return false;
                }
                r.host = host;
                // Only a file's clusters past its end read as zeros; a network disk's tail past
                // the last refcount may hold a previous user's bytes (M1: zero-fill instead).
                r.hostFresh = this.host.file();
            }
        }
        r.newEntry = r.host | OFLAG_COPIED;
        // A cluster fresh from the allocator lies past the end of the file as opened and was
        // never handed out before: on a file it reads as zeros (fallocate or a hole), so when the old
        // contents are zeros too there is nothing to copy, only the guest's piece to write.
        boolean zeroSource = zeroFlag || (!compressed && off == 0
                && (backing == null || (r.pos & ~clusterMask) >= backingSize));
        if (!zeroOp && (full || (r.hostFresh && zeroSource))) {
            if (io.freeSlots() == 0) {
                park(r, ioWaiters);
                return false;
            }
            carve(r, len);
            // A fresh cluster's old content is zeros, named by no entry: no barrier needed.
            r.needBarrier = !r.hostFresh;
            r.phase = PH_DATA_WRITTEN;
            return !prepare(r, io.prepareWrite(r.host + inOff, r.vec, reqTag(r, len)));
        }
        r.needBarrier = true;
        return cowRead(r, entry, compressed, zeroFlag, off);
    }

    /** Whether the guest already reads zeros at the piece starting at {@code pos}. */
    private boolean readsAsZero(long pos, long entry, boolean compressed, boolean zeroFlag, long off) {
        if (zeroFlag) {
            return true;
        }
        return !compressed && off == 0 && (backing == null || pos >= backingSize);
    }

    /** Fills the bounce cluster with the old contents of the piece's cluster. */
    private boolean cowRead(Req r, long entry, boolean compressed, boolean zeroFlag, long off) {
        if (!acquireBounce(r)) {
            return false; // the piece starts over (PH_START) when a buffer is given back
        }
        if (compressed) {
            return readCompressed(r, entry, PH_COW_DECOMPRESS);
        }
        long clusterStart = r.pos & ~clusterMask;
        r.phase = PH_COW_FILL;
        if (!zeroFlag && off != 0) {
            if (io.freeSlots() == 0) {
                r.phase = PH_START;
                releaseBounce(r);
                park(r, ioWaiters);
                return false;
            }
            r.bounceVec(0, cluster);
            return !prepare(r, io.prepareRead(off, r.bounceVec, reqTag(r, cluster)));
        }
        if (!zeroFlag && backing != null && clusterStart < backingSize) {
            if (backing.freeSlots() == 0) {
                r.phase = PH_START;
                releaseBounce(r);
                park(r, ioWaiters);
                return false;
            }
            int n = (int) Math.min(cluster, backingSize - clusterStart);
            UnsafeApi.setMemory(r.bounce.address() + n, cluster - n, (byte) 0);
            r.bounceVec(0, n);
            r.backingExpected = n;
            int rc = backing.read(clusterStart, r.bounceVec, r.index);
            if (rc < 0) {
                r.error = rc;
                return true;
            }
            r.pending++;
            return false;
        }
        UnsafeApi.setMemory(r.bounce.address(), cluster, (byte) 0);
        return true;
    }

    /** Overlays the guest's piece on the bounce cluster and writes it to the new cluster. */
    private boolean cowWrite(Req r) {
        long dst = r.bounce.address() + (r.pos & clusterMask);
        if (r.op == OP_WRITE) {
            carve(r, r.pieceLen);
            for (int i = 0, n = r.vec.count(); i < n; i++) {
                UnsafeApi.copyMemory(r.vec.address(i), dst, r.vec.length(i));
                dst += r.vec.length(i);
            }
        } else {
            UnsafeApi.setMemory(dst, r.pieceLen, (byte) 0);
        }
        if (io.freeSlots() == 0) {
            // Rare (the back end is sized for the worst case): retry the whole piece later.
            r.cursorBack(r.op == OP_WRITE ? r.pieceLen : 0);
            r.phase = PH_COW_FILL;
            park(r, ioWaiters);
            return false;
        }
        r.bounceVec(0, cluster);
        if (!prepare(r, io.prepareWrite(r.host, r.bounceVec, reqTag(r, cluster)))) {
            return true;
        }
        r.phase = PH_DATA_WRITTEN;
        return false;
    }

    /** After the data is on disk: points the L2 entry at it and writes the table. */
    private boolean updateL2(Req r) {
        long l1e = meta.l1Entry(r.l1Index);
        L2Slot slot = lookup(r, l1e & L1E_OFFSET_MASK, r.l1Index);
        if (slot == null) {
            return false;
        }
        long old = slot.entry(r.l2Index);
        if ((old & OFLAG_COMPRESSED) != 0 && old != r.newEntry) {
            noteFreedCompressed(old);
        }
        slot.setEntry(r.l2Index, r.newEntry);
        slot.markDirty(r.l2Index * 8, l2Chunk);
        slot.gen++;
        if (!slot.unwritten()) {
            unwrittenSlots++;
        }
        slot.changed(++metaSeq);
        writeSlot(slot);
        r.slot = slot;
        r.l2Offset = slot.l2Offset;
        r.waitGen = slot.gen;
        r.phase = PH_L2_WRITTEN;
        park(r, slot.waiters);
        return false;
    }

    /**
     * Notes the host clusters the compressed descriptor {@code entry}, about to be replaced,
     * holds a reference to (the clusters of {@code [offset, offset + size)}, as QEMU frees
     * them). A descriptor out of bounds or over metadata (a hostile image whose cluster was
     * overwritten unread) is skipped: a leak, never a lowered refcount of a table.
     */
    private void noteFreedCompressed(long entry) {
        int x = 62 - (clusterBits - 8);
        long hostOff = entry & ((1L << x) - 1);
        long sectors = (entry >>> x) & ((1L << (62 - x)) - 1);
        long size = (sectors + 1) * SECTOR_BYTES - (hostOff & (SECTOR_BYTES - 1));
        long end = hostOff + size;
        if (hostOff <= 0 || size > 2L * cluster || end > entryLimit || touchesMetadata(hostOff, end)) {
            return;
        }
        for (long c = hostOff & ~clusterMask; c < end; c += cluster) {
            if (freed == null || freedCount == freed.length) {
                if (freedCount >= FREED_MAX) {
                    if (!freedOverflowLogged) {
                        freedOverflowLogged = true;
                        System.err.println("vblk: qcow2 " + meta.path + ": over " + FREED_MAX + " references of"
                                + " replaced compressed clusters wait for the close: the rest leak (qemu-img check -r"
                                + " leaks reclaims them)");
                    }
                    return;
                }
                freed = java.util.Arrays.copyOf(freed == null ? new long[0] : freed,
                        freed == null ? 1024 : Math.min(FREED_MAX, freed.length * 2));
            }
            freed[freedCount++] = c;
        }
    }

    /**
     * Lowers the refcounts {@link #freed} lists (see there), on the closing or resizing thread
     * with nothing in flight and every table written: an fdatasync first (the entries that
     * replaced the descriptors durable), then each refcount block read (the allocator's own is
     * the one in memory), lowered and written durably. A count already 0 is left (logged).
     */
    private void releaseFreed() throws IOException {
        if (freedCount == 0 || flushFailed || metadataUnwritten()) {
            // After a failed flush, or with a table still unwritten (a write waiting for its
            // retry: a close only drains requests), the new entries may not be on the disk:
            // leaks, not a freed cluster a table on the disk still names.
            return;
        }
        int rc = host.syncData();
        if (rc < 0) {
            flushFailed = true;
            throw new IOException("qcow2 " + meta.path + ": fdatasync before freeing replaced compressed clusters: "
                    + Errno.describe(-rc));
        }
        java.util.Arrays.sort(freed, 0, freedCount);
        int order = meta.header.refcountOrder;
        long perBlock = ((long) cluster * 8) >>> order;
        NativeBuffer read = null;
        int i = 0;
        while (i < freedCount) {
            long bi = (freed[i] >>> clusterBits) / perBlock;
            int j = i;
            while (j < freedCount && (freed[j] >>> clusterBits) / perBlock == bi) {
                j++;
            }
            long blockOffset = bi < meta.reftableEntries ? meta.reftableEntry((int) bi) & REFT_OFFSET_MASK : 0;
            if (blockOffset != 0) {
                NativeBuffer block;
                if (bi == refill.blockIndex) {
                    block = refill.block;
                } else {
                    read = read != null ? read : resizeBuffer(cluster, "a refcount block");
                    block = read;
                    host.read(blockOffset, block, cluster);
                }
                int zero = 0;
                for (int k = i; k < j; k++) {
                    int index = (int) ((freed[k] >>> clusterBits) - bi * perBlock);
                    long count = getRefcount(block.buffer(), order, index << order);
                    if (count == 0) {
                        zero++;
                    } else {
                        setRefcount(block.buffer(), order, index, count - 1);
                    }
                }
                if (zero > 0) {
                    System.err.println("vblk: qcow2 " + meta.path + ": " + zero + " host cluster(s) of replaced compressed"
                            + " clusters had refcount 0 already: left");
                }
                writeDurably(blockOffset, block, cluster);
            }
            i = j;
        }
        freedCount = 0;
    }

    /**
     * Whether the DISCARD {@code r}, holding a run of discarded clusters not yet punched, may
     * go on to its next cluster with the run kept: the request and the image have not failed,
     * the next piece is the cluster right after the run, in the same L2 table, and the run is
     * below {@link #PUNCH_RUN_BYTES}. The piece itself may still end the run ({@link #writePiece}).
     */
    private boolean runGoesOn(Req r) {
        long next = runNext(r);
        return r.error == 0 && !corrupt && fatalError == 0 && r.pos < r.end && r.op == OP_DISCARD
                && r.pos == next << clusterBits && (next & ((1L << l2Bits) - 1)) != 0
                && r.punchLen < PUNCH_RUN_BYTES;
    }

    /** The guest cluster right after the DISCARD's run (which starts at its first lock). */
    private long runNext(Req r) {
        return r.lockKey + (r.punchLen >>> clusterBits);
    }

    /**
     * Whether {@code key}, the cluster right after the run of {@code r}, is locked by it: already
     * (its piece started over after a wait), or now ({@link #extendLock}).
     */
    private boolean holdsOrExtends(Req r, long key) {
        if (key != runNext(r)) {
            return false;
        }
        return key < r.lockEnd || extendLock(r, key);
    }

    /**
     * Checks the refcount of host cluster {@code off}, which the L2 entry of the DISCARD's
     * cluster names with COPIED: the entry's COPIED flag alone cannot be trusted with a punch,
     * which destroys the cluster's data for every user. The refcounts come from the request's
     * window ({@link Req#refcountOnes}): a cluster inside it whose refcount was read to be 1 needs
     * no read. Otherwise the refcount block is read from the aligned unit holding the cluster's
     * entry on, as far as {@link #REFCOUNT_WINDOW} entries reach (never past the block: a block
     * is whole clusters, at least the alignment, so the read stays inside the file), into a
     * bounce buffer (its holder waits only for this read), and {@link #checkRefcount} decides
     * once it is in. A DISCARD of a run of adjacent host clusters reads once per window, not once
     * per cluster. False when it waits.
     */
    private boolean readRefcount(Req r, long off) {
        if (off >= entryLimit) {
            // Past the image as opened: no entry read from it names such a cluster (checkL2),
            // so this driver allocated it (refcount 1, never shared): nothing to read.
            refcountOne(r, off);
            return true;
        }
        long c = off >>> clusterBits;
        long inWindow = c - r.refcountFirst;
        if (inWindow >= 0 && inWindow < r.refcountCount && (r.refcountOnes[(int) (inWindow >>> 6)] & (1L << inWindow)) != 0) {
            refcountOne(r, off);
            return true;
        }
        int order = meta.header.refcountOrder;
        long perBlock = ((long) cluster * 8) >>> order;
        long bi = c / perBlock;
        long block = meta.reftable != null && bi < meta.reftableEntries
                ? meta.reftableEntry((int) bi) & REFT_OFFSET_MASK : 0;
        if (block == 0) {
            refcountLie(r, off, 0); // no refcount block: its refcount is 0
            return true;
        }
        if (io.freeSlots() == 0) {
            park(r, ioWaiters);
            return false;
        }
        if (!acquireBounce(r)) {
            return false; // the piece starts over (PH_START) when a buffer is given back
        }
        long at = block + (((c % perBlock) << order) >>> 3);
        long start = at & ~(long) (alignment - 1);
        // From the aligned unit's start (the block's own start at the latest: block and unit
        // are aligned, the block at least a unit long) to REFCOUNT_WINDOW entries past the
        // DISCARD's own entry, within the block and the bounce buffer, in whole units. Counted
        // from the entry, not the unit: a unit may hold more than REFCOUNT_WINDOW entries (4 KiB
        // of 16-bit entries is 2048, 512 bytes of 1-bit ones 4096), and a window counted from
        // the unit's start would end before the entry (EIO for a cluster whose refcount is 1).
        long windowBytes = ((long) REFCOUNT_WINDOW << order) >>> 3;
        long end = Math.min(Math.min(block + cluster, at + windowBytes), start + bounceReadBytes());
        end = Qcow2Image.roundUp(Math.max(end, at + 1), alignment);
        r.refcountStart = start;
        r.refcountBlock = block;
        r.refcountBlockFirst = bi * perBlock;
        r.refcountBytes = 0;
        r.refcountCount = 0; // the window is read anew
        r.discardHost = off;
        r.bounceVec(0, (int) (end - start));
        r.phase = PH_REFCOUNT;
        refcountReads++;
        // Any count: a short one (a file that ends early) leaves entries unread, see checkRefcount.
        if (!prepare(r, io.prepareRead(start, r.bounceVec, reqTag(r, 0)))) {
            return true;
        }
        return false;
    }

    /** The bytes of a refcount read the bounce buffer holds: whole alignment units. */
    private int bounceReadBytes() {
        return ((3 * cluster + 2 * alignment) / alignment) * alignment;
    }

    /** Host cluster {@code off} is the DISCARD's alone: its entry becomes ZERO|COPIED, the cluster joins the run. */
    private void refcountOne(Req r, long off) {
        r.discardHost = off;
        r.newEntry = off | OFLAG_COPIED | OFLAG_ZERO;
        r.needBarrier = false; // no data: nothing to make durable first
        r.phase = PH_DATA_WRITTEN;
    }

    /**
     * The refcount block's entries are in: those the read returned, from the block's or the
     * unit's start on, become the request's window ({@link Req#refcountOnes}: which of them are
     * exactly 1). The DISCARD's host cluster must be 1 (the entry's alone, as its COPIED flag
     * says): the entry becomes ZERO|COPIED and the cluster is punched once it is written; any
     * other count makes the image corrupt (a COPIED entry over a shared or free cluster: an
     * in-place write, a punch, would destroy another user's data). A read too short to hold its
     * entry fails the DISCARD with EIO, as any short read.
     */
    private boolean checkRefcount(Req r) {
        int order = meta.header.refcountOrder;
        long from = Math.max(r.refcountStart, r.refcountBlock);
        long to = Math.min(r.refcountBlock + cluster, r.refcountStart + Math.max(0, r.refcountBytes));
        long readEntries = to > from ? ((to - from) << 3) >>> order : 0;
        long unitFirst = r.refcountBlockFirst + (((from - r.refcountBlock) << 3) >>> order);
        // The window (at most REFCOUNT_WINDOW entries) starts at the unit's first entry when the
        // DISCARD's own entry is among its first REFCOUNT_WINDOW, else at the DISCARD's entry: a
        // unit may hold more entries than the window, and the entry must be inside it.
        long c = r.discardHost >>> clusterBits;
        long first = c - unitFirst < REFCOUNT_WINDOW ? unitFirst : c;
        long count = Math.max(0, Math.min(REFCOUNT_WINDOW, unitFirst + readEntries - first));
        UnsafeBuffer b = r.bounce.buffer();
        int bitBase = (int) ((from - r.refcountStart) << 3) + (int) ((first - unitFirst) << order);
        java.util.Arrays.fill(r.refcountOnes, 0L);
        for (int i = 0; i < count; i++) {
            if (getRefcount(b, order, bitBase + (i << order)) == 1) {
                r.refcountOnes[i >>> 6] |= 1L << i;
            }
        }
        r.refcountFirst = first;
        r.refcountCount = (int) count;
        long off = r.discardHost;
        long i = (off >>> clusterBits) - first;
        long refcount = i >= 0 && i < count ? getRefcount(b, order, bitBase + (int) (i << order)) : -1;
        releaseBounce(r);
        if (refcount == 1) {
            refcountOne(r, off);
            return true;
        }
        r.discardHost = 0;
        if (refcount < 0) {
            r.error = -Errno.EIO; // the read ended before the entry: a short read
            return true;
        }
        refcountLie(r, off, refcount);
        return true;
    }

    private void refcountLie(Req r, long off, long refcount) {
        markCorrupt("the L2 entry of guest cluster " + (r.pos >>> clusterBits) + " names host cluster 0x"
                + Long.toHexString(off) + " as its own (COPIED) but its refcount is " + refcount);
        r.error = -Errno.EIO;
    }

    /** Entry {@code bit / 2^order} of a refcount block of {@code 2^order}-bit entries (big-endian), by bit offset. */
    static long getRefcount(UnsafeBuffer b, int order, int bit) {
        int at = bit >>> 3;
        switch (order) {
            case 0:
            case 1:
            case 2:
                return ((b.getByte(at) & 0xff) >>> (bit & 7)) & ((1 << (1 << order)) - 1);
            case 3:
                return b.getByte(at) & 0xff;
            case 4:
                return b.getShort(at, ByteOrder.BIG_ENDIAN) & 0xffff;
            case 5:
                return b.getInt(at, ByteOrder.BIG_ENDIAN) & 0xffffffffL;
            default:
                return b.getLong(at, ByteOrder.BIG_ENDIAN);
        }
    }

    /**
     * Punches the host range of the DISCARD's run of adjacent whole clusters (fallocate
     * PUNCH_HOLE, one for the run), each of a v3 image with its entry now ZERO|COPIED and its
     * refcount checked to be 1, so the file system gets the space back, as QEMU's discard=unmap
     * does; the refcount stays, so no refcount block is written and nothing ever names a freed
     * cluster (see the class comment). After every entry's write completed: a crash before one
     * is durable can leave the old entry over the hole, and the guest then reads zeros in the
     * cluster it discarded (a discarded range's contents are undefined), never another
     * cluster's data. The request keeps the run's clusters locked (a range, {@link Req#lockEnd})
     * until the punch completes: a write reusing a cluster (ZERO|COPIED entries are written in
     * place) waits, so the punch never lands after its data. Advisory, as the DISCARD: a punch
     * the back end refuses or fails (no hole punching on the file system) leaves the clusters
     * allocated and the request successful. The request's cursor is already past the run.
     */
    private boolean punchDiscarded(Req r) {
        if (r.error != 0 || corrupt || fatalError != 0) {
            endRun(r); // an entry's write may have failed: the old entry may still name the cluster
            return true;
        }
        if (io.freeSlots() == 0) {
            park(r, ioWaiters);
            return false;
        }
        long at = r.punch;
        long len = r.punchLen;
        r.punch = 0;
        r.punchLen = 0;
        int rc = io.prepareDiscard(at, len, reqTag(r, 0));
        if (rc < 0) {
            endRun(r);
            return true;
        }
        punches++;
        r.pending++;
        r.phase = PH_PUNCHED;
        return false;
    }

    /** The run punched (or dropped): its clusters unlocked, the request on from its cursor. */
    private void endRun(Req r) {
        r.punch = 0;
        r.punchLen = 0;
        unlock(r);
        r.phase = PH_START;
    }

    private void endPiece(Req r) {
        unlock(r);
        r.host = 0;
        r.pos += r.pieceLen;
        r.phase = PH_START;
    }

    /** Creates the L2 table for {@code r.l1Index}: a zeroed cluster, written, then the L1 entry. */
    private boolean newL2Table(Req r) {
        if (!lock(r, -1L - r.l1Index)) {
            return false;
        }
        if (r.host == 0) {
            long host = allocate(r);
            if (host == 0) {
                return false;
            }
            r.host = host;
        }
        L2Slot slot = victim();
        if (slot == null) {
            park(r, cacheWaiters);
            return false;
        }
        slot.assign(r.host);
        UnsafeApi.setMemory(slot.buffer.address(), cluster, (byte) 0);
        slot.loading = false;
        markValidated(r.l1Index);
        slot.dirtyLo = 0;
        slot.dirtyHi = cluster;
        slot.gen++;
        if (!slot.unwritten()) {
            unwrittenSlots++;
        }
        slot.changed(++metaSeq);
        writeSlot(slot);
        r.slot = slot;
        r.l2Offset = slot.l2Offset;
        r.waitGen = slot.gen;
        r.phase = PH_NEW_L2_WRITTEN;
        park(r, slot.waiters);
        return false;
    }

    private boolean readCompressed(Req r, long entry, int phase) {
        int x = 62 - (clusterBits - 8);
        long hostOff = entry & ((1L << x) - 1);
        long sectors = (entry >>> x) & ((1L << (62 - x)) - 1);
        long size = (sectors + 1) * SECTOR_BYTES - (hostOff & (SECTOR_BYTES - 1));
        long end = Math.min(hostOff + size, entryLimit);
        if (hostOff <= 0 || size > 2L * cluster || end <= hostOff || touchesMetadata(hostOff, end)) {
            markCorrupt("compressed cluster descriptor 0x" + Long.toHexString(entry) + " out of bounds");
            r.error = -Errno.EIO;
            return true;
        }
        long start = hostOff & ~(long) (alignment - 1);
        long alignedEnd = Math.min(Qcow2Image.roundUp(end, alignment), host.sizeBytes());
        if (io.freeSlots() == 0) {
            releaseBounce(r);
            park(r, ioWaiters);
            return false;
        }
        if (!acquireBounce(r)) {
            return false;
        }
        r.compressedStart = (int) (hostOff - start);
        r.compressedLength = (int) (end - hostOff);
        r.bounceVec(r.bounceInputOffset, (int) (alignedEnd - start));
        if (!prepare(r, io.prepareRead(start, r.bounceVec, reqTag(r, alignedEnd - start)))) {
            return true;
        }
        r.phase = phase;
        return false;
    }

    /**
     * Whether any cluster of the host bytes {@code [from, to)} holds metadata. Every one, not
     * only the first and the last: a compressed descriptor of up to two clusters that starts
     * late in one spans three, and a deflate stored block in the first can copy the whole middle
     * one (an L2 table) into the guest's read. At most three binary searches.
     */
    private boolean touchesMetadata(long from, long to) {
        for (long c = from & ~clusterMask; c < to; c += cluster) {
            if (meta.isMetadata(c)) {
                return true;
            }
        }
        return false;
    }

    /**
     * Decompresses the compressed input in the bounce buffer into its first cluster with the
     * image's compression type; false (the request failed with EIO, the image is marked
     * corrupt) when it does not give exactly one cluster.
     */
    private boolean decompressInto(Req r) {
        return zstd != null ? zstdInto(r) : inflateInto(r);
    }

    /**
     * zstd (compression_type 1), as QEMU reads it: one frame, streamed into the cluster until the
     * frame ends. The input length comes from the L2 entry's sector count, so bytes past the
     * frame are normal and ignored. The frame must end exactly when the cluster is full: a frame
     * that ends early, runs past the cluster or is cut short by the input is corruption. Both
     * buffers are direct and bounded by their limits, so zstd never reads or writes outside them.
     */
    private boolean zstdInto(Req r) {
        ByteBuffer in = r.bounceIn;
        in.limit(r.bounceInputOffset + r.compressedStart + r.compressedLength);
        in.position(r.bounceInputOffset + r.compressedStart);
        ByteBuffer out = r.bounceOut;
        out.clear();
        try {
            zstd.reset();
            // reset() clears the window limit too. QEMU compresses one cluster per frame, so no
            // frame it writes needs a window over the cluster; a hostile frame declaring zstd's
            // default limit (128 MiB) would make this context malloc and keep that much (rev15a).
            zstd.setLongMax(Math.max(clusterBits, 10));
            boolean frameEnded = false;
            while (!frameEnded) {
                int inBefore = in.position();
                int outBefore = out.position();
                frameEnded = zstd.decompressDirectByteBufferStream(out, in);
                if (!frameEnded && in.position() == inBefore && out.position() == outBefore) {
                    break; // no progress: the input ended inside the frame, or the frame outgrows the cluster
                }
            }
            if (!frameEnded || out.position() != cluster) {
                markCorrupt("zstd-compressed cluster gives " + (frameEnded ? "" : "an unfinished frame of ")
                        + out.position() + " bytes, not " + cluster);
                r.error = -Errno.EIO;
                return false;
            }
            return true;
        } catch (ZstdException e) {
            markCorrupt("zstd-compressed cluster does not decompress: " + e.getMessage());
            r.error = -Errno.EIO;
            return false;
        }
    }

    /** Inflates (deflate, compression_type 0) the compressed input in the bounce buffer into its first cluster; false on error. */
    private boolean inflateInto(Req r) {
        ByteBuffer in = r.bounceIn;
        in.limit(r.bounceInputOffset + r.compressedStart + r.compressedLength);
        in.position(r.bounceInputOffset + r.compressedStart);
        ByteBuffer out = r.bounceOut;
        out.clear();
        inflater.reset();
        inflater.setInput(in);
        try {
            int n = 0;
            while (out.hasRemaining() && !inflater.finished()) {
                int got = inflater.inflate(out);
                n += got;
                if (got == 0 && (inflater.needsInput() || inflater.needsDictionary())) {
                    break;
                }
            }
            if (n != cluster) {
                markCorrupt("compressed cluster inflates to " + n + " bytes, not " + cluster);
                r.error = -Errno.EIO;
                return false;
            }
            return true;
        } catch (DataFormatException e) {
            markCorrupt("compressed cluster does not inflate: " + e.getMessage());
            r.error = -Errno.EIO;
            return false;
        }
    }

    private void finish(Req r) {
        unlock(r);
        releaseBounce(r);
        r.result = r.error != 0 ? r.error : (r.buffers != null ? r.buffers.totalLength() : 0);
        done.add(r);
    }

    // ------------------------------------------------------------------ L2 cache

    /** The loaded slot for the L2 table at {@code l2Offset}, or null with {@code r} parked. */
    private L2Slot lookup(Req r, long l2Offset, int l1Index) {
        L2Slot last = lastSlot;
        if (last != null && last.l2Offset == l2Offset && !last.loading) {
            last.referenced = true;
            return last;
        }
        for (L2Slot s : slots) {
            if (s.l2Offset == l2Offset && s.buffer != null) {
                if (s.loading) {
                    park(r, s.waiters);
                    return null;
                }
                s.referenced = true;
                lastSlot = s;
                return s;
            }
        }
        L2Slot s = victim();
        if (s == null || io.freeSlots() == 0) {
            park(r, s == null ? cacheWaiters : ioWaiters);
            return null;
        }
        s.assign(l2Offset);
        s.l1Index = l1Index;
        s.loading = true;
        int rc = io.prepareRead(l2Offset, s.vec, tag(K_L2_LOAD, s.index));
        if (rc < 0) {
            s.assign(0);
            s.loading = false;
            fatal(rc);
            r.error = rc;
            runnable.add(r); // runs again and finishes with the error
            return null;
        }
        park(r, s.waiters);
        return null;
    }

    /** A clean, idle slot to reuse (second-chance clock), or null when every slot is busy. */
    private L2Slot victim() {
        for (int n = 0; n < 2 * slots.length; n++) {
            L2Slot s = slots[clockHand];
            clockHand = clockHand + 1 == slots.length ? 0 : clockHand + 1;
            if (s.loading || s.writing || s.gen != s.writtenGen || !s.waiters.isEmpty()) {
                continue;
            }
            if (s.referenced && s.l2Offset != 0) {
                s.referenced = false;
                continue;
            }
            return s;
        }
        return null;
    }

    private void onL2Loaded(L2Slot s, long result) {
        s.loading = false;
        if (result != cluster) {
            s.assign(0);
            fatal(result < 0 ? (int) result : -Errno.EIO);
        } else if (!isValidated(s.l1Index)) {
            String problem = checkL2(s);
            if (problem != null) {
                s.assign(0);
                markCorrupt(problem);
            } else {
                markValidated(s.l1Index);
            }
        }
        wakeAll(s.waiters);
        wakeAll(cacheWaiters);
    }

    /** Checks every entry of an L2 table read from the image as opened; null when sound. */
    private String checkL2(L2Slot s) {
        int entries = cluster / 8;
        for (int i = 0; i < entries; i++) {
            long e = s.entry(i);
            if (e == 0 || (e & OFLAG_COMPRESSED) != 0) {
                continue; // compressed descriptors are checked when read
            }
            long off = e & L2E_OFFSET_MASK;
            if ((e & L2E_STD_RESERVED) != 0 || (!v3 && (e & OFLAG_ZERO) != 0)) {
                return "L2 table at " + s.l2Offset + " entry " + i + " has reserved bits set: 0x" + Long.toHexString(e);
            }
            if (off != 0 && ((off & clusterMask) != 0 || off > entryLimit - cluster || meta.isMetadata(off))) {
                return "L2 table at " + s.l2Offset + " entry " + i + " points at " + off
                        + ": misaligned, past the end of the file or its allocated clusters, or into metadata";
            }
        }
        return null;
    }

    private boolean isValidated(int l1Index) {
        return (validatedL2[l1Index >>> 6] & (1L << l1Index)) != 0;
    }

    private void markValidated(int l1Index) {
        validatedL2[l1Index >>> 6] |= 1L << l1Index;
    }

    private void writeSlot(L2Slot s) {
        if (s.writing || s.gen == s.writtenGen) {
            return;
        }
        // Only the aligned chunks that changed since the last write: usually one sector.
        int lo = s.dirtyLo;
        int hi = s.dirtyHi;
        if (lo >= hi) {
            boolean was = s.unwritten();
            s.writtenGen = s.gen;
            s.dirtySeq = 0;
            settle(s, was);
            wakeAll(flushWaiters);
            return;
        }
        s.writeVec.clear();
        s.writeVec.add(s.buffer.address() + lo, hi - lo);
        int rc = io.prepareWrite(s.l2Offset + lo, s.writeVec, tag(K_L2_WRITE, s.index));
        if (rc == -Errno.EAGAIN) {
            s.writeWanted = true;
            metadataRetry = true;
            return;
        }
        if (rc < 0) {
            fatal(rc);
            return;
        }
        s.writingBytes = hi - lo;
        s.dirtyLo = cluster;
        s.dirtyHi = 0;
        s.writeWanted = false;
        s.writing = true;
        s.writingGen = s.gen;
        s.writingSeq = s.dirtySeq; // (not writing before: writingSeq was 0) unwrittenSlots unchanged
        s.dirtySeq = 0;
    }

    private void onL2Written(L2Slot s, long result) {
        boolean was = s.unwritten();
        s.writing = false;
        s.writingSeq = 0;
        if (result != s.writingBytes) {
            fatal(result < 0 ? (int) result : -Errno.EIO);
            s.writtenGen = s.gen; // nothing waits forever: the requests see the fatal error
            s.dirtySeq = 0;
            settle(s, was);
        } else {
            s.writtenGen = s.writingGen;
            settle(s, was);
            writeSlot(s);
        }
        wakeAll(s.waiters);
        wakeAll(cacheWaiters);
        wakeAll(flushWaiters);
    }

    /**
     * Whether every table change numbered up to {@code seq} ({@link #metaSeq}) is written: no
     * slot and no L1 table holds an older unwritten change. Dirty slots are never evicted, so
     * a change is never lost from view. Scans the slots while one holds an unwritten change:
     * FLUSH only, when a table write ends.
     */
    private boolean tablesWrittenUpTo(long seq) {
        long l1 = l1WritingSeq != 0 ? l1WritingSeq : l1DirtySeq;
        if (l1 != 0 && l1 <= seq) {
            return false;
        }
        if (unwrittenSlots == 0) {
            return true; // no slot to scan (rev14e: every FLUSH and table write scanned them all)
        }
        for (L2Slot s : slots) {
            long oldest = s.writingSeq != 0 ? s.writingSeq : s.dirtySeq;
            if (oldest != 0 && oldest <= seq) {
                return false;
            }
        }
        return true;
    }

    /**
     * Issues one flush for every piece waiting in {@link #barrierWaiters} (a batch per flush,
     * not one per request), unless one is in flight: the pieces that came since wait for the
     * next, as the one in flight may not cover their data. Start and end of each {@link #advance},
     * and submit; a full back end (EAGAIN) is tried again at the next.
     */
    private void issueBarrier() {
        if (barrierInFlight || barrierWaiters.isEmpty()) {
            return;
        }
        int rc = io.prepareFlush(tag(K_BARRIER, 0));
        if (rc == -Errno.EAGAIN) {
            return;
        }
        if (rc < 0) {
            for (Req r = barrierWaiters.head; r != null; r = r.next) {
                if (r.error == 0) {
                    r.error = rc;
                }
            }
            wakeAll(barrierWaiters);
            return;
        }
        barrierInFlight = true;
        Req r;
        while ((r = barrierWaiters.poll()) != null) {
            barrierFlushing.add(r);
        }
    }

    private void onBarrierFlushed(long result) {
        barrierInFlight = false;
        if (result < 0) {
            flushFailed = true; // its error is consumed: the guest's next FLUSH must not succeed
            for (Req r = barrierFlushing.head; r != null; r = r.next) {
                if (r.error == 0) {
                    r.error = result;
                }
            }
        }
        wakeAll(barrierFlushing);
        issueBarrier();
    }

    /** Keeps {@link #unwrittenSlots} after a change to {@code s}'s sequence numbers ({@code was}: before it). */
    private void settle(L2Slot s, boolean was) {
        boolean now = s.unwritten();
        if (now != was) {
            unwrittenSlots += now ? 1 : -1;
        }
    }

    private void writeL1() {
        if (l1Writing || l1Gen == l1Written) {
            return;
        }
        int rc = io.prepareWrite(meta.header.l1TableOffset, l1Vec, tag(K_L1_WRITE, 0));
        if (rc == -Errno.EAGAIN) {
            metadataRetry = true; // retried from poll
            return;
        }
        if (rc < 0) {
            fatal(rc);
            return;
        }
        l1Writing = true;
        l1WritingGen = l1Gen;
        l1WritingSeq = l1DirtySeq;
        l1DirtySeq = 0;
    }

    private void onL1Written(long result) {
        l1Writing = false;
        l1WritingSeq = 0;
        if (result != meta.l1WriteBytes) {
            fatal(result < 0 ? (int) result : -Errno.EIO);
            l1Written = l1Gen;
            l1DirtySeq = 0;
        } else {
            l1Written = l1WritingGen;
            writeL1();
        }
        wakeAll(l1Waiters);
        wakeAll(flushWaiters);
    }

    // ------------------------------------------------------------------ allocation

    /** A reserved host cluster, or 0 with {@code r} parked until the next reservation. */
    private long allocate(Req r) {
        if (refill.next < refill.reservedEnd) {
            long c = refill.next;
            refill.next += cluster;
            refill.prefetch();
            return c;
        }
        park(r, allocWaiters);
        refill.start();
        return 0;
    }

    /**
     * Reserves clusters at the end of the file: refcounts set to 1 and made durable before any of
     * them is handed out. A small state machine of its own, driven by back-end completions.
     */
    private final class Refill {
        static final int IDLE = 0;
        static final int LOADING = 1;
        static final int BLOCK_WRITTEN = 2;
        static final int BLOCK_FLUSHED = 3;
        static final int TABLE_WRITTEN = 4;
        static final int RESERVE_WRITTEN = 5;
        static final int RESERVE_FLUSHED = 6;

        final int entriesPerBlock = (int) (((long) cluster * 8) >>> meta.header.refcountOrder);
        /** The refcount block being updated; none for a read-only image, which never allocates. */
        final NativeBuffer block = readOnly ? null : new NativeBuffer(cluster, Math.max(alignment, 8));
        final IoVector blockVec = new IoVector(1);
        final IoVector tableVec = new IoVector(1);
        long next;
        long reservedEnd;
        long pendingEnd;
        int blockIndex = -1;
        long blockOffset;
        int state = IDLE;
        int failed;
        /** The step's operation waiting for a back-end slot ({@link #issue}), or -1. */
        int retryOp = -1;
        long retryOffset;
        IoVector retryVec;
        /** The bytes the step's read or write must complete with (0: a flush). */
        long expected;

        Refill() {
            next = Qcow2Image.roundUp(meta.allocationEnd, cluster);
            reservedEnd = next;
            if (block != null) {
                blockVec.add(block.address(), cluster);
            }
        }

        /**
         * Starts the next reservation while half of the current one is left, so allocating writes
         * rarely wait for its flush; only inside the current refcount block (a new block is
         * placed at the allocation point, so it waits until the reservation is used up).
         */
        void prefetch() {
            if (state == IDLE && reservedEnd - next < ((long) RESERVE_CLUSTERS << clusterBits) / 2
                    && blockIndex >= 0 && reservedEnd < blockEnd()) {
                start();
            }
        }

        long blockEnd() {
            return ((long) (blockIndex + 1) * entriesPerBlock) << clusterBits;
        }

        void start() {
            if (state != IDLE) {
                return;
            }
            try {
                startIdle();
            } catch (RuntimeException | Error e) {
                // Cut off between choosing a block and issuing its step (a late fault in a
                // prepare): the block in memory may not be the one on disk. Read it again.
                abandon();
                throw e;
            }
        }

        /**
         * Drops the reservation under way, whose step lost its prepare or completion to an
         * exception (the back end is idle, so nothing of it is still running): the refcount
         * block is read from the disk again at the next start. A new block whose reftable entry
         * may not have reached the disk is forgotten (its cluster leaks), so the next one is
         * never used unreferenced. Clusters it may have marked on disk leak, never err.
         */
        void abandon() {
            if ((state == BLOCK_WRITTEN || state == BLOCK_FLUSHED || state == TABLE_WRITTEN) && blockIndex >= 0
                    && (meta.reftableEntry(blockIndex) & REFT_OFFSET_MASK) == blockOffset) {
                meta.setReftableEntry(blockIndex, 0);
            }
            state = IDLE;
            blockIndex = -1;
            retryOp = -1;
        }

        private void startIdle() {
            long c = reservedEnd >>> clusterBits;
            long bi = c / entriesPerBlock;
            if (bi >= meta.reftableEntries) {
                fail(-Errno.ENOSPC); // growing the refcount table is not implemented
                return;
            }
            if (bi != blockIndex) {
                if (next < reservedEnd) {
                    return; // moving to another block waits until this reservation is used up
                }
                long e = meta.reftableEntry((int) bi) & REFT_OFFSET_MASK;
                if (e != 0) {
                    blockIndex = (int) bi;
                    blockOffset = e;
                    issue(LOADING, OP_READ, e, blockVec);
                    return;
                }
                // A new refcount block in the first free cluster, counting itself; nothing moves
                // until the file has room for it (a failed extension is tried again later).
                int rc = host.extendTo(next + cluster);
                if (rc < 0) {
                    fail(rc);
                    return;
                }
                UnsafeApi.setMemory(block.address(), cluster, (byte) 0);
                blockIndex = (int) bi;
                blockOffset = next;
                setRefcount((int) (c - bi * entriesPerBlock), 1);
                next += cluster;
                reservedEnd = next;
                issue(BLOCK_WRITTEN, OP_WRITE, blockOffset, blockVec);
                return;
            }
            reserve();
        }

        private void reserve() {
            long end = Math.min(reservedEnd + ((long) RESERVE_CLUSTERS << clusterBits), blockEnd());
            if (end <= reservedEnd) {
                start(); // the block is full: move to the next one
                return;
            }
            if (host.fixedSize()) {
                // An NBD export cannot grow: reserve what is left of it, then fail with ENOSPC.
                end = Math.min(end, host.sizeBytes() & ~clusterMask);
                if (end <= reservedEnd) {
                    if (next >= reservedEnd) {
                        fail(-Errno.ENOSPC); // writes wait for clusters that will never come
                    }
                    return; // a prefetch: what is reserved still serves
                }
            }
            long first = (reservedEnd >>> clusterBits) - (long) blockIndex * entriesPerBlock;
            long count = (end - reservedEnd) >>> clusterBits;
            for (long i = 0; i < count; i++) {
                setRefcount((int) (first + i), 1);
            }
            int rc = host.extendTo(end);
            if (rc < 0) {
                fail(rc);
                return;
            }
            pendingEnd = end;
            issue(RESERVE_WRITTEN, OP_WRITE, blockOffset, blockVec);
        }

        void onComplete(long result) {
            if (result < 0 && (state == BLOCK_FLUSHED || state == RESERVE_FLUSHED)) {
                flushFailed = true; // a failed fdatasync: see flushFailed
            }
            if (result < 0 || (expected > 0 && result != expected)) {
                fail(result < 0 ? (int) result : -Errno.EIO); // a short read or write of a block fails it
                return;
            }
            switch (state) {
                case LOADING:
                    state = IDLE;
                    reserve();
                    break;
                case BLOCK_WRITTEN:
                    issue(BLOCK_FLUSHED, OP_FLUSH, 0, null);
                    break;
                case BLOCK_FLUSHED: {
                    meta.setReftableEntry(blockIndex, blockOffset);
                    int chunk = Math.max(alignment, 8);
                    long entryByte = (long) blockIndex * 8;
                    long chunkStart = entryByte & ~(long) (chunk - 1);
                    tableVec.clear();
                    tableVec.add(meta.reftable.address() + chunkStart, chunk);
                    issue(TABLE_WRITTEN, OP_WRITE, meta.header.refcountTableOffset + chunkStart, tableVec);
                    break;
                }
                case TABLE_WRITTEN:
                    state = IDLE;
                    reserve();
                    break;
                case RESERVE_WRITTEN:
                    issue(RESERVE_FLUSHED, OP_FLUSH, 0, null);
                    break;
                case RESERVE_FLUSHED:
                    state = IDLE;
                    reservedEnd = pendingEnd;
                    wakeAll(allocWaiters);
                    break;
                default:
                    break;
            }
        }

        /**
         * Prepares the step's operation ({@code OP_READ}, {@code OP_WRITE} or {@code OP_FLUSH}
         * of {@code vec} at {@code offset}) and moves to {@code nextState}, whose completion
         * continues. A back end full of other requests' pieces (EAGAIN) is no failure: the step
         * waits in {@code nextState} and is prepared again from the next submit or poll
         * ({@link #retry}); failing it failed every write waiting for a cluster with EAGAIN.
         */
        private void issue(int nextState, int op, long offset, IoVector vec) {
            long tag = tag(K_REFILL, 0);
            expected = op == OP_FLUSH ? 0 : vec.totalLength();
            int rc = op == OP_READ ? io.prepareRead(offset, vec, tag)
                    : op == OP_WRITE ? io.prepareWrite(offset, vec, tag) : io.prepareFlush(tag);
            if (rc == -Errno.EAGAIN) {
                state = nextState;
                retryOp = op;
                retryOffset = offset;
                retryVec = vec;
                metadataRetry = true;
                return;
            }
            retryOp = -1;
            if (rc < 0) {
                fail(rc);
                return;
            }
            state = nextState;
        }

        /** Prepares again the step that met a full back end, if one waits. */
        void retry() {
            if (retryOp >= 0) {
                issue(state, retryOp, retryOffset, retryVec);
            }
        }

        private void fail(int rc) {
            state = IDLE;
            retryOp = -1;
            blockIndex = -1; // reload the block from disk next time
            failed = rc;
            for (Req r = allocWaiters.head; r != null; r = r.next) {
                if (r.error == 0) {
                    r.error = rc;
                }
            }
            wakeAll(allocWaiters);
            failed = 0;
        }

        void setRefcount(int index, long value) {
            Qcow2Driver.setRefcount(block.buffer(), meta.header.refcountOrder, index, value);
        }

        /** Returns unused reserved clusters (close, on the closing thread, synchronously). */
        void release() throws IOException {
            releaseFreed();
            if (reservedEnd > next && blockIndex >= 0) {
                long first = (next >>> clusterBits) - (long) blockIndex * entriesPerBlock;
                long count = (reservedEnd - next) >>> clusterBits;
                for (long i = 0; i < count; i++) {
                    setRefcount((int) (first + i), 0);
                }
                writeDurably(blockOffset, block, cluster);
                reservedEnd = next;
            }
            if (next >= openedFileSize) {
                host.truncate(next);
            }
        }
    }

    /** Sets entry {@code index} of a refcount block of {@code 2^order}-bit entries (big-endian). */
    static void setRefcount(UnsafeBuffer b, int order, int index, long value) {
        switch (order) {
            case 0:
            case 1:
            case 2: {
                int bits = 1 << order;
                int perByte = 8 / bits;
                int byteIndex = index / perByte;
                int shift = (index % perByte) * bits;
                int mask = ((1 << bits) - 1) << shift;
                int v = b.getByte(byteIndex) & 0xff;
                v = (v & ~mask) | (((int) value << shift) & mask);
                b.putByte(byteIndex, (byte) v);
                break;
            }
            case 3:
                b.putByte(index, (byte) value);
                break;
            case 4:
                b.putShort(index * 2, (short) value, ByteOrder.BIG_ENDIAN);
                break;
            case 5:
                b.putInt(index * 4, (int) value, ByteOrder.BIG_ENDIAN);
                break;
            default:
                b.putLong(index * 8, value, ByteOrder.BIG_ENDIAN);
        }
    }

    // ------------------------------------------------------------------ corruption and errors

    private void markCorrupt(String reason) {
        if (corrupt) {
            return;
        }
        corrupt = true;
        corruptReason = reason;
        wakeAll(flushWaiters);
        // Once per image, never per request: the operator must learn why the disk fails.
        System.err.println("vblk: qcow2 image " + meta.path + " is corrupt, failing its requests with EIO: " + reason);
        if (!readOnly && v3) {
            UnsafeBuffer h = headerSector.buffer();
            long f = h.getLong(INCOMPATIBLE_FEATURES_OFFSET, ByteOrder.BIG_ENDIAN);
            h.putLong(INCOMPATIBLE_FEATURES_OFFSET, f | INCOMPAT_CORRUPT, ByteOrder.BIG_ENDIAN);
            io.prepareWrite(0, headerVec, tag(K_HEADER, 0));
        }
    }

    private void fatal(int rc) {
        if (fatalError == 0) {
            fatalError = rc < 0 ? rc : -Errno.EIO;
        }
        wakeAll(flushWaiters); // a waiting FLUSH fails now: the table it waits for may never be written
    }

    // ------------------------------------------------------------------ locks and lists

    /** Takes the allocation lock {@code key} (a guest cluster, or an L1 index as -1-i). */
    private boolean lock(Req r, long key) {
        if (key >= r.lockKey && key < r.lockEnd) {
            return true;
        }
        for (Req other : reqs) {
            if (other != r && key >= other.lockKey && key < other.lockEnd) {
                park(r, other.lockWaiters);
                return false;
            }
        }
        r.lockKey = key;
        r.lockEnd = key + 1;
        return true;
    }

    /**
     * Extends the cluster locks {@code r} holds ({@code [lockKey, lockEnd)}, a DISCARD's run)
     * by {@code key}, the next cluster, when no other request holds it; false (nothing changed,
     * nothing parked) otherwise.
     */
    private boolean extendLock(Req r, long key) {
        if (key != r.lockEnd || r.lockKey < 0) {
            return false;
        }
        for (Req other : reqs) {
            if (other != r && key >= other.lockKey && key < other.lockEnd) {
                return false;
            }
        }
        r.lockEnd = key + 1;
        return true;
    }

    private void unlock(Req r) {
        if (r.lockKey != NO_LOCK) {
            r.lockKey = NO_LOCK;
            r.lockEnd = NO_LOCK;
            wakeAll(r.lockWaiters);
        }
    }

    /**
     * Gives {@code r} a bounce buffer (kept until {@link #releaseBounce}); false with {@code r}
     * parked until one is given back. Allocates only while the pool is below its bound.
     */
    private boolean acquireBounce(Req r) {
        if (r.bounce != null) {
            return true;
        }
        Bounce b;
        if (bounceFree > 0) {
            b = bouncePool[--bounceFree];
            bouncePool[bounceFree] = null;
        } else if (bounceCreated < bounceMax && (b = growBounce()) != null) {
            bounceCreated++;
        } else {
            park(r, bounceWaiters);
            return false;
        }
        r.attach(b);
        return true;
    }

    /**
     * One more buffer for the pool, or null: only while the direct-memory pool every disk
     * shares has room for it. Without room the request waits for a pooled buffer (at least the
     * one taken at open exists, and a holder waits only for back-end completions, so one comes
     * back), and the next request that finds none free asks again: memory another disk gave
     * back (closed) lets the pool grow again. Asking costs a read of the pool's counter; a
     * direct allocation that fails anyway (a race with another disk) collects and sleeps for up
     * to half a second (Bits.reserveMemory) on an I/O thread other disks share, so after one
     * the pool does not grow for {@link #BOUNCE_GROW_BACKOFF_NANOS}. Growth used to stop for
     * the driver's life at the first refusal.
     */
    private Bounce growBounce() {
        if (bounceGrowBackoff) {
            if (System.nanoTime() - bounceGrowAfter < 0) {
                return null;
            }
            bounceGrowBackoff = false;
        }
        if (!DirectMemory.roomFor(3L * cluster + 2L * alignment)) {
            return null;
        }
        try {
            return new Bounce(cluster, alignment);
        } catch (OutOfMemoryError e) {
            // another disk took the room meanwhile
            bounceGrowBackoff = true;
            bounceGrowAfter = System.nanoTime() + BOUNCE_GROW_BACKOFF_NANOS;
            return null;
        }
    }

    /**
     * Gives back the bounce buffer of {@code r}, if it holds one, and wakes every waiter: the
     * first that can use it takes it and the rest park again. Waking one only lost the buffer
     * when that one finished without taking it (the image turned corrupt, its request failed):
     * the others then waited for ever, and the drain with them (review 10c).
     */
    private void releaseBounce(Req r) {
        Bounce b = r.detach();
        if (b != null) {
            bouncePool[bounceFree++] = b;
            wakeAll(bounceWaiters);
        }
    }

    /** Slots for a disk of {@code size} bytes: its L2 tables (at least 2), at most {@link #slotLimit}. */
    private int slotsFor(long size) {
        long tables = size <= 0 ? 0 : (size - 1) / ((long) cluster << l2Bits) + 1;
        return (int) Math.min(slotLimit, Math.max(2, tables));
    }

    /**
     * Adds the slots a disk grown to {@code size} bytes may use, allocated now (a resize, with
     * every slot idle and about to be dropped): refused, the disk unchanged, when the
     * direct-memory pool cannot give them.
     */
    private void growSlots(long size) throws IOException {
        int want = slotsFor(size);
        if (want <= slots.length) {
            return;
        }
        L2Slot[] grown = java.util.Arrays.copyOf(slots, want);
        try {
            for (int i = slots.length; i < want; i++) {
                grown[i] = new L2Slot(i, cluster, Math.max(alignment, 8));
                grown[i].allocate();
            }
        } catch (OutOfMemoryError e) {
            throw new IOException(DirectMemory.exhausted(meta.path, (long) (want - slots.length) * cluster,
                    "the L2 cache tables of the grown disk", e).getMessage());
        }
        slots = grown;
        clockHand = 0;
    }

    /** L2 cache slots, and how many of them have their table allocated; for tests. */
    int[] l2Cache() {
        int allocated = 0;
        for (L2Slot s : slots) {
            allocated += s.buffer == null ? 0 : 1;
        }
        return new int[] {slots.length, allocated};
    }

    /** The backing file's driver, or null; for tests. */
    BlockDriver backing() {
        return backing;
    }

    /** Refcount reads a DISCARD issued (one per cluster the image had at open); for tests. */
    long refcountReads() {
        return refcountReads;
    }

    /** Host-range punches a DISCARD issued (one per run of adjacent clusters); for tests. */
    long punches() {
        return punches;
    }

    /** Bounce buffers in existence (at most {@link #bounceMax}); for tests. */
    int bounceBuffers() {
        return bounceCreated;
    }

    private void park(Req r, ReqList list) {
        list.add(r);
    }

    private void wakeAll(ReqList list) {
        Req r;
        while ((r = list.poll()) != null) {
            runnable.add(r);
        }
    }

    /**
     * Accounts for an operation prepared for {@code r}. On failure the error is recorded and the
     * caller returns true, so the state machine runs on and finishes the request.
     */
    private boolean prepare(Req r, int rc) {
        if (rc < 0) {
            if (r.error == 0) {
                r.error = rc;
            }
            return false;
        }
        r.pending++;
        return true;
    }

    // ------------------------------------------------------------------ guest buffers

    /** Fills {@code r.vec} with the next {@code len} bytes of the guest buffers. */
    private void carve(Req r, long len) {
        r.vec.clear();
        IoVector src = r.buffers;
        long left = len;
        while (left > 0) {
            int segLen = src.length(r.seg);
            int take = (int) Math.min(left, segLen - r.segOff);
            r.vec.add(src.address(r.seg) + r.segOff, take);
            r.segOff += take;
            left -= take;
            if (r.segOff == segLen) {
                r.seg++;
                r.segOff = 0;
            }
        }
    }

    private void zeroGuest(Req r, long len) {
        carve(r, len);
        for (int i = 0, n = r.vec.count(); i < n; i++) {
            UnsafeApi.setMemory(r.vec.address(i), r.vec.length(i), (byte) 0);
        }
    }

    private void copyToGuest(Req r, long from, long len) {
        carve(r, len);
        long src = from;
        for (int i = 0, n = r.vec.count(); i < n; i++) {
            UnsafeApi.copyMemory(src, r.vec.address(i), r.vec.length(i));
            src += r.vec.length(i);
        }
    }

    // ------------------------------------------------------------------ completions

    /** An operation's user data: its kind (bits 24-31) and the request or slot index (bits 0-23). */
    private static long tag(long kind, int index) {
        return (kind << 24) | index;
    }

    /**
     * A request's operation: {@link #tag} with the byte count it must complete with in bits
     * 32-63 (0: any count, a flush or write-zeroes), so a short read or write fails the
     * request with EIO instead of passing for whole (ENOSPC or EDQUOT part way through a
     * write comes back as a short count).
     */
    private static long reqTag(Req r, long expected) {
        return (expected << 32) | tag(K_REQ, r.index);
    }

    private void onIo(long userData, long result) {
        int index = (int) (userData & 0xffffff);
        switch ((int) ((userData >>> 24) & 0xff)) {
            case (int) K_REQ:
                onReqOp(reqs[index], result, userData >>> 32);
                break;
            case (int) K_L2_LOAD:
                onL2Loaded(slots[index], result);
                break;
            case (int) K_L2_WRITE:
                onL2Written(slots[index], result);
                break;
            case (int) K_L1_WRITE:
                onL1Written(result);
                break;
            case (int) K_REFILL:
                refill.onComplete(result);
                break;
            case (int) K_BARRIER:
                onBarrierFlushed(result);
                break;
            default:
                break; // the corrupt-bit header write: best effort
        }
    }

    private void onBacking(long userData, long result) {
        Req r = reqs[(int) userData];
        onReqOp(r, result, r.backingExpected);
    }

    private void onReqOp(Req r, long result, long expected) {
        if (r.phase == PH_PUNCHED && r.op == OP_DISCARD && result < 0) {
            result = 0; // an advisory punch that failed: the cluster only stays allocated
        }
        if (r.op == OP_FLUSH && (result < 0 || flushFailed)) {
            // A guest FLUSH's fdatasync failed (sticky, as a barrier's), or one of ours failed
            // while it ran and may have consumed the error it would have seen.
            flushFailed = true;
            result = result < 0 ? result : -Errno.EIO;
        }
        if (r.phase == PH_REFCOUNT && result >= 0) {
            r.refcountBytes = result; // what the window may be decoded from (checkRefcount)
        }
        if (r.error == 0 && (result < 0 || (expected > 0 && result != expected))) {
            r.error = result < 0 ? result : -Errno.EIO; // a short count is a failed operation
        }
        if (--r.pending == 0 && !r.queued) {
            runnable.add(r);
        }
    }

    @Override
    public int poll(CompletionSink sink, int max) {
        try {
            advance();
        } catch (RuntimeException | Error e) {
            faulted = true; // a completion may be lost: see recoverAfterFault
            throw e;
        }
        Req r;
        int delivered = 0;
        while (delivered < max && (r = done.poll()) != null) {
            long tag = r.tag;
            long result = r.result;
            r.busy = false;
            r.end();
            if (r.index == freeReqs.length) {
                accepted--; // the driver's own (zeroGrownArea), left by a failed wait: nobody to tell
                continue;
            }
            freeReqs[freeReqCount++] = r.index;
            accepted--;
            delivered++;
            sink.complete(tag, result);
        }
        return delivered;
    }

    /** Reaps the back ends and moves every request as far as it can go. */
    private void advance() {
        int reaped = io.poll(ioSink, io.depth());
        if (backing != null) {
            reaped += backing.poll(backingSink, backing.depth());
        }
        if (reaped > 0) {
            wakeAll(ioWaiters);
        }
        retryMetadataWrites();
        // Before the runnable requests take the slots the reap freed: under a steady read load
        // they would take every one, and a piece waiting for its barrier (holding its cluster
        // or L1 lock) would wait as long as the load lasts (rev14e M-a).
        issueBarrier();
        piecesLeft = PIECES_PER_ROUND;
        round++;
        wakeAll(yielded);
        Req r;
        while ((r = runnable.poll()) != null) {
            run(r);
        }
        issueBarrier();
        if (faulted && reaped == 0 && backEndsIdle()) {
            recoverAfterFault();
        }
    }

    /**
     * After an exception went through this driver (a request step, a reap, a submit: a
     * guest-memory fault the JVM delivered late, engine GuestFaults), once the back ends are
     * idle so nothing of ours can still complete or touch memory: requests still waiting can
     * only wait for a completion the exception cut off, and fail with EIO ({@link #failStalled});
     * metadata steps under way start over ({@link #recoverLostMetadata}); and the back ends give
     * back the slots of operations whose completion (or hand-over, in a prepare) was lost, as
     * {@link #reclaimLostSlots()} does for the engine. Off the data path: only after a fault.
     */
    private void recoverAfterFault() {
        faulted = false;
        if (accepted > done.size) {
            failStalled();
        }
        recoverLostMetadata();
        io.reclaimLostSlots();
        if (backing != null) {
            backing.reclaimLostSlots();
        }
    }

    /** Whether the back ends (image and backing file) have nothing in flight and nothing pending. */
    private boolean backEndsIdle() {
        return io.inFlight() == 0 && io.pendingSubmit() == 0
                && (backing == null || (backing.inFlight() == 0 && backing.pendingSubmit() == 0));
    }

    /**
     * Every accepted request waits, directly or through a metadata step or another request's
     * lock, for a back-end completion; so after a fault, with the back ends idle, nothing
     * runnable and requests still accepted, those requests wait for completions the exception
     * cut off (in a reap, or in a prepare after the back end took its slot), which will never
     * come. One lost operation of a request that fanned out into several (an L2 load,
     * copy-on-write read, data write, L2 write...) is enough. They finish with EIO through
     * {@link #poll} like any request: the engine still counts them in flight and hears of each
     * exactly once, and with the back ends idle no operation can touch their buffers any more.
     */
    private void failStalled() {
        // Unpark everyone (each request is in at most one list): every waiter is stalled too.
        for (ReqList list : waitLists) {
            while (list.poll() != null) {
                // dropped: failed below
            }
        }
        for (L2Slot s : slots) {
            while (s.waiters.poll() != null) {
                // dropped: failed below
            }
        }
        for (Req r : reqs) {
            while (r.lockWaiters.poll() != null) {
                // dropped: failed below
            }
        }
        for (Req r : reqs) {
            // queued now means listed in done (finished already) or in yielded: a request that
            // only waits for the next poll lost nothing and goes on (review 10c).
            if (r.busy && !r.queued) {
                Bounce b = r.detach(); // back to the pool, waking no one (every waiter fails here)
                if (b != null) {
                    bouncePool[bounceFree++] = b;
                }
                r.lockKey = NO_LOCK;
                r.lockEnd = NO_LOCK;
                r.punch = 0;
                r.punchLen = 0;
                r.pending = 0;
                r.result = r.error != 0 ? r.error : -Errno.EIO;
                r.phase = PH_FINISH;
                done.add(r);
            }
        }
    }

    /**
     * With the back ends idle, metadata steps still marked under way lost their completion (or
     * their prepare) to an exception: each starts over. A lost L2 load forgets the table; a lost
     * L2 or L1 write is written again (the tables in memory are the truth, and were only ever
     * changed after the data they name was written); a cluster reservation is abandoned and the
     * refcount block read again from the disk (clusters it may have reserved on disk leak, never
     * err). Reaping thread, back ends idle.
     */
    private void recoverLostMetadata() {
        for (L2Slot s : slots) {
            if (s.loading) {
                s.loading = false;
                s.assign(0);
            }
            if (s.writing) {
                boolean was = s.unwritten();
                s.writing = false;
                s.dirtySeq = s.writingSeq != 0 ? s.writingSeq : s.dirtySeq;
                s.writingSeq = 0;
                settle(s, was);
                int lo = (int) (s.writeVec.address(0) - s.buffer.address());
                s.dirtyLo = Math.min(s.dirtyLo, lo);
                s.dirtyHi = Math.max(s.dirtyHi, lo + s.writeVec.length(0));
            }
            if (s.gen != s.writtenGen) {
                s.writeWanted = true;
                metadataRetry = true;
            }
        }
        if (l1Writing) {
            l1Writing = false;
            l1DirtySeq = l1WritingSeq != 0 ? l1WritingSeq : l1DirtySeq;
            l1WritingSeq = 0;
        }
        if (l1Gen != l1Written) {
            metadataRetry = true;
        }
        if (barrierInFlight) {
            // Its completion was lost: the pieces it covered (if any still wait) take the next.
            barrierInFlight = false;
            Req r;
            while ((r = barrierFlushing.poll()) != null) {
                barrierWaiters.add(r);
            }
        }
        refill.abandon();
    }

    /**
     * Passes the engine's reclaim on (see {@link BlockDriver#reclaimLostSlots()}): with no request
     * accepted and the back ends idle, the metadata steps that lost their completion start over,
     * and the image's and backing file's back ends give back the slots whose completion an
     * exception cut off. Requests never lose their slot here: one whose completion was lost
     * finishes with EIO from {@link #poll} once the back ends are idle (see {@link #failStalled}),
     * so the engine sees it leave the count. Returns the back-end slots that came back.
     */
    @Override
    public int reclaimLostSlots() {
        if (closed || accepted != 0 || done.size != 0 || runnable.size != 0 || yielded.size != 0 || !backEndsIdle()) {
            return 0;
        }
        if (freeReqCount != freeReqs.length) {
            // Only a fault inside accept's own bookkeeping can leave a request slot out unaccepted.
            for (int i = 0; i < freeReqs.length; i++) {
                reqs[i].busy = false;
                freeReqs[i] = freeReqs.length - 1 - i;
            }
            freeReqCount = freeReqs.length;
        }
        recoverLostMetadata();
        int n = io.reclaimLostSlots();
        if (backing != null) {
            n += backing.reclaimLostSlots();
        }
        return n;
    }

    /** The back end on the image file (tests). */
    IoBackend imageBackend() {
        return io;
    }

    private void retryMetadataWrites() {
        if (!metadataRetry || !active) {
            return; // inactive: the file is another backend's (stale state is dropped at activation)
        }
        metadataRetry = false;
        for (L2Slot s : slots) {
            if (s.writeWanted) {
                writeSlot(s);
            }
        }
        if (!l1Writing && l1Gen != l1Written) {
            writeL1();
        }
        refill.retry();
    }

    @Override
    public int submit() {
        try {
            return submitAll();
        } catch (RuntimeException | Error e) {
            faulted = true; // a completion may be lost: see recoverAfterFault
            throw e;
        }
    }

    private int submitAll() {
        retryMetadataWrites();
        issueBarrier();
        int rc = io.submit();
        if (backing != null && backing.pendingSubmit() > 0) {
            int b = backing.submit();
            if (b > 0) {
                rc = Math.max(rc, 0) + b;
            }
        }
        return rc;
    }

    @Override
    public int pendingSubmit() {
        // Finished or runnable requests count as pending so the I/O thread polls again before
        // it sleeps: their completion comes from this driver, not from a kernel event. So does
        // a fault not yet recovered from once the back ends are idle: a request it stranded
        // fails at a poll, not at a drain.
        return io.pendingSubmit() + (backing == null ? 0 : backing.pendingSubmit()) + done.size + runnable.size
                + yielded.size + (recoverable() ? 1 : 0);
    }

    /**
     * A fault not yet recovered from that the next {@link #poll} can recover from: the back ends
     * are idle. While they still hold operations (a stalled disk or server can hold them for
     * long) there is nothing to do but wait for their completions, which raise the completion
     * sources like any other: counting the fault as pending then kept the I/O thread polling
     * the whole time (a core at 100 % while the operations stalled). The poll that reaps the
     * last of them finds this true afterwards, so the thread polls once more and recovers.
     */
    private boolean recoverable() {
        return faulted && backEndsIdle();
    }

    @Override
    public int inFlight() {
        return accepted;
    }

    @Override
    public int completionSources() {
        return 1 + (backing == null ? 0 : backing.completionSources());
    }

    @Override
    public int completionFd(int i) {
        return i == 0 ? io.completionEvent().fd() : backing.completionFd(i - 1);
    }

    @Override
    public void acknowledge(int i) {
        if (i == 0) {
            // The back end's own reset: an NBD disk's source is an epoll descriptor, not an
            // eventfd to read (its acknowledgement notes the wake-up for the next poll).
            io.acknowledgeCompletions();
        } else {
            backing.acknowledge(i - 1);
        }
    }

    /**
     * Resets every completion source a poll already reaped from (the image's back end and each
     * backing level's), so the I/O thread's sleep does not wake at once to nothing; true when one
     * of them has completions to poll after all. Every source is reset, none skipped once one
     * answers true (a source left raised would cost the wake-up this avoids).
     */
    @Override
    public boolean rearmCompletions() {
        boolean ready = io.rearmCompletions();
        if (backing != null && backing.rearmCompletions()) {
            ready = true;
        }
        return ready;
    }

    @Override
    public int awaitCompletions(int timeoutMs) {
        if (done.size > 0 || runnable.size > 0 || yielded.size > 0 || recoverable()) {
            return 1;
        }
        return io.awaitCompletions(backing == null ? timeoutMs : Math.min(timeoutMs < 0 ? 1 : timeoutMs, 1));
    }

    /**
     * How long {@link #close()} waits for what is in flight ({@code vblk.qcow2.closeDrainMs},
     * default 10 s; read at each close). Past it the driver closes undrained: a back end that
     * never answers (a hung FUSE or NFS file, a frozen disk) must not hold an export.remove or a
     * shutdown for ever.
     */
    private static long closeDrainNs() {
        return TimeUnit.MILLISECONDS.toNanos(Math.max(0, Long.getLong("vblk.qcow2.closeDrainMs", 10_000)));
    }

    /**
     * Drivers closed with operations still in flight: kept reachable, because their L2 tables
     * and bounce buffers are freed with them by the garbage collector and the kernel may still
     * write into them; each leaves once its back ends (its file's and its backing chain's) are
     * released, the kernel done with them ({@link #whenBackEndsDrained}).
     */
    private static final java.util.Set<Qcow2Driver> UNDRAINED = java.util.concurrent.ConcurrentHashMap.newKeySet();

    /** Whether close left operations in flight that its back ends have not yet been seen to finish. */
    private volatile boolean undrainedAtClose;

    /** Operations of this driver's file back end in flight or not yet submitted, its own work included (tests). */
    int backEndBusy() {
        return io.inFlight() + io.pendingSubmit();
    }

    /** Drivers closed undrained whose back ends still hold operations (tests). */
    static int undrainedDrivers() {
        return UNDRAINED.size();
    }

    @Override
    public void close() {
        closeWithin(Long.MAX_VALUE);
    }

    /** As {@link #close()}, every wait within {@code timeoutNs} (and each at most {@code vblk.qcow2.closeDrainMs}). */
    @Override
    public void closeWithin(long timeoutNs) {
        if (closed) {
            return;
        }
        long start = System.nanoTime();
        // At least OWN_WORK_FLOOR_NS: what is in flight at a device's close, its guest requests
        // drained, is this driver's own (cluster refill, prefetch), which the caller's deadline
        // did not count on; given ~0 it would close undrained, keeping its reserved clusters
        // (leaked in the image) and its locks, though the work was a moment from done.
        long waitNs = Math.min(Math.max(OWN_WORK_FLOOR_NS, timeoutNs), closeDrainNs());
        boolean drained = drainWithin((tag, result) -> { }, waitNs)
                && io.drainWithin(ioSink, Math.max(0, waitNs - (System.nanoTime() - start)));
        closed = true;
        if (!drained) {
            undrainedAtClose = true;
            UNDRAINED.add(this);
            System.getLogger(Qcow2Driver.class.getName()).log(System.Logger.Level.WARNING, "qcow2 " + meta.path
                    + ": closed with " + (io.inFlight() + io.pendingSubmit()) + " operation(s) still in flight after "
                    + TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start)
                    + " ms: reserved clusters not returned, buffers kept until the kernel has finished with them");
        }
        try {
            if (drained && !readOnly && active && !corrupt && fatalError == 0) {
                refill.release(); // never while inactive: the file is another backend's
            }
        } catch (IOException e) {
            throw new UncheckedIOException("qcow2: cannot return reserved clusters of " + meta.path, e);
        } finally {
            try {
                host.closeWithin(left(start, timeoutNs)); // and the back end it opened
                if (backing != null) {
                    backing.closeWithin(left(start, timeoutNs));
                }
            } finally {
                inflater.end();
                if (zstd != null) {
                    zstd.close();
                }
                if (!drained) {
                    // Once every back end below is released the kernel writes nothing more into
                    // this driver's buffers: it may go (at once when they closed drained).
                    whenBackEndsDrained(this::forgetUndrained);
                }
            }
        }
    }

    /** The least a close waits for the driver's own work in flight, whatever the caller's deadline (at most closeDrainMs). */
    static final long OWN_WORK_FLOOR_NS = TimeUnit.MILLISECONDS.toNanos(200);

    /** What is left of {@code timeoutNs} since {@code start}, never negative; MAX_VALUE stays unbounded. */
    private static long left(long start, long timeoutNs) {
        return timeoutNs == Long.MAX_VALUE ? Long.MAX_VALUE : Math.max(0, timeoutNs - (System.nanoTime() - start));
    }

    /** Runs {@code action} once this driver's back end and then its backing chain's are closed drained. */
    private void whenBackEndsDrained(Runnable action) {
        io.whenDrained(() -> {
            if (backing == null) {
                action.run();
            } else {
                backing.whenDrained(action);
            }
        });
    }

    private void forgetUndrained() {
        undrainedAtClose = false;
        UNDRAINED.remove(this);
    }

    @Override
    public void whenDrained(Runnable action) {
        // Registered after close's forgetUndrained, so it runs after it (each back end runs its
        // actions in order).
        whenBackEndsDrained(() -> {
            if (closedDrained()) {
                action.run();
            }
        });
    }

    @Override
    public boolean closedDrained() {
        return closed && !undrainedAtClose && io.closedDrained() && (backing == null || backing.closedDrained());
    }

    /** The image file opened (and locked) for this driver; null when the image lies on a network disk. */
    io.vblk.aio.Image image() {
        return host.image();
    }

    /** The image file (unless the image lies on a network disk), then the backing chain's files. */
    @Override
    public java.util.List<io.vblk.aio.Image> files() {
        java.util.List<io.vblk.aio.Image> all = new java.util.ArrayList<>();
        if (host.image() != null) {
            all.add(host.image());
        }
        if (backing != null) {
            all.addAll(backing.files());
        }
        return all;
    }

    @Override
    public String toString() {
        return "qcow2[" + meta.path + ", " + meta.header + "]";
    }

    // ------------------------------------------------------------------ per-request and per-table state

    /** One guest request in flight: preallocated, reused. */
    static final class Req {
        final int index;
        final ReqList lockWaiters = new ReqList();
        final IoVector bounceVec = new IoVector(1);
        IoVector vec = new IoVector(16);
        IoVector backingVec = new IoVector(16);
        int op;
        long tag;
        long pos;
        long end;
        IoVector buffers;
        int seg;
        int segOff;
        int pending;
        long error;
        long result;
        int phase;
        long pieceLen;
        int l1Index;
        int l2Index;
        long host;
        boolean hostFresh;
        /** The piece's data needs a barrier flush before its L2 entry (copied or reused cluster). */
        boolean needBarrier;
        long newEntry;
        /** The host offset of the DISCARD's run of discarded clusters to punch; 0: none. */
        long punch;
        /** The run's length in bytes (whole clusters, adjacent in the guest and the host); 0: none. */
        long punchLen;
        /** A DISCARD piece's host cluster, its refcount checked, to join the run once its entry is written; 0: none. */
        long discardHost;
        /**
         * The DISCARD's refcount window: bit {@code i} says host cluster {@link #refcountFirst}
         * {@code + i} has refcount exactly 1, for {@link #refcountCount} clusters (0: none; it
         * lasts one request: the refcounts of clusters the image had at open change only while
         * the driver is idle, a resize or close). Filled by {@link #checkRefcount}.
         */
        final long[] refcountOnes = new long[REFCOUNT_WINDOW / 64];
        long refcountFirst;
        int refcountCount;
        /** The refcount read in flight: its file offset, its block, the block's first cluster, the bytes it returned. */
        long refcountStart;
        long refcountBlock;
        long refcountBlockFirst;
        long refcountBytes;
        long waitGen;
        long l2Offset;
        L2Slot slot;
        /** The bytes the request's backing-file read must return (one at a time). */
        long backingExpected;
        /** Locked: the keys {@code [lockKey, lockEnd)} (one but for a DISCARD's run); none while {@link #NO_LOCK}. */
        long lockKey = NO_LOCK;
        long lockEnd = NO_LOCK;
        Req next;
        /** The driver round in which it last started a piece. */
        int pieceRound = -1;
        boolean queued;
        /** Accepted and not yet delivered. */
        boolean busy;
        /** The pool's buffer this request holds, or null; {@link #bounce} and the views are its. */
        Bounce held;
        NativeBuffer bounce;
        ByteBuffer bounceIn;
        ByteBuffer bounceOut;
        int bounceInputOffset;
        int compressedStart;
        int compressedLength;

        Req(int index) {
            this.index = index;
        }

        void begin(int op, long offset, long length, IoVector buffers, long tag) {
            this.op = op;
            this.tag = tag;
            this.pos = offset;
            this.end = offset + length;
            this.buffers = buffers;
            this.seg = 0;
            this.segOff = 0;
            this.pending = 0;
            this.error = 0;
            this.phase = PH_START;
            this.host = 0;
            this.punch = 0;
            this.punchLen = 0;
            this.discardHost = 0;
            this.refcountCount = 0;
            if (buffers != null && vec.capacity() < buffers.count()) {
                vec = new IoVector(buffers.capacity()); // once per slot, at the largest size seen
                backingVec = new IoVector(buffers.capacity());
            }
            if (op == OP_FLUSH) {
                this.end = 1;
                this.pos = 0;
            }
        }

        void end() {
            buffers = null;
            slot = null;
        }

        void attach(Bounce b) {
            held = b;
            bounce = b.buffer;
            bounceIn = b.in;
            bounceOut = b.out;
            bounceInputOffset = b.inputOffset;
        }

        /** Lets go of the bounce buffer; returns it, or null when none was held. */
        Bounce detach() {
            Bounce b = held;
            held = null;
            bounce = null;
            bounceIn = null;
            bounceOut = null;
            return b;
        }

        void bounceVec(int offset, int length) {
            bounceVec.clear();
            bounceVec.add(bounce.address() + offset, length);
        }

        /** Moves the guest-buffer cursor back by {@code len} bytes (a piece to be retried). */
        void cursorBack(long len) {
            long left = len;
            while (left > 0) {
                if (segOff == 0) {
                    seg--;
                    segOff = buffers.length(seg);
                }
                int take = (int) Math.min(left, segOff);
                segOff -= take;
                left -= take;
            }
        }
    }

    /** One bounce buffer of the pool: a decompressed cluster, then up to two clusters of input. */
    static final class Bounce {
        final NativeBuffer buffer;
        /** The whole buffer, for the compressed input (position and limit set per use). */
        final ByteBuffer in;
        /** The first cluster only: decompression can never write past it. */
        final ByteBuffer out;
        final int inputOffset;

        Bounce(int cluster, int alignment) {
            buffer = new NativeBuffer(3 * cluster + 2 * alignment, alignment);
            in = buffer.buffer().byteBuffer().duplicate();
            ByteBuffer first = buffer.buffer().byteBuffer().duplicate();
            first.clear().limit(cluster);
            out = first.slice();
            inputOffset = cluster;
        }
    }

    /** A cached L2 table. */
    static final class L2Slot {
        final int index;
        private final int cluster;
        private final int alignment;
        /** The table's memory, allocated at open ({@link #allocate}). */
        NativeBuffer buffer;
        final IoVector vec = new IoVector(1);
        final IoVector writeVec = new IoVector(1);
        final ReqList waiters = new ReqList();
        /** Byte range of the table changed since the last write began (empty: lo >= hi). */
        int dirtyLo = Integer.MAX_VALUE;
        int dirtyHi;
        int writingBytes;
        long l2Offset;
        int l1Index;
        boolean loading;
        boolean writing;
        boolean writeWanted;
        boolean referenced;
        long gen;
        long writtenGen;
        long writingGen;
        /** The first change ({@link Qcow2Driver#metaSeq}) since the write in flight began; 0: none. */
        long dirtySeq;
        /** The first change the write in flight carries; 0: none in flight. */
        long writingSeq;

        L2Slot(int index, int cluster, int alignment) {
            this.index = index;
            this.cluster = cluster;
            this.alignment = alignment;
        }

        /**
         * Allocates the table's memory, at the driver's open (the pool every disk shares may be
         * used up by the time the slot is first used: rev15a); once per slot.
         */
        void allocate() {
            if (buffer == null) {
                buffer = new NativeBuffer(cluster, alignment);
                vec.add(buffer.address(), cluster);
            }
        }

        /** Back to a new slot's state, its table bytes zeroed: nothing of the old table survives. */
        void forget() {
            if (buffer != null) {
                UnsafeApi.setMemory(buffer.address(), buffer.capacity(), (byte) 0);
            }
            l2Offset = 0;
            l1Index = 0;
            loading = false;
            writing = false;
            writeWanted = false;
            referenced = false;
            gen = 0;
            writtenGen = 0;
            writingGen = 0;
            writingBytes = 0;
            dirtySeq = 0;
            writingSeq = 0;
            dirtyLo = Integer.MAX_VALUE;
            dirtyHi = 0;
        }

        void assign(long offset) {
            l2Offset = offset;
            referenced = true;
            writtenGen = gen;
            dirtyLo = Integer.MAX_VALUE;
            dirtyHi = 0;
        }

        /** Whether a change is not yet written (in a write in flight, or since it began). */
        boolean unwritten() {
            return dirtySeq != 0 || writingSeq != 0;
        }

        /** Notes change {@code seq}: the oldest unwritten one is kept. */
        void changed(long seq) {
            if (dirtySeq == 0) {
                dirtySeq = seq;
            }
        }

        void markDirty(int byteOffset, int chunk) {
            int lo = byteOffset & -chunk;
            dirtyLo = Math.min(dirtyLo, lo);
            dirtyHi = Math.max(dirtyHi, lo + chunk);
        }

        long entry(int i) {
            return buffer.buffer().getLong(i * 8, ByteOrder.BIG_ENDIAN);
        }

        void setEntry(int i, long value) {
            buffer.buffer().putLong(i * 8, value, ByteOrder.BIG_ENDIAN);
        }
    }

    /** An intrusive FIFO of requests (each request is in at most one list). */
    static final class ReqList {
        Req head;
        Req tail;
        int size;

        void add(Req r) {
            if (r.queued) {
                return;
            }
            r.queued = true;
            r.next = null;
            if (tail == null) {
                head = r;
            } else {
                tail.next = r;
            }
            tail = r;
            size++;
        }

        Req poll() {
            Req r = head;
            if (r != null) {
                head = r.next;
                if (head == null) {
                    tail = null;
                }
                r.next = null;
                r.queued = false;
                size--;
            }
            return r;
        }

        boolean isEmpty() {
            return head == null;
        }
    }
}
