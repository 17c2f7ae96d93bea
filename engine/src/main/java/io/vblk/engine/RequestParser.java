package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.HEADER_LENGTH;
import static io.vblk.engine.BlkRequestDescriptor.ID_LENGTH;
import static io.vblk.engine.BlkRequestDescriptor.SECTOR_SHIFT;
import static io.vblk.engine.BlkRequestDescriptor.SECTOR_SIZE;
import static io.vblk.engine.BlkRequestDescriptor.SEGMENT_LENGTH;
import static io.vblk.engine.BlkRequestDescriptor.S_IOERR;
import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static io.vblk.engine.BlkRequestDescriptor.S_UNSUPP;

import org.agrona.UnsafeApi;
import org.agrona.concurrent.UnsafeBuffer;

import io.vblk.hostmem.DirtyLog;
import io.vblk.vring.DescriptorChain;

/**
 * Turns a popped descriptor chain into a {@link BlkRequest} (virtio 1.2 5.2.6). Guest memory is
 * hostile and may change under us: the header and discard segments are copied out once, then
 * validated and used from the copy (no double fetch). Every rejection completes the request with
 * a status; nothing here throws or allocates.
 */
final class RequestParser {
    /** What the dispatcher does with a parsed request. */
    enum Outcome {
        /** Hand the request to the back end. */
        SUBMIT,
        /** Complete now with {@link BlkRequest#immediateStatus}. */
        IMMEDIATE,
        /** No writable byte for a status: push the chain back with used length 0. */
        NO_STATUS
    }

    private final DeviceModel model;
    private final UnsafeBuffer header = new UnsafeBuffer(new byte[HEADER_LENGTH]);
    private final UnsafeBuffer segments;

    // Cursor into the chain after the header: segment index and offset within it.
    private int cursorSegment;
    private int cursorOffset;

    RequestParser(DeviceModel model) {
        this.model = model;
        this.segments = new UnsafeBuffer(new byte[Math.max(1, model.maxSegmentsPerRange()) * SEGMENT_LENGTH]);
    }

    /** The discard / write-zeroes segments copied by the last {@link #parse} of such a request. */
    UnsafeBuffer segments() {
        return segments;
    }

    /**
     * Parses {@code chain} into {@code r}. Returns {@link Outcome#SUBMIT}, {@link Outcome#IMMEDIATE}
     * or {@link Outcome#NO_STATUS}; for DISCARD / WRITE_ZEROES {@code r.pendingOps} is the segment count.
     */
    Outcome parse(DescriptorChain chain, BlkRequest r) {
        r.head = chain.head();
        int n = chain.segmentCount();
        // 5.2.6: the status is the last byte of the last device-writable descriptor.
        if (n == 0 || !chain.writable(n - 1) || chain.length(n - 1) <= 0) {
            return Outcome.NO_STATUS;
        }
        r.statusAddress = chain.address(n - 1) + chain.length(n - 1) - 1;
        r.usedLength = 1;
        if (chain.overflowed()) {
            // More segments than any request may carry (the view kept the status segment).
            return fail(r, S_IOERR);
        }
        long readable = chain.readableBytes();
        long writableData = chain.writableBytes() - 1;
        if (readable < HEADER_LENGTH) {
            return fail(r, S_IOERR);
        }
        io.vblk.sys.FaultPoints.at(io.vblk.sys.FaultPoints.PARSE); // tests only: see FaultPoints
        copyHeader(chain);
        r.type = header.getInt(BlkRequestDescriptor.TYPE_OFFSET);
        r.sector = header.getLong(BlkRequestDescriptor.SECTOR_OFFSET);
        long readableData = readable - HEADER_LENGTH;
        switch (r.type) {
            case BlkRequestDescriptor.T_IN:
                return parseIn(chain, r, readableData, writableData);
            case BlkRequestDescriptor.T_OUT:
                return parseOut(chain, r, readableData, writableData);
            case BlkRequestDescriptor.T_FLUSH:
                return parseFlush(r);
            case BlkRequestDescriptor.T_GET_ID:
                return parseGetId(chain, r, writableData);
            case BlkRequestDescriptor.T_DISCARD:
            case BlkRequestDescriptor.T_WRITE_ZEROES:
                return parseRanges(chain, r, readableData, writableData);
            default:
                // 5.2.6.1: unknown or not-negotiated types (GET_LIFETIME, SECURE_ERASE, ...) -> UNSUPP.
                return fail(r, S_UNSUPP);
        }
    }

    private Outcome parseIn(DescriptorChain chain, BlkRequest r, long readableData, long writableData) {
        if (readableData != 0 || !dataRangeValid(r.sector, writableData)) {
            return fail(r, S_IOERR);
        }
        if (!addData(chain, r, chain.segmentCount() - 1, 1)) {
            return fail(r, S_IOERR);
        }
        r.bytes = writableData;
        r.usedLength = (int) writableData + 1;
        return Outcome.SUBMIT;
    }

    private Outcome parseOut(DescriptorChain chain, BlkRequest r, long readableData, long writableData) {
        // 5.2.6.2: a write to a read-only device fails and writes nothing.
        if (model.readOnly() || writableData != 0 || !dataRangeValid(r.sector, readableData)) {
            return fail(r, S_IOERR);
        }
        if (!addData(chain, r, firstWritable(chain) - 1, 0)) {
            return fail(r, S_IOERR);
        }
        r.bytes = readableData;
        return Outcome.SUBMIT;
    }

    private Outcome parseFlush(BlkRequest r) {
        if (!model.negotiated(BlkFeatures.FLUSH)) {
            return fail(r, S_UNSUPP);
        }
        // Nothing can be dirty on a read-only device: durable already.
        return model.readOnly() ? fail(r, S_OK) : Outcome.SUBMIT;
    }

    private Outcome parseGetId(DescriptorChain chain, BlkRequest r, long writableData) {
        byte[] id = model.serial();
        int remaining = (int) Math.min(ID_LENGTH, writableData);
        int written = 0;
        int end = chain.segmentCount();
        for (int i = firstWritable(chain); i < end && written < remaining; i++) {
            int length = chain.length(i);
            int count = Math.min(length - (i == end - 1 ? 1 : 0), remaining - written);
            long address = chain.address(i);
            for (int k = 0; k < count; k++) {
                int at = written + k;
                UnsafeApi.putByte(address + k, at < id.length ? id[at] : 0);
            }
            DirtyLog log = r.queue == null ? null : r.queue.log;
            if (log != null && count > 0) {
                log.markHost(r.queue.ring.memory(), address, count);
            }
            written += Math.max(0, count);
        }
        r.usedLength = written + 1;
        return fail(r, S_OK);
    }

    private Outcome parseRanges(DescriptorChain chain, BlkRequest r, long readableData, long writableData) {
        boolean discard = r.type == BlkRequestDescriptor.T_DISCARD;
        if (!model.negotiated(discard ? BlkFeatures.DISCARD : BlkFeatures.WRITE_ZEROES)) {
            return fail(r, S_UNSUPP);
        }
        long count = readableData / SEGMENT_LENGTH;
        int maxSegments = discard ? model.maxDiscardSeg() : model.maxWriteZeroesSeg();
        if (model.readOnly() || writableData != 0 || readableData % SEGMENT_LENGTH != 0
                || count == 0 || count > maxSegments) {
            return fail(r, S_IOERR);
        }
        copyFromCursor(chain, segments, (int) count * SEGMENT_LENGTH);
        long maxSectors = discard ? model.maxDiscardSectors() : model.maxWriteZeroesSectors();
        for (int i = 0; i < count; i++) {
            int base = i * SEGMENT_LENGTH;
            long sector = segments.getLong(base + BlkRequestDescriptor.SEGMENT_SECTOR_OFFSET);
            long sectors = segments.getInt(base + BlkRequestDescriptor.SEGMENT_NUM_SECTORS_OFFSET) & 0xFFFF_FFFFL;
            int flags = segments.getInt(base + BlkRequestDescriptor.SEGMENT_FLAGS_OFFSET);
            // 5.2.6.2: unknown flags, or unmap on DISCARD, are unsupported.
            int allowed = discard ? 0 : BlkRequestDescriptor.SEGMENT_FLAG_UNMAP;
            if ((flags & ~allowed) != 0) {
                return fail(r, S_UNSUPP);
            }
            if (sectors > maxSectors || !sectorRangeValid(sector, sectors)) {
                return fail(r, S_IOERR);
            }
            r.bytes += sectors << SECTOR_SHIFT;
        }
        r.pendingOps = (int) count;
        return Outcome.SUBMIT;
    }

    /** IN/OUT data: a whole number of sectors inside the capacity (5.2.6.2), overflow-safe. */
    private boolean dataRangeValid(long sector, long lengthBytes) {
        return lengthBytes >= 0 && lengthBytes <= Integer.MAX_VALUE - 1
                && (lengthBytes & (SECTOR_SIZE - 1)) == 0
                && sectorRangeValid(sector, lengthBytes >>> SECTOR_SHIFT);
    }

    private boolean sectorRangeValid(long sector, long sectors) {
        long capacity = model.capacitySectors();
        // sector is an unsigned u64 from the guest: negative as a long means beyond any capacity.
        return sector >= 0 && sectors >= 0 && sectors <= capacity && sector <= capacity - sectors;
    }

    private Outcome fail(BlkRequest r, byte status) {
        r.immediateStatus = status;
        return Outcome.IMMEDIATE;
    }

    private void copyHeader(DescriptorChain chain) {
        cursorSegment = 0;
        cursorOffset = 0;
        copyFromCursor(chain, header, HEADER_LENGTH);
    }

    /** Copies {@code length} readable bytes from the cursor into {@code dst}, advancing the cursor. */
    private void copyFromCursor(DescriptorChain chain, UnsafeBuffer dst, int length) {
        if (length > dst.capacity()) {
            throw new IndexOutOfBoundsException("copy of " + length + " bytes into " + dst.capacity());
        }
        int copied = 0;
        while (copied < length) {
            int available = chain.length(cursorSegment) - cursorOffset;
            if (available <= 0) {
                cursorSegment++;
                cursorOffset = 0;
                continue;
            }
            int count = Math.min(available, length - copied);
            // One copy per segment piece (the header is one 16-byte piece from a Linux guest), not a
            // bounds-checked store per byte; within the piece the chain validated, within dst as checked above.
            UnsafeApi.copyMemory(null, chain.address(cursorSegment) + cursorOffset, dst.byteArray(),
                    dst.addressOffset() + copied, count);
            copied += count;
            cursorOffset += count;
        }
    }

    /**
     * Adds the data segments from the cursor through segment {@code lastSegment} (inclusive) to
     * {@code r.data}, leaving out {@code trimLastBytes} at the end (the status byte). False when
     * the data has more descriptors than SEG_MAX (virtio 1.2 5.2.4 counts descriptors: the pieces
     * of a buffer split at a region boundary are one), or more host segments than the vector
     * holds ({@link BlkRequest#SPLIT_SEGMENTS} splits past SEG_MAX at most).
     */
    private boolean addData(DescriptorChain chain, BlkRequest r, int lastSegment, int trimLastBytes) {
        int first = r.type == BlkRequestDescriptor.T_IN ? firstWritable(chain) : cursorSegment;
        int segMax = model.segMax();
        int descriptors = 0;
        int lastDescriptor = -1;
        for (int i = first; i <= lastSegment; i++) {
            int offset = (r.type != BlkRequestDescriptor.T_IN && i == cursorSegment) ? cursorOffset : 0;
            int length = chain.length(i) - offset - (i == lastSegment ? trimLastBytes : 0);
            if (length <= 0) {
                continue;
            }
            int descriptor = chain.descriptor(i);
            if (descriptor != lastDescriptor) {
                lastDescriptor = descriptor;
                if (++descriptors > segMax) {
                    return false;
                }
            }
            if (r.data.add(chain.address(i) + offset, length) != 0) {
                return false; // more splits than the vector holds (or a vector refusal)
            }
        }
        return true;
    }

    private static int firstWritable(DescriptorChain chain) {
        int n = chain.segmentCount();
        int i = 0;
        while (i < n && !chain.writable(i)) {
            i++;
        }
        return i;
    }
}
