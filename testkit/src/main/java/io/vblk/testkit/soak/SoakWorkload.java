package io.vblk.testkit.soak;

import java.io.PrintStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.ArrayDeque;
import java.util.Random;

import io.vblk.testkit.SplitQueueDriver;
import io.vblk.testkit.VhostUserFrontend;

/**
 * The soak's frontend and guest together: keeps {@code depth} tagged one-block reads and writes
 * in flight on one queue (never two on the same block at once, so each read has one right
 * answer), checks every completion (status OK; a read holds the block's last written tag), stops
 * and resumes the queue as QEMU does, reconnects as a restarted frontend does, and at the end
 * reads every block back.
 */
final class SoakWorkload implements AutoCloseable {
    private static final int QUEUE_SIZE = 256;
    private static final long STALL_NS = 30_000_000_000L;

    private final Path socket;
    private final long blocks;
    private final int depth;
    private final Random random;
    private final PrintStream out;
    private final SoakGuest guest;
    /** The tag each block holds (0: never written). */
    private final long[] expected;
    private final boolean[] busy;
    private final ArrayDeque<Integer> freeSlots = new ArrayDeque<>();
    private final int[] slotOfHead = new int[QUEUE_SIZE];
    private final long[] blockOfSlot;
    private final int[] typeOfSlot;
    private final long[] tagOfSlot;
    private VhostUserFrontend frontend;
    private long features;
    private long nextTag;
    private int inFlight;

    long readsVerified;
    long writesCompleted;
    long blocksVerifiedAtEnd;
    long stopResumes;
    long reconnects;
    long lost;
    long errors;

    SoakWorkload(Path socket, long blocks, int depth, long seed, PrintStream out) {
        this.socket = socket;
        this.blocks = blocks;
        this.depth = depth;
        this.random = new Random(seed);
        this.out = out;
        this.guest = new SoakGuest(QUEUE_SIZE, depth);
        this.expected = new long[(int) blocks];
        this.busy = new boolean[(int) blocks];
        this.blockOfSlot = new long[depth];
        this.typeOfSlot = new int[depth];
        this.tagOfSlot = new long[depth];
        for (int s = 0; s < depth; s++) {
            freeSlots.push(s);
        }
    }

    // ---------------------------------------------------------------- the frontend's side

    /** Connects and runs the start-up QEMU does, the ring starting at {@code used.idx} (never assumed 0). */
    void connect() throws InterruptedException {
        frontend = VhostUserFrontend.connect(socket, 30_000);
        frontend.replyTimeoutMs(30_000);
        features = frontend.getU64(VhostUserFrontend.GET_FEATURES);
        if ((features & VhostUserFrontend.F_PROTOCOL_FEATURES) == 0) {
            throw new IllegalStateException("the backend does not offer PROTOCOL_FEATURES");
        }
        long pf = frontend.getU64(VhostUserFrontend.GET_PROTOCOL_FEATURES)
                & (VhostUserFrontend.PF_REPLY_ACK | VhostUserFrontend.PF_CONFIG);
        frontend.setU64(VhostUserFrontend.SET_PROTOCOL_FEATURES, pf);
        frontend.useReplyAck((pf & VhostUserFrontend.PF_REPLY_ACK) != 0);
        frontend.request(VhostUserFrontend.SET_OWNER);
        frontend.setVringFd(VhostUserFrontend.SET_VRING_CALL, 0, guest.call.fd());
        frontend.setVringFd(VhostUserFrontend.SET_VRING_ERR, 0, guest.err.fd());
        long capacity = ByteBuffer.wrap(frontend.getConfig(VhostUserFrontend.BLK_CONFIG_LENGTH))
                .order(ByteOrder.LITTLE_ENDIAN).getLong(0); // virtio_blk_config.capacity, in sectors
        if (capacity < blocks * SoakGuest.SECTORS_PER_BLOCK) {
            throw new IllegalStateException("the disk has " + capacity + " sectors, the soak needs " + blocks * SoakGuest.SECTORS_PER_BLOCK);
        }
        frontend.setU64(VhostUserFrontend.SET_FEATURES, features);
        frontend.setMemTable(0, guest.memoryBytes(), guest.user(0), 0, guest.memfd());
        // The previous connection's teardown is over (this one is being served): used.idx is final.
        startRing(guest.driver.usedIdx());
    }

    private void startRing(int base) {
        SplitQueueDriver d = guest.driver;
        frontend.setVringState(VhostUserFrontend.SET_VRING_NUM, 0, d.size());
        frontend.setVringState(VhostUserFrontend.SET_VRING_BASE, 0, base);
        frontend.setVringAddr(0, guest.user(d.descGpa()), guest.user(d.usedGpa()), guest.user(d.availGpa()));
        frontend.setVringFd(VhostUserFrontend.SET_VRING_KICK, 0, guest.kick.fd());
        frontend.setVringState(VhostUserFrontend.SET_VRING_ENABLE, 0, 1);
        // Requests published while the ring was stopped: a driver's next kick (the device may
        // have asked not to be kicked when it stopped).
        guest.kick.signal();
    }

    /**
     * Stop and resume: SET_VRING_ENABLE 0 and GET_VRING_BASE (every request below the base must
     * then be in the used ring), more requests published while stopped, then the ring set up again
     * from the base.
     */
    void stopAndResume() {
        frontend.setVringState(VhostUserFrontend.SET_VRING_ENABLE, 0, 0);
        int base = frontend.getVringBase(0);
        reapReady();
        int used = guest.driver.usedIdx();
        if (base != used) {
            errors++;
            out.println("soak: GET_VRING_BASE answered " + base + " but used.idx is " + used + " after the stop");
        }
        submit();
        startRing(base);
        stopResumes++;
    }

    /** A frontend restart: the connection drops with requests in flight, a new one starts from used.idx. */
    void reconnect() throws InterruptedException {
        frontend.close();
        connect();
        reconnects++;
    }

    // ---------------------------------------------------------------- the guest's side

    /** Fills the queue to {@code depth} requests: random blocks not in flight, half reads, half writes. */
    void submit() {
        boolean added = false;
        while (inFlight < depth) {
            long block = random.nextLong(blocks);
            if (busy[(int) block]) {
                continue;
            }
            int slot = freeSlots.pop();
            int type = random.nextBoolean() ? SoakGuest.T_OUT : SoakGuest.T_IN;
            long tag = 0;
            if (type == SoakGuest.T_OUT) {
                tag = ++nextTag;
                guest.fill(slot, block, tag);
            } else {
                guest.poison(slot);
            }
            int head = guest.add(slot, type, block);
            slotOfHead[head] = slot;
            blockOfSlot[slot] = block;
            typeOfSlot[slot] = type;
            tagOfSlot[slot] = tag;
            busy[(int) block] = true;
            inFlight++;
            added = true;
        }
        if (added) {
            guest.publish();
        }
    }

    /** Takes every completion there is now; returns how many. */
    int reapReady() {
        int n = 0;
        while (true) {
            int head = guest.driver.reap();
            if (head == SplitQueueDriver.NONE) {
                return n;
            }
            if (head < 0) {
                throw new IllegalStateException("the device wrote a bad used ring (" + head + "): " + guest.driver);
            }
            complete(head);
            n++;
        }
    }

    /** Waits up to {@code timeoutMs} for completions and takes them. */
    void reap(int timeoutMs) {
        if (reapReady() > 0 || guest.driver.enableInterrupts()) {
            reapReady();
            return;
        }
        guest.call.await(timeoutMs);
        guest.call.read();
        reapReady();
    }

    private void complete(int head) {
        int slot = slotOfHead[head];
        long block = blockOfSlot[slot];
        byte status = guest.status(slot);
        if (status != 0) {
            errors++;
            out.println("soak: " + (typeOfSlot[slot] == SoakGuest.T_IN ? "read" : "write") + " of block " + block
                    + " completed with status " + status);
        } else if (typeOfSlot[slot] == SoakGuest.T_OUT) {
            expected[(int) block] = tagOfSlot[slot];
            writesCompleted++;
        } else if (guest.holds(slot, block, expected[(int) block])) {
            readsVerified++;
        } else {
            lost++;
            out.println("soak: block " + block + " does not hold tag " + expected[(int) block] + " (its last write)");
        }
        busy[(int) block] = false;
        freeSlots.push(slot);
        inFlight--;
    }

    /** Waits for every request in flight. */
    void drain() {
        long deadline = System.nanoTime() + STALL_NS;
        while (inFlight > 0) {
            if (System.nanoTime() > deadline) {
                throw new IllegalStateException(inFlight + " requests still in flight after 30 s: " + guest.driver);
            }
            reap(10);
        }
    }

    /** Reads every block back, {@code depth} at a time, and checks each holds its last written tag. */
    void verifyEveryBlock() {
        drain();
        long before = readsVerified;
        for (long first = 0; first < blocks; first += depth) {
            for (long b = first; b < Math.min(blocks, first + depth); b++) {
                int slot = freeSlots.pop();
                guest.poison(slot);
                int head = guest.add(slot, SoakGuest.T_IN, b);
                slotOfHead[head] = slot;
                blockOfSlot[slot] = b;
                typeOfSlot[slot] = SoakGuest.T_IN;
                busy[(int) b] = true;
                inFlight++;
            }
            guest.publish();
            drain();
        }
        blocksVerifiedAtEnd = readsVerified - before;
        readsVerified = before;
    }

    /** Stops the ring as QEMU does at a device reset, and hangs up. */
    void stop() {
        frontend.setVringState(VhostUserFrontend.SET_VRING_ENABLE, 0, 0);
        frontend.getVringBase(0);
        frontend.close();
    }

    /** The tag block {@code b} should hold. */
    long expectedTag(long b) {
        return expected[(int) b];
    }

    long blocks() {
        return blocks;
    }

    @Override
    public void close() {
        if (frontend != null) {
            frontend.close();
        }
        guest.close();
    }
}
