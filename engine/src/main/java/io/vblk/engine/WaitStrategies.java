package io.vblk.engine;

import java.util.concurrent.TimeUnit;

import com.lmax.disruptor.BusySpinWaitStrategy;
import com.lmax.disruptor.LiteTimeoutBlockingWaitStrategy;
import com.lmax.disruptor.PhasedBackoffWaitStrategy;
import com.lmax.disruptor.SleepingWaitStrategy;
import com.lmax.disruptor.YieldingWaitStrategy;

/** The Disruptor wait strategy matching a {@link WaitStrategy}, for the completion thread. */
final class WaitStrategies {
    private WaitStrategies() {
    }

    static com.lmax.disruptor.WaitStrategy disruptor(Tuning tuning) {
        switch (tuning.waitStrategy()) {
            case BUSY_SPIN:
                return new BusySpinWaitStrategy();
            case YIELDING:
                return new YieldingWaitStrategy();
            case SLEEPING:
                return new SleepingWaitStrategy(200, tuning.sleepNs());
            case BLOCKING:
                return liteBlocking();
            default:
                long spinNs = Math.max(1_000, tuning.pollNs() / 2);
                return new PhasedBackoffWaitStrategy(spinNs, spinNs, TimeUnit.NANOSECONDS, liteBlocking());
        }
    }

    /**
     * The lite blocking wait, with a timeout: a guest-memory fault the JVM delivers on the I/O
     * thread inside a publish, after the lite strategy cleared its "signal needed" flag and
     * before it notified (see GuestFaults), would otherwise leave the completion thread asleep
     * for good with events published, and every drain waiting on it. The timeout bounds that
     * to {@link #BLOCKING_WAKE_MS}; the signalling cost per publish is unchanged.
     */
    private static com.lmax.disruptor.WaitStrategy liteBlocking() {
        return new LiteTimeoutBlockingWaitStrategy(BLOCKING_WAKE_MS, TimeUnit.MILLISECONDS);
    }

    /** The longest a blocked completion thread sleeps without a signal. */
    static final long BLOCKING_WAKE_MS = 100;
}
