package io.vblk.engine;

import java.util.concurrent.atomic.AtomicLong;

/**
 * IOPS and bandwidth limits of one device, as two token buckets in GCRA form: each bucket is one
 * "theoretical arrival time" that advances by {@code cost / rate} per admitted request, and a
 * request may start when that time is no more than the burst ahead of now. Lock-free, so the
 * device's I/O threads share it; a device's throttle never touches another device.
 *
 * <p>Requests are delayed, never failed: the I/O thread asks {@link #delayNs(long)} before it
 * pops and leaves the chains in the ring until the delay has passed. A request's bytes are known
 * only after it is popped, so {@link #charge(long, long)} may overdraw the byte bucket by one
 * request; the overdraft delays the next ones, which keeps the long-run rate exact.
 */
public final class Throttle {
    private final long nsPerOp;
    private final double nsPerByte;
    private final long opsBurstNs;
    private final long bytesBurstNs;
    private final AtomicLong opsTat = new AtomicLong(Long.MIN_VALUE / 2);
    private final AtomicLong bytesTat = new AtomicLong(Long.MIN_VALUE / 2);

    /**
     * @param iopsLimit requests per second, 0 for none
     * @param bytesPerSecond bytes per second, 0 for none
     * @param burstMs how far ahead of the rate a burst may run, in milliseconds of the rate
     */
    public Throttle(long iopsLimit, long bytesPerSecond, long burstMs) {
        if (iopsLimit < 0 || bytesPerSecond < 0 || burstMs < 0) {
            throw new IllegalArgumentException("limits must not be negative: iops " + iopsLimit
                    + ", bytes/s " + bytesPerSecond + ", burst ms " + burstMs);
        }
        nsPerOp = iopsLimit == 0 ? 0 : Math.max(1, 1_000_000_000L / iopsLimit);
        nsPerByte = bytesPerSecond == 0 ? 0 : 1e9 / bytesPerSecond;
        long burstNs = burstMs * 1_000_000L;
        opsBurstNs = Math.max(burstNs, nsPerOp);
        bytesBurstNs = burstNs;
    }

    /** A throttle, or null when neither limit is set. */
    public static Throttle of(long iopsLimit, long bytesPerSecond, long burstMs) {
        return iopsLimit == 0 && bytesPerSecond == 0 ? null : new Throttle(iopsLimit, bytesPerSecond, burstMs);
    }

    /** How long to wait before the next request may start; 0 when it may start now. */
    public long delayNs(long nowNs) {
        long delay = 0;
        if (nsPerOp != 0) {
            // The next op would move the arrival time nsPerOp further: it fits if that stays in the burst.
            delay = Math.max(delay, opsTat.get() + nsPerOp - nowNs - opsBurstNs);
        }
        if (nsPerByte != 0) {
            delay = Math.max(delay, bytesTat.get() - nowNs - bytesBurstNs);
        }
        return Math.max(0, delay);
    }

    /** Takes one operation and {@code bytes} from the buckets. */
    public void charge(long nowNs, long bytes) {
        if (nsPerOp != 0) {
            advance(opsTat, nowNs, nsPerOp);
        }
        if (nsPerByte != 0 && bytes > 0) {
            advance(bytesTat, nowNs, (long) (bytes * nsPerByte));
        }
    }

    private static void advance(AtomicLong tat, long nowNs, long costNs) {
        long current;
        long next;
        do {
            current = tat.get();
            next = Math.max(current, nowNs) + costNs;
        } while (!tat.compareAndSet(current, next));
    }
}
