package io.vblk.sys;

/**
 * Copies between two ranges of this process's own memory through the kernel
 * ({@code process_vm_readv}/{@code process_vm_writev} on our own pid), so that a fault in either
 * range is an error code, never a signal.
 *
 * <p>Why: guest memory is a shared mapping of a file the frontend owns. A copy with
 * {@code Unsafe} from a page the frontend truncated raises SIGBUS, which HotSpot turns into an
 * {@link InternalError} that, in JIT-compiled code, is not thrown at the copy but later, at a
 * safepoint poll the code does not choose (inside a back end's reap, say), where it breaks
 * bookkeeping. The kernel's copy pins the pages with get_user_pages, which answers a page past
 * the end of the file with EFAULT, and no signal is sent. A partial copy returns the bytes moved
 * before the fault; the caller finds the faulting element from that count.
 *
 * <p>{@link #available()} probes the calls once per process: a seccomp filter (a container's
 * default profile on old kernels, a sandbox) may refuse them with EPERM or ENOSYS; callers then
 * fall back to {@code Unsafe} copies and catch the fault as well as they can.
 */
public final class ProcessVm {
    /** Linux's UIO_MAXIOV: the most iovecs one call takes on either side. */
    public static final int IOV_MAX = 1024;
    /** Linux's MAX_RW_COUNT: the most bytes one call moves (longer lists are cut short silently). */
    public static final long MAX_BYTES = 0x7ffff000L;

    private static final int PID = Native.libc().getpid();
    private static final int PROBE = probe();

    private ProcessVm() {
    }

    /** Whether the kernel copies are allowed here (probed once; 0 errno when they are). */
    public static boolean available() {
        return PROBE == 0;
    }

    /** The errno the probe got (0: available). */
    public static int probeErrno() {
        return PROBE;
    }

    /**
     * Copies the bytes {@code sourceIov} describes (read side, may fault) into {@code targetIov}:
     * the number of bytes moved, or {@code -errno} when none were ({@code -EFAULT}: the first byte
     * of the source faulted). Both lists are {@code struct iovec} arrays of at most {@link #IOV_MAX}.
     */
    public static long read(long targetIov, int targetCount, long sourceIov, int sourceCount) {
        return Native.result(Native.libc().process_vm_readv(PID, targetIov, targetCount, sourceIov, sourceCount, 0));
    }

    /**
     * Copies the bytes {@code sourceIov} describes into {@code targetIov} (write side, may
     * fault): bytes moved, or {@code -errno} when none were.
     */
    public static long write(long sourceIov, int sourceCount, long targetIov, int targetCount) {
        return Native.result(Native.libc().process_vm_writev(PID, sourceIov, sourceCount, targetIov, targetCount, 0));
    }

    private static int probe() {
        NativeBuffer b = new NativeBuffer(64);
        org.agrona.concurrent.UnsafeBuffer u = b.buffer();
        long base = b.address();
        u.putLong(0, 0x5eedL);
        // iovec {base + 0, 8} -> {base + 8, 8}, laid out at base + 16 and base + 32.
        u.putLong(16, base);
        u.putLong(24, 8);
        u.putLong(32, base + 8);
        u.putLong(40, 8);
        long rc;
        try {
            rc = read(base + 32, 1, base + 16, 1);
        } catch (UnsatisfiedLinkError e) {
            return Errno.ENOSYS; // a libc without the wrappers (before glibc 2.15)
        }
        if (rc == 8 && u.getLong(8) == 0x5eedL) {
            return 0;
        }
        return rc < 0 ? (int) -rc : Errno.EIO;
    }
}
