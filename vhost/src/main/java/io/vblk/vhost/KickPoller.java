package io.vblk.vhost;

import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;

import io.vblk.engine.BlockDevice;

/**
 * Kicks the queues whose frontend sent SET_VRING_KICK with "no fd" (it will never notify, the
 * backend must poll). The device's adaptive and blocking wait strategies sleep on kick eventfds
 * when idle, so such a queue is kicked from here every {@link #INTERVAL_NS}: a polled ring is
 * served within a millisecond at the cost of a thousand wake-ups a second, and only while a
 * polled queue runs. Frontends that use kick eventfds (QEMU always does) never start this thread.
 */
final class KickPoller implements AutoCloseable {
    static final long INTERVAL_NS = TimeUnit.MILLISECONDS.toNanos(1);

    private final BlockDevice device;
    private final AtomicLong polledQueues = new AtomicLong();
    private volatile boolean closed;
    private Thread thread;

    KickPoller(BlockDevice device) {
        this.device = device;
    }

    /** Starts or stops polling queue {@code q} (queues 0 to 63). */
    synchronized void poll(int q, boolean on) {
        long bit = 1L << q;
        polledQueues.getAndUpdate(m -> on ? m | bit : m & ~bit);
        if (on && thread == null && !closed) {
            thread = new Thread(this::run, "vblk-kick-poller");
            thread.setDaemon(true);
            thread.start();
        }
        if (thread != null) {
            LockSupport.unpark(thread);
        }
    }

    private void run() {
        while (!closed) {
            long queues = polledQueues.get();
            if (queues == 0) {
                LockSupport.park(this);
                continue;
            }
            try {
                for (long m = queues; m != 0; m &= m - 1) {
                    device.kick(Long.numberOfTrailingZeros(m));
                }
            } catch (IllegalStateException e) {
                return; // the device closed under the poller (it refuses kicks then)
            }
            LockSupport.parkNanos(this, INTERVAL_NS);
        }
    }

    @Override
    public synchronized void close() {
        closed = true;
        if (thread != null) {
            LockSupport.unpark(thread);
        }
    }
}
