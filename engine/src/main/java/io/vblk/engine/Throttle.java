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
     * them (the caller wakes the threads, which may sleep until a deadline of the old limits).
     * Debt run up under the old limits is kept when a limit is lowered, so that takes effect at
     * once; when a limit is raised or removed, the debt (how far the bucket's arrival time runs
     * ahead of now) is rescaled to the new rate: what was admitted but not yet paid for is paid
     * at the new rate from now on, and a removed limit forgives it all. Without that, lifting a
     * 16 KiB/s limit after a 256 KiB read kept the next request waiting the old 16 s. A charge
     * racing the change may be rescaled or not (one request's worth, either way).
     */
    public void setLimits(long iopsLimit, long bytesPerSecond) {
        setLimits(iopsLimit, bytesPerSecond, System.nanoTime());
    }

    /** As {@link #setLimits(long, long)} at {@code now} (the clock {@link #charge} and {@link #delayNs} are given). */
    public void setLimits(long iopsLimit, long bytesPerSecond, long now) {
        Rates old = rates;
        Rates next = Rates.of(iopsLimit, bytesPerSecond, burstMs);
        rates = next;
        rescale(opsTat, now, old.nsPerOp, next.nsPerOp);
        rescale(bytesTat, now, old.nsPerByte, next.nsPerByte);
    }

    /** Shrinks the debt of {@code tat} by {@code newNs / oldNs} when the rate went up (or the limit away). */
    private static void rescale(AtomicLong tat, long nowNs, double oldNs, double newNs) {
        if (oldNs == 0 || (newNs != 0 && newNs >= oldNs)) {
            return; // there was no limit (no debt counts), or it was kept or lowered: the debt stays
        }
        long current;
        long next;
        do {
            current = tat.get();
            long debt = current - nowNs;
            if (debt <= 0) {
                return; // nothing owed: the burst allowance (arrival time behind now) stays as it is
            }
            next = nowNs + (long) (debt * (newNs / oldNs));
        } while (!tat.compareAndSet(current, next));
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
