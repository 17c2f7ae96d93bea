package io.vblk.sys;

import java.util.HashMap;
import java.util.HashSet;
import java.util.Map;
import java.util.Set;

import org.agrona.concurrent.UnsafeBuffer;

/**
 * Sticky "this file changed since it was mapped" for guest-memory evidence (hostmem GuestMemory):
 * one inotify instance per process, one {@code IN_MODIFY | IN_ONESHOT} watch per watched file.
 *
 * <p>Why: a guest-memory fault is delivered late by the JVM, and its evidence used to be read
 * only when it was caught ("the file is now shorter than the mapping"). A frontend could shrink
 * its file, let the device fault, and grow it back before the error was caught: no evidence, so
 * whichever queue the error landed in (another tenant's, on a shared I/O thread) was quarantined.
 * The kernel raises IN_MODIFY for every size change (truncate, shrink or grow), but not for the
 * guest's own stores through a shared mapping, so "modified since mapped" is evidence the
 * frontend cannot take back. (A frontend that write(2)s its own memory file also raises it: then
 * it is blamed for a fault that may not be its own, once per change; never another tenant. A
 * hole punched with fallocate raises nothing on Linux 6.18, tried here: on shmem the hole reads
 * as zeros and cannot fault; on hugetlbfs it can, and FileSize#sparseOnFullFileSystem covers
 * it: holes with no free huge page to fill them.)
 *
 * <p>IN_ONESHOT: a watch reports its first change and is then removed by the kernel, so each
 * watched file puts at most two events (IN_MODIFY, IN_IGNORED) in the queue however often it is
 * changed; the queue cannot overflow with fewer than 8,192 watched files (the default
 * max_queued_events is 16,384). Should it overflow anyway, changes it dropped are not known and
 * count as none (no evidence is invented against anyone).
 *
 * <p>Watches are per inode: two memory tables mapping the same file share one (counted, removed
 * with the last). The kernel allocates watch numbers cyclically, so a number is not reused while
 * it could still be pending. Off the data path: {@link #watch} runs when a table is mapped,
 * {@link #changed} only after a fault. Thread-safe.
 */
public final class FileChangeWatch {
    private static final long SYS_INOTIFY_ADD_WATCH = 254;
    private static final long SYS_INOTIFY_RM_WATCH = 255;
    private static final long SYS_INOTIFY_INIT1 = 294;
    private static final int IN_MODIFY = 0x2;
    private static final int IN_ONESHOT = 0x80000000;
    private static final int IN_Q_OVERFLOW = 0x4000;
    private static final int EVENT_HEADER = 16;
    private static final int READ_BYTES = 64 << 10;

    private static int inotify = -2; // -2: not tried yet; -1: unavailable
    private static final Map<Integer, Integer> REFS = new HashMap<>();
    private static final Set<Integer> FIRED = new HashSet<>();
    private static NativeBuffer readBuffer;

    private FileChangeWatch() {
    }

    /**
     * Starts watching the file behind {@code fd} for changes (size, holes, written by write(2)):
     * returns a watch number for {@link #changed} and {@link #release}, or -1 when inotify is
     * unavailable (limits, permissions): the file then just shows no such evidence.
     */
    public static synchronized int watch(int fd) {
        if (inotify == -2) {
            long rc = Native.syscall(SYS_INOTIFY_INIT1, Linux.O_NONBLOCK | Linux.O_CLOEXEC, 0, 0, 0, 0);
            inotify = rc < 0 ? -1 : (int) rc;
            readBuffer = new NativeBuffer(READ_BYTES, 8);
        }
        if (inotify < 0 || fd < 0) {
            return -1;
        }
        drain(); // a number fired and reused later must not look fired
        byte[] path = ("/proc/self/fd/" + fd + "\0").getBytes(java.nio.charset.StandardCharsets.US_ASCII);
        NativeBuffer name = new NativeBuffer(path.length, 8);
        name.buffer().putBytes(0, path);
        long wd = Native.syscall(SYS_INOTIFY_ADD_WATCH, inotify, name.address(), IN_MODIFY | IN_ONESHOT, 0, 0);
        if (wd < 0) {
            return -1;
        }
        REFS.merge((int) wd, 1, Integer::sum);
        return (int) wd;
    }

    /** Whether the file of watch {@code wd} changed since the watch began (false for -1). */
    public static synchronized boolean changed(int wd) {
        if (wd < 0 || inotify < 0) {
            return false;
        }
        drain();
        return FIRED.contains(wd);
    }

    /** Ends one user's interest in watch {@code wd}; the last one removes it. -1 is ignored. */
    public static synchronized void release(int wd) {
        if (wd < 0 || inotify < 0) {
            return;
        }
        Integer refs = REFS.get(wd);
        if (refs == null) {
            return;
        }
        if (refs > 1) {
            REFS.put(wd, refs - 1);
            return;
        }
        drain();
        REFS.remove(wd);
        if (!FIRED.remove(wd)) {
            Native.syscall(SYS_INOTIFY_RM_WATCH, inotify, wd, 0, 0, 0); // a fired one is already gone
        }
    }

    private static void drain() {
        UnsafeBuffer b = readBuffer.buffer();
        while (true) {
            long n = Native.libc().read(inotify, readBuffer.address(), READ_BYTES);
            if (n <= 0) {
                return;
            }
            for (int at = 0; at + EVENT_HEADER <= n; at += EVENT_HEADER + b.getInt(at + 12)) {
                int wd = b.getInt(at);
                int mask = b.getInt(at + 4);
                if ((mask & IN_MODIFY) != 0 && (mask & IN_Q_OVERFLOW) == 0 && REFS.containsKey(wd)) {
                    FIRED.add(wd);
                }
            }
        }
    }
}
