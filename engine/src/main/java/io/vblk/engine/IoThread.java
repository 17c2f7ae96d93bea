package io.vblk.engine;

import java.util.concurrent.TimeUnit;
import java.util.function.Predicate;

import org.agrona.concurrent.Agent;
import org.agrona.concurrent.IdleStrategy;
import org.agrona.concurrent.NanoClock;
import org.agrona.concurrent.SystemNanoClock;

import io.vblk.block.BlockDriver;

import static io.vblk.engine.BackendLend.State.LENT;
import static io.vblk.engine.BackendLend.State.SERVING;

/**
 * One data-plane thread (QEMU's iothread), an Agrona-style agent: it owns a set of queues and one
 * back end, and runs {@link #doWork()} rounds, each followed by its {@link IdleStrategy} (chosen
 * by the {@link WaitStrategy}). Its state is split by owner: the {@link RequestDispatcher} (pool,
 * parser, chain, throttle), the {@link CompletionRoute} (inline, or a dedicated completion thread
 * with its ring and return queue), the {@link ThreadWait} it sleeps in ({@link EpollWait}, or
 * {@link RingWait} in the back end's ring), the {@link FaultRecovery} (a caught failure, the
 * evidence and suspect state, the fault reports, lost requests given up by a drain), the {@link SubmitPolicy} (how a round pops
 * and submits), the {@link Inbox} (kicks and commands from other threads), the {@link
 * PendingCommands} (commands not yet finished), the {@link BackendLend} (a shared member's back
 * end lent to another thread), the {@link ThreadEnd} (who closes its resources, and when) and the
 * {@link AnswerWindowSleep} (the answer window, wrapping its kernel sleep). What it holds itself:
 * the loop and the round that calls them in order, the sleep protocol ({@link #prepareSleep},
 * {@link #finishSleep}), the control entry points (kick, commands, lend, shutdown) and its place
 * on a {@link SharedIoThread}.
 *
 * <p>A round: drain the inbox, run the pending commands, take back requests finished elsewhere,
 * reap finished operations, pop the running queues and submit what they prepared, as the submit
 * policy says (by default every available chain, at most {@link Tuning#submitBatch()} in all,
 * with one back-end call). While the thread is awake the queues' notifications stay disabled, so
 * a busy guest does not kick; before it sleeps it re-enables them and re-checks the rings (the
 * no-lost-kick pattern), then blocks in epoll on the kick eventfds, the back end's completion
 * eventfd and its own wake-up eventfd (or in the ring). The clock is injected, so a test can
 * drive rounds directly, without threads.
 */
final class IoThread implements Agent, Runnable, KernelSleep {
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
    /**
     * Runs a pending command unless the back end is lent: checked per command, since one of them
     * (a lend) may lend it within the pass, and from then on nothing that may touch the driver
     * (a second lend, a stop's reclaim of lost slots) runs until it is handed back.
     */
    private final Predicate<InboxEvent.Command> runCommand = c -> this.lender.state != LENT && c.run(this);
    /** Commands taken from the inbox and not finished: run every round (see {@link PendingCommands}). */
    private final PendingCommands pending;
    /** Kicks and commands from other threads, drained at the start of each round ({@link Inbox}). */
    private final Inbox inbox;

    private volatile boolean running = true;
    private Thread thread;
    /** The shared thread that runs this one's rounds, or null when it has a thread of its own. */
    private SharedIoThread shared;
    /** Where the back end is: serving the rounds, pausing for a lend, or lent ({@link BackendLend}). */
    private final BackendLend lender = new BackendLend(this);
    /** Who closes its resources and when, and what runs once it has ended. */
    private final ThreadEnd end;
    /** How a round pops its queues and submits (one of four, chosen here once; see {@link SubmitPolicy}). */
    private final SubmitPolicy submits;
    /** {@link Tuning#answerWindowNs()} is set: a round that publishes tells {@link #answerWait}. */
    private final boolean answerWindowOn;
    /** The answer window, wrapping {@link #sleep()} for the idle strategy when on ({@link AnswerWindowSleep}). */
    private final AnswerWindowSleep answerWait;
    private final FaultRecovery faults;

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
        this.dispatcher = new RequestDispatcher(model, throttle, listener, backend);
        dispatcher.attributor(e -> GuestFaults.attribute(this, e));
        route = CompletionRoute.of(tuning, model, backend, dispatcher,
                new CompletionPath(queues.length, tuning.recordLatency(), clock), queues, this::wakeIfSleeping);
        dispatcher.route(route);
        this.writeThrough = new WriteThrough(model, backend, dispatcher.pool(), route);
        this.answerWindowOn = tuning.answerWindowNs() > 0;
        this.answerWait = new AnswerWindowSleep(this, new AnswerWindow(tuning.answerWindowNs(), tuning.answerWindowAdaptive()),
                clock, this::answerMayCome, this::hasWorkBeforeSleep, () -> running);
        this.idle = IdleStrategies.sliced(IdleStrategies.forIoThread(tuning, clock, sleeper(), backend::inFlight), tuning.schedSliceNs(), clock);
        this.events = new EpollWait(queues, backend);
        this.end = new ThreadEnd(this, lender, backend, route);
        this.faults = new FaultRecovery(this, queues, backend, dispatcher, route, listener);
        dispatcher.shortage(faults::directMemoryShortage);
        this.submits = SubmitPolicy.of(tuning, queues, dispatcher, backend, writeThrough, route);
        // A failure is handled as one in the round; it counts toward the bound only when it is
        // this device's (FaultRecovery.caught: not a late fault attributed to other memory).
        this.pending = new PendingCommands(runCommand, faults::caught);
        this.inbox = new Inbox(queues, pending);
    }

    void start(String name) {
        route.start(name);
        chooseSleep();
        thread = new Thread(this, name);
        thread.setDaemon(true);
        thread.start();
    }

    /** Sleeps in the back end's io_uring instead of epoll when it can ({@link RingWait#instead}); before the thread starts. */
    void chooseSleep() {
        ThreadWait ring = RingWait.instead(tuning, route.ownsThread(), backend, queues);
        if (ring != null) {
            ThreadWait epoll = events;
            events = ring; // before the close: a kick from another thread reads it to wake the thread
            epoll.close();
        }
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
        return lender.state == LENT ? 0 : backend.inFlight();
    }

    /** Whether a shared thread runs its rounds (see {@link #lendBackend}). */
    boolean isShared() {
        return shared != null;
    }

    /** Lends this member's back end to the calling thread: see {@link BackendLend#lend}. */
    void lendBackend(long timeoutNs) throws java.io.IOException {
        lender.lend(timeoutNs);
    }

    /** Hands the back end lent by {@link #lendBackend} back: see {@link BackendLend#giveBack}. */
    void returnBackend() {
        lender.giveBack();
    }

    /** Where the back end is now (for tests). */
    BackendLend.State lendState() {
        return lender.state;
    }

    /** Its back-end lending (for tests). */
    BackendLend lend() {
        return lender;
    }

    /** Tells the epoll set whether the back end is lent (its completion eventfd unwatched meanwhile; control path). */
    void backendLent(boolean lent) {
        ((EpollWait) events).backendLent(lent);
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
            faults.caught(e);
            return 0;
        }
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
        return faults.evidence();
    }

    /**
     * Its side of the fault model ({@link FaultRecovery}): what a shared thread hands a failure
     * caught beside the rounds, a command one caught inside it, a drain the requests a late
     * fault lost ({@link FaultRecovery#settleLost}).
     */
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

    /** The commands taken from the inbox and not finished (for tests). */
    PendingCommands pendingCommands() {
        return pending;
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
        inbox.kick(queue);
        wakeIfSleeping();
    }

    /** Runs {@code command} on this thread (blocking only while the inbox is full). */
    void submitCommand(InboxEvent.Command command) {
        inbox.command(command);
        wakeIfSleeping();
    }

    void wakeIfSleeping() {
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
                faults.caught(e);
                try {
                    idle.idle(0);
                } catch (RuntimeException | Error again) {
                    faults.caught(again); // a late fault can land in the idle path too
                }
            }
        }
        if (!end.exitedInTime()) {
            end.close(Deadlines.NO_DEADLINE); // shutdown gave up waiting for us: the last round is over only now
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
        inbox.drain();
        if (lender.state == LENT) {
            return work; // the back end is another thread's (lendBackend): commands wait with the queues
        }
        if (!pending.isEmpty()) {
            pending.runAll();
            if (lender.state == LENT) {
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
            if (answerWindowOn) {
                answerWait.published(clock.nanoTime()); // once per reaping round, not per request
            }
        }
        work += reaped;
        long nowNs = dispatcher.throttled() || tuning.recordLatency() ? clock.nanoTime() : 0;
        int prepared = lender.state == SERVING ? submits.popQueues(nowNs) : 0;
        if (RoundTrace.ON) {
            RoundTrace.event(RoundTrace.POPPED, prepared);
        }
        work += submits.takeReapedBetween();
        int finished = submits.submitRest();
        if (prepared > 0 || finished > 0 || route.unpublished()) {
            // Immediate completions of this round, those finished in submit, and write-through
            // requests afterPoll handed over in a round that reaped nothing (left after a fault).
            route.endOfBatch();
        }
        if (dispatcher.hasUnanswered()) {
            faults.settleUnanswered(writeThrough.holding()); // a prepare threw a shortage: see BlkRequest.unanswered
        }
        faults.clearSuspectWhenSettled(); // while suspect: see there
        return work + prepared + finished;
    }

    /** Flushes issued to make writes durable without a negotiated FLUSH (for tests and diagnostics). */
    long writeThroughSyncs() {
        return writeThrough.syncs();
    }

    /** How its rounds pop and submit, with the submission and early-publish counts (for tests and diagnostics). */
    SubmitPolicy submits() {
        return submits;
    }

    // ---------------------------------------------------------------- waiting

    /**
     * Blocks until a kick, a completion, a command or the throttle's deadline. Notifications are
     * re-enabled first, and a ring that gained buffers meanwhile cancels the sleep.
     */
    @Override
    public void sleep() {
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

    /** The sleep its idle strategy calls: {@link #sleep()}, or wrapped in the answer window when that is on. */
    KernelSleep sleeper() {
        return answerWindowOn ? answerWait : this;
    }

    /** The answer window (for tests; waits only when {@link Tuning#answerWindowNs()} is set). */
    AnswerWindowSleep answerWait() {
        return answerWait;
    }

    /** Whether waiting for the guest's answer may pay: running, a deep queue at the back end, a request free for the answer. */
    private boolean answerMayCome() {
        return running && backend.inFlight() >= AdaptivePollIdleStrategy.DEEP_IN_FLIGHT && dispatcher.pool().available() > 0;
    }

    /** Whether the next round has work: a completion, an inbox entry, or buffers a running, unthrottled queue's guest posted. */
    private boolean hasWorkBeforeSleep() {
        if (backend.completionsReady() || inbox.hasEntries()) {
            return true;
        }
        for (DeviceQueue q : queues) {
            if (q.state == QueueLifecycle.RUNNING && q.throttledUntilNs == 0
                    && q.ring.availIndexInRing() != (q.ring.nextAvail() & 0xffff)) {
                return true;
            }
        }
        return false;
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
        BackendLend.State lend = lender.state;
        if (lend == LENT) {
            // Nothing of this member runs until the back end comes back (returnBackend wakes it).
            return !running || inbox.hasEntries() ? WAKE_NOW : -1;
        }
        boolean abort = !running || inbox.hasEntries()
                || backend.pendingSubmit() > 0 || route.hasReturns() || backend.completionsReady();
        long now = clock.nanoTime();
        if (!pending.isEmpty() || lend != SERVING) {
            int waitMs = pending.backoffMs(now);
            if (waitMs == WAKE_NOW) {
                abort = true;
            } else {
                timeoutMs = waitMs;
            }
        } else {
            pending.noneWaiting();
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

    /** Stops the thread after its queues were stopped; waits for in-flight I/O via the back end. */
    void shutdown() {
        shutdown(Deadlines.NO_DEADLINE);
    }

    /**
     * As {@link #shutdown()}, done by {@code deadlineNs} ({@link System#nanoTime()}, or {@link
     * Deadlines#NO_DEADLINE}) as far as this thread's waits go: the join of a dedicated thread and the
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
        end.joinThenClose(thread, deadlineNs);
    }

    /** See {@link ThreadEnd#closeDetached}: a closer thread closes what a late detach left (on the shared thread). */
    void endDetached() {
        end.closeDetached();
    }

    /** Closes the wait (epoll set or ring) as the last of the resources ({@link ThreadEnd#closeNow}). */
    void closeWait() {
        events.close();
    }

    /** See {@link ThreadEnd#whenEndedDrained}. */
    void whenEndedDrained(Runnable action) {
        end.whenEndedDrained(action);
    }

    /** Whether this thread has ended for good: a command submitted now never runs. */
    boolean ended() {
        return end.ended();
    }

    /** Whether it has ended and its back end closed drained: nothing of it can reach guest memory any more. */
    boolean endedDrained() {
        return end.endedDrained();
    }

    /** Who closes its resources and when, and what runs once it has ended ({@link ThreadEnd}). */
    ThreadEnd end() {
        return end;
    }

    Thread thread() {
        return shared != null ? shared.thread() : thread;
    }
}
