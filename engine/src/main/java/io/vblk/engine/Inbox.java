package io.vblk.engine;

import com.lmax.disruptor.EventPoller;
import com.lmax.disruptor.RingBuffer;
import com.lmax.disruptor.YieldingWaitStrategy;

/**
 * An {@link IoThread}'s inbox: the Disruptor ring other threads publish kicks and control
 * commands into (lock-free, any thread), and the poller through which the I/O thread drains it
 * at the start of each round. Kicks are counted on their queue (the round polls every running
 * queue anyway); commands are only listed as pending ({@link PendingCommands}), to be run after
 * the drain. Its own class because the ring and its poller sequence are the one state here that
 * other threads write; the I/O thread's side allocates nothing.
 */
final class Inbox {
    private static final int SIZE = 4096;

    private final RingBuffer<InboxEvent> ring;
    private final EventPoller<InboxEvent> poller;
    private final EventPoller.Handler<InboxEvent> handler = this::onEvent;
    private final DeviceQueue[] queues;
    private final PendingCommands pending;

    Inbox(DeviceQueue[] queues, PendingCommands pending) {
        this.queues = queues;
        this.pending = pending;
        this.ring = RingBuffer.createMultiProducer(InboxEvent::new, SIZE, new YieldingWaitStrategy());
        this.poller = ring.newPoller();
        ring.addGatingSequences(poller.getSequence());
    }

    /** Publishes a kick for {@code queue}, unless the inbox is full (any thread; lock-free). */
    void kick(int queue) {
        // A full inbox means the thread is far behind and awake: it polls every queue anyway.
        ring.tryPublishEvent(Inbox::translateKick, queue);
    }

    private static void translateKick(InboxEvent event, long sequence, int queue) {
        event.type = InboxEvent.Type.KICK;
        event.queue = queue;
        event.command = null;
    }

    /** Publishes {@code command} (any thread; blocks only while the inbox is full). */
    void command(InboxEvent.Command command) {
        long sequence = ring.next();
        InboxEvent event = ring.get(sequence);
        event.type = InboxEvent.Type.COMMAND;
        event.command = command;
        ring.publish(sequence);
    }

    /** Whether entries wait that the I/O thread has not drained yet. */
    boolean hasEntries() {
        return ring.getCursor() != poller.getSequence().get();
    }

    /** Drains every entry published so far (I/O thread only). */
    void drain() {
        try {
            poller.poll(handler);
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
    }

    private boolean onEvent(InboxEvent event, long sequence, boolean endOfBatch) {
        if (event.type == InboxEvent.Type.KICK) {
            for (DeviceQueue q : queues) {
                if (q.index == event.queue) {
                    q.counters.increment(QueueCounters.KICKS);
                }
            }
        } else if (event.command != null) {
            // Only listed here (see PendingCommands#listFromInbox); run after the drain.
            pending.listFromInbox(event.command, sequence);
            event.command = null;
        }
        return true;
    }
}
