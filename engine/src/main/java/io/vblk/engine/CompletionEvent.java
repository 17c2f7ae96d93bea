package io.vblk.engine;

/** A finished back-end operation handed from the I/O thread to the completion thread. */
final class CompletionEvent {
    int slot;
    long result;
    /** Set by the completion thread before it acts on the event: an event seen again is a no-op. */
    boolean consumed;
}
