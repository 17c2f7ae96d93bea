package io.vblk.engine;

import org.agrona.concurrent.IdleStrategy;

/**
 * Sleeps in the kernel (epoll on the kick, completion and wake-up eventfds) as soon as a round
 * finds nothing: zero CPU when idle, a wake-up per batch when busy ({@link WaitStrategy#BLOCKING}).
 */
final class KernelIdleStrategy implements IdleStrategy {
    private final KernelSleep sleeper;

    KernelIdleStrategy(KernelSleep sleeper) {
        this.sleeper = sleeper;
    }

    @Override
    public void idle(int workCount) {
        if (workCount <= 0) {
            sleeper.sleep();
        }
    }

    @Override
    public void idle() {
        sleeper.sleep();
    }

    @Override
    public void reset() {
    }

    @Override
    public String alias() {
        return "kernel";
    }
}
