package io.vblk.aio;

/**
 * Completes every operation at once without touching the image, so a benchmark measures the
 * rest of the pipeline: prepare, submit, the completion signal, poll. Reads and writes complete
 * with their full length, everything else with 0. Range and read-only checks still apply when
 * an image is given (it may be null: then any range is accepted).
 */
final class NullBackend extends SlottedBackend {
    NullBackend(Image image, BackendOptions options) {
        super(image, options, Image.LINUX && (image == null || !image.portable())
                ? CompletionSignal.overEventFd() : CompletionSignal.parking());
    }

    @Override
    int planTransfer(long offset, IoVector buffers, long total) {
        return AS_IS;
    }

    @Override
    void enqueueTransfer(int slot, boolean isWrite, int plan) {
        queueLocally(slot);
    }

    @Override
    void enqueueFlush(int slot) {
        queueLocally(slot);
    }

    @Override
    void enqueueZeroing(int slot) {
        queueLocally(slot);
    }

    @Override
    long performLocally(int slot) {
        switch (slots.op(slot)) {
            case SlotTable.OP_READ:
            case SlotTable.OP_WRITE:
                return slots.length(slot);
            case SlotTable.OP_FAILED:
                return slots.result(slot);
            default:
                return 0;
        }
    }

    @Override
    int submitQueued() {
        return 0;
    }

    @Override
    int queuedCount() {
        return 0;
    }

    @Override
    int kernelInFlight() {
        return 0; // everything completes at submit, through the deferred queue (counted there)
    }

    @Override
    int reapQueued(CompletionSink sink, int max) {
        return 0;
    }

    @Override
    boolean hasQueuedCompletions() {
        return false;
    }

    @Override
    int awaitQueued(long timeoutNs) {
        return AWAITED; // nothing ever waits in a kernel
    }

    @Override
    void release() {
        // Nothing beyond the slots.
    }
}
