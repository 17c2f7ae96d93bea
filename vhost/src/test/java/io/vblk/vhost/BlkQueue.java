package io.vblk.vhost;

import java.util.Arrays;

import org.agrona.UnsafeApi;

import io.vblk.sys.EventFd;
import io.vblk.vring.SplitQueueDriver;

/**
 * One virtio-blk queue as a guest driver runs it: a {@link SplitQueueDriver} in guest memory,
 * a kick and a call eventfd, and requests laid out as Linux lays them out
 * ({@code [header 16 R][data R/W][status 1 W]}).
 */
final class BlkQueue implements AutoCloseable {
    static final int T_IN = 0;
    static final int T_OUT = 1;
    static final int T_FLUSH = 4;
    static final int T_GET_ID = 8;
    static final int TIMEOUT_MS = 10_000;

    final TestGuest guest;
    final int index;
    final SplitQueueDriver driver;
    final EventFd kick = EventFd.create(true);
    EventFd call = EventFd.create(true);
    /** A polled ring: the frontend sends "no fd" for its kick, and publishing never kicks. */
    boolean polled;
    final long dataGpa;
    private final long headers;
    private final long statuses;

    BlkQueue(TestGuest guest, int index, int size, boolean eventIdx, long areaGpa, long areaBytes, long dataGpa) {
        this.guest = guest;
        this.index = index;
        this.driver = SplitQueueDriver.builder(guest.memory).size(size).eventIdx(eventIdx).area(areaGpa, areaBytes).build();
        this.dataGpa = dataGpa;
        this.headers = driver.allocate(16L * size, 16);
        this.statuses = driver.allocate(size, 1);
    }

    long descUser() {
        return guest.user(driver.descGpa());
    }

    long availUser() {
        return guest.user(driver.availGpa());
    }

    long usedUser() {
        return guest.user(driver.usedGpa());
    }

    long host(long gpa) {
        return guest.memory.hostAddress(gpa, 1, true);
    }

    /** Adds a request (not yet published) and returns its head. */
    int add(int type, long sector, long data, int length, boolean deviceWrites) {
        int slot = driver.availIdx() & (driver.size() - 1);
        long header = headers + 16L * slot;
        long status = statuses + slot;
        UnsafeApi.putInt(host(header), type);
        UnsafeApi.putInt(host(header) + 4, 0);
        UnsafeApi.putLong(host(header) + 8, sector);
        UnsafeApi.putByte(host(status), (byte) 0x7f);
        long[] gpas = length > 0 ? new long[] {header, data, status} : new long[] {header, status};
        int[] lengths = length > 0 ? new int[] {16, length, 1} : new int[] {16, 1};
        boolean[] writable = length > 0 ? new boolean[] {false, deviceWrites, true} : new boolean[] {false, true};
        int head = driver.addDirect(gpas, lengths, writable, gpas.length);
        if (head < 0) {
            throw new IllegalStateException("queue " + index + " is full");
        }
        return head;
    }

    /** Publishes what was added and kicks if the device asks to be kicked. */
    void publish() {
        if (driver.publishAvail() && !polled) {
            kick.signal();
        }
    }

    /** Status byte of the request added at avail index {@code availIndex}. */
    byte status(int availIndex) {
        return UnsafeApi.getByte(host(statuses + (availIndex & (driver.size() - 1))));
    }

    /** Waits for the next used element and returns its head. */
    int awaitUsed() {
        long deadline = System.nanoTime() + TIMEOUT_MS * 1_000_000L;
        while (true) {
            int head = driver.reap();
            if (head >= 0) {
                return head;
            }
            if (head != SplitQueueDriver.NONE) {
                throw new AssertionError("bad used ring on queue " + index + ": " + head);
            }
            if (driver.enableInterrupts()) {
                continue;
            }
            long left = deadline - System.nanoTime();
            if (left <= 0) {
                throw new AssertionError("no completion on queue " + index + " within " + TIMEOUT_MS + " ms: " + driver);
            }
            call.await((int) Math.max(1, Math.min(left / 1_000_000L, 50)));
            call.read();
        }
    }

    /** Submits one request, waits for it, returns its status. */
    byte roundTrip(int type, long sector, long data, int length, boolean deviceWrites) {
        int availIndex = driver.availIdx();
        int head = add(type, sector, data, length, deviceWrites);
        publish();
        int done = awaitUsed();
        if (done != head) {
            throw new AssertionError("expected head " + head + " back, got " + done);
        }
        return status(availIndex);
    }

    void write(long sector, byte[] bytes) {
        UnsafeApi.copyMemory(bytes, UnsafeApi.arrayBaseOffset(byte[].class), null, host(dataGpa), bytes.length);
        byte s = roundTrip(T_OUT, sector, dataGpa, bytes.length, false);
        if (s != 0) {
            throw new AssertionError("write of sector " + sector + " failed with status " + s);
        }
    }

    byte[] read(long sector, int length) {
        UnsafeApi.setMemory(host(dataGpa), length, (byte) 0x55);
        byte s = roundTrip(T_IN, sector, dataGpa, length, true);
        if (s != 0) {
            throw new AssertionError("read of sector " + sector + " failed with status " + s);
        }
        byte[] bytes = new byte[length];
        UnsafeApi.copyMemory(null, host(dataGpa), bytes, UnsafeApi.arrayBaseOffset(byte[].class), length);
        return bytes;
    }

    void flush() {
        byte s = roundTrip(T_FLUSH, 0, 0, 0, false);
        if (s != 0) {
            throw new AssertionError("flush failed with status " + s);
        }
    }

    String id() {
        byte s = roundTrip(T_GET_ID, 0, dataGpa, 20, true);
        if (s != 0) {
            throw new AssertionError("GET_ID failed with status " + s);
        }
        byte[] bytes = new byte[20];
        UnsafeApi.copyMemory(null, host(dataGpa), bytes, UnsafeApi.arrayBaseOffset(byte[].class), 20);
        int end = 0;
        while (end < 20 && bytes[end] != 0) {
            end++;
        }
        return new String(Arrays.copyOf(bytes, end), java.nio.charset.StandardCharsets.US_ASCII);
    }

    /** A block of {@code length} bytes that says where it belongs (so a misplaced read shows). */
    static byte[] pattern(long sector, int length, int seed) {
        byte[] b = new byte[length];
        for (int i = 0; i < length; i++) {
            b[i] = (byte) (sector * 31 + i * 7 + seed);
        }
        return b;
    }

    @Override
    public void close() {
        kick.close();
        call.close();
    }
}
