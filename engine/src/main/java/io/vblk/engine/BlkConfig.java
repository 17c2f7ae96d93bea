package io.vblk.engine;

import java.nio.charset.StandardCharsets;

import org.agrona.concurrent.UnsafeBuffer;

/**
 * What a virtio-blk device offers: geometry, limits, features and identity. Immutable; built
 * with {@link #builder(long)} from the image's size. {@link #configSpace()} renders the
 * virtio_blk_config the driver reads (virtio 1.2 5.2.4).
 */
public final class BlkConfig {
    private final long capacitySectors;
    private final int blockSize;
    private final int physicalBlockExp;
    private final boolean readOnly;
    private final byte[] serial;
    private final int numQueues;
    private final int queueSize;
    /**
     * The default SEG_MAX for rings above 256 entries: what the back ends and network drivers
     * take per operation by default ({@link io.vblk.aio.BackendOptions#DEFAULT_MAX_SEGMENTS}, 256)
     * less two, as the daemon offers. A SEG_MAX of queue size - 2 on a 1024-entry ring offered
     * 1022 segments that the back end then refused with IOERR (Linux sizes its scatter lists
     * from SEG_MAX), and preallocated that many iovec entries per request slot.
     */
    public static final int DEFAULT_SEG_MAX_CAP = io.vblk.aio.BackendOptions.DEFAULT_MAX_SEGMENTS - 2;
    private final int segMax;
    private final int sizeMax;
    private final boolean discard;
    private final boolean writeZeroes;
    private final long maxDiscardSectors;
    private final long maxWriteZeroesSectors;
    private final int maxDiscardSeg;
    private final int maxWriteZeroesSeg;

    private BlkConfig(Builder b) {
        capacitySectors = b.capacitySectors;
        blockSize = b.blockSize;
        physicalBlockExp = Integer.numberOfTrailingZeros(Math.max(1, b.physicalBlockSize / b.blockSize));
        readOnly = b.readOnly;
        serial = b.serial;
        numQueues = b.numQueues;
        queueSize = b.queueSize;
        segMax = b.segMax > 0 ? b.segMax : Math.max(1, Math.min(b.queueSize - 2, DEFAULT_SEG_MAX_CAP));
        sizeMax = b.sizeMax;
        discard = b.discard && !b.readOnly;
        writeZeroes = b.writeZeroes && !b.readOnly;
        maxDiscardSectors = b.maxDiscardSectors;
        maxWriteZeroesSectors = b.maxWriteZeroesSectors;
        maxDiscardSeg = b.maxDiscardSeg;
        maxWriteZeroesSeg = b.maxWriteZeroesSeg;
    }

    /** This config with another capacity, {@code capacityBytes} (a positive multiple of 512). */
    public BlkConfig withCapacity(long capacityBytes) {
        if (capacityBytes <= 0 || capacityBytes % 512 != 0) {
            throw new IllegalArgumentException("capacity must be a positive multiple of 512 bytes: " + capacityBytes);
        }
        return new BlkConfig(this, capacityBytes >>> BlkRequestDescriptor.SECTOR_SHIFT);
    }

    private BlkConfig(BlkConfig o, long capacitySectors) {
        this.capacitySectors = capacitySectors;
        this.blockSize = o.blockSize;
        this.physicalBlockExp = o.physicalBlockExp;
        this.readOnly = o.readOnly;
        this.serial = o.serial;
        this.numQueues = o.numQueues;
        this.queueSize = o.queueSize;
        this.segMax = o.segMax;
        this.sizeMax = o.sizeMax;
        this.discard = o.discard;
        this.writeZeroes = o.writeZeroes;
        this.maxDiscardSectors = o.maxDiscardSectors;
        this.maxWriteZeroesSectors = o.maxWriteZeroesSectors;
        this.maxDiscardSeg = o.maxDiscardSeg;
        this.maxWriteZeroesSeg = o.maxWriteZeroesSeg;
    }

    /** A builder for a disk of {@code capacityBytes} (a multiple of 512). */
    public static Builder builder(long capacityBytes) {
        return new Builder(capacityBytes);
    }

    /** Capacity in 512-byte sectors. */
    public long capacitySectors() {
        return capacitySectors;
    }

    /** Logical block size in bytes reported with BLK_SIZE. */
    public int blockSize() {
        return blockSize;
    }

    /** Whether the device is read-only (RO offered, writes refused, the image opened read-only). */
    public boolean readOnly() {
        return readOnly;
    }

    /** The GET_ID answer: at most 20 bytes. */
    public byte[] serial() {
        return serial.clone();
    }

    byte[] serialBytes() {
        return serial;
    }

    /** Number of request queues. */
    public int numQueues() {
        return numQueues;
    }

    /**
     * The largest queue size the device accepts (a power of 2): {@link BlockDevice#configureQueue}
     * and {@link BlockDevice#setQueueState} take any power of 2 from 1 up to it, and refuse a
     * larger ring (its chains would not fit the per-request buffers sized from this). Not part of
     * the config space: a VMM reports it as the queue's QueueNumMax.
     */
    public int queueSize() {
        return queueSize;
    }

    /** Most data segments per request (SEG_MAX). */
    public int segMax() {
        return segMax;
    }

    /** Largest single data segment in bytes (SIZE_MAX), 0 when not offered. */
    public int sizeMax() {
        return sizeMax;
    }

    /** Most sectors of one DISCARD segment (config space {@code max_discard_sectors}). */
    public long maxDiscardSectors() {
        return maxDiscardSectors;
    }

    /** Most sectors of one WRITE_ZEROES segment (config space {@code max_write_zeroes_sectors}). */
    public long maxWriteZeroesSectors() {
        return maxWriteZeroesSectors;
    }

    /** Most segments of one DISCARD request (config space {@code max_discard_seg}; {@link Builder#maxRangeSegments}). */
    public int maxDiscardSeg() {
        return maxDiscardSeg;
    }

    /** Most segments of one WRITE_ZEROES request (config space {@code max_write_zeroes_seg}; {@link Builder#maxRangeSegments}). */
    public int maxWriteZeroesSeg() {
        return maxWriteZeroesSeg;
    }

    /** The virtio feature bits this device offers (virtio 1.2 5.2.3). */
    public long offeredFeatures() {
        long f = BlkFeatures.bit(BlkFeatures.VERSION_1)
                | BlkFeatures.bit(BlkFeatures.RING_INDIRECT_DESC)
                | BlkFeatures.bit(BlkFeatures.RING_EVENT_IDX)
                | BlkFeatures.bit(BlkFeatures.SEG_MAX)
                | BlkFeatures.bit(BlkFeatures.BLK_SIZE)
                | BlkFeatures.bit(BlkFeatures.FLUSH)
                | BlkFeatures.bit(BlkFeatures.TOPOLOGY);
        if (sizeMax > 0) {
            f |= BlkFeatures.bit(BlkFeatures.SIZE_MAX);
        }
        if (numQueues > 1) {
            f |= BlkFeatures.bit(BlkFeatures.MQ);
        }
        if (readOnly) {
            f |= BlkFeatures.bit(BlkFeatures.RO);
        }
        if (discard) {
            f |= BlkFeatures.bit(BlkFeatures.DISCARD);
        }
        if (writeZeroes) {
            f |= BlkFeatures.bit(BlkFeatures.WRITE_ZEROES);
        }
        return f;
    }

    /** The config space, {@link BlkConfigDescriptor#LENGTH} bytes, little-endian. */
    public byte[] configSpace() {
        byte[] bytes = new byte[BlkConfigDescriptor.LENGTH];
        UnsafeBuffer b = new UnsafeBuffer(bytes);
        b.putLong(BlkConfigDescriptor.CAPACITY, capacitySectors);
        b.putInt(BlkConfigDescriptor.SIZE_MAX, sizeMax);
        b.putInt(BlkConfigDescriptor.SEG_MAX, segMax);
        b.putInt(BlkConfigDescriptor.BLK_SIZE, blockSize);
        b.putByte(BlkConfigDescriptor.PHYSICAL_BLOCK_EXP, (byte) physicalBlockExp);
        b.putShort(BlkConfigDescriptor.MIN_IO_SIZE, (short) 1);
        b.putByte(BlkConfigDescriptor.WRITEBACK, (byte) 1);
        b.putShort(BlkConfigDescriptor.NUM_QUEUES, (short) numQueues);
        b.putInt(BlkConfigDescriptor.MAX_DISCARD_SECTORS, (int) maxDiscardSectors);
        b.putInt(BlkConfigDescriptor.MAX_DISCARD_SEG, maxDiscardSeg);
        b.putInt(BlkConfigDescriptor.DISCARD_SECTOR_ALIGNMENT, blockSize / BlkRequestDescriptor.SECTOR_SIZE);
        b.putInt(BlkConfigDescriptor.MAX_WRITE_ZEROES_SECTORS, (int) maxWriteZeroesSectors);
        b.putInt(BlkConfigDescriptor.MAX_WRITE_ZEROES_SEG, maxWriteZeroesSeg);
        b.putByte(BlkConfigDescriptor.WRITE_ZEROES_MAY_UNMAP, (byte) 1);
        return bytes;
    }

    @Override
    public String toString() {
        return "BlkConfig[" + (capacitySectors << BlkRequestDescriptor.SECTOR_SHIFT) + " bytes, blk " + blockSize
                + (readOnly ? ", ro" : "") + ", queues " + numQueues + "x" + queueSize
                + ", serial '" + new String(serial, StandardCharsets.US_ASCII) + "']";
    }

    /** Builder with the defaults a Linux guest does well with. */
    public static final class Builder {
        private final long capacitySectors;
        private int blockSize = 512;
        private int physicalBlockSize = 4096;
        private boolean readOnly;
        private byte[] serial = "vblk".getBytes(StandardCharsets.US_ASCII);
        private int numQueues = 1;
        private int queueSize = 256;
        private int segMax;
        private int sizeMax;
        private boolean discard = true;
        private boolean writeZeroes = true;
        private long maxDiscardSectors = 0x3F_FFFFL;
        private long maxWriteZeroesSectors = 0x3F_FFFFL;
        private int maxDiscardSeg = 1;
        private int maxWriteZeroesSeg = 1;

        private Builder(long capacityBytes) {
            if (capacityBytes < 0 || capacityBytes % BlkRequestDescriptor.SECTOR_SIZE != 0) {
                throw new IllegalArgumentException("capacity must be a non-negative multiple of 512 bytes: " + capacityBytes);
            }
            this.capacitySectors = capacityBytes >>> BlkRequestDescriptor.SECTOR_SHIFT;
        }

        /** Logical block size: 512 (default) or a larger power of 2 up to 4096. */
        public Builder blockSize(int bytes) {
            if (bytes < 512 || bytes > 4096 || Integer.bitCount(bytes) != 1) {
                throw new IllegalArgumentException("block size must be 512, 1024, 2048 or 4096: " + bytes);
            }
            blockSize = bytes;
            physicalBlockSize = Math.max(physicalBlockSize, bytes);
            return this;
        }

        /** Physical block size hint (TOPOLOGY), default 4096. */
        public Builder physicalBlockSize(int bytes) {
            if (bytes < 512 || Integer.bitCount(bytes) != 1) {
                throw new IllegalArgumentException("physical block size must be a power of 2 >= 512: " + bytes);
            }
            physicalBlockSize = bytes;
            return this;
        }

        /**
         * Offers VIRTIO_BLK_F_RO (default false): the driver writes nothing, and the device
         * refuses writes, DISCARD and WRITE_ZEROES (neither feature is offered then). Required
         * over a read-only image ({@link BlockDevice.Builder#build()} checks).
         */
        public Builder readOnly(boolean value) {
            readOnly = value;
            return this;
        }

        /** The device id GET_ID returns: ASCII, at most 20 bytes. */
        public Builder serial(String id) {
            byte[] bytes = id.getBytes(StandardCharsets.US_ASCII);
            if (bytes.length > BlkRequestDescriptor.ID_LENGTH) {
                throw new IllegalArgumentException("serial longer than 20 bytes: '" + id + "'");
            }
            serial = bytes;
            return this;
        }

        /** Number of request queues, 1 to 64. */
        public Builder numQueues(int value) {
            if (value < 1 || value > 64) {
                throw new IllegalArgumentException("queues must be 1..64: " + value);
            }
            numQueues = value;
            return this;
        }

        /** Largest queue size accepted: a power of 2, 2 to 32768 (virtio 1.2 2.7). */
        public Builder queueSize(int value) {
            if (value < 2 || value > 32768 || Integer.bitCount(value) != 1) {
                throw new IllegalArgumentException("queue size must be a power of 2 in 2..32768: " + value);
            }
            queueSize = value;
            return this;
        }

        /**
         * Most data segments per request; default queue size - 2 (as QEMU), at most
         * {@link #DEFAULT_SEG_MAX_CAP}. A larger value must not exceed what the back ends or
         * drivers take per operation (their {@code maxSegments}), or requests within it fail.
         */
        public Builder segMax(int value) {
            if (value < 1) {
                throw new IllegalArgumentException("seg_max must be positive: " + value);
            }
            segMax = value;
            return this;
        }

        /** Offer SIZE_MAX with this many bytes per segment (0: not offered). */
        public Builder sizeMax(int value) {
            if (value < 0) {
                throw new IllegalArgumentException("size_max must not be negative: " + value);
            }
            sizeMax = value;
            return this;
        }

        /** Offers VIRTIO_BLK_F_DISCARD (default true); never on a {@link #readOnly} device. */
        public Builder discard(boolean value) {
            discard = value;
            return this;
        }

        /** Offers VIRTIO_BLK_F_WRITE_ZEROES (default true); never on a {@link #readOnly} device. */
        public Builder writeZeroes(boolean value) {
            writeZeroes = value;
            return this;
        }

        /**
         * Most segments per DISCARD / WRITE_ZEROES request (default 1, as QEMU). Each pop keeps
         * this many back-end slots free (one per segment), so the default back-end depth is raised
         * to it, and an explicit {@code Tuning.backendDepth} below it is refused at build time.
         */
        public Builder maxRangeSegments(int value) {
            if (value < 1 || value > 256) {
                throw new IllegalArgumentException("range segments must be 1..256: " + value);
            }
            maxDiscardSeg = value;
            maxWriteZeroesSeg = value;
            return this;
        }

        /**
         * The config.
         *
         * @throws IllegalArgumentException when the capacity is not a whole number of logical blocks
         */
        public BlkConfig build() {
            if (capacitySectors % (blockSize / BlkRequestDescriptor.SECTOR_SIZE) != 0) {
                throw new IllegalArgumentException("capacity is not a whole number of " + blockSize + "-byte blocks");
            }
            return new BlkConfig(this);
        }
    }
}
