package io.vblk.testkit.soak;

import org.agrona.UnsafeApi;

import io.vblk.hostmem.GuestMemory;
import io.vblk.sys.EventFd;
import io.vblk.testkit.SplitQueueDriver;

/**
 * The soak's guest: one memfd of RAM, one split queue driven by a {@link SplitQueueDriver}, and
 * a fixed slot per request in flight (header, status byte, one block of data), requests laid out
 * as Linux lays them out ({@code [header 16 R][data 4096 R/W][status 1 W]}).
 *
 * <p>Blocks carry tags: block {@code b} written with tag {@code t > 0} holds {@code b}, {@code t},
 * then words that depend on both and on their position, so a lost, stale, torn or misplaced write
 * shows on the next read. Tag 0 is a block never written: zeros.
 */
final class SoakGuest implements AutoCloseable {
    static final int BLOCK_BYTES = 4096;
    static final int SECTORS_PER_BLOCK = BLOCK_BYTES / 512;
    static final int T_IN = 0;
    static final int T_OUT = 1;
    private static final long MEMORY_BYTES = 4L << 20;
    private static final int HEADER_BYTES = 16;
    private static final byte STATUS_UNSET = 0x7f;

    final GuestMemory memory;
    final SplitQueueDriver driver;
    final EventFd kick = EventFd.create(true);
    final EventFd call = EventFd.create(true);
    final EventFd err = EventFd.create(true);
    private final long headers;
    private final long statuses;
    private final long buffers;

    SoakGuest(int queueSize, int slots) {
        memory = GuestMemory.builder().addMemfd(0, MEMORY_BYTES).build();
        driver = SplitQueueDriver.builder(memory).size(queueSize).eventIdx(true).area(0, MEMORY_BYTES).build();
        headers = driver.allocate((long) HEADER_BYTES * slots, HEADER_BYTES);
        statuses = driver.allocate(slots, 1);
        buffers = driver.allocate((long) BLOCK_BYTES * slots, BLOCK_BYTES);
    }

    int memfd() {
        return memory.region(0).fd();
    }

    long memoryBytes() {
        return MEMORY_BYTES;
    }

    /** The frontend's virtual address of {@code gpa} (this process maps the guest's RAM). */
    long user(long gpa) {
        return memory.hostAddress(gpa, 1, false);
    }

    /** Adds (does not publish) a one-block request of {@code type} in {@code slot}; returns its head. */
    int add(int slot, int type, long block) {
        long header = memory.hostAddress(headers + (long) HEADER_BYTES * slot, HEADER_BYTES, true);
        UnsafeApi.putInt(header, type);
        UnsafeApi.putInt(header + 4, 0);
        UnsafeApi.putLong(header + 8, block * SECTORS_PER_BLOCK);
        UnsafeApi.putByte(statusAddress(slot), STATUS_UNSET);
        int head = driver.addDirect(new long[] {headers + (long) HEADER_BYTES * slot, buffers + (long) BLOCK_BYTES * slot,
                statuses + slot}, new int[] {HEADER_BYTES, BLOCK_BYTES, 1}, new boolean[] {false, type == T_IN, true}, 3);
        if (head < 0) {
            throw new IllegalStateException("no free descriptors for slot " + slot + ": " + driver);
        }
        return head;
    }

    /** Publishes what was added and kicks if the device asks to be kicked. */
    void publish() {
        if (driver.publishAvail()) {
            kick.signal();
        }
    }

    byte status(int slot) {
        return UnsafeApi.getByte(statusAddress(slot));
    }

    private long statusAddress(int slot) {
        return memory.hostAddress(statuses + slot, 1, true);
    }

    private long data(int slot) {
        return memory.hostAddress(buffers + (long) BLOCK_BYTES * slot, BLOCK_BYTES, true);
    }

    /** Fills {@code slot}'s buffer with block {@code block} at {@code tag}. */
    void fill(int slot, long block, long tag) {
        long a = data(slot);
        for (int i = 0; i < BLOCK_BYTES / Long.BYTES; i++) {
            UnsafeApi.putLong(a + 8L * i, word(block, tag, i));
        }
    }

    /** Scribbles over {@code slot}'s buffer, so that a read that wrote nothing cannot pass. */
    void poison(int slot) {
        UnsafeApi.setMemory(data(slot), BLOCK_BYTES, (byte) 0xA5);
    }

    /** Whether {@code slot}'s buffer holds block {@code block} at {@code tag}. */
    boolean holds(int slot, long block, long tag) {
        long a = data(slot);
        for (int i = 0; i < BLOCK_BYTES / Long.BYTES; i++) {
            if (UnsafeApi.getLong(a + 8L * i) != word(block, tag, i)) {
                return false;
            }
        }
        return true;
    }

    /** Word {@code i} of block {@code block} at {@code tag}. */
    static long word(long block, long tag, int i) {
        if (tag == 0) {
            return 0;
        }
        return switch (i) {
            case 0 -> block;
            case 1 -> tag;
            default -> (block * 0x9E3779B97F4A7C15L) ^ (tag * 0xC2B2AE3D27D4EB4FL) ^ (i * 0x165667B19E3779F9L);
        };
    }

    @Override
    public void close() {
        kick.close();
        call.close();
        err.close();
        memory.close();
    }
}
