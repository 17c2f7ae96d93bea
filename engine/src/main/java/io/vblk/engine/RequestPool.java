package io.vblk.engine;

/**
 * The preallocated request slots of one I/O thread, as a stack of free slots. Single-threaded:
 * only the owning I/O thread claims and releases (in dedicated mode completed requests come back
 * to it through a queue first).
 */
final class RequestPool {
    private final BlkRequest[] slots;
    private final BlkRequest[] free;
    private int freeCount;

    RequestPool(int size, int maxSegments) {
        slots = new BlkRequest[size];
        free = new BlkRequest[size];
        for (int i = 0; i < size; i++) {
            slots[i] = new BlkRequest(i, maxSegments);
        }
        // A second pass: the stack is filled top-down (slot 0 is claimed first), so it may only
        // refer to slots that all exist (filling it in the first loop left half of it null).
        for (int i = 0; i < size; i++) {
            free[i] = slots[size - 1 - i];
        }
        freeCount = size;
    }

    /** A free slot, cleared, or null when all are in flight. */
    BlkRequest claim() {
        if (freeCount == 0) {
            return null;
        }
        BlkRequest r = free[--freeCount];
        r.clear();
        r.stage = BlkRequest.CLAIMED;
        return r;
    }

    void release(BlkRequest r) {
        if (r.stage == BlkRequest.FREE) {
            return; // never twice: a second copy in the stack would hand one slot out twice
        }
        r.stage = BlkRequest.FREE;
        free[freeCount++] = r;
    }

    BlkRequest get(int slot) {
        return slots[slot];
    }

    int available() {
        return freeCount;
    }

    int size() {
        return slots.length;
    }
}
