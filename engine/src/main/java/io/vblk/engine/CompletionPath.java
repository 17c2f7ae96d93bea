package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.S_IOERR;
import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static io.vblk.engine.BlkRequestDescriptor.S_UNSUPP;

import org.agrona.UnsafeApi;
import org.agrona.concurrent.NanoClock;

import io.vblk.aio.IoVector;
import io.vblk.hostmem.DirtyLog;
import io.vblk.hostmem.GuestMemory;
import io.vblk.sys.Errno;

/**
 * The completion side of the data plane: finishes requests (status byte, used element, counters,
 * latency) and, once per batch, publishes {@code used.idx} and signals each touched queue's
 * interrupt at most once. Runs on the I/O thread (shared mode) or the completion thread
 * (dedicated mode); never both for one device.
 */
final class CompletionPath {
    /** Result value meaning "no back-end operation: use the request's immediate status". */
    static final long IMMEDIATE = Long.MIN_VALUE;

    /** Where finished requests go back to the pool. */
    interface Releaser {
        void release(BlkRequest r);
    }

    private final DeviceQueue[] dirty;
    private int dirtyCount;
    private final boolean recordLatency;
    private final NanoClock clock;
    private Releaser releaser;
    /**
     * The time the batch's first recorded completion read, used for the rest of the batch: one
     * clock read per batch instead of one per request (within a batch the requests finish within
     * a microsecond or so of each other; at millions of requests a second the reads cost more).
     */
    private long batchNowNs;
    private boolean batchClockRead;
    /**
     * A run of equal latencies of one queue not yet recorded: requests popped in one round carry
     * one start time and finish in one batch with one end time, so a batch's latencies come in
     * runs (a null device's whole batch is one). One recording per run instead of one per request
     * (the histogram's recorder takes two atomic instructions per call); lossless: the same
     * counts at the same values. Recorded at the end of the batch at the latest.
     */
    private DeviceQueue runQueue;
    private long runLatencyNs;
    private long runCount;

    /** Latencies, when recorded, are read from {@code clock} (the I/O thread's, for tests). */
    CompletionPath(int maxQueues, boolean recordLatency, NanoClock clock) {
        this.dirty = new DeviceQueue[maxQueues];
        this.recordLatency = recordLatency;
        this.clock = clock;
    }

    void releaser(Releaser value) {
        releaser = value;
    }

    /** One back-end operation of {@code r} finished with {@code result} (bytes, or -errno). */
    void complete(BlkRequest r, long result) {
        if (r.stage == BlkRequest.LOST) {
            // Its queue's drain gave it up (see FaultRecovery#settleLost): the guest no longer waits
            // for it, and its memory may have been reset since; only the slot comes back.
            if (result == IMMEDIATE || --r.pendingOps <= 0) {
                r.finished = true;
                releaser.release(r);
            }
            return;
        }
        if (result != IMMEDIATE) {
            if (result < 0) {
                r.error = result;
                if (result == -Errno.EFAULT && r.queue.faultReason == null) {
                    // The kernel or a bounce copy hit guest memory that is gone: a guest-memory
                    // fault like any other (see GuestFaults), so the queue stops using it.
                    r.queue.faultReason = "guest memory fault: I/O on a buffer that faulted (EFAULT)";
                }
            } else if ((r.type == BlkRequestDescriptor.T_IN || r.type == BlkRequestDescriptor.T_OUT) && result != r.bytes) {
                r.error = -Errno.EIO; // a short transfer is an I/O error to the guest
            }
            if (--r.pendingOps > 0) {
                return;
            }
        }
        finish(r, result == IMMEDIATE ? r.immediateStatus : (r.error != 0 ? S_IOERR : S_OK));
    }

    private void finish(BlkRequest r, byte status) {
        DeviceQueue q = r.queue;
        int used = 0;
        if (q.faultReason == null) {
            try {
                if (r.statusAddress >= 0) {
                    // The address came from a validated writable descriptor (hostmem bounds-checked it).
                    UnsafeApi.putByte(r.statusAddress, status);
                    used = status == S_OK ? r.usedLength : 1;
                }
                DirtyLog log = q.log;
                if (log != null) {
                    logWrites(log, q, r);
                }
                InflightTracker tracker = q.inflightTracker;
                if (tracker != null) {
                    tracker.used(r.head);
                }
                q.ring.addUsed(r.head, used);
                if (!q.dirty) {
                    dirty[dirtyCount++] = q;
                    q.dirty = true;
                }
            } catch (RuntimeException | Error e) {
                // The slot is released all the same; the queue's guest memory is not touched
                // again, and the I/O thread quarantines it (see GuestFaults).
                q.faultReason = "guest memory fault completing head " + r.head + ": " + e;
            }
        }
        q.counters.increment(QueueCounters.COMPLETIONS);
        if (status == S_UNSUPP) {
            q.counters.increment(QueueCounters.UNSUPPORTED);
        } else if (status != S_OK || r.statusAddress < 0) {
            q.counters.increment(QueueCounters.ERRORS);
        }
        if (recordLatency) {
            if (!batchClockRead) {
                batchNowNs = clock.nanoTime();
                batchClockRead = true;
            }
            long latencyNs = batchNowNs - r.startNs;
            if (q == runQueue && latencyNs == runLatencyNs) {
                runCount++;
            } else {
                recordRun();
                runQueue = q;
                runLatencyNs = latencyNs;
                runCount = 1;
            }
        }
        r.finished = true;
        releaser.release(r);
    }

    /** Gives {@code r} back without touching guest memory (its queue faulted under it). */
    void abandon(BlkRequest r) {
        r.queue.counters.increment(QueueCounters.ERRORS);
        r.finished = true;
        releaser.release(r);
    }

    /**
     * Marks what {@code r} wrote into guest memory while a migration runs: the data of a read
     * (whatever its status: a failed read may have written part of it; bounce buffers were
     * copied back before the completion got here) and the status byte. GET_ID's bytes are
     * marked by the parser, which writes them. The used element and used.idx are marked by the
     * ring itself.
     */
    private static void logWrites(DirtyLog log, DeviceQueue q, BlkRequest r) {
        GuestMemory memory = q.ring.memory();
        if (r.type == BlkRequestDescriptor.T_IN) {
            IoVector data = r.data;
            for (int i = 0, n = data.count(); i < n; i++) {
                log.markHost(memory, data.address(i), data.length(i));
            }
        }
        if (r.statusAddress >= 0) {
            log.markHost(memory, r.statusAddress, 1);
        }
    }

    private void recordRun() {
        if (runCount > 0) {
            runQueue.recordLatency(runLatencyNs, runCount);
            runCount = 0;
            runQueue = null;
        }
    }

    /** Whether a queue has used entries written since the last {@link #endOfBatch()} (a field read). */
    boolean unpublished() {
        return dirtyCount > 0;
    }

    /** End of a completion batch: one used.idx publish and at most one interrupt per queue. */
    void endOfBatch() {
        batchClockRead = false;
        recordRun();
        for (int i = 0; i < dirtyCount; i++) {
            DeviceQueue q = dirty[i];
            if (q == null) {
                continue; // a fault the JVM delivered in an earlier pass, after it cleared the entry
            }
            dirty[i] = null;
            boolean notify = false;
            if (q.faultReason == null) {
                InflightTracker tracker = q.inflightTracker;
                try {
                    if (tracker != null) {
                        // Before used.idx (publishUsed's release fence orders this volatile
                        // store before it): the I/O thread pops nothing of q until published()
                        // cleared this batch's flags (see RequestDispatcher.popQueue).
                        q.publishing = true;
                    }
                    notify = q.ring.publishUsed();
                    if (tracker != null) {
                        tracker.published(q.ring.nextUsed());
                    }
                } catch (RuntimeException | Error e) {
                    q.faultReason = "guest memory fault publishing used entries: " + e;
                    notify = false;
                } finally {
                    if (tracker != null) {
                        q.publishing = false; // volatile: after published()'s stores
                    }
                }
            }
            // Only now: a stop waiting for !dirty must not return before used.idx is stored.
            q.dirty = false;
            if (notify) {
                try {
                    q.interrupt.signal();
                } catch (RuntimeException e) {
                    // An embedder's interrupt that throws must not leave the rest of the batch
                    // dirty (a stop would wait on it forever): this queue alone stops.
                    q.faultReason = "interrupt failed: " + e;
                }
                q.counters.increment(QueueCounters.INTERRUPTS);
            } else {
                q.counters.increment(QueueCounters.INTERRUPTS_SUPPRESSED);
            }
        }
        dirtyCount = 0;
    }
}
