package io.vblk.sys;

/**
 * The libc functions vblk calls, bound by jnr-ffi. Every pointer is passed as a raw {@code long}
 * address so hot-path calls marshal nothing and allocate nothing.
 *
 * <p>jnr-ffi's x86-64 fast stubs corrupt the sixth argument of functions with exactly six
 * primitive parameters (jnr-ffi issue 181); {@link Native} disables them before loading. Keep
 * every binding at six parameters or fewer: seven or more take jnr-ffi's slow path.
 *
 * <p>Calls return libc's value; on -1 the cause is in {@link Native#errno()}.
 */
public interface LibC {
    int eventfd(int initval, int flags);

    int epoll_create1(int flags);

    int epoll_ctl(int epfd, int op, int fd, long eventAddress);

    int epoll_wait(int epfd, long eventsAddress, int maxEvents, int timeoutMs);

    int poll(long pollfdAddress, long nfds, int timeoutMs);

    int memfd_create(String name, int flags);

    long mmap(long address, long length, int prot, int flags, int fd, long offset);

    int munmap(long address, long length);

    int mprotect(long address, long length, int prot);

    int madvise(long address, long length, int advice);

    int open(String path, int flags, int mode);

    int close(int fd);

    int dup(int fd);

    int fcntl(int fd, int cmd, int arg);

    int fallocate(int fd, int mode, long offset, long length);

    int fdatasync(int fd);

    int fsync(int fd);

    int ftruncate(int fd, long length);

    long lseek(int fd, long offset, int whence);

    int ioctl(int fd, long request, long argAddress);

    long read(int fd, long bufAddress, long count);

    long write(int fd, long bufAddress, long count);

    long pread(int fd, long bufAddress, long count, long offset);

    long pwrite(int fd, long bufAddress, long count, long offset);

    long preadv(int fd, long iovAddress, int iovcnt, long offset);

    long pwritev(int fd, long iovAddress, int iovcnt, long offset);

    /** Raw system call with up to five arguments (six parameters: see the class comment). */
    long syscall(long number, long a1, long a2, long a3, long a4, long a5);

    /**
     * Raw system call with six arguments: seven parameters, so jnr-ffi takes its slower generic
     * path (about 80 ns), which passes the sixth argument intact. Only for calls that need it
     * (io_uring_enter with EXT_ARG: the sixth is the argument's size).
     */
    long syscall(long number, long a1, long a2, long a3, long a4, long a5, long a6);

    /**
     * process_vm_readv(2): copies from {@code remoteIov} in process {@code pid} into
     * {@code localIov}. Six parameters: {@code flags} (the sixth, which must be 0) arrives intact
     * only with jnr-ffi's x86 stubs disabled ({@link Native} does that; SixthArgumentTest checks it).
     */
    long process_vm_readv(int pid, long localIov, long localCount, long remoteIov, long remoteCount, long flags);

    /** process_vm_writev(2): copies {@code localIov} into {@code remoteIov} of {@code pid}; as {@link #process_vm_readv}. */
    long process_vm_writev(int pid, long localIov, long localCount, long remoteIov, long remoteCount, long flags);

    int socket(int domain, int type, int protocol);

    int bind(int fd, long sockaddrAddress, int addrlen);

    int listen(int fd, int backlog);

    int accept4(int fd, long sockaddrAddress, long addrlenAddress, int flags);

    int connect(int fd, long sockaddrAddress, int addrlen);

    int shutdown(int fd, int how);

    long sendmsg(int fd, long msghdrAddress, int flags);

    long recvmsg(int fd, long msghdrAddress, int flags);

    int getsockopt(int fd, int level, int option, long valueAddress, long lengthAddress);

    int getpid();

    /** sched_setaffinity(2); pid 0 is the calling thread. */
    int sched_setaffinity(int pid, long cpusetsize, long maskAddress);

    int getuid();

    int getgid();

    String strerror(int errno);
}
