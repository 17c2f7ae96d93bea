package io.vblk.sys;

/** Anonymous shared memory files (memfd_create(2)): how VMMs back guest RAM they share. */
public final class Memfd {
    private Memfd() {
    }

    /** Creates a close-on-exec memfd of {@code sizeBytes} bytes and returns its descriptor. */
    public static int create(String name, long sizeBytes) {
        int fd = (int) Native.check(Native.libc().memfd_create(name, Linux.MFD_CLOEXEC), "memfd_create", name);
        if (Native.libc().ftruncate(fd, sizeBytes) == -1) {
            int errno = Native.errno();
            Native.libc().close(fd);
            throw new NativeException(errno, "ftruncate", fd, sizeBytes);
        }
        return fd;
    }
}
