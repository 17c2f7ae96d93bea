package io.vblk.testkit;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.function.Supplier;

import org.agrona.UnsafeApi;

import io.vblk.hostmem.GuestMemory;
import io.vblk.sys.EventFd;

/**
 * One virtio-blk queue as a guest driver runs it: a {@link SplitQueueDriver} in guest memory,
 * a kick and a call eventfd, and requests laid out as Linux lays them out
 * ({@code [header 16 R][data R/W][status 1 W]}), the header and status of each in a slot of
 * their own. Used by the device tests (engine), the vhost-user tests (vhost, daemon) through
 * {@link TestGuest}, and anything else that plays the guest of one queue.
 *
 * <p>Failures of the device (a bad used ring, no completion in time, a status other than OK
 * from the helpers that expect OK) are {@link AssertionError}s: this is test equipment.
 */
public final class BlkQueue implements AutoCloseable {
    /** virtio-blk request types (5.2.6). */
    public static final int T_IN = 0;
    public static final int T_OUT = 1;
    public static final int T_FLUSH = 4;
    public static final int T_GET_ID = 8;
    /** The default wait for a completion: a hang guard, sized for a loaded 2-core CI machine. */
    public static final int TIMEOUT_MS = 30_000;
    /** The status byte written before the device answers, so an unanswered request shows. */
    public static final byte STATUS_UNSET = 0x7f;
    private static final int HEADER_BYTES = 16;

    /** The queue's index in its device. */
    public final int index;
    /** The guest memory the queue lives in. */
    public final GuestMemory memory;
    /** The driver side of the ring. */
    public final SplitQueueDriver driver;
    /** The kick eventfd (guest to device). */
    public final EventFd kick = EventFd.create(true);
    /** The call eventfd (device to guest); a test may swap it. */
    public EventFd call = EventFd.create(true);
    /** A polled ring: the frontend sends "no fd" for its kick, and publishing never kicks. */
    public boolean polled;
    /** A data buffer for the read/write helpers (0 when the owner allocates its own). */
    public final long dataGpa;
    private final long headers;
    private final long statuses;
    private final long[] statusOfHead;

    /**
     * A queue over {@code driver} (already built in {@code memory}); headers and status bytes
     * are carved from the driver's heap.
     */
    public BlkQueue(GuestMemory memory, int index, SplitQueueDriver driver, long dataGpa) {
        this.memory = memory;
        this.index = index;
        this.driver = driver;
        this.dataGpa = dataGpa;
        this.headers = driver.allocate((long) HEADER_BYTES * driver.size(), HEADER_BYTES);
        this.statuses = driver.allocate(driver.size(), 1);
        this.statusOfHead = new long[driver.size()];
    }

    /** The frontend's virtual address of the descriptor table (this process maps the guest's RAM). */
    public long descUser() {
        return user(driver.descGpa());
    }

    public long availUser() {
        return user(driver.availGpa());
    }

    public long usedUser() {
        return user(driver.usedGpa());
    }

    private long user(long gpa) {
        return memory.hostAddress(gpa, 1, false);
    }

    /** The host address of {@code gpa}, which must be writable guest memory. */
    public long host(long gpa) {
        return memory.hostAddress(gpa, 1, true);
    }

    /** Writes a request header (type, reserved 0, sector) at {@code headerGpa}. */
    public void writeHeader(long headerGpa, int type, long sector) {
        long h = driver.hostAddress(headerGpa, HEADER_BYTES);
        UnsafeApi.putInt(h, type);
        UnsafeApi.putInt(h + 4, 0);
        UnsafeApi.putLong(h + 8, sector);
    }

    /** Adds a request of direct descriptors (not yet published) and returns its head. */
    public int add(int type, long sector, long data, int length, boolean deviceWrites) {
        return add(type, sector, data, length, deviceWrites, false);
    }

    /**
     * Adds a request (not yet published), its chain in one indirect table when {@code indirect}
     * (one ring descriptor per request), and returns its head.
     *
     * @throws IllegalStateException when the ring has no room for it
     */
    public int add(int type, long sector, long data, int length, boolean deviceWrites, boolean indirect) {
        int slot = driver.availIdx() & (driver.size() - 1);
        long header = headers + (long) HEADER_BYTES * slot;
        long status = statuses + slot;
        writeHeader(header, type, sector);
        UnsafeApi.putByte(host(status), STATUS_UNSET);
        long[] gpas = length > 0 ? new long[] {header, data, status} : new long[] {header, status};
        int[] lengths = length > 0 ? new int[] {HEADER_BYTES, length, 1} : new int[] {HEADER_BYTES, 1};
        boolean[] writable = length > 0 ? new boolean[] {false, deviceWrites, true} : new boolean[] {false, true};
        int head = indirect ? driver.addIndirect(gpas, lengths, writable, gpas.length)
                : driver.addDirect(gpas, lengths, writable, gpas.length);
        if (head < 0) {
            throw new IllegalStateException("queue " + index + " is full");
        }
        statusOfHead[head] = status;
        return head;
    }

    /** Publishes what was added and kicks if the device asks to be kicked. */
    public void publish() {
        if (driver.publishAvail() && !polled) {
            kick.signal();
        }
    }

    /** Status byte of the request added at avail index {@code availIndex}. */
    public byte status(int availIndex) {
        return UnsafeApi.getByte(host(statuses + (availIndex & (driver.size() - 1))));
    }

    /** Status byte of the request added last with head {@code head}. */
    public byte statusOfHead(int head) {
        return UnsafeApi.getByte(host(statusOfHead[head]));
    }

    /** Waits for the next used element and returns its head. */
    public int awaitUsed() {
        return awaitUsed(TIMEOUT_MS, () -> driver.toString());
    }

    /**
     * Waits until a used element arrives (sleeping on the call eventfd when the device says so)
     * and returns its head; fails after {@code timeoutMs} with {@code state} in the message.
     */
    public int awaitUsed(long timeoutMs, Supplier<String> state) {
        long deadline = System.nanoTime() + timeoutMs * 1_000_000L;
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
                throw new AssertionError("no completion on queue " + index + " within " + timeoutMs + " ms: " + state.get());
            }
            call.await((int) Math.max(1, Math.min(left / 1_000_000L, 50)));
            call.read();
        }
    }

    /** Submits one request, waits for it, returns its status. */
    public byte roundTrip(int type, long sector, long data, int length, boolean deviceWrites) {
        int availIndex = driver.availIdx();
        int head = add(type, sector, data, length, deviceWrites);
        publish();
        int done = awaitUsed();
        if (done != head) {
            throw new AssertionError("expected head " + head + " back, got " + done);
        }
        return status(availIndex);
    }

    /** Writes {@code bytes} at {@code sector} through {@link #dataGpa}; fails unless the status is OK. */
    public void write(long sector, byte[] bytes) {
        UnsafeApi.copyMemory(bytes, UnsafeApi.arrayBaseOffset(byte[].class), null, host(dataGpa), bytes.length);
        byte s = roundTrip(T_OUT, sector, dataGpa, bytes.length, false);
        if (s != 0) {
            throw new AssertionError("write of sector " + sector + " failed with status " + s);
        }
    }

    /** Reads {@code length} bytes at {@code sector} through {@link #dataGpa}; fails unless the status is OK. */
    public byte[] read(long sector, int length) {
        UnsafeApi.setMemory(host(dataGpa), length, (byte) 0x55);
        byte s = roundTrip(T_IN, sector, dataGpa, length, true);
        if (s != 0) {
            throw new AssertionError("read of sector " + sector + " failed with status " + s);
        }
        byte[] bytes = new byte[length];
        UnsafeApi.copyMemory(null, host(dataGpa), bytes, UnsafeApi.arrayBaseOffset(byte[].class), length);
        return bytes;
    }

    /** A FLUSH; fails unless the status is OK. */
    public void flush() {
        byte s = roundTrip(T_FLUSH, 0, 0, 0, false);
        if (s != 0) {
            throw new AssertionError("flush failed with status " + s);
        }
    }

    /** GET_ID: the device's serial. */
    public String id() {
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
        return new String(Arrays.copyOf(bytes, end), StandardCharsets.US_ASCII);
    }

    /** A block of {@code length} bytes that says where it belongs (so a misplaced read shows). */
    public static byte[] pattern(long sector, int length, int seed) {
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
