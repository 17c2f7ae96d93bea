package io.vblk.engine;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.Predicate;

/**
 * The control commands an {@link IoThread} took from its inbox and has not finished: the list
 * (oldest first), each one's count of runs that threw, and the back-off of a thread that waits
 * for one (a stop's or a lend's drain, a fence of the completion thread). Its own class because
 * this state outlives the inbox pass that listed a command (a command is run again every round
 * until it says it is finished) and has rules of its own: a bound on throws before a command is
 * given up ({@link #MAX_FAILURES}, {@link InboxEvent.Command#abandon}) and a sleep that grows
 * with the wait ({@link #backoffMs}). I/O thread only; nothing is allocated per round (the list
 * grows only when a command is listed).
 */
final class PendingCommands {
    /**
     * How many runs of one pending command may throw before the thread gives up on it (drops it
     * and calls {@link InboxEvent.Command#abandon}): a late guest-memory fault is delivered once,
     * so a command that throws this often has a bug and would otherwise stay pending for ever.
     * Only failures that are this device's count: a late fault attributed by evidence to other
     * memory (another device's, on a shared thread) does not (rev16c: a frontend faulting often
     * enough on a shared thread made another device's command be given up).
     */
    static final int MAX_FAILURES = 8;
    /** How long pending commands are re-run without sleeping. */
    static final long SPIN_NS = TimeUnit.MILLISECONDS.toNanos(1);
    /** The longest sleep between re-runs of a pending command that no event ends. */
    static final int BACKOFF_MAX_MS = 100;

    private final List<InboxEvent.Command> commands = new ArrayList<>();
    /** How many runs of each pending command (same index) threw; see {@link #MAX_FAILURES}. */
    private int[] failures = new int[16];
    /** The inbox sequence whose command was last listed ({@link #listFromInbox}). */
    private long listedSequence = -1;
    /** Runs one command: false when it is to run again (or may not run now: the back end is lent). */
    private final Predicate<InboxEvent.Command> run;
    /** Handles a command's failure (the fault model); true when it counts toward {@link #MAX_FAILURES}. */
    private final Predicate<Throwable> caught;
    /** Whether {@link #backoffMs} counts a wait (since {@link #waitingSinceNs}). */
    private boolean waiting;
    private long waitingSinceNs;

    PendingCommands(Predicate<InboxEvent.Command> run, Predicate<Throwable> caught) {
        this.run = run;
        this.caught = caught;
    }

    boolean isEmpty() {
        return commands.isEmpty();
    }

    /**
     * Lists the command of inbox entry {@code sequence} (it runs in {@link #runAll}). A late
     * guest-memory fault surfacing in the inbox handler (Java 17 raises it at any later
     * safepoint) leaves it, and the poller delivers the entry again: the command is listed before
     * it leaves its entry (so none is lost), a redelivery after it left finds null and is done,
     * and one between finds it listed last and lists it not twice.
     */
    void listFromInbox(InboxEvent.Command c, long sequence) {
        int last = commands.size() - 1;
        if (sequence != listedSequence || last < 0 || commands.get(last) != c) {
            listedSequence = sequence;
            int at = commands.size();
            if (at >= failures.length) {
                failures = java.util.Arrays.copyOf(failures, at * 2 + 2);
            }
            failures[at] = 0;
            commands.add(c);
        }
    }

    /**
     * Runs the pending commands, oldest first, each on its own: one that fails (a late
     * guest-memory fault landing in it) is handed to the fault model and stays pending, up to
     * {@link #MAX_FAILURES} failures, and the others still run, or leave the list when finished.
     * (A {@code removeIf} let the failure out and kept every command listed, so one that had
     * finished ran again at the next round.) A null entry (none is listed any more; kept as a
     * guard) is dropped. Once none is left, the next command that waits spins first again.
     */
    void runAll() {
        for (int i = 0; i < commands.size();) {
            InboxEvent.Command c = commands.get(i);
            boolean finished;
            try {
                finished = c == null || run.test(c);
            } catch (RuntimeException | Error e) {
                finished = caught.test(e) && i < failures.length && ++failures[i] >= MAX_FAILURES;
                if (finished) {
                    abandon(c, e);
                }
            }
            if (finished) {
                commands.remove(i);
                if (i < failures.length) {
                    System.arraycopy(failures, i + 1, failures, i, failures.length - i - 1);
                }
            } else {
                i++;
            }
        }
        if (commands.isEmpty()) {
            waiting = false;
        }
    }

    private static void abandon(InboxEvent.Command c, Throwable cause) {
        try {
            c.abandon(cause);
        } catch (RuntimeException | Error e) {
            // Given up on already: its failure to fail its caller changes nothing here.
        }
    }

    /**
     * A command is pending (or a lend pauses the queues): returns {@link IoThread#WAKE_NOW} for
     * its first {@link #SPIN_NS} (what usually ends at once, as a fence, is re-run at once), then
     * a sleep growing with the wait, a tenth of it, from 1 ms to {@link #BACKOFF_MAX_MS}. The
     * sleep ends early on what a drain waits for: a completion (the back end's eventfd, watched
     * while the member is not lent) or the completion thread's wake-up after each batch. Before,
     * every sleep was vetoed, so a drain stuck in a stalled back end (a hung FUSE or NFS file)
     * polled the thread, shared by other devices, at full CPU for as long as it stalled (up to
     * a lend's 120 s).
     */
    int backoffMs(long now) {
        if (!waiting) {
            waiting = true;
            waitingSinceNs = now;
        }
        long waited = now - waitingSinceNs;
        if (waited < SPIN_NS) {
            return IoThread.WAKE_NOW;
        }
        return (int) Math.max(1, Math.min(BACKOFF_MAX_MS, TimeUnit.NANOSECONDS.toMillis(waited) / 10));
    }

    /** Nothing waits (a sleep found no pending command): the next wait spins first again. */
    void noneWaiting() {
        waiting = false;
    }
}
