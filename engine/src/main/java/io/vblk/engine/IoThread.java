package io.vblk.engine;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.function.Predicate;

import org.agrona.concurrent.Agent;
import org.agrona.concurrent.IdleStrategy;
import org.agrona.concurrent.NanoClock;
import org.agrona.concurrent.SystemNanoClock;

import com.lmax.disruptor.EventPoller;
import com.lmax.disruptor.RingBuffer;
import com.lmax.disruptor.YieldingWaitStrategy;

import io.vblk.block.BlockDriver;

/**
 * One data-plane thread (QEMU's iothread), an Agrona-style agent: it owns a set of queues and one
 * back end, and runs {@link #doWork()} rounds, each followed by its {@link IdleStrategy} (chosen
 * by the {@link WaitStrategy}). Its state is split by owner: the {@link RequestDispatcher} (pool,
 * parser, chain, throttle), the {@link CompletionRoute} (inline, or a dedicated completion thread
 * with its ring and return queue), the {@link EpollWait} (the epoll set it sleeps in), the
 * {@link FaultRecovery} (a caught failure, the suspect state, lost requests given up by a drain)
 * and, here, the loop, the inbox, the sleep protocol and the control commands.
 *
 * <p>A round: drain the inbox ring (kicks and control commands, published by other threads into
 * a Disruptor ring), take back requests finished elsewhere, reap finished operations, pop every
 * available chain of every running queue (at most {@link Tuning#submitBatch()} in all, when set:
 * the next round then starts at the queue after the one the budget ran out in), and submit
 * everything prepared with one back-end call; or, with a {@link Tuning#subBatch()}, one call per
 * that many chains, reaping and publishing completions between them.
 * While the thread is awake the queues' notifications stay disabled, so a busy guest does not
 * kick; before it sleeps it re-enables them and re-checks the rings (the no-lost-kick pattern),
 * then blocks in epoll on the kick eventfds, the back end's completion eventfd and its own
 * wake-up eventfd. The clock is injected, so a test can drive rounds directly, without threads.
 */
final class IoThread implements Agent, Runnable, KernelSleep {
    private static final int INBOX_SIZE = 4096;
    /** {@link #prepareSleep()}: there is work, do not sleep. */
    static final int WAKE_NOW = -2;

    private final int id;
    private final Tuning tuning;
    private final DeviceQueue[] queues;
    private final BlockDriver backend;
    private final NanoClock clock;
    private final RequestDispatcher dispatcher;
    private final CompletionRoute route;
    /** Between the back end's completions and the route: write-through without FLUSH. */
    private final WriteThrough writeThrough;
    private final IdleStrategy idle;
    /**
     * Where it sleeps: {@link EpollWait}, or {@link RingWait} chosen at {@link #start} (volatile:
     * other threads' kicks read it to wake the thread).
     */
    private volatile ThreadWait events;
    private final RingBuffer<InboxEvent> inbox;
    private final EventPoller<InboxEvent> inboxPoller;
    private final EventPoller.Handler<InboxEvent> inboxHandler = this::onInboxEvent;
    /**
     * Runs a pending command unless the back end is lent: checked per command, since one of them
     * (a lend) may lend it within the pass, and from then on nothing that may touch the driver
     * (a second lend, a stop's reclaim of lost slots) runs until it is handed back.
     */
    private final Predicate<InboxEvent.Command> runCommand = c -> this.lending != LENT && c.run(this);
    private final List<InboxEvent.Command> pendingCommands = new ArrayList<>();
    /** How many runs of each pending command (same index) threw; see {@link #PENDING_COMMAND_FAILURES}. */
    private int[] pendingFailures = new int[16];
    /** The inbox sequence whose command was last listed as pending (onInboxEvent). */
    private long listedSequence = -1;

    private volatile boolean running = true;
    private Thread thread;
    /** The shared thread that runs this one's rounds, or null when it has a thread of its own. */
    private SharedIoThread shared;
    /**
     * {@link #lendBackend}: {@link #SERVING}, {@link #PAUSING} (its queues are not popped while
     * what they have in flight finishes) or {@link #LENT} (its rounds leave the back end alone:
     * another thread uses it). Written by this thread to pause and lend, by the borrower to hand
     * it back (the volatile write and read order the borrower's use before this thread's).
     */
    private volatile int lending = SERVING;
    static final int SERVING = 0;
    static final int PAUSING = 1;
    static final int LENT = 2;
    /** Lend commands begun and not yet finished (lent or cancelled); this thread only. */
    private int lendsWaiting;
    /**
     * The future of the lend that set {@link #LENT} last: a borrower that gives up recognises a
     * lend of its own that a late guest-memory fault cut off before it was completed.
     */
    private volatile CompletableFuture<Void> lentTo;
    /**
     * Orders a borrower's {@link #returnBackend} against {@link #closeResources}: a lent back end
     * is never closed under its borrower (control path only, never per request).
     */
    private final Object lendLock = new Object();
    /** {@link #closeResources} ran while the back end was lent: the borrower closes them on return (under lendLock). */
    private boolean closeOnReturn;
    /** How often a borrower waiting for its lend looks whether the device closed meanwhile. */
    private static final long LEND_POLL_NS = TimeUnit.SECONDS.toNanos(1);
    private long submittedBatches;
    /** The most chains one round pops ({@link Tuning#submitBatch()}; no limit: MAX_VALUE). */
    private final int submitBatch;
    /** Where the next round starts popping: after the queue a full round stopped in. */
    private int nextQueue;
    /** The most chains per submission within a round ({@link Tuning#subBatch()}; 0: one per round). */
    private final int subBatch;
    /** The most operations per submission within a round ({@link Tuning#submitChunk()}; 0: one per round). */
    private final int submitChunk;
    /** This round submitted a chunk ({@link #submitChunk}) before its end. */
    private boolean chunkSubmitted;
    /** {@link Tuning#earlySignal()}: when a round publishes once to a guest awaiting its next completion, per queue (null: never). */
    private final EarlySignal[] earlySignal;
    /** Rounds that published early to a guest awaiting its next completion (for tests and diagnostics). */
    private long earlyPublishes;
    /** Chains popped in this round since its last submission (sub-batches only). */
    private int sinceSubmit;
    /** Operations reaped between this round's sub-batches (its work, for the idle strategy). */
    private int reapedBetween;
    /**
     * The back end accepted to leave what it finishes inside {@code submit()} unsignalled: this
     * thread reaps it in the same round (and checks before it sleeps) instead of taking an
     * eventfd round trip through epoll.
     */
    private final boolean reapsOnSubmit;
    /** {@link Tuning#answerWindowNs()}: how long to wait for the guest's answer to published completions (0: never). */
    private final long answerWindowNs;
    /** Whether the next wait for the guest's answer pays ({@link Tuning#answerWindowAdaptive()}). */
    private final AnswerWindow answerWindow;
    /** When the last round that reaped completions published them. */
    private long publishedAtNs;
    /** Completions were published and no sleep has waited for the guest's answer since. */
    private boolean awaitingAnswer;
    /** Sleeps that the guest's answer (or a completion) cancelled within the window (for tests and diagnostics). */
    private long answersCaught;
    /** The memory tables its queues used, for a late fault's evidence (see {@link GuestFaults}). */
    private final FaultEvidence evidence = new FaultEvidence();
    private final FaultRecovery faults;
    private final DeviceListener listener;

    IoThread(int id, DeviceModel model, Tuning tuning, Throttle throttle, DeviceListener listener,
             DeviceQueue[] queues, BlockDriver backend) {
        this(id, model, tuning, throttle, listener, queues, backend, SystemNanoClock.INSTANCE);
    }

    /** As above, reading the time (throttle, latency, poll window) from {@code clock}. */
    IoThread(int id, DeviceModel model, Tuning tuning, Throttle throttle, DeviceListener listener,
             DeviceQueue[] queues, BlockDriver backend, NanoClock clock) {
        this.id = id;
        this.tuning = tuning;
        this.queues = queues;
        this.backend = backend;
        this.clock = clock;
        this.listener = listener;
        this.dispatcher = new RequestDispatcher(model, throttle, listener, backend);
        dispatcher.attributor(e -> GuestFaults.attribute(this, e));
        RequestPool pool = dispatcher.pool();
        CompletionPath completions = new CompletionPath(queues.length, tuning.recordLatency(), clock);
        if (tuning.threadingMode() == ThreadingMode.DEDICATED) {
            if (backend.singleIssuer()) {
                // Its completions are posted only when the submitting thread enters the ring.
                throw new IllegalArgumentException("a single-issuer io_uring ring (vblk.uring.singleIssuer) is reaped by the"
                        + " thread that submits: ThreadingMode.SHARED, not dedicated completion threads");
            }
            route = new DedicatedCompletionRoute(pool, completions, queues,
                    DedicatedCompletionRoute.ringSize(pool.size(), model.maxSegmentsPerRange()),
                    WaitStrategies.disruptor(tuning), dispatcher::release, this::wakeIfSleeping);
        } else {
            route = new InlineCompletionRoute(pool, completions, dispatcher::release);
        }
        dispatcher.route(route);
        this.writeThrough = new WriteThrough(model, backend, pool, route);
        this.idle = IdleStrategies.sliced(IdleStrategies.forIoThread(tuning, clock, this, backend::inFlight), tuning.schedSliceNs(), clock);
        this.events = new EpollWait(queues, backend);
        this.faults = new FaultRecovery(this, queues, backend, dispatcher, route, evidence);
        dispatcher.shortage(faults::directMemoryShortage);
        this.reapsOnSubmit = backend.reapOnSubmittingThread();
        this.submitBatch = tuning.submitBatch() > 0 ? tuning.submitBatch() : Integer.MAX_VALUE;
        this.subBatch = tuning.subBatch();
        this.submitChunk = tuning.subBatch() == 0 && tuning.earlySignal() == 0 ? tuning.submitChunk() : 0;
        if (tuning.earlySignal() != 0 && subBatch == 0) {
            earlySignal = new EarlySignal[queues.length];
            for (int i = 0; i < queues.length; i++) {
                earlySignal[i] = new EarlySignal(tuning.earlySignal(), io.vblk.vring.SplitQueue.MAX_QUEUE_SIZE);
            }
        } else {
            earlySignal = null;
        }
        this.answerWindowNs = tuning.answerWindowNs();
        this.answerWindow = new AnswerWindow(answerWindowNs, tuning.answerWindowAdaptive());
        this.inbox = RingBuffer.createMultiProducer(InboxEvent::new, INBOX_SIZE, new YieldingWaitStrategy());
        this.inboxPoller = inbox.newPoller();
        inbox.addGatingSequences(inboxPoller.getSequence());
    }

    void start(String name) {
        route.start(name);
        chooseSleep();
        thread = new Thread(this, name);
        thread.setDaemon(true);
        thread.start();
    }

    /**
     * Sleeps in the back end's io_uring ({@link RingWait}) instead of epoll when it can: the
     * tuning allows it, this thread reaps its own completions (a dedicated completion thread
     * waits for them instead) and the driver is one ring that supports it. Runs before the
     * thread starts, so the ring's SQ is still this thread's to write; a shared thread keeps epoll
     * (it nests the members' epoll descriptors).
     */
    void chooseSleep() {
        if (!tuning.ringSleep() || route.ownsThread()) {
            return;
        }
        // The wake-up eventfd first: once the ring has given up its completion eventfd there is
        // no going back to epoll, so nothing that can fail (EMFILE) may come after that.
        io.vblk.sys.EventFd wakeup = io.vblk.sys.EventFd.create(true);
        io.vblk.aio.RingSleep ring = backend.sleepInRing();
        if (ring == null) {
            wakeup.close();
            return;
        }
        ThreadWait epoll = events;
        events = new RingWait(queues, ring, wakeup);
        epoll.close();
    }

    /** Whether the thread sleeps in its back end's ring rather than epoll (for tests). */
    boolean sleepsInRing() {
        return events instanceof RingWait;
    }

    /**
     * Runs this thread's rounds on {@code shared} instead of a thread of its own (shared threading
     * only: the shared thread completes requests itself).
     */
    void startOn(SharedIoThread shared) {
        if (route.ownsThread()) {
            throw new IllegalArgumentException("a shared I/O thread needs ThreadingMode.SHARED, not dedicated completion threads");
        }
        this.shared = shared;
        shared.attach(this);
    }

    /** Operations its back end holds in flight (for a shared thread's deep-queue rule; on the running thread). */
    int backendInFlight() {
        return lending == LENT ? 0 : backend.inFlight();
    }

    /** Whether a shared thread runs its rounds (see {@link #lendBackend}). */
    boolean isShared() {
        return shared != null;
    }

    /**
     * Lends this member's back end to the calling thread, for a synchronous operation that may
     * wait for the disk or its server (an online resize's metadata update) and must not wait
     * inside a shared thread's round, where it would stop every other member: its queues stop
     * being popped, a command re-run each round (never blocking the thread) waits until what
     * they have in flight has completed and been published, and from then on this member's
     * rounds leave the back end alone until {@link #returnBackend}. Shared members only (their
     * rounds run on the shared thread, which waits in an {@link EpollWait}).
     *
     * @throws java.io.IOException when requests in flight did not finish within {@code timeoutNs}
     *         (nothing lent: the queues serve on)
     */
    void lendBackend(long timeoutNs) throws java.io.IOException {
        if (shared == null) {
            throw new IllegalStateException("only a shared thread's member lends its back end");
        }
        CompletableFuture<Void> lent = new CompletableFuture<>();
        java.util.concurrent.atomic.AtomicBoolean cancelled = new java.util.concurrent.atomic.AtomicBoolean();
        submitCommand(new InboxEvent.Command() {
            /** Counted in lendsWaiting (each lend takes itself out once, whichever way it ends). */
            private boolean counted;
            private boolean begun;

            @Override
            public boolean run(IoThread t) {
                // Never runs while LENT (runCommand): a second lend waits for the
                // first one's return, and pauses the queues anew once it runs again.
                if (lent.isDone()) {
                    // Run again after a late guest-memory fault landed past the lend: it must not
                    // lend a second time with no borrower to hand it back.
                    return true;
                }
                if (!begun) {
                    begun = true;
                    counted = true;
                    lendsWaiting++;
                }
                if (cancelled.get()) {
                    uncount(); // no other lend waiting: the queues serve again
                    lent.completeExceptionally(new java.io.IOException("requests in flight did not finish in time"));
                    return true;
                }
                lending = PAUSING;
                for (DeviceQueue q : queues) {
                    if (q.inflight > 0 || q.dirty) {
                        return false;
                    }
                }
                if (backend.inFlight() > 0 || backend.pendingSubmit() > 0 || route.hasReturns()) {
                    return false;
                }
                flushCompletions();
                ((EpollWait) events).backendLent(true);
                lentTo = lent; // before LENT: see the borrower's give-up
                lending = LENT;
                if (counted) {
                    counted = false;
                    lendsWaiting--;
                }
                lent.complete(null);
                return true;
            }

            @Override
            public void abandon(Throwable cause) {
                // Given up after throwing in every run (I/O thread). Lent already (a throw after
                // LENT: it never runs again while lent): the borrower's, as if it had said so.
                if (lent.isDone() || (lentTo == lent && lending == LENT)) {
                    lent.complete(null);
                    return;
                }
                // Otherwise the queues must not stay paused for a lend that will never come (a
                // PAUSING member pops nothing), and the borrower is told now, not at its deadline.
                uncount();
                lent.completeExceptionally(new java.io.IOException("the I/O thread gave up lending its driver", cause));
            }

            private void uncount() {
                if (counted) {
                    counted = false;
                    if (--lendsWaiting == 0 && lending == PAUSING) {
                        lending = SERVING; // no other lend waits for the queues to drain
                    }
                }
            }
        });
        long deadline = System.nanoTime() + timeoutNs;
        String failure;
        Throwable cause = null;
        while (true) {
            long left = deadline - System.nanoTime();
            if (left <= 0) {
                failure = "requests in flight did not finish in " + TimeUnit.NANOSECONDS.toSeconds(timeoutNs) + " s";
                break;
            }
            try {
                lent.get(Math.min(left, LEND_POLL_NS), TimeUnit.NANOSECONDS);
                return; // lent: the caller's until returnBackend
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                failure = "interrupted while the I/O thread drained for a driver step";
                cause = e;
                break;
            } catch (java.util.concurrent.ExecutionException e) {
                failure = "the I/O thread did not lend its driver";
                cause = e.getCause();
                break;
            } catch (java.util.concurrent.TimeoutException e) {
                if (ended) {
                    // Closed meanwhile (its thread let this member go): the command never runs.
                    failure = "the device closed before its I/O thread lent its driver";
                    break;
                }
            }
        }
        // Given up. The command cancels at its next run; if it lent already (or lends in the run
        // that reads the flag too late), the driver is handed back at once, never left lent.
        cancelled.set(true);
        if (lentTo == lent && lending == LENT) {
            // It lent, but a late fault kept it from saying so (commands do not run while LENT,
            // so it never will): hand the driver back now rather than leave the member lent.
            lent.complete(null);
        }
        lent.thenRun(this::returnBackend);
        if (!ended) {
            wakeIfSleeping();
        }
        throw new java.io.IOException(failure, cause);
    }

    /**
     * Hands the back end lent by {@link #lendBackend} back: this member's rounds use it and pop
     * its queues again, from the next round on (woken now).
     */
    void returnBackend() {
        synchronized (lendLock) {
            if (closeOnReturn) {
                // The device closed while lent: its shutdown left the back end (and the epoll set,
                // the route) to the borrower, who is done with them only now.
                closeOnReturn = false;
                closeResourcesNow();
                return;
            }
            ((EpollWait) events).backendLent(false); // before SERVING: commands may use the epoll set then
            lending = SERVING;
            // Wakes the thread (its queues may have gained requests meanwhile) without blocking on
            // a full inbox: an empty kick, which a round that polls every queue takes anyway.
            inbox.tryPublishEvent(IoThread::translateKick, -1);
            wakeIfSleeping();
        }
    }

    /**
     * One round on a shared thread: like {@link #run()}'s handler, a failure (a bug, a fault in
     * this device's guest memory) quarantines this member's queues only, never the other devices
     * on the thread.
     */
    int doWorkIsolated() {
        try {
            return doWork();
        } catch (RuntimeException | Error e) {
            caughtInRound(e);
            return 0;
        }
    }

    /**
     * A failure a shared thread caught outside this member's isolated round: {@code here} when
     * it came from this member's own sleep checks (handled as one in its round), otherwise
     * attributed by evidence only, by the one member told to {@code attribute} (see
     * {@link FaultRecovery#caughtUnplaced}).
     */
    void caughtBesideRound(Throwable e, boolean here, boolean attribute) {
        if (here) {
            faults.caught(e);
        } else {
            faults.caughtUnplaced(e, attribute);
        }
    }

    /** A failure outside a pop loop: see {@link FaultRecovery#caught}; false when attributed to other memory only. */
    private boolean caughtInRound(Throwable e) {
        return faults.caught(e);
    }

    /**
     * A guest-memory fault the JVM delivered inside a command (BlockDevice's one-shot commands,
     * which then run again): handled as one in a round, outside a pop loop (see
     * {@link FaultRecovery#caught}). I/O thread only.
     */
    void caughtInCommand(Throwable e) {
        faults.caught(e);
    }

    /**
     * How many runs of one pending command may throw before the thread gives up on it (drops it
     * and calls {@link InboxEvent.Command#abandon}): a late guest-memory fault is delivered once,
     * so a command that throws this often has a bug and would otherwise stay pending for ever.
     * Only failures that are this device's count: a late fault attributed by evidence to other
     * memory (another device's, on a shared thread) does not (rev16c: a frontend faulting often
     * enough on a shared thread made another device's command be given up).
     */
    static final int PENDING_COMMAND_FAILURES = 8;

    /**
     * Runs the pending commands, oldest first (every command of the inbox runs here: {@link
     * #onInboxEvent} only lists it), each on its own: one that fails (a late guest-memory fault
     * landing in it) is handed to the fault model and stays pending, up to {@link
     * #PENDING_COMMAND_FAILURES} failures, and the others still run, or leave the list when
     * finished. (A {@code removeIf} let the failure out and kept every command listed, so one
     * that had finished ran again at the next round.) None runs while the back end is lent
     * ({@link #runCommand}): they wait until it is handed back. A null entry (none is listed
     * any more; kept as a guard) is dropped.
     */
    private void runPendingCommands() {
        for (int i = 0; i < pendingCommands.size();) {
            InboxEvent.Command c = pendingCommands.get(i);
            boolean finished;
            try {
                finished = c == null || runCommand.test(c);
            } catch (RuntimeException | Error e) {
                boolean ours = caughtInRound(e);
                finished = ours && i < pendingFailures.length && ++pendingFailures[i] >= PENDING_COMMAND_FAILURES;
                if (finished) {
                    abandon(c, e);
                }
            }
            if (finished) {
                pendingCommands.remove(i);
                if (i < pendingFailures.length) {
                    System.arraycopy(pendingFailures, i + 1, pendingFailures, i, pendingFailures.length - i - 1);
                }
            } else {
                i++;
            }
        }
    }

    private static void abandon(InboxEvent.Command c, Throwable cause) {
        try {
            c.abandon(cause);
        } catch (RuntimeException | Error e) {
            // Given up on already: its failure to fail its caller changes nothing here.
        }
    }

    /** Lists {@code c} as pending, its failure count reset. */
    private void listPending(InboxEvent.Command c) {
        int at = pendingCommands.size();
        if (at >= pendingFailures.length) {
            pendingFailures = java.util.Arrays.copyOf(pendingFailures, at * 2 + 2);
        }
        pendingFailures[at] = 0;
        pendingCommands.add(c);
    }

    /** This member's epoll descriptor, which a shared thread watches for its kicks and completions. */
    int epollFd() {
        return ((EpollWait) events).fd(); // a shared member never switches to RingWait
    }

    int id() {
        return id;
    }

    @Override
    public String roleName() {
        return thread != null ? thread.getName() : "io-thread-" + id;
    }

    BlockDriver backend() {
        return backend;
    }

    DeviceQueue[] queues() {
        return queues;
    }

    /** The request pool (for tests). */
    RequestPool dispatcherPool() {
        return dispatcher.pool();
    }

    FaultEvidence evidence() {
        return evidence;
    }

    /** What a drain asks to give up requests a late fault lost ({@link FaultRecovery#settleLost}). */
    FaultRecovery faults() {
        return faults;
    }

    /** The I/O threads run by this one's OS thread: the shared thread's members, or itself. */
    IoThread[] sharedMembers() {
        return shared != null ? shared.members() : new IoThread[] {this};
    }

    /** Evidence of devices that left this one's shared thread, or null. */
    FaultEvidence retiredEvidence() {
        return shared != null ? shared.retired : null;
    }

    /** Tells the owner how a fault was attributed. */
    void report(String text) {
        try {
            listener.faultAttributed(text);
        } catch (RuntimeException e) {
            // an owner's log that fails must not turn a fault into a second one
        }
    }

    /** The completion route (for tests). */
    CompletionRoute route() {
        return route;
    }

    /** The idle strategy its own thread runs between rounds (for tests). */
    IdleStrategy idleStrategy() {
        return idle;
    }

    // ---------------------------------------------------------------- inbox (any thread)

    /** Publishes a kick for {@code queue} and wakes the thread if it sleeps. Lock-free. */
    void kick(int queue) {
        // A full inbox means the thread is far behind and awake: it polls every queue anyway.
        inbox.tryPublishEvent(IoThread::translateKick, queue);
        wakeIfSleeping();
    }

    private static void translateKick(InboxEvent event, long sequence, int queue) {
        event.type = InboxEvent.Type.KICK;
        event.queue = queue;
        event.command = null;
    }

    /** Runs {@code command} on this thread (blocking only while the inbox is full). */
    void submitCommand(InboxEvent.Command command) {
        long sequence = inbox.next();
        InboxEvent event = inbox.get(sequence);
        event.type = InboxEvent.Type.COMMAND;
        event.command = command;
        inbox.publish(sequence);
        wakeIfSleeping();
    }

    private void wakeIfSleeping() {
        events.wakeIfSleeping();
    }

    // ---------------------------------------------------------------- the loop

    @Override
    public void run() {
        DataPlaneThreads.markCurrent();
        noteThreadId();
        while (running) {
            try {
                loop();
            } catch (RuntimeException | Error e) {
                // A bug, or guest memory that faulted (a frontend shrank the file under the
                // mapping: SIGBUS, raised by the JVM as InternalError): stop this thread's queues
                // loudly rather than spin on the failure, and keep the thread for the next frontend.
                caughtInRound(e);
                try {
                    idle.idle(0);
                } catch (RuntimeException | Error again) {
                    caughtInRound(again); // a late fault can land in the idle path too
                }
            }
        }
        if (!exit.compareAndSet(RUNS, EXITED)) {
            closeResources(); // shutdown gave up waiting for us: the last round is over only now
        }
    }

    /**
     * Notes the thread's id. {@link Tuning#schedSliceNs()} is applied by the idle strategy
     * ({@link SliceGovernor}: only while the thread loses time waiting for a CPU and does not poll).
     */
    private void noteThreadId() {
        threadId = io.vblk.sys.Native.syscall(io.vblk.sys.Linux.SYS_GETTID, 0, 0, 0, 0, 0);
    }

    /** The Linux thread id of the running thread (0 before it started), for tests. */
    private volatile long threadId;

    long threadId() {
        return threadId;
    }

    /**
     * The custom scheduler slice this thread runs with now, as the kernel reported it after the
     * last change (0: the kernel's default), for tests and stats.
     */
    long schedSliceNs() {
        return IdleStrategies.reportedSliceNs(idle);
    }

    /**
     * The rounds themselves, in a method of their own: the JVM raises a fault in an unsafe memory
     * access asynchronously, at a later safepoint poll such as this loop's back-edge, and it must
     * land inside {@link #run()}'s handler.
     */
    private void loop() {
        while (running) {
            idle.idle(doWork());
        }
    }

    /**
     * One round of work; returns how much was done (0: idle), as an Agrona agent's
     * {@code doWork()}. Never blocks; a test may call it directly on a thread that was never
     * started.
     */
    @Override
    public int doWork() {
        int work = 0;
        if (RoundTrace.ON) {
            RoundTrace.event(RoundTrace.ROUND, 0);
        }
        try {
            inboxPoller.poll(inboxHandler);
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
        if (lending == LENT) {
            return work; // the back end is another thread's (lendBackend): commands wait with the queues
        }
        if (!pendingCommands.isEmpty()) {
            runPendingCommands();
            if (pendingCommands.isEmpty()) {
                commandsWaiting = false; // the next command that waits spins first again
            }
            if (lending == LENT) {
                return work; // lent in this pass: from now on the borrower's, not this round's to reap
            }
        }
        work += route.reclaim();
        int reaped = backend.poll(writeThrough, dispatcher.pool().size());
        writeThrough.afterPoll(); // submitted with the round's requests
        if (RoundTrace.ON) {
            RoundTrace.event(RoundTrace.REAPED, reaped);
        }
        if (reaped > 0) {
            route.endOfBatch();
            if (RoundTrace.ON) {
                RoundTrace.event(RoundTrace.PUBLISHED, 0);
            }
            if (answerWindowNs > 0) {
                publishedAtNs = clock.nanoTime(); // once per reaping round, not per request
                awaitingAnswer = true;
            }
        }
        work += reaped;
        long nowNs = dispatcher.throttled() || tuning.recordLatency() ? clock.nanoTime() : 0;
        reapedBetween = 0;
        int prepared = lending == SERVING ? popQueues(nowNs) : 0;
        if (RoundTrace.ON) {
            RoundTrace.event(RoundTrace.POPPED, prepared);
        }
        work += reapedBetween;
        int finished = 0;
        boolean submitted = chunkSubmitted;
        chunkSubmitted = false;
        if (backend.pendingSubmit() > 0) {
            submitTraced();
            submitted = true;
        }
        if (submitted) {
            if (reapsOnSubmit && backend.completionsReady()) {
                // Finished inside submit (the null back end, a refused operation): complete them
                // in this round, in one used.idx publish and interrupt with the immediate
                // completions, instead of an eventfd write, an epoll wake-up and another round.
                finished = backend.poll(writeThrough, dispatcher.pool().size());
                while (writeThrough.afterPoll()) {
                    // The writes just finished need their flush, which may finish in submit too.
                    backend.submit();
                    submittedBatches++;
                    if (!backend.completionsReady()) {
                        break; // the flush's completion comes with a later poll
                    }
                    finished += backend.poll(writeThrough, dispatcher.pool().size());
                }
            }
        }
        if (prepared > 0 || finished > 0 || route.unpublished()) {
            // Immediate completions of this round, those finished in submit, and write-through
            // requests afterPoll handed over in a round that reaped nothing (left after a fault).
            route.endOfBatch();
        }
        if (dispatcher.hasUnanswered()) {
            faults.settleUnanswered(writeThrough.holding()); // a prepare threw a shortage: see BlkRequest.unanswered
        }
        if (evidence.suspect) {
            clearSuspectWhenSettled();
        }
        return work + prepared + finished;
    }

    /**
     * Pops the running queues, at most {@link Tuning#submitBatch()} chains in all; a round that
     * ends on the budget makes the next one start at the queue after the one it stopped in, so
     * that every queue gets its turn. Quarantines queues the completion side found faulty.
     */
    private int popQueues(long nowNs) {
        int n = queues.length;
        int prepared = 0;
        sinceSubmit = 0;
        int start = nextQueue;
        for (int i = 0; i < n; i++) {
            int index = start + i < n ? start + i : start + i - n;
            DeviceQueue q = queues[index];
            if (q.faultReason != null && q.state != QueueLifecycle.BROKEN) {
                quarantine(q, q.faultReason); // caught on the completion side
            }
            if (q.state == QueueLifecycle.RUNNING && prepared < submitBatch) {
                prepared += popQueue(q, index, nowNs, submitBatch - prepared);
                if (prepared >= submitBatch) {
                    nextQueue = index + 1 < n ? index + 1 : 0;
                }
            } else if (q.state == QueueLifecycle.STOPPING && q.resubmitCount > 0 && prepared < submitBatch) {
                // A stop drains recovered requests too (BlockDevice.stopQueue).
                prepared += dispatcher.popQueue(q, nowNs, submitBatch - prepared);
            }
        }
        return prepared;
    }

    /**
     * Pops at most {@code max} chains of {@code q}. With a {@link Tuning#subBatch()}, every that
     * many chains popped in the round (over its queues) go to the back end at once, and what
     * finished meanwhile is reaped and published before popping on: the disk starts on the first
     * requests while the rest are parsed, and the guest gets completions (and posts anew) within
     * the round rather than once per round. One submission and one publish per sub-batch.
     */
    private int popQueue(DeviceQueue q, int index, long nowNs, int max) {
        // One ring's worth per queue per round, on every path. A request that completes without
        // the back end (UNSUPP, GET_ID, IOERR) writes its status and frees its slot inside the
        // pop loop, and completions published between sub-batches or early let the guest post
        // anew within the round: without the bound a guest re-posting on each status keeps one
        // round (the inbox's stop, drain and memory commands, every other queue and every other
        // device of a shared thread) waiting for ever (rev13a). A round that stops here did work,
        // so the thread does not sleep: the next round pops the rest.
        int bound = Math.max(1, q.ring.size());
        if (subBatch == 0) {
            if (earlySignal != null) {
                return popSignallingEarly(q, earlySignal[index], nowNs, max, bound);
            }
            if (submitChunk > 0) {
                return popInChunks(q, nowNs, Math.min(max, bound));
            }
            return dispatcher.popQueue(q, nowNs, Math.min(max, bound));
        }
        max = Math.min(max, bound);
        int popped = 0;
        while (popped < max && q.state == QueueLifecycle.RUNNING) {
            int want = Math.min(max - popped, subBatch - sinceSubmit);
            int got = dispatcher.popQueue(q, nowNs, want);
            popped += got;
            sinceSubmit += got;
            if (sinceSubmit >= subBatch) {
                submitSubBatch();
            }
            if (got < want) {
                break; // the ring is empty, the pool or the back end is full, or the throttle says wait
            }
        }
        return popped;
    }

    /**
     * {@link Tuning#submitChunk()}: pops at most {@code max} chains of {@code q} (already bounded
     * to one ring's worth), handing the back end every {@link #submitChunk} operations prepared
     * (counted over the round's queues: what an earlier queue left pending counts) as soon as
     * they are, with nothing reaped or published between: the round's end submits the rest and
     * publishes once, as without chunks.
     */
    private int popInChunks(DeviceQueue q, long nowNs, int max) {
        int popped = 0;
        while (popped < max && q.state == QueueLifecycle.RUNNING) {
            int want = Math.min(max - popped, Math.max(1, submitChunk - backend.pendingSubmit()));
            int got = dispatcher.popQueue(q, nowNs, want);
            popped += got;
            if (backend.pendingSubmit() >= submitChunk) {
                submitTraced();
                chunkSubmitted = true;
            }
            if (got < want) {
                break; // the ring is empty, the pool or the back end is full, or the throttle says wait
            }
        }
        return popped;
    }

    /** One submission of what is prepared, counted and traced. */
    private void submitTraced() {
        if (RoundTrace.ON) {
            RoundTrace.event(RoundTrace.SUBMIT_START, backend.pendingSubmit());
        }
        backend.submit();
        if (RoundTrace.ON) {
            RoundTrace.event(RoundTrace.SUBMIT_END, backend.inFlight());
        }
        submittedBatches++;
    }

    /**
     * {@link Tuning#earlySignal()}: pops {@code early}'s number of chains of {@code q}; if the
     * guest then waits for its very next completion (asked at this point, not at the round's
     * start: a guest re-arms its interrupt only after it has re-posted, and a polling I/O thread
     * sees the re-posts first), submits them, reaps and publishes what finished (the interrupt
     * goes out now, so the guest's wake-up overlaps the rest of the round), then pops the rest
     * as usual, and tells {@code early} whether the guest had answered by then. At most one
     * early publish per queue per round; the round's end publishes the rest, and {@link
     * io.vblk.vring.SplitQueue#publishUsed()} decides that interrupt as ever (none unless the
     * guest re-armed since).
     */
    private int popSignallingEarly(DeviceQueue q, EarlySignal early, long nowNs, int max, int bound) {
        int point = Math.min(early.chains(), q.ring.size());
        if (max <= point) {
            // A submit budget this small ends the round first (point is at most the ring's size,
            // so this pops within the round's bound).
            return dispatcher.popQueue(q, nowNs, max);
        }
        // Bounded after the budget test, not before: the ring's size is no budget, and a round
        // that pops fewer chains than the point is still one too short (EarlySignal).
        max = Math.min(max, bound);
        int got = dispatcher.popQueue(q, nowNs, point);
        if (got < point || q.state != QueueLifecycle.RUNNING) {
            if (got > 0) {
                early.roundTooShort();
            }
            return got; // the ring is empty, the pool or back end is full, the throttle says wait, or it broke
        }
        if (!q.ring.driverAwaitsNextUsed()) {
            return got + dispatcher.popQueue(q, nowNs, max - got); // the guest is awake: one lump at the end
        }
        earlyPublishes++;
        if (RoundTrace.ON) {
            RoundTrace.event(RoundTrace.EARLY_PUBLISH, got);
        }
        int availAtPublish = q.ring.availIndexInRing();
        submitSubBatch();
        got += dispatcher.popQueue(q, nowNs, max - got);
        if (q.state == QueueLifecycle.RUNNING) {
            // Answered: re-posted, or re-armed for the next completion after taking the early ones.
            early.judged(q.ring.availIndexInRing() != availAtPublish || q.ring.driverAwaitsNextUsed());
        }
        return got;
    }

    /** Flushes issued to make writes durable without a negotiated FLUSH (for tests and diagnostics). */
    long writeThroughSyncs() {
        return writeThrough.syncs();
    }

    /** Rounds that published early (see {@link Tuning#earlySignal()}; for tests and diagnostics). */
    long earlyPublishes() {
        return earlyPublishes;
    }

    /** The early-publish point {@code position}'s queue uses next (for tests). */
    int earlySignalChains(int position) {
        return earlySignal[position].chains();
    }

    /** Submits what this round prepared so far, then reaps and publishes what has finished. */
    private void submitSubBatch() {
        sinceSubmit = 0;
        if (backend.pendingSubmit() > 0) {
            backend.submit();
            submittedBatches++;
        }
        reapedBetween += backend.poll(writeThrough, dispatcher.pool().size());
        writeThrough.afterPoll(); // submitted with the next sub-batch or the round's end
        route.endOfBatch(); // this sub-batch's immediate completions and what was reaped
    }

    private boolean onInboxEvent(InboxEvent event, long sequence, boolean endOfBatch) {
        if (event.type == InboxEvent.Type.KICK) {
            for (DeviceQueue q : queues) {
                if (q.index == event.queue) {
                    q.counters.increment(QueueCounters.KICKS);
                }
            }
        } else if (event.command != null) {
            // Only listed here; runPendingCommands runs it after the poll. A late guest-memory
            // fault surfacing in this handler (Java 17 raises it at any later safepoint) leaves
            // it, and the poller delivers this event again: the command is listed before it
            // leaves its event (so none is lost), a redelivery after it left finds null and is
            // done, and one between finds it listed last and lists it not twice.
            InboxEvent.Command c = event.command;
            int last = pendingCommands.size() - 1;
            if (sequence != listedSequence || last < 0 || pendingCommands.get(last) != c) {
                listedSequence = sequence;
                listPending(c);
            }
            event.command = null;
        }
        return true;
    }

    /** Stops {@code q} popping (sticky until a reset); its owner hears why first. */
    void quarantine(DeviceQueue q, String reason) {
        dispatcher.quarantine(q, reason);
    }

    // ---------------------------------------------------------------- waiting

    /**
     * Blocks until a kick, a completion, a command or the throttle's deadline. Notifications are
     * re-enabled first, and a ring that gained buffers meanwhile cancels the sleep.
     */
    @Override
    public void sleep() {
        if (awaitingAnswer && awaitAnswer()) {
            if (RoundTrace.ON) {
                RoundTrace.event(RoundTrace.ANSWER, 0);
            }
            return;
        }
        int timeoutMs = prepareSleep();
        if (timeoutMs != WAKE_NOW) {
            if (RoundTrace.ON) {
                RoundTrace.event(RoundTrace.SLEEP_START, backend.inFlight());
            }
            awaitEvents(timeoutMs);
            if (RoundTrace.ON) {
                RoundTrace.event(RoundTrace.SLEEP_END, 0);
            }
        } else if (RoundTrace.ON) {
            RoundTrace.event(RoundTrace.WAKE_NOW, 0);
        }
        finishSleep();
    }

    /**
     * {@link Tuning#answerWindowNs()}: after a round that published completions, with a deep
     * queue at the back end, waits until the window (counted from that publish) closes for the
     * guest to post new buffers or for a completion, yielding the CPU between looks, with the
     * notifications still disabled (the guest does not kick for what it posts meanwhile).
     * Returns true when there is work: the caller skips the sleep and the next round takes it.
     * One wait per publish: a window that closed empty is not waited again before the next one.
     */
    boolean awaitAnswer() {
        awaitingAnswer = false;
        if (!running || backend.inFlight() < AdaptivePollIdleStrategy.DEEP_IN_FLIGHT || dispatcher.pool().available() == 0) {
            return false;
        }
        long window = answerWindow.next();
        long deadline = publishedAtNs + window;
        if (window == 0 || clock.nanoTime() - deadline >= 0) {
            return false; // closed, or the round outlasted it: its pop already took any answer
        }
        do {
            if (backend.completionsReady() || inbox.getCursor() != inboxPoller.getSequence().get() || guestPosted()) {
                answersCaught++;
                answerWindow.caught();
                return true;
            }
            Thread.yield();
        } while (clock.nanoTime() - deadline < 0 && running);
        answerWindow.missed();
        return false;
    }

    /** The adaptive answer window's current length (0: closed), for tests. */
    long currentAnswerWindowNs() {
        return answerWindow.windowNs();
    }

    /** Whether a running, unthrottled queue's avail ring holds buffers not yet popped (a read of avail.idx each). */
    private boolean guestPosted() {
        for (DeviceQueue q : queues) {
            if (q.state == QueueLifecycle.RUNNING && q.throttledUntilNs == 0
                    && q.ring.availIndexInRing() != (q.ring.nextAvail() & 0xffff)) {
                return true;
            }
        }
        return false;
    }

    /** Sleeps that {@link #awaitAnswer()} cancelled because the guest answered (or a completion came) within the window. */
    long answersCaught() {
        return answersCaught;
    }

    /**
     * First half of a sleep: marks the thread sleeping (so kicks and commands signal the wake-up
     * eventfd), re-enables the rings' notifications and re-checks them. Returns {@link #WAKE_NOW}
     * when there is work after all, else the epoll timeout (-1: none; a throttle deadline).
     * A {@link SharedIoThread} calls it for each of its members before it sleeps for all.
     */
    int prepareSleep() {
        events.sleeping(true);
        int timeoutMs = -1;
        // !running: a shutdown's wake-up may already have been consumed (a ring sleep's poll CQE
        // is reaped by the round, unlike epoll's eventfd, which stays readable until the wait).
        int lend = lending;
        if (lend == LENT) {
            // Nothing of this member runs until the back end comes back (returnBackend wakes it).
            return !running || inbox.getCursor() != inboxPoller.getSequence().get() ? WAKE_NOW : -1;
        }
        boolean abort = !running || inbox.getCursor() != inboxPoller.getSequence().get()
                || backend.pendingSubmit() > 0 || route.hasReturns() || backend.completionsReady();
        long now = clock.nanoTime();
        if (!pendingCommands.isEmpty() || lend != SERVING) {
            int waitMs = commandBackoffMs(now);
            if (waitMs == WAKE_NOW) {
                abort = true;
            } else {
                timeoutMs = waitMs;
            }
        } else {
            commandsWaiting = false;
        }
        for (int i = 0; i < queues.length && !abort; i++) {
            DeviceQueue q = queues[i];
            if (q.state != QueueLifecycle.RUNNING || lend != SERVING) {
                continue; // a pausing member pops nothing: chains waiting in its rings are no work
            }
            if (q.throttledUntilNs != 0) {
                long waitNs = q.throttledUntilNs - now;
                if (waitNs <= 0) {
                    abort = true;
                    break;
                }
                int ms = (int) Math.min(Integer.MAX_VALUE, TimeUnit.NANOSECONDS.toMillis(waitNs) + 1);
                timeoutMs = timeoutMs < 0 ? ms : Math.min(timeoutMs, ms);
                continue;
            }
            // Without free slots pending chains must wait for a completion, which wakes us anyway
            // (the pop's own condition: a request and the back-end slots of the worst one).
            if ((q.ring.enableNotifications() || q.resubmitCount > 0) && dispatcher.canPop()) {
                abort = true;
            }
        }
        // Last: the completion eventfd the kernel raised for completions the rounds already
        // reaped is reset here, then the ring looked at again; one landing after the look raises
        // it anew. Without it the sleep woke at once to nothing after most lumps (s14e's trace).
        if (!abort && lend == SERVING && events.rearmCompletions()) {
            abort = true;
        }
        return abort ? WAKE_NOW : timeoutMs;
    }

    /**
     * A command is pending (a stop's or a lend's drain waiting for what is in flight, a fence
     * of the completion thread): returns {@link #WAKE_NOW} for its first {@link
     * #COMMAND_SPIN_NS} (what usually ends at once, as a fence, is re-run at once), then a sleep
     * growing with the wait, a tenth of it, from 1 ms to {@link #COMMAND_BACKOFF_MAX_MS}. The
     * sleep ends early on what a drain waits for: a completion (the back end's eventfd, watched
     * while the member is not lent) or the completion thread's wake-up after each batch. Before,
     * every sleep was vetoed, so a drain stuck in a stalled back end (a hung FUSE or NFS file)
     * polled the thread, shared by other devices, at full CPU for as long as it stalled (up to
     * a lend's 120 s).
     */
    private int commandBackoffMs(long now) {
        if (!commandsWaiting) {
            commandsWaiting = true;
            commandsWaitingSinceNs = now;
        }
        long waited = now - commandsWaitingSinceNs;
        if (waited < COMMAND_SPIN_NS) {
            return WAKE_NOW;
        }
        return (int) Math.max(1, Math.min(COMMAND_BACKOFF_MAX_MS, TimeUnit.NANOSECONDS.toMillis(waited) / 10));
    }

    /** Whether {@link #commandBackoffMs} counts a wait (since {@link #commandsWaitingSinceNs}). */
    private boolean commandsWaiting;
    private long commandsWaitingSinceNs;
    /** How long pending commands are re-run without sleeping. */
    static final long COMMAND_SPIN_NS = TimeUnit.MILLISECONDS.toNanos(1);
    /** The longest sleep between re-runs of a pending command that no event ends. */
    static final int COMMAND_BACKOFF_MAX_MS = 100;

    /** Waits in this thread's epoll (0: only collects what is ready) and acknowledges what woke it. */
    void awaitEvents(int timeoutMs) {
        events.await(timeoutMs);
    }

    /** Second half of a sleep: no longer sleeping, notifications suppressed again while awake. */
    void finishSleep() {
        events.sleeping(false);
        for (DeviceQueue q : queues) {
            if (q.state == QueueLifecycle.RUNNING) {
                q.ring.disableNotifications();
            }
        }
    }

    // ---------------------------------------------------------------- control (on this thread)

    DeviceQueue queue(int index) {
        for (DeviceQueue q : queues) {
            if (q.index == index) {
                return q;
            }
        }
        throw new IllegalArgumentException("queue " + index + " is not on I/O thread " + id);
    }

    /** Starts watching {@code q}'s kick eventfd (I/O thread only). */
    void watchKick(DeviceQueue q) {
        events.watchKick(q);
    }

    /** Stops watching {@code q}'s kick eventfd (I/O thread only). */
    void unwatchKick(DeviceQueue q) {
        events.unwatchKick(q);
    }

    /** The rounds' check of a suspect thread: see {@link FaultRecovery#clearSuspectWhenSettled}. */
    private void clearSuspectWhenSettled() {
        faults.clearSuspectWhenSettled();
    }

    /** Publishes immediate completions left from control work (I/O thread only). */
    void flushCompletions() {
        route.endOfBatch();
    }

    /**
     * Dedicated mode: publishes a fence into the completion ring and returns its sequence; once
     * {@link #completionPassed} says the completion thread is past it, that thread has finished
     * every batch begun before, and reads queue fields (such as the interrupt) written before
     * the fence anew. Shared mode: -1, already passed. I/O thread only.
     */
    long completionFence() {
        return route.fence();
    }

    /** Whether the completion thread has finished the batch holding fence {@code sequence}. */
    boolean completionPassed(long sequence) {
        return route.passed(sequence);
    }

    long submittedBatches() {
        return submittedBatches;
    }

    /** Stops the thread after its queues were stopped; waits for in-flight I/O via the back end. */
    void shutdown() {
        shutdown(NO_DEADLINE);
    }

    /** {@link #shutdown(long)} without a deadline of the caller's: the join's and the back end's own bounds. */
    static final long NO_DEADLINE = Long.MAX_VALUE;

    /**
     * Waits at least this long (about 73 years) are no deadline: a {@link System#nanoTime()}
     * deadline further away could overflow, and would compare wrongly by subtraction.
     */
    static final long FOREVER_NS = Long.MAX_VALUE / 4;

    /**
     * The deadline {@code waitNs} from now ({@link System#nanoTime()}), saturating: {@link
     * #NO_DEADLINE} for a wait of {@link #FOREVER_NS} or more, and never a real deadline that
     * happens to equal it. Compare deadlines only by subtraction ({@link #later}, {@link #leftNs}).
     */
    static long deadlineAfter(long waitNs) {
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

    /**
     * As {@link #shutdown()}, done by {@code deadlineNs} ({@link System#nanoTime()}, or {@link
     * #NO_DEADLINE}) as far as this thread's waits go: the join of a dedicated thread and the
     * back end's wait for the kernel at close take what is left of it (a device's {@code
     * close(ms)}); past it the thread is left to end its round, or the back end closes
     * undrained, and nothing the kernel may still write is freed.
     */
    void shutdown(long deadlineNs) {
        running = false;
        if (shared != null && !shared.detach(this, deadlineNs)) {
            // The shared thread is still in a round (a back end stuck in a call) past the
            // deadline: it lets this one go when the round ends and closes its resources then
            // (endDetached); until then the device is not quiesced.
            System.getLogger(IoThread.class.getName()).log(System.Logger.Level.WARNING,
                    roleName() + ": its shared thread still runs a round past close's deadline: it closes the back end when the round ends");
            return;
        }
        events.wake();
        long joinMs = deadlineNs == NO_DEADLINE ? shutdownWaitMs
                : Math.min(shutdownWaitMs, Math.max(1, TimeUnit.NANOSECONDS.toMillis(leftNs(deadlineNs))));
        joinQuietly(thread, joinMs);
        if (thread != null && thread != Thread.currentThread() && thread.isAlive() && exit.compareAndSet(RUNS, ABANDONED)) {
            // Still in a round after the join's deadline (a stalled back end call, a guest that
            // kept the round busy): closing the back end now would unmap its ring under that
            // round. The thread closes them itself when the round ends.
            System.getLogger(IoThread.class.getName()).log(System.Logger.Level.WARNING,
                    thread.getName() + " still runs a round after shutdown's wait: it closes its back end when the round ends");
            return;
        }
        closeResources(deadlineNs);
    }

    private void closeResources() {
        closeResources(NO_DEADLINE);
    }

    /**
     * Called on the shared thread when it applies a detach its closer stopped waiting for: hands
     * the resources the closer left to a short-lived daemon thread, which closes them. Never on
     * the shared thread itself: a back end's close waits for its stuck I/O however short the
     * deadline (a qcow2 driver at least its own-work floor per chain level, an NBD back end its
     * helper's join), and every other member's rounds would stall that long. The member is
     * already off the shared thread's rounds and epoll set; {@link #lendLock} still orders this
     * close against a borrower's {@link #returnBackend}. The close waits for nothing beyond what
     * the back end insists on: what the kernel still holds goes to its undrained close. Actions
     * waiting for the end ({@link #whenEndedDrained}) then run on that closing thread.
     */
    void endDetached() {
        Thread closer = new Thread(() -> {
            try {
                closeResources(deadlineAfter(0));
            } catch (RuntimeException e) {
                System.getLogger(IoThread.class.getName()).log(System.Logger.Level.WARNING,
                        roleName() + ": closing a device detached late failed", e);
            }
        }, "vblk-late-detach-close-" + roleName());
        closer.setDaemon(true);
        closer.start();
    }

    private void closeResources(long deadlineNs) {
        synchronized (lendLock) {
            if (lending == LENT) {
                // Lent (a hand-over's inactivate while export.remove closes the device): closing
                // the driver now would free it under the borrower. returnBackend closes it;
                // until then the thread has not ended (quiesced() stays false).
                closeOnReturn = true;
                return;
            }
            closeResourcesNow(deadlineNs);
        }
    }

    private void closeResourcesNow() {
        closeResourcesNow(NO_DEADLINE);
    }

    private void closeResourcesNow(long deadlineNs) {
        try {
            route.close();
            if (deadlineNs == NO_DEADLINE) {
                backend.close();
            } else {
                backend.closeWithin(leftNs(deadlineNs));
            }
            events.close();
        } finally {
            ended = true;
            List<Runnable> waiting = afterEnd;
            afterEnd = null;
            if (waiting != null) {
                for (Runnable action : waiting) {
                    backend.whenDrained(action);
                }
            }
        }
    }

    /** {@link #whenEndedDrained} actions waiting for the thread to end (under lendLock). */
    private List<Runnable> afterEnd;

    /**
     * Runs {@code action} once {@link #endedDrained()} holds: at once when it does, else when the
     * thread has ended and its driver's last back end with operations still in the kernel is
     * released ({@link BlockDriver#whenDrained}), on the thread that ends or releases it; never
     * if that never happens. Control path.
     */
    void whenEndedDrained(Runnable action) {
        synchronized (lendLock) {
            if (!ended) {
                if (afterEnd == null) {
                    afterEnd = new ArrayList<>();
                }
                afterEnd.add(action);
                return;
            }
        }
        backend.whenDrained(action);
    }

    /** Set once the thread runs no round or command again and its resources were closed (either by shutdown or by the thread). */
    private volatile boolean ended;

    /** Whether this thread has ended for good: a command submitted now never runs. */
    boolean ended() {
        return ended;
    }

    /** Whether it has ended and its back end closed drained: nothing of it can reach guest memory any more. */
    boolean endedDrained() {
        return ended && backend.closedDrained();
    }

    /** Who closes the resources of a dedicated thread: shutdown, or the thread if shutdown gave up waiting. */
    private static final int RUNS = 0;
    private static final int EXITED = 1;
    private static final int ABANDONED = 2;
    private final java.util.concurrent.atomic.AtomicInteger exit = new java.util.concurrent.atomic.AtomicInteger(RUNS);

    /** How long {@link #shutdown()} waits for a dedicated thread's last round (tests shorten it). */
    long shutdownWaitMs = 10_000;

    static void joinQuietly(Thread t) {
        joinQuietly(t, 10_000);
    }

    private static void joinQuietly(Thread t, long ms) {
        if (t == null || t == Thread.currentThread()) {
            return;
        }
        try {
            t.join(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    Thread thread() {
        return shared != null ? shared.thread() : thread;
    }
}
