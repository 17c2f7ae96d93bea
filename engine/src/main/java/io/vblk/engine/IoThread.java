package io.vblk.engine;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.LockSupport;
import java.util.function.Consumer;
import java.util.function.Predicate;

import org.agrona.concurrent.OneToOneConcurrentArrayQueue;

import com.lmax.disruptor.BatchEventProcessor;
import com.lmax.disruptor.BatchEventProcessorBuilder;
import com.lmax.disruptor.EventPoller;
import com.lmax.disruptor.ExceptionHandler;
import com.lmax.disruptor.RingBuffer;
import com.lmax.disruptor.YieldingWaitStrategy;

import io.vblk.aio.CompletionSink;
import io.vblk.block.BlockDriver;
import io.vblk.sys.Epoll;
import io.vblk.sys.EventFd;
import io.vblk.sys.Linux;
import io.vblk.vring.DescriptorChain;
import io.vblk.vring.SplitQueue;

/**
 * One data-plane thread (QEMU's iothread): owns a set of queues and one back end, and runs a
 * loop of {@link #doWork()} rounds followed by the configured {@link WaitStrategy}.
 *
 * <p>A round: drain the inbox ring (kicks and control commands, published by other threads into
 * a Disruptor ring), reap finished operations, pop every available chain of every running queue
 * into preallocated requests, and submit everything prepared with one back-end call. While the
 * thread is awake the queues' notifications stay disabled, so a busy guest does not kick; before
 * it sleeps it re-enables them and re-checks the rings (the no-lost-kick pattern), then blocks in
 * epoll on the kick eventfds, the back end's completion eventfd and its own wake-up eventfd.
 */
final class IoThread implements Runnable, CompletionSink {
    private static final int TAG_WAKEUP = (1 << 16) + 1;
    /** Completion source {@code i} of the driver is tagged {@code TAG_COMPLETIONS + i}. */
    private static final int TAG_COMPLETIONS = 1 << 20;
    private static final int INBOX_SIZE = 4096;
    private static final int SPIN_ROUNDS = 100;
    /** {@link #prepareSleep()}: there is work, do not sleep. */
    static final int WAKE_NOW = -2;

    private final int id;
    private final DeviceModel model;
    private final Tuning tuning;
    private final Throttle throttle;
    private final DeviceListener listener;
    private final DeviceQueue[] queues;
    private final BlockDriver backend;
    private final RequestPool pool;
    private final RequestParser parser;
    private final DescriptorChain chain;
    private final CompletionPath completions;
    private final Epoll epoll;
    private final EventFd wakeup;
    private final RingBuffer<InboxEvent> inbox;
    private final EventPoller<InboxEvent> inboxPoller;
    private final EventPoller.Handler<InboxEvent> inboxHandler = this::onInboxEvent;
    private final Consumer<BlkRequest> releaseFn = this::release;
    private final Predicate<InboxEvent.Command> runCommand = c -> c.run(this);
    private final List<InboxEvent.Command> pendingCommands = new ArrayList<>();

    // Dedicated mode: completions go to the completion thread through a Disruptor ring, and
    // finished requests come back through a single-producer single-consumer queue.
    private final RingBuffer<CompletionEvent> completionRing;
    private final BatchEventProcessor<CompletionEvent> completionProcessor;
    private final OneToOneConcurrentArrayQueue<BlkRequest> returned;

    private volatile boolean sleeping;
    private volatile boolean running = true;
    private Thread thread;
    /** The shared thread that runs this one's rounds, or null when it has a thread of its own. */
    private SharedIoThread shared;
    private Thread completionThread;
    private int idleRounds;
    private long idleSinceNs;
    private long submittedBatches;

    IoThread(int id, DeviceModel model, Tuning tuning, Throttle throttle, DeviceListener listener,
             DeviceQueue[] queues, BlockDriver backend) {
        this.id = id;
        this.model = model;
        this.tuning = tuning;
        this.throttle = throttle;
        this.listener = listener;
        this.queues = queues;
        this.backend = backend;
        int maxSegments = Math.max(1, model.segMax());
        this.pool = new RequestPool(backend.depth(), maxSegments);
        this.parser = new RequestParser(model);
        this.chain = new DescriptorChain(model.config().queueSize() + maxSegments + SplitQueue.CHAIN_SLACK_SEGMENTS);
        this.completions = new CompletionPath(queues.length, tuning.recordLatency());
        this.epoll = new Epoll(queues.length + 1 + backend.completionSources());
        this.wakeup = EventFd.create(true);
        epoll.add(wakeup.fd(), Linux.EPOLLIN, TAG_WAKEUP);
        for (int i = 0, n = backend.completionSources(); i < n; i++) {
            epoll.add(backend.completionFd(i), Linux.EPOLLIN, TAG_COMPLETIONS + i);
        }
        this.inbox = RingBuffer.createMultiProducer(InboxEvent::new, INBOX_SIZE, new YieldingWaitStrategy());
        this.inboxPoller = inbox.newPoller();
        inbox.addGatingSequences(inboxPoller.getSequence());

        if (tuning.threadingMode() == ThreadingMode.DEDICATED) {
            int size = Integer.highestOneBit(Math.max(2, pool.size() * Math.max(1, model.maxSegmentsPerRange())) * 2 - 1);
            completionRing = RingBuffer.createSingleProducer(CompletionEvent::new, size, WaitStrategies.disruptor(tuning));
            completionProcessor = new BatchEventProcessorBuilder().build(completionRing, completionRing.newBarrier(),
                    (event, sequence, endOfBatch) -> {
                        if (event.slot >= 0) { // a negative slot is a fence (see completionFence)
                            completions.complete(pool.get(event.slot), event.result);
                        }
                        if (endOfBatch) {
                            completions.endOfBatch();
                            wakeIfSleeping();
                        }
                    });
            // The default handler ends the thread on any Throwable, and the I/O thread then
            // waits in completionRing.next() forever: contain it instead.
            completionProcessor.setExceptionHandler(new CompletionFailure());
            completionRing.addGatingSequences(completionProcessor.getSequence());
            returned = new OneToOneConcurrentArrayQueue<>(Integer.highestOneBit(pool.size() * 2 - 1) * 2);
            completions.releaser(this::returnFromCompletionThread);
        } else {
            completionRing = null;
            completionProcessor = null;
            returned = null;
            completions.releaser(this::release);
        }
    }

    /**
     * What the completion thread does with a Throwable its checks did not catch (a guest-memory
     * fault delivered at an unplaceable point, or a bug): every queue of this thread stops
     * touching guest memory and is quarantined, the event's request is given back if it was not
     * yet, and the thread lives on so that stops drain.
     */
    private final class CompletionFailure implements ExceptionHandler<CompletionEvent> {
        @Override
        public void handleEventException(Throwable ex, long sequence, CompletionEvent event) {
            for (DeviceQueue q : queues) {
                if (q.faultReason == null) {
                    q.faultReason = "completion thread: " + ex;
                }
            }
            if (event.slot >= 0) {
                BlkRequest r = pool.get(event.slot);
                if (!r.finished && r.queue != null) {
                    completions.abandon(r);
                }
            }
            completions.endOfBatch();
            wakeIfSleeping();
        }

        @Override
        public void handleOnStartException(Throwable ex) {
        }

        @Override
        public void handleOnShutdownException(Throwable ex) {
        }
    }

    void start(String name) {
        if (completionProcessor != null) {
            completionThread = new Thread(completionProcessor, name + "-completion");
            completionThread.setDaemon(true);
            completionThread.start();
        }
        thread = new Thread(this, name);
        thread.setDaemon(true);
        thread.start();
    }

    /**
     * Runs this thread's rounds on {@code shared} instead of a thread of its own (shared threading
     * only: the shared thread completes requests itself).
     */
    void startOn(SharedIoThread shared) {
        if (completionProcessor != null) {
            throw new IllegalArgumentException("a shared I/O thread needs ThreadingMode.SHARED, not dedicated completion threads");
        }
        this.shared = shared;
        shared.attach(this);
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
            quarantineAll("internal error: " + e);
            return 0;
        }
    }

    /** This member's epoll descriptor, which a shared thread watches for its kicks and completions. */
    int epollFd() {
        return epoll.fd();
    }

    int id() {
        return id;
    }

    BlockDriver backend() {
        return backend;
    }

    // ---------------------------------------------------------------- inbox (any thread)

    /** Publishes a kick for {@code queue} and wakes the thread if it sleeps. Lock-free. */
    void kick(int queue) {
        // A full inbox means the thread is far behind and awake: it polls every queue anyway.
        inbox.tryPublishEvent(IoThread::translateKick, queue);
        wakeIfSleeping();
    }

    private static void translateKick(InboxEvent event, long sequence, int queue) {
        event.type = InboxEvent.KICK;
        event.queue = queue;
        event.command = null;
    }

    /** Runs {@code command} on this thread (blocking only while the inbox is full). */
    void submitCommand(InboxEvent.Command command) {
        long sequence = inbox.next();
        InboxEvent event = inbox.get(sequence);
        event.type = InboxEvent.COMMAND;
        event.command = command;
        inbox.publish(sequence);
        wakeIfSleeping();
    }

    private void wakeIfSleeping() {
        // Pairs with the volatile store of 'sleeping' before the thread's last check of the
        // inbox: either it sees our event, or we see it sleeping and wake it.
        if (sleeping) {
            wakeup.signal();
        }
    }

    // ---------------------------------------------------------------- the loop

    @Override
    public void run() {
        while (running) {
            try {
                loop();
            } catch (RuntimeException | Error e) {
                // A bug, or guest memory that faulted (a frontend shrank the file under the
                // mapping: SIGBUS, raised by the JVM as InternalError): stop this thread's queues
                // loudly rather than spin on the failure, and keep the thread for the next frontend.
                reclaimStranded();
                quarantineAll("internal error: " + e);
                idle(0);
            }
        }
    }

    /**
     * Gives back every request claimed and never handed on: after an exception on this thread
     * (a guest-memory fault the JVM delivers at a later point, see {@link GuestFaults}, or a
     * bug) no request can legitimately be in that stage, and one left there would hold its
     * queue's in-flight count up forever (stop and close would never return).
     */
    private void reclaimStranded() {
        for (int i = 0, n = pool.size(); i < n; i++) {
            BlkRequest r = pool.get(i);
            if (r.stage == BlkRequest.CLAIMED) {
                DeviceQueue q = r.queue;
                if (q != null) {
                    if (q.faultReason == null) {
                        q.faultReason = "a request was lost to an internal error";
                    }
                    q.inflight--;
                }
                pool.release(r);
            }
        }
    }

    private void quarantineAll(String reason) {
        for (DeviceQueue q : queues) {
            quarantine(q, reason);
        }
    }

    /**
     * The rounds themselves, in a method of their own: the JVM raises a fault in an unsafe memory
     * access asynchronously, at a later safepoint poll such as this loop's back-edge, and it must
     * land inside {@link #run()}'s handler.
     */
    private void loop() {
        while (running) {
            idle(doWork());
        }
    }

    /** One round of work; returns how much was done (0: idle). */
    int doWork() {
        int work = 0;
        try {
            inboxPoller.poll(inboxHandler);
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
        if (!pendingCommands.isEmpty()) {
            pendingCommands.removeIf(runCommand);
        }
        if (returned != null) {
            work += returned.drain(releaseFn);
        }
        int reaped = backend.poll(this, pool.size());
        if (reaped > 0 && completionRing == null) {
            completions.endOfBatch();
        }
        work += reaped;
        long nowNs = throttle != null || tuning.recordLatency() ? System.nanoTime() : 0;
        int prepared = 0;
        for (DeviceQueue q : queues) {
            if (q.faultReason != null && q.state != DeviceQueue.BROKEN) {
                quarantine(q, q.faultReason); // caught on the completion side
            }
            if (q.state == DeviceQueue.RUNNING) {
                prepared += popQueue(q, nowNs);
            }
        }
        if (prepared > 0 && completionRing == null) {
            completions.endOfBatch(); // immediate completions of this round
        }
        if (backend.pendingSubmit() > 0) {
            backend.submit();
            submittedBatches++;
        }
        return work + prepared;
    }

    private boolean onInboxEvent(InboxEvent event, long sequence, boolean endOfBatch) {
        if (event.type == InboxEvent.KICK) {
            for (DeviceQueue q : queues) {
                if (q.index == event.queue) {
                    q.counters.increment(QueueCounters.KICKS);
                }
            }
        } else {
            InboxEvent.Command c = event.command;
            event.command = null;
            boolean finished;
            try {
                finished = c.run(this);
            } catch (RuntimeException | Error e) {
                // Guest memory that faulted under a command (e.g. used.idx published into a file
                // the frontend shrank): the queues stop and the command runs again next round.
                // Never let it out of the handler: the poller would deliver this event again.
                quarantineAll("internal error: " + e);
                finished = false;
            }
            if (!finished) {
                pendingCommands.add(c);
            }
        }
        return true;
    }

    /** Pops every available chain of {@code q} that slots and the throttle allow. */
    private int popQueue(DeviceQueue q, long nowNs) {
        if (throttle != null) {
            long delay = throttle.delayNs(nowNs);
            if (delay > 0) {
                q.throttledUntilNs = nowNs + delay;
                q.counters.increment(QueueCounters.THROTTLED);
                return 0;
            }
            q.throttledUntilNs = 0;
        }
        int popped = 0;
        int reserve = Math.max(1, model.maxSegmentsPerRange());
        InflightTracker tracker = q.inflightTracker;
        try {
            while (pool.available() > 0 && backend.freeSlots() >= reserve) {
                // Recovered in-flight requests of a previous backend go first, in their old order.
                int rc = q.resubmitCount > 0 ? q.ring.popHead(q.resubmit[q.resubmit.length - q.resubmitCount--], chain)
                        : q.ring.pop(chain);
                if (rc == 0) {
                    break;
                }
                io.vblk.sys.FaultPoints.at(io.vblk.sys.FaultPoints.POP); // tests only: see FaultPoints
                if (rc < 0) {
                    quarantine(q, String.valueOf(q.ring.error()));
                    break;
                }
                if (tracker != null) {
                    tracker.popped(chain.head());
                }
                BlkRequest r = pool.claim(); // stage CLAIMED until dispatch hands it on
                r.queue = q;
                r.startNs = nowNs;
                q.inflight++;
                popped++;
                r.type = -1; // a chain refused before its header was read counts as no type
                dispatch(r, parser.parse(chain, r));
                if (r.stage == BlkRequest.CLAIMED) {
                    r.stage = BlkRequest.HANDED; // the back end's or the completion path's now
                }
                q.counters.add(QueueCounters.BYTES, r.bytes);
                int byType = QueueCounters.ofType(r.type);
                if (byType >= 0) {
                    q.counters.increment(byType);
                }
                if (throttle != null) {
                    // Bytes moved between guest and disk: a DISCARD or WRITE_ZEROES range moves
                    // none, and charging its length (up to ~512 GiB) would stall the device.
                    boolean transfer = r.type == BlkRequestDescriptor.T_IN || r.type == BlkRequestDescriptor.T_OUT;
                    throttle.charge(nowNs, transfer ? r.bytes : 0);
                    if (throttle.delayNs(nowNs) > 0) {
                        break;
                    }
                }
            }
        } catch (RuntimeException | Error e) {
            // A fault in this queue's guest memory (or a bug): give back the request that never
            // reached the back end, and stop this queue only.
            reclaimStranded();
            String reason = (GuestFaults.isMemoryFault(e) ? "guest memory fault: " : "internal error: ") + e;
            q.faultReason = reason;
            quarantine(q, reason);
        }
        if (popped > 0) {
            q.counters.add(QueueCounters.REQUESTS, popped);
            q.counters.increment(QueueCounters.BATCHES);
            q.counters.increment(QueueCounters.SUBMITS);
        }
        return popped;
    }

    private void dispatch(BlkRequest r, int action) {
        if (action == RequestParser.SUBMIT) {
            int rc = prepare(r);
            if (rc == 0) {
                return;
            }
            // Nothing of this request reached the back end: fail it alone.
            r.immediateStatus = BlkRequestDescriptor.S_IOERR;
        } else if (action == RequestParser.NO_STATUS) {
            r.statusAddress = -1;
        }
        completeImmediately(r);
    }

    private int prepare(BlkRequest r) {
        long offset = r.sector << BlkRequestDescriptor.SECTOR_SHIFT;
        switch (r.type) {
            case BlkRequestDescriptor.T_IN:
                r.pendingOps = 1;
                return backend.read(offset, r.data, r.slot);
            case BlkRequestDescriptor.T_OUT:
                r.pendingOps = 1;
                return backend.write(offset, r.data, r.slot);
            case BlkRequestDescriptor.T_FLUSH:
                r.pendingOps = 1;
                return backend.flush(r.slot);
            default:
                return prepareRanges(r);
        }
    }

    /** One back-end operation per DISCARD / WRITE_ZEROES segment; the request ends with the last. */
    private int prepareRanges(BlkRequest r) {
        boolean discard = r.type == BlkRequestDescriptor.T_DISCARD;
        int count = r.pendingOps;
        for (int i = 0; i < count; i++) {
            int base = i * BlkRequestDescriptor.SEGMENT_LENGTH;
            long sector = parser.segments().getLong(base + BlkRequestDescriptor.SEGMENT_SECTOR_OFFSET);
            long sectors = parser.segments().getInt(base + BlkRequestDescriptor.SEGMENT_NUM_SECTORS_OFFSET) & 0xFFFF_FFFFL;
            boolean unmap = (parser.segments().getInt(base + BlkRequestDescriptor.SEGMENT_FLAGS_OFFSET)
                    & BlkRequestDescriptor.SEGMENT_FLAG_UNMAP) != 0;
            long offset = sector << BlkRequestDescriptor.SECTOR_SHIFT;
            long length = sectors << BlkRequestDescriptor.SECTOR_SHIFT;
            int rc = discard ? backend.discard(offset, length, r.slot)
                    : backend.writeZeroes(offset, length, unmap, r.slot);
            if (rc != 0) {
                if (i == 0) {
                    return rc;
                }
                // Earlier segments are in flight: account for the ones that never will be.
                r.error = rc;
                r.pendingOps = i;
                return 0;
            }
        }
        return 0;
    }

    private void completeImmediately(BlkRequest r) {
        if (completionRing == null) {
            completions.complete(r, CompletionPath.IMMEDIATE);
        } else {
            publishCompletion(r.slot, CompletionPath.IMMEDIATE);
        }
    }

    /** Back-end completion (from {@link BlockDriver#poll}). */
    @Override
    public void complete(long userData, long result) {
        if (completionRing == null) {
            completions.complete(pool.get((int) userData), result);
        } else {
            publishCompletion((int) userData, result);
        }
    }

    private void publishCompletion(int slot, long result) {
        // The ring holds every operation that can be outstanding, so next() never waits.
        long sequence = completionRing.next();
        CompletionEvent e = completionRing.get(sequence);
        e.slot = -1; // a no-op until filled in: see below
        try {
            e.result = result;
            e.slot = slot;
        } finally {
            // Always: a claimed sequence left unpublished (an exception the JVM delivered right
            // here) would stop the completion thread for good, and this thread with it.
            completionRing.publish(sequence);
        }
    }

    private void returnFromCompletionThread(BlkRequest r) {
        // Capacity exceeds the pool, so offer cannot fail.
        returned.offer(r);
    }

    private void release(BlkRequest r) {
        if (r.stage == BlkRequest.FREE) {
            return; // already reclaimed after an exception: count it once
        }
        r.queue.inflight--;
        pool.release(r);
    }

    void quarantine(DeviceQueue q, String reason) {
        if (q.state == DeviceQueue.RUNNING || q.state == DeviceQueue.STOPPING) {
            q.brokenReason = reason;
            q.counters.increment(QueueCounters.QUARANTINES);
            // The owner hears of it before anyone can observe BROKEN, so a poller that sees the
            // state knows the needs-reset report has gone out.
            listener.queueBroken(q.index, reason);
            q.state = DeviceQueue.BROKEN;
        }
    }

    // ---------------------------------------------------------------- waiting

    private void idle(int work) {
        if (work > 0) {
            idleRounds = 0;
            idleSinceNs = 0;
            return;
        }
        idleRounds++;
        switch (tuning.waitStrategy()) {
            case BUSY_SPIN:
                Thread.onSpinWait();
                break;
            case YIELDING:
                spinThenYield();
                break;
            case SLEEPING:
                if (idleRounds < 2 * SPIN_ROUNDS) {
                    spinThenYield();
                } else {
                    LockSupport.parkNanos(tuning.sleepNs());
                }
                break;
            case BLOCKING:
                sleep();
                break;
            default:
                long now = System.nanoTime();
                if (idleSinceNs == 0) {
                    idleSinceNs = now;
                }
                if (now - idleSinceNs < tuning.pollNs()) {
                    // Pure spinning for a bounded time: a yield here is a syscall (over 1 us on
                    // this VM class) that a profile showed costing 14% of the thread at depth 128.
                    Thread.onSpinWait();
                } else {
                    sleep();
                }
        }
    }

    private void spinThenYield() {
        if (idleRounds < SPIN_ROUNDS) {
            Thread.onSpinWait();
        } else {
            Thread.yield();
        }
    }

    /**
     * Blocks until a kick, a completion, a command or the throttle's deadline. Notifications are
     * re-enabled first, and a ring that gained buffers meanwhile cancels the sleep.
     */
    private void sleep() {
        int timeoutMs = prepareSleep();
        if (timeoutMs != WAKE_NOW) {
            awaitEvents(timeoutMs);
        }
        finishSleep();
    }

    /**
     * First half of a sleep: marks the thread sleeping (so kicks and commands signal the wake-up
     * eventfd), re-enables the rings' notifications and re-checks them. Returns {@link #WAKE_NOW}
     * when there is work after all, else the epoll timeout (-1: none; a throttle deadline).
     * A {@link SharedIoThread} calls it for each of its members before it sleeps for all.
     */
    int prepareSleep() {
        sleeping = true;
        int timeoutMs = -1;
        boolean abort = inbox.getCursor() != inboxPoller.getSequence().get() || !pendingCommands.isEmpty()
                || backend.pendingSubmit() > 0 || (returned != null && !returned.isEmpty());
        long now = System.nanoTime();
        for (int i = 0; i < queues.length && !abort; i++) {
            DeviceQueue q = queues[i];
            if (q.state != DeviceQueue.RUNNING) {
                continue;
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
            // Without free slots pending chains must wait for a completion, which wakes us anyway.
            if ((q.ring.enableNotifications() || q.resubmitCount > 0) && pool.available() > 0) {
                abort = true;
            }
        }
        return abort ? WAKE_NOW : timeoutMs;
    }

    /** Waits in this thread's epoll (0: only collects what is ready) and acknowledges what woke it. */
    void awaitEvents(int timeoutMs) {
        int ready = epoll.await(timeoutMs);
        for (int i = 0; i < ready; i++) {
            acknowledge((int) epoll.data(i));
        }
    }

    /** Second half of a sleep: no longer sleeping, notifications suppressed again while awake. */
    void finishSleep() {
        sleeping = false;
        for (DeviceQueue q : queues) {
            if (q.state == DeviceQueue.RUNNING) {
                q.ring.disableNotifications();
            }
        }
        idleSinceNs = 0;
        idleRounds = 0;
    }

    private void acknowledge(int tag) {
        if (tag == TAG_WAKEUP) {
            wakeup.read();
        } else if (tag >= TAG_COMPLETIONS) {
            backend.acknowledge(tag - TAG_COMPLETIONS);
        } else {
            // Kick eventfds are edge-triggered and never read: a frontend's kick fd shares its
            // open file description with us, may be blocking, and a read could then hang this
            // thread; every write raises a new edge anyway, and it saves a syscall per wake-up.
            for (DeviceQueue q : queues) {
                if (q.index == tag) {
                    q.counters.increment(QueueCounters.KICKS);
                }
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
        EventFd k = q.kick;
        if (k != null) {
            epoll.add(k.fd(), Linux.EPOLLIN | Linux.EPOLLET, q.index);
        }
    }

    /** Stops watching {@code q}'s kick eventfd (I/O thread only). */
    void unwatchKick(DeviceQueue q) {
        EventFd k = q.kick;
        if (k != null) {
            epoll.remove(k.fd());
        }
    }

    /** Publishes immediate completions left from control work (I/O thread only). */
    void flushCompletions() {
        if (completionRing == null) {
            completions.endOfBatch();
        }
    }

    /**
     * Dedicated mode: publishes a fence into the completion ring and returns its sequence; once
     * {@link #completionPassed} says the completion thread is past it, that thread has finished
     * every batch begun before, and reads queue fields (such as the interrupt) written before
     * the fence anew. Shared mode: -1, already passed. I/O thread only.
     */
    long completionFence() {
        if (completionRing == null) {
            return -1;
        }
        long sequence = completionRing.next();
        CompletionEvent e = completionRing.get(sequence);
        e.slot = -1;
        e.result = 0;
        completionRing.publish(sequence);
        return sequence;
    }

    /** Whether the completion thread has finished the batch holding fence {@code sequence}. */
    boolean completionPassed(long sequence) {
        return completionProcessor == null || completionProcessor.getSequence().get() >= sequence;
    }

    long submittedBatches() {
        return submittedBatches;
    }

    /** Stops the thread after its queues were stopped; waits for in-flight I/O via the back end. */
    void shutdown() {
        running = false;
        if (shared != null) {
            shared.detach(this); // returns once the shared thread no longer runs this one
        }
        wakeup.signal();
        joinQuietly(thread);
        if (completionProcessor != null) {
            completionProcessor.halt();
            joinQuietly(completionThread);
        }
        backend.close();
        epoll.close();
        wakeup.close();
    }

    private static void joinQuietly(Thread t) {
        if (t == null || t == Thread.currentThread()) {
            return;
        }
        try {
            t.join(10_000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    Thread thread() {
        return shared != null ? shared.thread() : thread;
    }
}
