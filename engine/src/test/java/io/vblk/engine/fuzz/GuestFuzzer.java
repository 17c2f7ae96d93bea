package io.vblk.engine.fuzz;

import java.util.Random;

import org.agrona.UnsafeApi;

import io.vblk.engine.BlkRequestDescriptor;
import io.vblk.testkit.RingTamperer;
import io.vblk.testkit.SplitQueueDriver;
import io.vblk.vring.VirtqDescriptor;

/**
 * Builds hostile guest requests on one queue, seeded and reproducible: well-formed virtio-blk
 * chains with random types, sectors, lengths, directions and layouts (header split, data and
 * status in one descriptor, indirect tables), and structural mutations of them (a flipped flag,
 * a wild address or length, a bad next index, a corrupt indirect table, a random avail entry or
 * avail.idx). Addresses it aims at include region edges, a read-only region, holes and the top of
 * the address space; never the memory of the other queue.
 */
final class GuestFuzzer {
    /** What a round did to the ring. */
    static final int CLEAN = 0;
    static final int MUTATED = 1;

    private final Random random;
    private final SplitQueueDriver driver;
    private final long capacitySectors;
    private final long[] interesting;
    private final long bufferBase;
    private final int bufferBytes;
    private final long[] gpas = new long[8];
    private final int[] lengths = new int[8];
    private final boolean[] writable = new boolean[8];

    /** Per head: the status byte's guest address when the chain was built well-formed, else -1. */
    final long[] statusOf;
    /** Per head: the request type written, and the data length. */
    final int[] typeOf;
    final int[] dataOf;

    GuestFuzzer(long seed, SplitQueueDriver driver, long capacitySectors, long bufferBase, int bufferBytes,
                long[] interestingAddresses) {
        this.random = new Random(seed);
        this.driver = driver;
        this.capacitySectors = capacitySectors;
        this.bufferBase = bufferBase;
        this.bufferBytes = bufferBytes;
        this.interesting = interestingAddresses.clone();
        this.statusOf = new long[driver.size()];
        this.typeOf = new int[driver.size()];
        this.dataOf = new int[driver.size()];
    }

    /**
     * Adds up to {@code max} chains; returns {@link #MUTATED} if any structure was corrupted (the
     * queue may then be quarantined and must be re-initialised), else {@link #CLEAN}. The number
     * of chains added is in {@link #added}.
     */
    int round(int max, double mutationRate) {
        added = 0;
        int result = CLEAN;
        for (int i = 0; i < max; i++) {
            int head = addRequest(i);
            if (head < 0) {
                break;
            }
            added++;
            if (random.nextDouble() < mutationRate) {
                mutate(head);
                statusOf[head] = -1;
                result = MUTATED;
            }
        }
        if (random.nextDouble() < mutationRate / 8) {
            mutateRing();
            result = MUTATED;
        }
        return result;
    }

    int added;

    private int addRequest(int index) {
        int type = pickType();
        long sector = pickSector();
        int dataLength = pickDataLength(type);
        boolean dataWritable = type == BlkRequestDescriptor.T_IN || type == BlkRequestDescriptor.T_GET_ID
                ? random.nextInt(20) != 0 : random.nextInt(20) == 0;
        // One 8 KiB slot per chain of the round, so clean chains never share buffers.
        long slot = bufferBase + (long) (index % (bufferBytes / 8192)) * 8192;
        long header = slot;
        long data = slot + 512;
        long status = slot + 512 + Math.max(dataLength, 0) + random.nextInt(4);
        if (status + 1 > bufferBase + bufferBytes) {
            status = slot + 64;
        }
        long h = driver.hostAddress(header, 16);
        UnsafeApi.putInt(h, type);
        UnsafeApi.putInt(h + 4, random.nextInt(4) == 0 ? random.nextInt() : 0);
        UnsafeApi.putLong(h + 8, sector);
        if (type == BlkRequestDescriptor.T_DISCARD || type == BlkRequestDescriptor.T_WRITE_ZEROES) {
            writeSegments(data, dataLength);
        }
        UnsafeApi.putByte(driver.hostAddress(status, 1), (byte) 0x7f);

        int n = 0;
        int layout = random.nextInt(6);
        if (layout == 0) { // header split across two descriptors (QEMU's own frontends do this)
            int cut = 1 + random.nextInt(15);
            n = put(n, header, cut, false);
            n = put(n, header + cut, 16 - cut, false);
        } else {
            n = put(n, header, 16, false);
        }
        boolean statusInData = layout == 1 && dataLength > 0 && dataWritable;
        if (dataLength > 0) {
            if (statusInData) {
                n = put(n, data, dataLength + 1, true);
                status = data + dataLength;
                UnsafeApi.putByte(driver.hostAddress(status, 1), (byte) 0x7f);
            } else if (layout == 2 && dataLength >= 1024) { // scatter-gather in two pieces
                int cut = 512 * (1 + random.nextInt(dataLength / 512 - 1));
                n = put(n, data, cut, dataWritable);
                n = put(n, data + cut, dataLength - cut, dataWritable);
            } else {
                n = put(n, data, dataLength, dataWritable);
            }
        }
        if (!statusInData) {
            n = put(n, status, 1, true);
        }
        // Device-readable before device-writable, or it is corrupt (2.7.4.2): sort stably.
        sortReadableFirst(n);
        int direct = random.nextInt(4) == 0 ? random.nextInt(n + 1) : n;
        int head = driver.add(gpas, lengths, writable, n, direct);
        if (head >= 0) {
            statusOf[head] = status;
            typeOf[head] = type;
            dataOf[head] = dataLength;
        }
        return head;
    }

    private int put(int n, long gpa, int length, boolean isWritable) {
        gpas[n] = gpa;
        lengths[n] = length;
        writable[n] = isWritable;
        return n + 1;
    }

    private void sortReadableFirst(int n) {
        for (int i = 1; i < n; i++) {
            for (int j = i; j > 0 && writable[j - 1] && !writable[j]; j--) {
                long g = gpas[j];
                gpas[j] = gpas[j - 1];
                gpas[j - 1] = g;
                int l = lengths[j];
                lengths[j] = lengths[j - 1];
                lengths[j - 1] = l;
                boolean w = writable[j];
                writable[j] = writable[j - 1];
                writable[j - 1] = w;
            }
        }
    }

    private int pickType() {
        int[] types = {BlkRequestDescriptor.T_IN, BlkRequestDescriptor.T_IN, BlkRequestDescriptor.T_OUT,
            BlkRequestDescriptor.T_OUT, BlkRequestDescriptor.T_FLUSH, BlkRequestDescriptor.T_GET_ID,
            BlkRequestDescriptor.T_DISCARD, BlkRequestDescriptor.T_WRITE_ZEROES, BlkRequestDescriptor.T_GET_LIFETIME,
            BlkRequestDescriptor.T_SECURE_ERASE, 2, 3, 99};
        return random.nextInt(16) == 0 ? random.nextInt() : types[random.nextInt(types.length)];
    }

    private long pickSector() {
        switch (random.nextInt(8)) {
            case 0:
                return 0;
            case 1:
                return capacitySectors - 1 - random.nextInt(16);
            case 2:
                return capacitySectors + random.nextInt(16);
            case 3:
                return random.nextLong();
            case 4:
                return -1L - random.nextInt(8);
            default:
                return (random.nextLong() & Long.MAX_VALUE) % Math.max(1, capacitySectors);
        }
    }

    private int pickDataLength(int type) {
        if (type == BlkRequestDescriptor.T_DISCARD || type == BlkRequestDescriptor.T_WRITE_ZEROES) {
            return random.nextInt(8) == 0 ? random.nextInt(64) : 16 * (1 + random.nextInt(random.nextInt(8) == 0 ? 4 : 1));
        }
        switch (random.nextInt(8)) {
            case 0:
                return 0;
            case 1:
                return 1 + random.nextInt(600);
            case 2:
                return 20;
            default:
                return 512 * (1 + random.nextInt(8));
        }
    }

    private void writeSegments(long data, int length) {
        long h = driver.hostAddress(data, Math.max(length, 1));
        for (int off = 0; off + 16 <= length; off += 16) {
            UnsafeApi.putLong(h + off, pickSector());
            UnsafeApi.putInt(h + off + 8, random.nextInt(4) == 0 ? random.nextInt() : random.nextInt(64));
            UnsafeApi.putInt(h + off + 12, random.nextInt(4) == 0 ? random.nextInt(4) : 0);
        }
    }

    /** Corrupts one descriptor of the chain at {@code head} (direct, or in its indirect table). */
    private void mutate(int head) {
        long table = driver.hostAddress(driver.descGpa(), (long) driver.size() * VirtqDescriptor.LENGTH);
        int index = head;
        int steps = random.nextInt(4);
        for (int i = 0; i < steps; i++) {
            int flags = UnsafeApi.getShort(table + VirtqDescriptor.offset(index) + VirtqDescriptor.FLAGS_OFFSET) & 0xffff;
            if ((flags & VirtqDescriptor.F_NEXT) == 0) {
                break;
            }
            index = UnsafeApi.getShort(table + VirtqDescriptor.offset(index) + VirtqDescriptor.NEXT_OFFSET) & 0xffff;
        }
        long d = table + VirtqDescriptor.offset(index);
        int flags = UnsafeApi.getShort(d + VirtqDescriptor.FLAGS_OFFSET) & 0xffff;
        if ((flags & VirtqDescriptor.F_INDIRECT) != 0 && random.nextBoolean()) {
            long tableGpa = UnsafeApi.getLong(d + VirtqDescriptor.ADDR_OFFSET);
            int tableLength = UnsafeApi.getInt(d + VirtqDescriptor.LEN_OFFSET);
            int entries = Math.max(1, tableLength / VirtqDescriptor.LENGTH);
            d = driver.hostAddress(tableGpa, (long) entries * VirtqDescriptor.LENGTH)
                    + VirtqDescriptor.offset(random.nextInt(entries));
        }
        switch (random.nextInt(7)) {
            case 0:
                UnsafeApi.putShort(d + VirtqDescriptor.FLAGS_OFFSET, (short) (flags ^ (1 << random.nextInt(3))));
                break;
            case 1:
                UnsafeApi.putShort(d + VirtqDescriptor.FLAGS_OFFSET, (short) random.nextInt());
                break;
            case 2:
                UnsafeApi.putShort(d + VirtqDescriptor.NEXT_OFFSET, (short) random.nextInt(random.nextBoolean() ? driver.size() * 2 : 65536));
                break;
            case 3:
                UnsafeApi.putLong(d + VirtqDescriptor.ADDR_OFFSET, interesting[random.nextInt(interesting.length)]
                        + (random.nextBoolean() ? 0 : random.nextInt(64) - 32));
                break;
            case 4:
                UnsafeApi.putInt(d + VirtqDescriptor.LEN_OFFSET, random.nextBoolean() ? random.nextInt() : random.nextInt(1 << 20));
                break;
            case 5:
                UnsafeApi.putInt(d + VirtqDescriptor.LEN_OFFSET, 0);
                break;
            default:
                UnsafeApi.putLong(d + VirtqDescriptor.ADDR_OFFSET, random.nextLong());
        }
    }

    /** Corrupts the available ring itself: a random head entry, or an avail.idx far ahead. */
    private void mutateRing() {
        if (random.nextBoolean()) {
            RingTamperer.of(driver).writeAvailRing(driver.availIdx() - 1 - random.nextInt(Math.max(1, added)),
                    random.nextInt(random.nextBoolean() ? driver.size() : 65536));
        } else {
            RingTamperer.of(driver).writeAvailIdx(driver.availIdx() + driver.size() + 1 + random.nextInt(1000));
        }
    }
}
