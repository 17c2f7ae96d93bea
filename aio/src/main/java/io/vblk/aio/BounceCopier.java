package io.vblk.aio;

import java.lang.System.Logger.Level;

import org.agrona.UnsafeApi;
import org.agrona.concurrent.UnsafeBuffer;

import io.vblk.sys.Errno;
import io.vblk.sys.FaultPoints;
import io.vblk.sys.NativeBuffer;
import io.vblk.sys.ProcessVm;

/**
 * Copies between guest memory and the slots' bounce buffers, a batch at a time, so that guest
 * memory that faults fails exactly the operations it belongs to, with EFAULT, and raises nothing.
 *
 * <p>Guest memory is a shared mapping of a file the frontend owns; a frontend that shrinks the
 * file makes every access to the cut pages raise SIGBUS. An {@code Unsafe} copy turns that into
 * an InternalError which HotSpot throws, in JIT-compiled code, not at the copy but at a later
 * safepoint poll (inside a back end's reap, for instance), too late to fail the operation and
 * in the middle of other bookkeeping. So the copies go through the kernel instead
 * ({@link ProcessVm}: {@code process_vm_readv}/{@code process_vm_writev} on our own pid), which
 * reports a cut page as EFAULT: one call per batch (the writes one submit stages, the reads one
 * poll copies back), the iovecs gathered into two preallocated arrays, nothing allocated. A
 * partial result names the faulting operation: every operation the count covers is done; the
 * one it stops in is tried again at the head of the next call, and fails (EFAULT, or the call's
 * error) only if it cannot move even then; the rest follow in further calls.
 *
 * <p>Where a seccomp filter refuses those calls (probed once per process, one log line), the
 * copies fall back to {@code Unsafe}, as before: an InternalError raised at the copy (interpreted
 * code) still fails that operation with EFAULT, but one HotSpot delivers later is not caught here
 * (engine GuestFaults describes what then holds).
 *
 * <p>One thread per instance: a back end has one for its submitting thread (writes in) and one
 * for its reaping thread (reads back).
 */
final class BounceCopier {
    private static final System.Logger LOG = System.getLogger("io.vblk.aio");
    private static final boolean KERNEL_COPY = probe();
    private static final int IOV = IovecDescriptor.LENGTH;

    private final SlotTable slots;
    private final boolean kernelCopy;
    /** The bounce side of a batch: one iovec per operation. */
    private final NativeBuffer bounceIov = new NativeBuffer(ProcessVm.IOV_MAX * IOV);
    /** The guest side of a batch: the operations' segments, in order. */
    private final NativeBuffer guestIov = new NativeBuffer(ProcessVm.IOV_MAX * IOV);
    private final UnsafeBuffer bounceView = bounceIov.buffer();
    private final UnsafeBuffer guestView = guestIov.buffer();
    /** Per slot: the bytes the batch moves for it, then its result (0 / bytes, or -errno). */
    private final long[] bytes;

    BounceCopier(SlotTable slots) {
        this(slots, KERNEL_COPY);
    }

    /** {@code kernelCopy} false: the Unsafe fallback (tests; and where the probe failed). */
    BounceCopier(SlotTable slots, boolean kernelCopy) {
        this.slots = slots;
        this.kernelCopy = kernelCopy;
        this.bytes = new long[slots.depth()];
    }

    private static boolean probe() {
        if (ProcessVm.available()) {
            return true;
        }
        LOG.log(Level.WARNING, "process_vm_readv refused (errno " + ProcessVm.probeErrno()
                + "): bounce buffers are copied with Unsafe, and a guest that truncates its memory"
                + " under a bounced request can fault the I/O thread late (see engine GuestFaults)");
        return false;
    }

    /** Whether copies go through the kernel (else Unsafe). */
    boolean kernelCopy() {
        return kernelCopy;
    }

    /**
     * Copies the guest data of the {@code count} bounced writes at the front of {@code list}
     * into their bounce buffers; then {@link #result} is 0 for each that was copied, or -errno
     * (EFAULT: its guest memory faulted).
     */
    void stageWrites(IntFifo list, int count) {
        for (int i = 0; i < count; i++) {
            int slot = list.get(i);
            bytes[slot] = seamFires(FaultPoints.BOUNCE_COPY) ? -Errno.EFAULT : slots.length(slot);
        }
        copy(list, count, true);
    }

    /**
     * Copies the first {@code bytes} of each of the {@code count} bounced reads at the front of
     * {@code list} back into guest memory, {@code bytes} (already stored with {@link #expect})
     * capped at the operation's length; then {@link #result} is what moved, or -errno.
     */
    void copyOut(IntFifo list, int count) {
        for (int i = 0; i < count; i++) {
            int slot = list.get(i);
            if (seamFires(FaultPoints.BOUNCE_COPY_BACK)) {
                bytes[slot] = -Errno.EFAULT;
            }
        }
        copy(list, count, false);
    }

    /** Before {@link #copyOut}: {@code slot}'s read returned {@code result} (> 0) bytes. */
    void expect(int slot, long result) {
        bytes[slot] = Math.min(result, slots.length(slot));
    }

    /** After a copy: {@code slot}'s result (0 or bytes moved; -errno when it failed). */
    long result(int slot) {
        return bytes[slot];
    }

    private void copy(IntFifo list, int count, boolean intoBounce) {
        if (!kernelCopy) {
            for (int i = 0; i < count; i++) {
                copyWithUnsafe(list.get(i), intoBounce);
            }
            return;
        }
        int i = skipFailed(list, 0, count);
        while (i < count) {
            // Gather from i while both iovec arrays and the kernel's byte limit hold.
            int guestCount = 0;
            int bounceCount = 0;
            long total = 0;
            int end = i;
            while (end < count) {
                int slot = list.get(end);
                long want = bytes[slot];
                if (want < 0) {
                    end++; // failed before the copy (a test seam): not in this call
                    continue;
                }
                int segments = segmentsFor(slot, want);
                if (end > i && (guestCount + segments > ProcessVm.IOV_MAX || bounceCount == ProcessVm.IOV_MAX
                        || total + want > ProcessVm.MAX_BYTES)) {
                    break;
                }
                putIov(bounceView, bounceCount++, slots.bounceAddress(slot), want);
                guestCount = gatherGuest(slot, want, guestCount);
                total += want;
                end++;
            }
            long rc = intoBounce
                    ? ProcessVm.read(bounceIov.address(), bounceCount, guestIov.address(), guestCount)
                    : ProcessVm.write(bounceIov.address(), bounceCount, guestIov.address(), guestCount);
            // Walk the batch: what the count covers is done; the first it does not cover is
            // tried again at the head of the next call, or fails if it already was the head.
            long covered = Math.max(rc, 0);
            int k = i;
            while (k < end) {
                int slot = list.get(k);
                long want = bytes[slot];
                if (want >= 0) {
                    if (want > covered) {
                        break;
                    }
                    covered -= want;
                    bytes[slot] = intoBounce ? 0 : want;
                }
                k++;
            }
            if (k < end && k == i) {
                bytes[list.get(k)] = rc < 0 && rc != -Errno.EFAULT ? rc : -Errno.EFAULT;
                k++;
            }
            i = skipFailed(list, k, count);
        }
    }

    private int skipFailed(IntFifo list, int from, int count) {
        int i = from;
        while (i < count && bytes[list.get(i)] < 0) {
            i++;
        }
        return i;
    }

    /** How many guest segments hold the first {@code want} bytes of {@code slot}'s transfer. */
    private int segmentsFor(int slot, long want) {
        int n = slots.guestSegments(slot);
        long left = want;
        for (int s = 0; s < n; s++) {
            left -= slots.guestLength(slot, s);
            if (left <= 0) {
                return s + 1;
            }
        }
        return Math.max(n, 1);
    }

    private int gatherGuest(int slot, long want, int at) {
        int n = slots.guestSegments(slot);
        int next = at;
        long left = want;
        for (int s = 0; s < n && left > 0; s++) {
            long length = Math.min(left, slots.guestLength(slot, s));
            putIov(guestView, next++, slots.guestAddress(slot, s), length);
            left -= length;
        }
        return next;
    }

    private static void putIov(UnsafeBuffer view, int index, long address, long length) {
        view.putLong(index * IOV + IovecDescriptor.BASE_OFFSET, address);
        view.putLong(index * IOV + IovecDescriptor.LENGTH_OFFSET, length);
    }

    private void copyWithUnsafe(int slot, boolean intoBounce) {
        long want = bytes[slot];
        if (want < 0) {
            return;
        }
        try {
            long bounce = slots.bounceAddress(slot);
            long left = want;
            for (int s = 0, n = slots.guestSegments(slot); s < n && left > 0; s++) {
                long chunk = Math.min(left, slots.guestLength(slot, s));
                long guest = slots.guestAddress(slot, s);
                UnsafeApi.copyMemory(intoBounce ? guest : bounce, intoBounce ? bounce : guest, chunk);
                bounce += chunk;
                left -= chunk;
            }
            bytes[slot] = intoBounce ? 0 : want;
        } catch (InternalError e) {
            // Raised at the copy only in interpreted code (see the class comment).
            bytes[slot] = -Errno.EFAULT;
        }
    }

    private static boolean seamFires(int point) {
        try {
            FaultPoints.at(point); // tests only: see FaultPoints
            return false;
        } catch (InternalError e) {
            return true;
        }
    }
}
