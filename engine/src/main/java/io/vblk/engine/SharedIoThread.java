package io.vblk.engine;

import java.util.Arrays;
import java.util.Objects;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.locks.LockSupport;

import org.agrona.concurrent.IdleStrategy;
import org.agrona.concurrent.NanoClock;
import org.agrona.concurrent.SystemNanoClock;

import io.vblk.sys.Epoll;
import io.vblk.sys.EventFd;
import io.vblk.sys.Linux;
import io.vblk.sys.Native;
import io.vblk.sys.NativeBuffer;

/**
 * An I/O thread that several devices share (QEMU's iothread with {@code iothread-vq-mapping},
 * SPDK's reactor): devices built with {@link BlockDevice.Builder#ioThreads} map their queues
 * onto it instead of starting threads of their own, so 64 disks need not mean 64 threads.
 *
 * <p>Each device keeps its own per-thread state (a member: request slots, back end, throttle,
 * inbox, epoll set); this thread runs every member's round in turn. Isolation holds per member:
 * a quarantined ring or a fault stops only that member's queues ({@code doWorkIsolated}), a
 * throttled member simply pops nothing until its deadline, and a member never blocks inside its
 * round. To sleep, every member re-arms its notifications and re-checks its rings
 * ({@code prepareSleep}); then this thread waits in one epoll set holding every member's own
 * epoll descriptor (nested epoll), so any kick, completion or command of any member wakes it.
 *
 * <p>Members come and go while it runs ({@link #attach}/{@link #detach} are applied on this
 * thread, between rounds, and return once applied). Threading mode must be
 * {@link ThreadingMode#SHARED}.
 */
public final class SharedIoThread implements AutoCloseable {
    private static final long TAG_WAKEUP = -1;
    private static final long CHANGE_WAIT_SECONDS = 30;
    /** CPUs a cpu_set_t of 128 bytes describes (glibc's CPU_SETSIZE). */
    static final int MAX_CPUS = 1024;

    private final String name;
    private final WaitStrategy waitStrategy;
    private final IdleStrategy idle;
    private final long schedSliceNs;
    private final Epoll epoll;
    private final EventFd wakeup;
    private final ConcurrentLinkedQueue<Runnable> changes = new ConcurrentLinkedQueue<>();
    private final Thread thread;
    private final int[] cpus;
    /** Members, only touched by this thread. */
    private IoThread[] members = new IoThread[0];
    /** The guest memory tables of members that left, for a late fault's evidence (this thread only). */
    final FaultEvidence retired = new FaultEvidence();
    private volatile int memberCount;
    private volatile boolean running = true;
    private volatile boolean sleeping;
    private static final int NO_MEMBER = -1;
    /** Pause after a failure outside the rounds: at most a thousand a second are handled and logged. */
    private static final long FAULT_BACKOFF_NS = 1_000_000;
    /** The member whose sleep checks run now, or NO_MEMBER (this thread only: names a fault's member). */
    private int current = NO_MEMBER;
    /**
     * Time slept in epoll since start, in one field so a reader on another thread sees a
     * consistent figure without a lock: while awake, the total slept (>= 0); while sleeping,
     * {@code ~(sleepStart - sleptBefore)} (negative), both relative to {@link #startedNs}, so the
     * sleep in progress counts as slept (an idle thread reads idle, not busy).
     */
    private volatile long sleepMark;
    private final long startedNs = System.nanoTime();
    /**
     * {@link #busyFraction()}'s two samples (time and slept, relative to start; guarded by this):
     * the figure covers the time since the older one; the newer one replaces it once it is
     * {@link #BUSY_WINDOW_NS} old.
     */
    private long olderNs, olderSlept, newerNs, newerSlept;
    /** The shortest window {@link #busyFraction()} averages over, once the thread is that old. */
    static final long BUSY_WINDOW_NS = 10_000_000_000L;

    /**
     * Starts a shared I/O thread named {@code name} that waits with {@code waitStrategy} when all
     * its members are idle (adaptive: polls {@code pollNs}, then sleeps).
     */
    public SharedIoThread(String name, WaitStrategy waitStrategy, long pollNs) {
        this(name, waitStrategy, pollNs, null);
    }

    /**
     * As {@link #SharedIoThread(String, WaitStrategy, long)}, pinned to {@code cpus} (CPU numbers,
     * sched_setaffinity(2)); null or empty: wherever the scheduler likes.
     *
     * @throws IllegalArgumentException when a CPU number is out of range or the kernel refuses
     *         the set (no such CPU online, outside the process's cpuset)
     */
    public SharedIoThread(String name, WaitStrategy waitStrategy, long pollNs, int[] cpus) {
        this(name, waitStrategy, pollNs, cpus, 0);
    }

    /**
     * As {@link #SharedIoThread(String, WaitStrategy, long, int[])}, running with a scheduler
     * slice of {@code schedSliceNs} while it loses time waiting for a CPU and does not poll (as
     * a device's own I/O thread with {@link Tuning#schedSliceNs()}); 0: the kernel's default
     * slice always.
     *
     * @throws IllegalArgumentException also when {@code schedSliceNs} is neither 0 nor 0.1-100 ms
     */
    public SharedIoThread(String name, WaitStrategy waitStrategy, long pollNs, int[] cpus, long schedSliceNs) {
        this(name, waitStrategy, pollNs, cpus, schedSliceNs, SystemNanoClock.INSTANCE, true);
    }

    /**
     * As {@link #SharedIoThread(String, WaitStrategy, long, int[], long)}, its idle strategy
     * reading the time (poll window, slice governor) from {@code clock}. With {@code start} false
     * no thread is started: the calling thread owns it (member changes apply at once) and drives
     * its rounds itself with {@link #doWork()} and {@link #sleep()}, as a test does an {@link
     * IoThread}'s; {@code cpus} are then not applied.
     */
    SharedIoThread(String name, WaitStrategy waitStrategy, long pollNs, int[] cpus, long schedSliceNs, NanoClock clock,
                   boolean start) {
        this.name = Objects.requireNonNull(name, "name");
        this.waitStrategy = Objects.requireNonNull(waitStrategy, "waitStrategy");
        if (pollNs < 0) {
            throw new IllegalArgumentException("pollNs must not be negative: " + pollNs);
        }
        this.schedSliceNs = Tuning.checkedSchedSlice(schedSliceNs);
        this.idle = IdleStrategies.sliced(
                IdleStrategies.forSharedThread(waitStrategy, pollNs, clock, this::sleep, this::inFlight),
                schedSliceNs, clock);
        this.epoll = new Epoll(64);
        this.wakeup = EventFd.create(true);
        epoll.add(wakeup.fd(), Linux.EPOLLIN, TAG_WAKEUP);
        this.cpus = cpus == null ? new int[0] : cpus.clone();
        for (int cpu : this.cpus) {
            if (cpu < 0 || cpu >= MAX_CPUS) {
                throw new IllegalArgumentException("CPU " + cpu + " out of range (0 to " + (MAX_CPUS - 1) + ")");
            }
        }
        if (!start) {
            this.thread = Thread.currentThread();
            return;
        }
        CompletableFuture<Void> pinned = new CompletableFuture<>();
        this.thread = new Thread(() -> {
            try {
                pin();
                pinned.complete(null);
            } catch (RuntimeException e) {
                pinned.completeExceptionally(e);
                return;
            }
            run();
        }, name);
        thread.setDaemon(true);
        thread.start();
        try {
            pinned.get();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted while starting " + name, e);
        } catch (ExecutionException e) {
            epoll.close();
            wakeup.close();
            throw (RuntimeException) e.getCause();
        }
    }

    /** Applies the CPU set to the calling (this) thread. */
    private void pin() {
        if (cpus.length == 0) {
            return;
        }
        NativeBuffer mask = new NativeBuffer(MAX_CPUS / 8);
        for (int cpu : cpus) {
            int word = cpu / 64;
            mask.buffer().putLong(word * 8, mask.buffer().getLong(word * 8) | (1L << (cpu % 64)));
        }
        int rc = Native.libc().sched_setaffinity(0, MAX_CPUS / 8, mask.address());
        if (rc != 0) {
            throw new IllegalArgumentException("cannot pin " + name + " to CPUs " + Arrays.toString(cpus) + ": "
                    + Native.libc().strerror(Native.errno()));
        }
    }

    /** The CPUs it is pinned to (empty: not pinned). */
    public int[] cpus() {
        return cpus.clone();
    }

    /** The thread's name. */
    public String name() {
        return name;
    }

    /** The scheduler slice it runs with while it loses time waiting for a CPU and does not poll (0: never). */
    public long schedSliceNs() {
        return schedSliceNs;
    }

    /** The custom slice the thread runs with now as the kernel reported it (0: the default), for tests. */
    long reportedSliceNs() {
        return IdleStrategies.reportedSliceNs(idle);
    }

    /** How it waits when idle. */
    public WaitStrategy waitStrategy() {
        return waitStrategy;
    }

    /** The number of device threads (members) it runs now. */
    public int memberCount() {
        return memberCount;
    }

    /**
     * The fraction of the recent past spent awake (0 to 1): rounds and polling, not sleeping in
     * epoll (a sleep in progress counts as sleep, so an idle thread reads near 0). It covers the
     * time since start for a young thread, then since a sample taken at least 10 s earlier: 10 to
     * 20 s when read every few seconds, the time since the reading before when read seldom. For
     * diagnostics: synchronized, never called on the I/O thread.
     */
    public synchronized double busyFraction() {
        long now = System.nanoTime() - startedNs;
        long slept = sleptUntil(now);
        if (now - newerNs >= BUSY_WINDOW_NS) {
            olderNs = newerNs;
            olderSlept = newerSlept;
            newerNs = now;
            newerSlept = slept;
        }
        long span = Math.max(1, now - olderNs);
        return Math.max(0, Math.min(1, 1 - (double) (slept - olderSlept) / span));
    }

    /**
     * Nanoseconds spent awake (rounds and polling, not asleep in epoll) since the thread was
     * built: only grows, so a scraper's rate of it is the busy fraction over its own window.
     * Lock-free; never called on the I/O thread.
     */
    public long busyNanos() {
        long now = System.nanoTime() - startedNs;
        return Math.max(0, now - sleptUntil(now));
    }

    /** Nanoseconds slept in epoll from start until {@code now} (relative to start). */
    private long sleptUntil(long now) {
        long mark = sleepMark;
        return mark >= 0 ? mark : now - ~mark;
    }

    /** The Linux thread id of the running thread (0 before it started), for tests. */
    private volatile long threadId;

    long threadId() {
        return threadId;
    }

    Thread thread() {
        return thread;
    }

    /** The members (on this thread only: a late fault's evidence covers every device it runs). */
    IoThread[] members() {
        return members;
    }

    void attach(IoThread member) {
        apply(() -> {
            epoll.add(member.epollFd(), Linux.EPOLLIN, member.id());
            members = Arrays.copyOf(members, members.length + 1);
            members[members.length - 1] = member;
            memberCount = members.length;
        });
    }

    /**
     * Takes {@code member} off this thread, waiting at most until {@code deadlineNs} ({@link
     * System#nanoTime()}, or {@link Deadlines#NO_DEADLINE}: this thread's own 30 s) for the round
     * in progress to end. Returns true once it is off. False when the deadline passed first (a
     * round stuck in a member's back end): the member is then detached later, when that round
     * ends, and its resources are closed then, off this thread ({@link IoThread#endDetached}); until then
     * the device is not quiesced, so nothing this thread may still touch is freed. Without a
     * deadline that case throws, as it always did, and the member is still closed later.
     *
     * @throws IllegalStateException when this thread is closed, or without a deadline when the
     *         round outlasts 30 s
     */
    boolean detach(IoThread member, long deadlineNs) {
        if (Thread.currentThread() == thread) {
            remove(member);
            return true;
        }
        if (!running) {
            throw new IllegalStateException("shared I/O thread " + name + " is closed");
        }
        // Who closes the member's resources once it is off: the closer while it still waits,
        // this thread once the closer has gone (the first to move the state decides).
        java.util.concurrent.atomic.AtomicInteger state = new java.util.concurrent.atomic.AtomicInteger(DETACH_PENDING);
        CompletableFuture<Void> done = new CompletableFuture<>();
        changes.add(() -> {
            RuntimeException failed = null;
            try {
                remove(member);
            } catch (RuntimeException e) {
                failed = e;
            }
            if (state.compareAndSet(DETACH_PENDING, DETACH_APPLIED)) {
                if (failed == null) {
                    done.complete(null);
                } else {
                    done.completeExceptionally(failed);
                }
            } else if (failed == null) {
                try {
                    member.endDetached();
                } catch (RuntimeException e) {
                    System.getLogger(SharedIoThread.class.getName()).log(System.Logger.Level.WARNING,
                            name + ": closing a device detached late failed", e);
                }
            } else {
                // Still a member: its rounds go on and its resources stay (never freed under them).
                System.getLogger(SharedIoThread.class.getName()).log(System.Logger.Level.WARNING,
                        name + ": a late detach failed; the device's resources stay", failed);
            }
        });
        wakeup.signal();
        long waitNs = Math.min(Deadlines.leftNs(deadlineNs), TimeUnit.SECONDS.toNanos(CHANGE_WAIT_SECONDS));
        try {
            done.get(waitNs, TimeUnit.NANOSECONDS);
            return true;
        } catch (TimeoutException | InterruptedException e) {
            boolean interrupted = e instanceof InterruptedException;
            if (interrupted) {
                Thread.currentThread().interrupt();
            }
            if (state.compareAndSet(DETACH_PENDING, DETACH_LATE)) {
                if (interrupted || deadlineNs == Deadlines.NO_DEADLINE) {
                    throw new IllegalStateException("cannot change the members of " + name + ": "
                            + (interrupted ? "interrupted" : "still in a round after " + CHANGE_WAIT_SECONDS + " s")
                            + " (the device is closed when the round ends)", e);
                }
                return false;
            }
            // Applied just now, between rounds: its outcome is a moment away (join: uninterruptible).
            try {
                done.join();
                return true;
            } catch (java.util.concurrent.CompletionException failed) {
                throw new IllegalStateException("cannot change the members of " + name + ": " + failed.getCause(), failed.getCause());
            }
        } catch (ExecutionException e) {
            throw new IllegalStateException("cannot change the members of " + name + ": " + e.getCause(), e.getCause());
        }
    }

    private static final int DETACH_PENDING = 0;
    private static final int DETACH_APPLIED = 1;
    private static final int DETACH_LATE = 2;

    /** Takes {@code member} out of the rounds (this thread only). */
    private void remove(IoThread member) {
        int at = -1;
        for (int i = 0; i < members.length; i++) {
            if (members[i] == member) {
                at = i;
            }
        }
        if (at < 0) {
            return;
        }
        epoll.remove(member.epollFd());
        // Its tables may yet be blamed for a fault the JVM delivers late, on this thread.
        member.evidence().handOver(retired);
        IoThread[] next = new IoThread[members.length - 1];
        System.arraycopy(members, 0, next, 0, at);
        System.arraycopy(members, at + 1, next, at, members.length - at - 1);
        members = next;
        memberCount = next.length;
    }

    /** Runs {@code change} on this thread between rounds and waits for it. */
    private void apply(Runnable change) {
        if (Thread.currentThread() == thread) {
            change.run();
            return;
        }
        if (!running) {
            throw new IllegalStateException("shared I/O thread " + name + " is closed");
        }
        CompletableFuture<Void> done = new CompletableFuture<>();
        changes.add(() -> {
            try {
                change.run();
                done.complete(null);
            } catch (RuntimeException e) {
                done.completeExceptionally(e);
            }
        });
        wakeup.signal();
        try {
            done.get(CHANGE_WAIT_SECONDS, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted while changing " + name, e);
        } catch (ExecutionException | TimeoutException e) {
            throw new IllegalStateException("cannot change the members of " + name + ": " + e, e);
        }
    }

    private void run() {
        DataPlaneThreads.markCurrent();
        threadId = Native.syscall(Linux.SYS_GETTID, 0, 0, 0, 0, 0);
        while (running) {
            try {
                loop();
            } catch (RuntimeException | Error e) {
                // A late guest-memory fault (SIGBUS in Unsafe, raised by the JVM as InternalError
                // at a later safepoint poll) can land outside every member's isolated round: in
                // the sleep's checks, at a loop back-edge. It must not end this thread: the other
                // members' devices would stop with it.
                caughtOutsideRounds(e);
                // A failure that recurs (a bug) must not spin the thread or flood the log.
                LockSupport.parkNanos(FAULT_BACKOFF_NS);
            }
        }
        Runnable change;
        while ((change = changes.poll()) != null) {
            change.run();
        }
    }

    /** The rounds, in a method of their own so that a fault delivered anywhere lands in run()'s handler. */
    private void loop() {
        while (running) {
            idle.idle(doWork());
        }
    }

    /**
     * One round: applies the member changes waiting, then runs every member's round in turn
     * (each isolated: a failure is that member's); returns the work done (0: idle). On this
     * thread only; a test drives an unstarted one with it.
     */
    int doWork() {
        Runnable change;
        while ((change = changes.poll()) != null) {
            change.run();
        }
        int work = 0;
        for (IoThread m : members) {
            work += m.doWorkIsolated();
        }
        return work;
    }

    /**
     * A failure outside the members' isolated rounds. In a member's sleep checks it is that
     * member's (as a failure in its round); elsewhere no member can be named, so it is
     * attributed by evidence only, and every member turns suspect (a drain then looks for
     * requests it may have lost) without quarantining anyone on no evidence.
     */
    private void caughtOutsideRounds(Throwable e) {
        IoThread[] ms = members;
        int at = current;
        current = NO_MEMBER;
        sleeping = false;
        try {
            if (at >= 0 && at < ms.length) {
                ms[at].faults().caughtBesideRound(e, true, true);
            } else if (ms.length > 0) {
                for (int i = 0; i < ms.length; i++) {
                    ms[i].faults().caughtBesideRound(e, false, i == 0);
                }
            }
            for (IoThread m : ms) {
                m.finishSleep(); // whatever a sleep prepared: at worst notifications stay on
            }
        } catch (RuntimeException | Error again) {
            // A second fault while handling the first: the next pass of run() handles it, if it recurs.
        }
    }

    /**
     * The operations in flight summed over every member's back end (this thread only; read once
     * per wait by the idle strategy: a deep sum sleeps in the kernel at once, since any member's
     * completion wakes this thread).
     */
    private int inFlight() {
        int sum = 0;
        for (IoThread m : members) {
            sum += m.backendInFlight();
        }
        return sum;
    }

    /** The idle strategy it runs (for tests: the adaptive one's counters). */
    IdleStrategy idleStrategy() {
        return idle;
    }

    /** Sleeps until any member has work: every member re-arms first, and any of them can veto (this thread only). */
    void sleep() {
        IoThread[] ms = members;
        int prepared = 0;
        int timeoutMs = -1;
        boolean wakeNow = !changes.isEmpty() || !running;
        sleeping = true;
        for (; prepared < ms.length && !wakeNow; prepared++) {
            current = prepared;
            int t = ms[prepared].prepareSleep();
            if (t == IoThread.WAKE_NOW) {
                wakeNow = true;
            } else if (t >= 0) {
                timeoutMs = timeoutMs < 0 ? t : Math.min(timeoutMs, t);
            }
        }
        if (!wakeNow) {
            long slept = sleepMark;
            long before = System.nanoTime() - startedNs;
            sleepMark = ~(before - slept); // asleep from now: a reader counts it as it goes
            int ready = epoll.await(timeoutMs);
            sleepMark = slept + System.nanoTime() - startedNs - before;
            for (int i = 0; i < ready; i++) {
                if (epoll.data(i) == TAG_WAKEUP) {
                    wakeup.read();
                }
            }
        }
        sleeping = false;
        for (int i = 0; i < prepared; i++) {
            current = i;
            if (!wakeNow) {
                ms[i].awaitEvents(0); // collect and acknowledge what woke this member
            }
            ms[i].finishSleep();
        }
        current = NO_MEMBER;
    }

    /** Whether it sleeps in epoll now (for tests and diagnostics). */
    boolean isSleeping() {
        return sleeping;
    }

    /**
     * Stops the thread. Devices still on it must have been closed first.
     *
     * @throws IllegalStateException while a device still uses it
     */
    @Override
    public void close() {
        if (memberCount > 0) {
            throw new IllegalStateException("shared I/O thread " + name + " still runs " + memberCount
                    + " device thread(s): close those devices first");
        }
        running = false;
        wakeup.signal();
        try {
            if (thread != Thread.currentThread()) { // unstarted: the caller is the thread
                thread.join(TimeUnit.SECONDS.toMillis(CHANGE_WAIT_SECONDS));
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        epoll.close();
        wakeup.close();
    }
}
