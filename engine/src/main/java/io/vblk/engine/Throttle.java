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
    /** The limits in force: replaced whole by {@link #setLimits}, so a reader sees one consistent set. */
    private volatile Rates rates;
    private final long burstMs;
    private final AtomicLong opsTat = new AtomicLong(Long.MIN_VALUE / 2);
    private final AtomicLong bytesTat = new AtomicLong(Long.MIN_VALUE / 2);

    /** One set of limits in the form the buckets use. */
    private record Rates(long nsPerOp, double nsPerByte, long opsBurstNs, long bytesBurstNs) {
        static Rates of(long iopsLimit, long bytesPerSecond, long burstMs) {
            if (iopsLimit < 0 || bytesPerSecond < 0 || burstMs < 0) {
                throw new IllegalArgumentException("limits must not be negative: iops " + iopsLimit
                        + ", bytes/s " + bytesPerSecond + ", burst ms " + burstMs);
            }
            long nsPerOp = iopsLimit == 0 ? 0 : Math.max(1, 1_000_000_000L / iopsLimit);
            double nsPerByte = bytesPerSecond == 0 ? 0 : 1e9 / bytesPerSecond;
            long burstNs = burstMs * 1_000_000L;
            return new Rates(nsPerOp, nsPerByte, Math.max(burstNs, nsPerOp), burstNs);
        }
    }

    /**
     * @param iopsLimit requests per second, 0 for none
     * @param bytesPerSecond bytes per second, 0 for none
     * @param burstMs how far ahead of the rate a burst may run, in milliseconds of the rate
     */
    public Throttle(long iopsLimit, long bytesPerSecond, long burstMs) {
        this.rates = Rates.of(iopsLimit, bytesPerSecond, burstMs);
        this.burstMs = burstMs;
    }

    /** A throttle, or null when neither limit is set. */
    public static Throttle of(long iopsLimit, long bytesPerSecond, long burstMs) {
        return iopsLimit == 0 && bytesPerSecond == 0 ? null : new Throttle(iopsLimit, bytesPerSecond, burstMs);
    }

    /**
     * Replaces the limits (0: none) while I/O threads use the throttle; the next pop pass obeys
     * them. Debt run up under the old limits is kept, so lowering a limit takes effect at once.
     */
    public void setLimits(long iopsLimit, long bytesPerSecond) {
        rates = Rates.of(iopsLimit, bytesPerSecond, burstMs);
    }

    /** How long to wait before the next request may start; 0 when it may start now. */
    public long delayNs(long nowNs) {
        Rates r = rates;
        long nsPerOp = r.nsPerOp;
        double nsPerByte = r.nsPerByte;
        long delay = 0;
        if (nsPerOp != 0) {
            // The next op would move the arrival time nsPerOp further: it fits if that stays in the burst.
            delay = Math.max(delay, opsTat.get() + nsPerOp - nowNs - r.opsBurstNs);
        }
        if (nsPerByte != 0) {
            delay = Math.max(delay, bytesTat.get() - nowNs - r.bytesBurstNs);
        }
        return Math.max(0, delay);
    }

    /** Takes one operation and {@code bytes} from the buckets. */
    public void charge(long nowNs, long bytes) {
        Rates r = rates;
        if (r.nsPerOp != 0) {
            advance(opsTat, nowNs, r.nsPerOp);
        }
        if (r.nsPerByte != 0 && bytes > 0) {
            advance(bytesTat, nowNs, (long) (bytes * r.nsPerByte));
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
