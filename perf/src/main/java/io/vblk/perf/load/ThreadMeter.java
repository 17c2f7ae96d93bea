package io.vblk.perf.load;

import java.lang.management.ManagementFactory;
import java.util.ArrayList;
import java.util.List;

/**
 * CPU time and allocated bytes of this JVM's threads whose names start with a prefix (a
 * device's data-plane threads), or of the calling thread, between {@link #begin()} and
 * {@link #end()}. Read through {@code com.sun.management.ThreadMXBean}.
 */
public final class ThreadMeter implements LoadGenerator.Meter {
    private static final com.sun.management.ThreadMXBean MX =
            (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();

    private final String prefix;
    private List<Thread> threads;
    private long cpu0;
    private long alloc0;
    private long cpuNs;
    private long allocBytes;

    private ThreadMeter(String prefix) {
        this.prefix = prefix;
    }

    /** Meters the threads whose names start with {@code prefix} (found at {@link #begin()}). */
    public static ThreadMeter named(String prefix) {
        return new ThreadMeter(prefix);
    }

    /** Meters the thread that calls {@link #begin()}. */
    public static ThreadMeter current() {
        return new ThreadMeter(null);
    }

    @Override
    public void begin() {
        threads = new ArrayList<>();
        if (prefix == null) {
            threads.add(Thread.currentThread());
        } else {
            for (Thread t : Thread.getAllStackTraces().keySet()) {
                if (t.getName().startsWith(prefix)) {
                    threads.add(t);
                }
            }
        }
        cpu0 = cpu();
        alloc0 = allocated();
    }

    @Override
    public void end() {
        cpuNs = cpu() - cpu0;
        allocBytes = allocated() - alloc0;
    }

    /** CPU nanoseconds in the window. */
    public long cpuNs() {
        return cpuNs;
    }

    /** Bytes allocated in the window. */
    public long allocatedBytes() {
        return allocBytes;
    }

    /** How many threads were metered. */
    public int threadCount() {
        return threads == null ? 0 : threads.size();
    }

    private long cpu() {
        long sum = 0;
        for (Thread t : threads) {
            sum += Math.max(0, MX.getThreadCpuTime(t.getId()));
        }
        return sum;
    }

    private long allocated() {
        long sum = 0;
        for (Thread t : threads) {
            sum += Math.max(0, MX.getThreadAllocatedBytes(t.getId()));
        }
        return sum;
    }
}
