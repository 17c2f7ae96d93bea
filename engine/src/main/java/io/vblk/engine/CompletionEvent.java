package io.vblk.engine;

/** A finished back-end operation handed from the I/O thread to the completion thread. */
final class CompletionEvent {
    int slot;
    long result;
}
