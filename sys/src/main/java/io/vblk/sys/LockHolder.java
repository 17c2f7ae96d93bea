package io.vblk.sys;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Finds which process holds an OFD lock on a byte of a file, to name it in a refusal. The kernel
 * reports OFD locks with pid -1 (in {@code /proc/locks} and from {@code F_OFD_GETLK}), so the
 * holder is found through {@code /proc/PID/fdinfo/FD}, which lists the locks of each open file
 * description ("lock: 1: OFDLCK ADVISORY READ -1 fe:00:2154827 100 101"). Only processes this one
 * may inspect are seen (same user, or root). Runs on the refusal path only; the walk is bounded.
 */
public final class LockHolder {
    /** At most this many descriptors are examined in all (a host with huge fd tables answers "unknown"). */
    static final int MAX_DESCRIPTORS = 200_000;
    /** How {@link #describe} names this process. */
    static final String THIS_PROCESS = "this process";
    /** How {@link #describe} names a holder it cannot see. */
    static final String UNKNOWN = "another process";

    private LockHolder() {
    }

    /**
     * Describes the holder of a lock covering byte {@code offset} of the file {@code dev}/{@code ino}
     * (st_dev as stat(2) gives it): e.g. {@code "qemu-storage-daemon (pid 4242)"}, {@code "vblk
     * (pid 17)"}, {@code "this process"}; {@code "another process"} when none can be seen.
     */
    public static String describe(long dev, long ino, long offset) {
        String key = String.format("%02x:%02x:%d", major(dev), minor(dev), ino);
        long self = ProcessHandle.current().pid();
        int[] budget = {MAX_DESCRIPTORS};
        try (DirectoryStream<Path> procs = Files.newDirectoryStream(Path.of("/proc"), p -> isNumber(p.getFileName().toString()))) {
            for (Path proc : procs) {
                if (holds(proc, key, offset, budget) && !exiting(proc)) {
                    long pid = Long.parseLong(proc.getFileName().toString());
                    return pid == self ? THIS_PROCESS + " (pid " + pid + ")" : kind(proc) + " (pid " + pid + ")";
                }
                if (budget[0] <= 0) {
                    break;
                }
            }
        } catch (IOException | RuntimeException e) {
            // Unknown, then: the refusal still stands.
        }
        return UNKNOWN;
    }

    /** How this process is named as a holder, with its pid. */
    static String thisProcess() {
        return THIS_PROCESS + " (pid " + ProcessHandle.current().pid() + ")";
    }

    /**
     * The device the kernel names the file open as {@code fd} by in lock lines: its superblock's,
     * from the mount the descriptor is on ({@code mnt_id} in its fdinfo, field 3 of that line of
     * {@code /proc/self/mountinfo}). stat(2) gives another one on btrfs (a subvolume's anonymous
     * device), which no lock line carries (review 9b). {@code statDev} when it cannot be read.
     */
    public static long kernelDev(int fd, long statDev) {
        try {
            String mnt = null;
            for (String line : Files.readAllLines(Path.of("/proc/self/fdinfo/" + fd), StandardCharsets.ISO_8859_1)) {
                if (line.startsWith("mnt_id:")) {
                    mnt = line.substring("mnt_id:".length()).trim();
                }
            }
            if (mnt == null) {
                return statDev;
            }
            for (String line : Files.readAllLines(Path.of("/proc/self/mountinfo"), StandardCharsets.ISO_8859_1)) {
                String[] t = line.split(" ", 4);
                if (t.length >= 3 && t[0].equals(mnt)) {
                    String[] mm = t[2].split(":");
                    long major = Long.parseLong(mm[0]);
                    long minor = Long.parseLong(mm[1]);
                    // glibc's makedev layout, as stat(2) reports st_dev (major() and minor() below).
                    return ((major & 0xfffff000L) << 32) | ((major & 0xfffL) << 8)
                            | ((minor & 0xffffff00L) << 12) | (minor & 0xffL);
                }
            }
        } catch (IOException | RuntimeException e) {
            // Fall back to what stat said.
        }
        return statDev;
    }

    private static boolean holds(Path proc, String key, long offset, int[] budget) {
        try (DirectoryStream<Path> fds = Files.newDirectoryStream(proc.resolve("fdinfo"))) {
            for (Path fd : fds) {
                if (--budget[0] < 0) {
                    return false;
                }
                String info;
                try {
                    info = Files.readString(fd, StandardCharsets.ISO_8859_1);
                } catch (IOException e) {
                    continue; // closed meanwhile
                }
                if (info.contains(key) && covers(info, key, offset)) {
                    return true;
                }
            }
        } catch (IOException | RuntimeException e) {
            // Not ours to inspect, or gone.
        }
        return false;
    }

    /** Whether a "lock:" line of {@code info} names {@code key} with a range covering {@code offset}. */
    static boolean covers(String info, String key, long offset) {
        for (String line : info.split("\n")) {
            if (!line.startsWith("lock:") || !line.contains("OFDLCK")) {
                continue;
            }
            String[] t = line.trim().split("\\s+");
            for (int i = 0; i + 2 < t.length; i++) {
                if (t[i].equals(key)) {
                    long start = Long.parseLong(t[i + 1]);
                    long end = "EOF".equals(t[i + 2]) ? Long.MAX_VALUE : Long.parseLong(t[i + 2]);
                    if (offset >= start && offset <= end) {
                        return true;
                    }
                }
            }
        }
        return false;
    }

    /**
     * Whether a process is being torn down: a zombie or dead, or killed (SIGKILL pending for the
     * whole thread group, e.g. a thread still finishing an I/O in the kernel). Its descriptions
     * go with it, so it is not named as a live holder: the caller waits for it like for a holder
     * no process shows.
     */
    static boolean exiting(Path proc) {
        try {
            for (String line : Files.readAllLines(proc.resolve("status"), StandardCharsets.ISO_8859_1)) {
                if (line.startsWith("State:")) {
                    String state = line.substring("State:".length()).trim();
                    if (state.startsWith("Z") || state.startsWith("X")) {
                        return true;
                    }
                } else if (line.startsWith("ShdPnd:")) {
                    long pending = Long.parseUnsignedLong(line.substring("ShdPnd:".length()).trim(), 16);
                    if ((pending & (1L << (SIGKILL - 1))) != 0) {
                        return true;
                    }
                }
            }
            return false;
        } catch (IOException | RuntimeException e) {
            return true; // gone meanwhile
        }
    }

    private static final int SIGKILL = 9;

    /** What kind of program a process is: the base name of argv[0], "vblk" for a JVM running vblk. */
    static String kind(Path proc) {
        try {
            byte[] cmd = Files.readAllBytes(proc.resolve("cmdline"));
            String all = new String(cmd, StandardCharsets.UTF_8);
            int nul = all.indexOf('\0');
            String argv0 = nul < 0 ? all : all.substring(0, nul);
            String base = argv0.substring(argv0.lastIndexOf('/') + 1);
            if ((base.equals("java") || base.startsWith("java")) && all.contains("vblk")) {
                return "vblk";
            }
            return base.isEmpty() ? "a process" : base;
        } catch (IOException | RuntimeException e) {
            return "a process";
        }
    }

    private static boolean isNumber(String s) {
        if (s.isEmpty()) {
            return false;
        }
        for (int i = 0; i < s.length(); i++) {
            if (!Character.isDigit(s.charAt(i))) {
                return false;
            }
        }
        return true;
    }

    /** glibc's gnu_dev_major. */
    static long major(long dev) {
        return ((dev >>> 8) & 0xfff) | ((dev >>> 32) & ~0xfffL);
    }

    /** glibc's gnu_dev_minor. */
    static long minor(long dev) {
        return (dev & 0xff) | ((dev >>> 12) & ~0xffL);
    }
}
