package io.vblk.engine;

import java.nio.charset.StandardCharsets;

import io.vblk.sys.Native;
import io.vblk.sys.NativeBuffer;

/**
 * The calling thread's run delay so far: the nanoseconds it spent runnable on a run queue,
 * waiting for a CPU ({@code /proc/thread-self/schedstat}, its second field). A thread whose run
 * delay grows by a tenth of the wall time or more shares its core with more runnable threads
 * than there are cores: every microsecond it spins is taken from one of them. Each read opens,
 * reads and closes the file (three system calls, read at most once per millisecond by {@link
 * AdaptivePollIdleStrategy}), so no descriptor outlives the read and the thread that reads is
 * always the one measured; nothing is allocated. Returns -1 when the file cannot be read (a
 * kernel without {@code CONFIG_SCHED_INFO}): the rule that uses it is then off.
 */
final class ThreadRunDelay implements SliceGovernor.Schedstat {
    // x86-64 system call numbers (as sys/Linux's SYS_GETRUSAGE, the project runs on x86-64)
    private static final long SYS_READ = 0;
    private static final long SYS_CLOSE = 3;
    private static final long SYS_OPENAT = 257;
    private static final long AT_FDCWD = -100;
    private static final int O_RDONLY_CLOEXEC = 02000000;
    private static final int PATH_OFFSET = 0;
    private static final int DATA_OFFSET = 64;
    private static final int DATA_BYTES = 128;

    private final NativeBuffer buffer = new NativeBuffer(DATA_OFFSET + DATA_BYTES);
    private boolean broken;

    ThreadRunDelay() {
        byte[] path = "/proc/thread-self/schedstat\0".getBytes(StandardCharsets.US_ASCII);
        buffer.buffer().putBytes(PATH_OFFSET, path);
    }

    /** The calling thread's run delay so far in nanoseconds, or -1 when it cannot be read. */
    long nanos() {
        return read() ? delayNs : -1;
    }

    private long runNs;
    private long delayNs;

    /**
     * Reads the calling thread's line once: afterwards {@link #runNs()} and {@link #delayNs()}
     * hold its first two fields. False (and nothing changed) when the file cannot be read or
     * parsed; then it is never read again.
     */
    @Override
    public boolean read() {
        if (broken) {
            return false;
        }
        long fd = Native.syscall(SYS_OPENAT, AT_FDCWD, buffer.address() + PATH_OFFSET, O_RDONLY_CLOEXEC, 0, 0);
        if (fd < 0) {
            broken = true;
            return false;
        }
        long n = Native.syscall(SYS_READ, fd, buffer.address() + DATA_OFFSET, DATA_BYTES, 0, 0);
        Native.syscall(SYS_CLOSE, fd, 0, 0, 0, 0);
        long run = n > 0 ? field(buffer, DATA_OFFSET, (int) n, 0) : -1;
        long delay = n > 0 ? field(buffer, DATA_OFFSET, (int) n, 1) : -1;
        if (run < 0 || delay < 0) {
            broken = true;
            return false;
        }
        runNs = run;
        delayNs = delay;
        return true;
    }

    /** The time the thread spent on a CPU so far (the first field), as of the last {@link #read()}. */
    @Override
    public long runNs() {
        return runNs;
    }

    /** The time the thread spent runnable on a run queue so far (the second field), as of the last {@link #read()}. */
    @Override
    public long delayNs() {
        return delayNs;
    }

    /** Parses "cpu_ns delay_ns slices\n": the second decimal field, or -1 when it is not there. */
    static long secondField(NativeBuffer b, int offset, int length) {
        return field(b, offset, length, 1);
    }

    /** The decimal field {@code index} (0: the first) of a space-separated line, or -1 when it is not there. */
    static long field(NativeBuffer b, int offset, int length, int index) {
        int i = offset;
        int end = offset + length;
        for (int skip = 0; skip < index; skip++) {
            while (i < end && b.buffer().getByte(i) != ' ') {
                i++;
            }
            i++;
        }
        long value = 0;
        int digits = 0;
        for (; i < end; i++) {
            byte c = b.buffer().getByte(i);
            if (c < '0' || c > '9') {
                break;
            }
            if (value > (Long.MAX_VALUE - 9) / 10) {
                return -1;
            }
            value = value * 10 + (c - '0');
            digits++;
        }
        return digits > 0 ? value : -1;
    }
}
