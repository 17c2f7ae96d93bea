package io.vblk.engine;

/**
 * Deadline arithmetic on {@link System#nanoTime()} for the control path (a device's {@code
 * close(ms)}, a shutdown's joins, a detach's wait): no state, only the rules that keep a deadline
 * from overflowing. A deadline is compared only by subtraction ({@link #later}, {@link #leftNs});
 * {@link #NO_DEADLINE} is none, and no real deadline ever equals it.
 */
final class Deadlines {
    /** No deadline of the caller's: the join's and the back end's own bounds apply. */
    static final long NO_DEADLINE = Long.MAX_VALUE;

    /**
     * Waits at least this long (about 73 years) are no deadline: a {@link System#nanoTime()}
     * deadline further away could overflow, and would compare wrongly by subtraction.
     */
    static final long FOREVER_NS = Long.MAX_VALUE / 4;

    private Deadlines() {
    }

    /**
     * The deadline {@code waitNs} from now ({@link System#nanoTime()}), saturating: {@link
     * #NO_DEADLINE} for a wait of {@link #FOREVER_NS} or more, and never a real deadline that
     * happens to equal it.
     */
    static long after(long waitNs) {
        if (waitNs >= FOREVER_NS) {
            return NO_DEADLINE;
        }
        long deadline = System.nanoTime() + Math.max(0, waitNs);
        return deadline == NO_DEADLINE ? deadline - 1 : deadline;
    }

    /** The later of two deadlines ({@link #NO_DEADLINE} is later than any), compared by subtraction. */
    static long later(long a, long b) {
        if (a == NO_DEADLINE || b == NO_DEADLINE) {
            return NO_DEADLINE;
        }
        return a - b >= 0 ? a : b;
    }

    /** What is left until {@code deadlineNs}, never negative; Long.MAX_VALUE for {@link #NO_DEADLINE}. */
    static long leftNs(long deadlineNs) {
        return deadlineNs == NO_DEADLINE ? Long.MAX_VALUE : Math.max(0, deadlineNs - System.nanoTime());
    }
}
