package io.vblk.engine;

import java.util.concurrent.TimeUnit;

import com.lmax.disruptor.BusySpinWaitStrategy;
import com.lmax.disruptor.LiteBlockingWaitStrategy;
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
                return new LiteBlockingWaitStrategy();
            default:
                long spinNs = Math.max(1_000, tuning.pollNs() / 2);
                return PhasedBackoffWaitStrategy.withLiteLock(spinNs, spinNs, TimeUnit.NANOSECONDS);
        }
    }
}
