package io.vblk.perf.baseline;

import org.agrona.UnsafeApi;

import io.vblk.engine.BlkRequestDescriptor;
import io.vblk.engine.Interrupt;
import io.vblk.hostmem.GuestMemory;
import io.vblk.sys.Errno;
import io.vblk.sys.PosixFile;
import io.vblk.vring.DescriptorChain;
import io.vblk.vring.SplitQueue;

/**
 * "Data plane off": the conventional virtio-blk design the data plane replaced, kept only as the
 * benchmark's baseline. One lock around the whole device; a kick is handled on the thread that
 * kicks (the vCPU), which pops each request and performs it with a blocking pread/pwrite, one
 * at a time, then pushes it and interrupts. Nothing overlaps: the disk sees queue depth 1
 * whatever the guest offers.
 *
 * <p>It shares the ring code with the engine ({@link SplitQueue}), so the comparison isolates
 * the design, not the ring implementation. Guest input is checked as strictly: a request it
 * cannot parse completes with IOERR or UNSUPP, a corrupt ring stops the queue.
 */
public final class LockedBlockDevice {
    private final Object lock = new Object();
    private final PosixFile file;
    private final long capacityBytes;
    private final SplitQueue[] queues;
    private final DescriptorChain[] chains;
    private final Interrupt[] interrupts;

    /**
     * A device over {@code file} (null: a null device that completes every request at once) of
     * {@code capacityBytes}, with {@code numQueues} queues of at most {@code maxQueueSize}.
     */
    public LockedBlockDevice(PosixFile file, long capacityBytes, int numQueues, int maxQueueSize) {
        this.file = file;
        this.capacityBytes = capacityBytes;
        queues = new SplitQueue[numQueues];
        chains = new DescriptorChain[numQueues];
        interrupts = new Interrupt[numQueues];
        for (int q = 0; q < numQueues; q++) {
            queues[q] = new SplitQueue(q, maxQueueSize + SplitQueue.CHAIN_SLACK_SEGMENTS);
            interrupts[q] = Interrupt.NONE;
        }
    }

    /**
     * Activates queue {@code q} on its ring layout.
     *
     * @throws IllegalStateException when the layout is rejected
     */
    public void startQueue(int q, GuestMemory memory, int size, long descGpa, long availGpa, long usedGpa, boolean eventIdx,
                           Interrupt interrupt) {
        synchronized (lock) {
            int rc = queues[q].activate(memory, size, descGpa, availGpa, usedGpa, eventIdx, true);
            if (rc != 0) {
                throw new IllegalStateException("queue " + q + " layout rejected: " + queues[q].error());
            }
            chains[q] = queues[q].newChain();
            interrupts[q] = interrupt;
        }
    }

    /** The guest kicked queue {@code q}: performs every available request, one at a time, on this thread. */
    public void kick(int q) {
        synchronized (lock) {
            SplitQueue queue = queues[q];
            DescriptorChain chain = chains[q];
            queue.disableNotifications();
            do {
                int rc;
                while ((rc = queue.pop(chain)) == 1) {
                    int written = perform(chain);
                    queue.addUsed(chain.head(), written);
                    if (queue.publishUsed()) {
                        interrupts[q].signal();
                    }
                }
                if (rc < 0) {
                    return;
                }
            } while (queue.enableNotifications());
        }
    }

    /** Performs one request; returns the bytes written into the chain (data read plus status). */
    private int perform(DescriptorChain chain) {
        int segments = chain.segmentCount();
        if (segments < 2 || chain.writable(0) || chain.length(0) < BlkRequestDescriptor.HEADER_LENGTH
                || !chain.writable(segments - 1)) {
            return segments > 0 && chain.writable(segments - 1) ? complete(chain, BlkRequestDescriptor.S_IOERR, 0) : 0;
        }
        long header = chain.address(0);
        int type = UnsafeApi.getInt(header + BlkRequestDescriptor.TYPE_OFFSET);
        long sector = UnsafeApi.getLong(header + BlkRequestDescriptor.SECTOR_OFFSET);
        if (type != BlkRequestDescriptor.T_IN && type != BlkRequestDescriptor.T_OUT) {
            return complete(chain, BlkRequestDescriptor.S_UNSUPP, 0);
        }
        boolean read = type == BlkRequestDescriptor.T_IN;
        long dataBytes = 0;
        for (int i = 1; i < segments; i++) {
            int len = i == segments - 1 ? chain.length(i) - 1 : chain.length(i);
            if (len > 0 && chain.writable(i) != read) {
                return complete(chain, BlkRequestDescriptor.S_IOERR, 0);
            }
            dataBytes += len;
        }
        // virtio 1.2 5.2.6.2: the request must lie inside the capacity (overflow-safe form)
        if (sector < 0 || sector > (capacityBytes >>> BlkRequestDescriptor.SECTOR_SHIFT)
                || dataBytes > capacityBytes - (sector << BlkRequestDescriptor.SECTOR_SHIFT)) {
            return complete(chain, BlkRequestDescriptor.S_IOERR, 0);
        }
        long offset = sector << BlkRequestDescriptor.SECTOR_SHIFT;
        for (int i = 1; i < segments && file != null; i++) {
            int len = i == segments - 1 ? chain.length(i) - 1 : chain.length(i);
            if (len == 0) {
                continue;
            }
            long rc;
            do {
                rc = read ? file.pread(chain.address(i), len, offset) : file.pwrite(chain.address(i), len, offset);
            } while (rc == -Errno.EINTR);
            if (rc != len) {
                return complete(chain, BlkRequestDescriptor.S_IOERR, 0);
            }
            offset += len;
        }
        return complete(chain, BlkRequestDescriptor.S_OK, read ? (int) dataBytes : 0);
    }

    private static int complete(DescriptorChain chain, byte status, int dataWritten) {
        int last = chain.segmentCount() - 1;
        UnsafeApi.putByte(chain.address(last) + chain.length(last) - 1, status);
        return dataWritten + 1;
    }
}
