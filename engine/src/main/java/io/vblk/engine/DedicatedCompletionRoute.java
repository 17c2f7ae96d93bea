package io.vblk.engine;

import java.util.function.Consumer;

import org.agrona.concurrent.OneToOneConcurrentArrayQueue;

import com.lmax.disruptor.BatchEventProcessor;
import com.lmax.disruptor.BatchEventProcessorBuilder;
import com.lmax.disruptor.ExceptionHandler;
import com.lmax.disruptor.RingBuffer;
import com.lmax.disruptor.WaitStrategy;

/**
 * Completions on a thread of their own: the I/O thread publishes each finished operation into a
 * single-producer Disruptor ring; a {@link BatchEventProcessor} finishes the requests, publishes
 * used.idx and signals once per batch, and hands the requests back through a single-producer
 * single-consumer queue that the I/O thread drains into its pool. Costs a hand-off per operation
 * and a second thread; buys an I/O thread that only pops and submits.
 *
 * <p>The processor has an exception handler of its own: the Disruptor's default ends the thread
 * on any Throwable, and the I/O thread would then wait in {@code next()} forever. A Throwable can
 * still escape the processor (a guest-memory fault the JVM delivers late lands wherever a
 * safepoint poll is, also outside the processor's try, or inside the handler itself: seen in
 * engine FaultPointTest, COMPLETION_WRITE, dedicated): the thread then runs the processor again
 * ({@link #runCompletions}), after the same quarantine. Each event is marked consumed before its
 * request is completed, so an event the processor sees again is a no-op: a request is never
 * completed twice; one an escaped exception cut short is lost, and its quarantined queue's drain
 * gives it up ({@link FaultRecovery#settleLost}).
 */
final class DedicatedCompletionRoute implements CompletionRoute {
    private final RequestPool pool;
    private final CompletionPath completions;
    private final DeviceQueue[] queues;
    private final Runnable wakeIoThread;
    private final RingBuffer<CompletionEvent> ring;
    private final BatchEventProcessor<CompletionEvent> processor;
    private final OneToOneConcurrentArrayQueue<BlkRequest> returned;
    private final Consumer<BlkRequest> release;
    private Thread thread;
    private volatile boolean closing;
    /**
     * The last sequence whose batch was finished (used.idx published), stored before the wake-up
     * of the I/O thread: the processor's own sequence moves only after {@link #onEvent} returns,
     * so a thread woken to look at {@link #passed} (a fence's command) would find it behind and
     * back off for up to 100 ms.
     */
    private volatile long finishedSequence = -1;

    /**
     * @param ringSize a power of two no smaller than every operation that can be outstanding
     *                 (so that publishing never waits)
     * @param release gives a returned request back to the pool (I/O thread)
     * @param wakeIoThread wakes the I/O thread if it sleeps (after each batch: requests came back)
     */
    DedicatedCompletionRoute(RequestPool pool, CompletionPath completions, DeviceQueue[] queues, int ringSize,
                             WaitStrategy waitStrategy, Consumer<BlkRequest> release, Runnable wakeIoThread) {
        this.pool = pool;
        this.completions = completions;
        this.queues = queues;
        this.release = release;
        this.wakeIoThread = wakeIoThread;
        this.ring = RingBuffer.createSingleProducer(CompletionEvent::new, ringSize, waitStrategy);
        this.processor = new BatchEventProcessorBuilder().build(ring, ring.newBarrier(), this::onEvent);
        processor.setExceptionHandler(new CompletionFailure());
        ring.addGatingSequences(processor.getSequence());
        this.returned = new OneToOneConcurrentArrayQueue<>(Integer.highestOneBit(pool.size() * 2 - 1) * 2);
        // Capacity exceeds the pool, so offer cannot fail.
        completions.releaser(returned::offer);
    }

    /** Ring size for {@code pool} when a request may split into {@code opsPerRequest} operations. */
    static int ringSize(int poolSize, int opsPerRequest) {
        return Integer.highestOneBit(Math.max(2, poolSize * Math.max(1, opsPerRequest)) * 2 - 1);
    }

    private void onEvent(CompletionEvent event, long sequence, boolean endOfBatch) {
        if (event.slot >= 0 && !event.consumed) { // a negative slot is a fence (see fence())
            event.consumed = true; // before acting on it: see the class comment
            completions.complete(pool.get(event.slot), event.result);
        }
        if (endOfBatch) {
            completions.endOfBatch();
            finishedSequence = sequence;
            wakeIoThreadFenced();
        }
    }

    /**
     * Wakes the I/O thread after a batch, behind a full fence (once per batch): the requests
     * handed back ({@code returned.offer}, an ordered store only) must be visible before the read
     * of the thread's sleeping mark, or a thread that re-checked {@link #hasReturns()} just
     * before could sleep while this side skips the signal. A batch that published used entries
     * had a fence in publishUsed; one that held only lost requests, or those of a quarantined
     * queue, had none.
     */
    private void wakeIoThreadFenced() {
        java.lang.invoke.VarHandle.fullFence();
        wakeIoThread.run();
    }

    /**
     * What the completion thread does with a Throwable its checks did not catch (a guest-memory
     * fault delivered at an unplaceable point, or a bug): every queue of the I/O thread stops
     * touching guest memory and is quarantined, the event's request is given back if it was not
     * yet, and the thread lives on so that stops drain.
     */
    private final class CompletionFailure implements ExceptionHandler<CompletionEvent> {
        @Override
        public void handleEventException(Throwable ex, long sequence, CompletionEvent event) {
            failed(ex, event);
        }

        @Override
        public void handleOnStartException(Throwable ex) {
        }

        @Override
        public void handleOnShutdownException(Throwable ex) {
        }
    }

    @Override
    public void complete(long userData, long result) {
        publish((int) userData, result);
    }

    @Override
    public void completeImmediately(BlkRequest r) {
        publish(r.slot, CompletionPath.IMMEDIATE);
    }

    private void publish(int slot, long result) {
        // The ring holds every operation that can be outstanding, so next() never waits.
        long sequence = ring.next();
        CompletionEvent e = ring.get(sequence);
        e.slot = -1; // a no-op until filled in: see below
        try {
            e.consumed = false;
            e.result = result;
            e.slot = slot;
        } finally {
            // Always: a claimed sequence left unpublished (an exception the JVM delivered right
            // here) would stop the completion thread for good, and the I/O thread with it.
            ring.publish(sequence);
        }
    }

    @Override
    public void endOfBatch() {
        // the completion thread ends its own batches
    }

    @Override
    public int reclaim() {
        return returned.drain(release);
    }

    @Override
    public boolean hasReturns() {
        return !returned.isEmpty();
    }

    @Override
    public long fence() {
        long sequence = ring.next();
        CompletionEvent e = ring.get(sequence);
        e.slot = -1;
        e.result = 0;
        ring.publish(sequence);
        return sequence;
    }

    @Override
    public boolean passed(long sequence) {
        return finishedSequence >= sequence || processor.getSequence().get() >= sequence;
    }

    @Override
    public boolean ownsThread() {
        return true;
    }

    /**
     * What follows a Throwable on the completion thread: every queue of the I/O thread stops
     * touching guest memory and is quarantined, and the request of {@code event} (null: not
     * known), whose completion it cut short, is given back if it was not yet.
     */
    private void failed(Throwable ex, CompletionEvent event) {
        for (DeviceQueue q : queues) {
            if (q.faultReason == null) {
                q.faultReason = "completion thread: " + ex;
            }
        }
        if (event != null && event.slot >= 0) {
            BlkRequest r = pool.get(event.slot);
            if (!r.finished && r.queue != null) {
                completions.abandon(r);
            }
        }
        completions.endOfBatch();
        wakeIoThreadFenced();
    }

    /** The completion thread: the processor, run again after a Throwable escaped it (see the class comment). */
    private void runCompletions() {
        DataPlaneThreads.markCurrent();
        while (!closing) {
            try {
                processor.run();
                return; // halted
            } catch (Throwable ex) {
                try {
                    failed(ex, null);
                } catch (Throwable again) {
                    // A second late fault inside the quarantine: the next round tries again.
                }
            }
        }
    }

    @Override
    public void start(String ioThreadName) {
        thread = new Thread(this::runCompletions, ioThreadName + "-completion");
        thread.setDaemon(true);
        thread.start();
    }

    /** Whether the completion thread is alive (for tests: it must survive a failing completion). */
    boolean threadAlive() {
        return thread != null && thread.isAlive();
    }

    @Override
    public void close() {
        closing = true;
        processor.halt();
        ThreadEnd.joinQuietly(thread);
    }
}
