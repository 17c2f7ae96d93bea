package io.vblk.sys;

import jnr.ffi.LastError;
import jnr.ffi.LibraryLoader;
import jnr.ffi.Runtime;

/**
 * Loads {@link LibC} once, with jnr-ffi's x86 fast stubs disabled (they corrupt the sixth
 * argument of six-argument functions, jnr-ffi issue 181), and exposes {@code errno}.
 */
public final class Native {
    private static final LibC LIBC;
    private static final Runtime RUNTIME;

    static {
        // Must be set before jnr-ffi generates its first stub; setting it here makes a launch
        // without the -D flag safe as long as nothing loaded a library through jnr-ffi earlier.
        System.setProperty("jnr.ffi.x86asm.enabled", "false");
        LIBC = LibraryLoader.create(LibC.class).failImmediately().load("c");
        RUNTIME = Runtime.getRuntime(LIBC);
    }

    private Native() {
    }

    /** The process-wide libc binding. */
    public static LibC libc() {
        return LIBC;
    }

    /** The calling thread's {@code errno} after a failed call. */
    public static int errno() {
        return LastError.getLastError(RUNTIME);
    }

    /**
     * Converts a libc-style result into a kernel-style one: the value itself, or {@code -errno}
     * when the call returned -1. For hot paths that report errors as codes.
     */
    public static long result(long rc) {
        return rc == -1 ? -errno() : rc;
    }

    /**
     * Checks a libc-style result and throws {@link NativeException} carrying errno and the call's
     * arguments when it is -1. For set-up paths only.
     */
    public static long check(long rc, String call, Object... args) {
        if (rc == -1) {
            throw new NativeException(errno(), call, args);
        }
        return rc;
    }

    /** Raw {@code syscall(2)} returning {@code -errno} on failure, as the kernel does. */
    public static long syscall(long number, long a1, long a2, long a3, long a4, long a5) {
        return result(LIBC.syscall(number, a1, a2, a3, a4, a5));
    }

    /** Raw {@code syscall(2)} with six arguments (the slower path that keeps the sixth intact). */
    public static long syscall6(long number, long a1, long a2, long a3, long a4, long a5, long a6) {
        return result(LIBC.syscall(number, a1, a2, a3, a4, a5, a6));
    }
}
