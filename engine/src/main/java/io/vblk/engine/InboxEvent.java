package io.vblk.engine;

/**
 * An entry of an I/O thread's inbox ring (a Disruptor ring buffer): a kick for a queue, or a
 * control-plane command. Preallocated by the ring; kicks carry no object.
 */
final class InboxEvent {
    /** What an entry carries. */
    enum Type {
        /** A queue's kick ({@link #queue}): counted; the round polls every running queue anyway. */
        KICK,
        /** A control-plane {@link #command} to run on the I/O thread. */
        COMMAND
    }

    Type type;
    int queue;
    Command command;

    /** Control-plane work run on the I/O thread that owns the queues it touches. */
    interface Command {
        /** Runs on the I/O thread; returns true when finished, false to be run again next loop. */
        boolean run(IoThread thread);

        /**
         * Called once when the I/O thread gives up on this command: it threw in
         * {@link PendingCommands#MAX_FAILURES} runs (a bug, not a late fault, which is
         * delivered once). A command whose caller waits fails that wait here; by default nothing.
         */
        default void abandon(Throwable cause) {
        }
    }
}
