package io.vblk.sys;

import java.util.Arrays;

/**
 * A failed native call: carries the errno and the call with its arguments, so a set-up failure
 * reads like {@code open("/x", 0x4002, 0) failed: errno 2 (No such file or directory)}.
 * Thrown only off the hot path; hot-path calls return {@code -errno} instead.
 */
public final class NativeException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    private final int errno;
    private final String call;

    /** Creates the exception for {@code call(args)} failing with {@code errno}. */
    public NativeException(int errno, String call, Object... args) {
        super(describe(errno, call, args));
        this.errno = errno;
        this.call = call;
    }

    /** The native call that failed, e.g. {@code "io_uring_setup"} or {@code "fcntl"}. */
    public String call() {
        return call;
    }

    /** The errno the call failed with. */
    public int errno() {
        return errno;
    }

    private static String describe(int errno, String call, Object[] args) {
        String joined = Arrays.toString(args);
        return call + "(" + joined.substring(1, joined.length() - 1) + ") failed: errno " + errno
                + " (" + Errno.describe(errno) + ")";
    }
}
