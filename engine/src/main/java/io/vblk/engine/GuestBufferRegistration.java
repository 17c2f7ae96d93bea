package io.vblk.engine;

import io.vblk.aio.FixedBufferMode;
import io.vblk.block.BlockDriver;
import io.vblk.hostmem.GuestMemory;
import io.vblk.hostmem.GuestRegion;
import io.vblk.sys.Errno;

/**
 * Registers a device's guest memory with one I/O thread's driver as fixed buffers (io_uring
 * READ_FIXED/WRITE_FIXED for one-segment transfers), under the tuning's {@link FixedBufferMode}.
 * Runs on the I/O thread (a ring's registration belongs to its submitter), when the device gets
 * its first table and on every {@link BlockDevice#setMemory} after the queues drained, so the
 * registration never outlives the mapping it pinned. Writable regions only: the kernel pins for
 * writing, which a read-only mapping refuses, and the device never reads into one anyway.
 */
final class GuestBufferRegistration {
    private static final System.Logger LOG = System.getLogger("io.vblk.engine");

    private GuestBufferRegistration() {
    }

    /**
     * Replaces what {@code driver} has registered with {@code memory}'s writable regions (or
     * nothing: null memory, or a table the mode refuses) and returns the outcome for logs.
     */
    static String apply(BlockDriver driver, GuestMemory memory, FixedBufferMode mode, String who) {
        if (memory == null) {
            driver.unregisterBuffers();
            return "none (no guest memory)";
        }
        long total = 0;
        int writable = 0;
        for (int i = 0; i < memory.regionCount(); i++) {
            GuestRegion r = memory.region(i);
            // Saturating: a hostile table's sizes may sum past 2^63.
            total = total > Long.MAX_VALUE - r.size() ? Long.MAX_VALUE : total + r.size();
            if (!r.readOnly()) {
                writable++;
            }
        }
        String refusal = mode.refusal(total);
        if (refusal != null || writable == 0) {
            driver.unregisterBuffers();
            return "not registered: " + (refusal != null ? refusal : "no writable region");
        }
        long[] addresses = new long[writable];
        long[] lengths = new long[writable];
        for (int i = 0, k = 0; i < memory.regionCount(); i++) {
            GuestRegion r = memory.region(i);
            if (!r.readOnly()) {
                addresses[k] = r.hostAddress();
                lengths[k++] = r.size();
            }
        }
        int rc = driver.registerBuffers(addresses, lengths);
        if (rc >= 0) {
            return "registered " + driver.bufferRegistration();
        }
        String why = "not registered: " + driver.bufferRegistration();
        if (rc != -Errno.EOPNOTSUPP || mode == FixedBufferMode.ON) {
            // Once per table change, off the data path: transfers go unregistered, as before.
            LOG.log(System.Logger.Level.INFO, "{0}: fixed buffers {1}", who, why);
        }
        return why;
    }
}
