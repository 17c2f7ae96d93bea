package io.vblk.sys;

/** Linux x86-64 constants used by the bindings: flags, syscall numbers and ioctl requests. */
public final class Linux {
    // open(2)
    public static final int O_RDONLY = 0;
    public static final int O_WRONLY = 1;
    public static final int O_RDWR = 2;
    public static final int O_CREAT = 0100;
    public static final int O_EXCL = 0200;
    public static final int O_TRUNC = 01000;
    public static final int O_NONBLOCK = 04000;
    /** Opens a name without opening the file: only for fstat and reopening through /proc/self/fd. */
    public static final int O_PATH = 010000000;
    public static final int O_DIRECT = 040000;
    /** Fails (ELOOP) when the last component is a symbolic link; with O_PATH, opens the link itself. */
    public static final int O_NOFOLLOW = 0400000;
    /** Fails (ENOTDIR) unless the name is a directory. */
    public static final int O_DIRECTORY = 0200000;
    public static final int O_CLOEXEC = 02000000;

    // eventfd(2)
    public static final int EFD_SEMAPHORE = 1;
    public static final int EFD_NONBLOCK = O_NONBLOCK;
    public static final int EFD_CLOEXEC = O_CLOEXEC;

    // epoll(7)
    public static final int EPOLL_CLOEXEC = O_CLOEXEC;
    public static final int EPOLL_CTL_ADD = 1;
    public static final int EPOLL_CTL_DEL = 2;
    public static final int EPOLL_CTL_MOD = 3;
    public static final int EPOLLIN = 0x001;
    public static final int EPOLLOUT = 0x004;
    public static final int EPOLLERR = 0x008;
    public static final int EPOLLHUP = 0x010;
    /** The peer shut its writing side down (a stream socket's end of stream). */
    public static final int EPOLLRDHUP = 0x2000;
    /** Reported once, then disarmed until EPOLL_CTL_MOD re-arms it: one handler per descriptor at a time. */
    public static final int EPOLLONESHOT = 0x40000000;
    /** Edge-triggered: one event per change (for an eventfd, per write), no need to read it. */
    public static final int EPOLLET = 0x80000000;

    // poll(2)
    public static final short POLLIN = 0x001;
    public static final short POLLOUT = 0x004;
    public static final short POLLERR = 0x008;
    public static final short POLLHUP = 0x010;
    public static final short POLLNVAL = 0x020;
    public static final short POLLRDHUP = 0x2000;

    // memfd_create(2)
    public static final int MFD_CLOEXEC = 1;
    public static final int MFD_ALLOW_SEALING = 2;
    /** memfd_create(2): a file on hugetlbfs (the default huge page size). */
    public static final int MFD_HUGETLB = 4;

    // mmap(2)
    public static final int PROT_NONE = 0;
    public static final int PROT_READ = 1;
    public static final int PROT_WRITE = 2;
    public static final int MAP_SHARED = 0x01;
    public static final int MAP_PRIVATE = 0x02;
    public static final int MAP_FIXED = 0x10;
    public static final int MAP_ANONYMOUS = 0x20;
    public static final int MAP_NORESERVE = 0x4000;
    public static final int MAP_POPULATE = 0x8000;
    public static final long MAP_FAILED = -1L;

    // fallocate(2)
    public static final int FALLOC_FL_KEEP_SIZE = 0x01;
    public static final int FALLOC_FL_PUNCH_HOLE = 0x02;
    public static final int FALLOC_FL_ZERO_RANGE = 0x10;

    // lseek(2)
    public static final int SEEK_SET = 0;
    public static final int SEEK_CUR = 1;
    public static final int SEEK_END = 2;

    // fcntl(2)
    public static final int F_GETFL = 3;
    public static final int F_SETFL = 4;
    /** fcntl(2): duplicate to the lowest free descriptor at or above the argument, close-on-exec. */
    public static final int F_DUPFD_CLOEXEC = 1030;

    // ioctl(2) on block devices
    public static final long BLKGETSIZE64 = 0x80081272L;
    public static final long BLKSSZGET = 0x1268L;
    public static final long BLKDISCARD = 0x1277L;
    public static final long BLKZEROOUT = 0x127fL;

    // sockets
    public static final int AF_UNIX = 1;
    public static final int SOCK_STREAM = 1;
    public static final int SOCK_CLOEXEC = O_CLOEXEC;
    public static final int SOCK_NONBLOCK = O_NONBLOCK;
    public static final int SOL_SOCKET = 1;
    public static final int SO_PEERCRED = 17;
    public static final int SCM_RIGHTS = 1;
    public static final int MSG_CTRUNC = 0x08;
    public static final int MSG_NOSIGNAL = 0x4000;
    /** send(2) flag: fail with EAGAIN instead of blocking, whatever the descriptor's own mode. */
    public static final int MSG_DONTWAIT = 0x40;
    public static final int MSG_CMSG_CLOEXEC = 0x40000000;
    public static final int SHUT_RDWR = 2;

    // syscall numbers (x86-64)
    public static final long SYS_IO_SETUP = 206;
    public static final long SYS_IO_DESTROY = 207;
    public static final long SYS_IO_GETEVENTS = 208;
    public static final long SYS_IO_SUBMIT = 209;
    public static final long SYS_IO_CANCEL = 210;
    public static final long SYS_IO_URING_SETUP = 425;
    public static final long SYS_IO_URING_ENTER = 426;
    public static final long SYS_IO_URING_REGISTER = 427;
    public static final long SYS_GETPID = 39;
    public static final long SYS_GETRUSAGE = 98;
    public static final long SYS_GETTID = 186;
    /** sched_setattr(2) and sched_getattr(2) (Linux 3.14; a fair thread's slice in sched_runtime since 6.12). */
    public static final long SYS_SCHED_SETATTR = 314;
    public static final long SYS_SCHED_GETATTR = 315;
    public static final long SYS_FSTAT = 5;
    /** fstatfs(2): {@code struct statfs} (120 bytes on x86-64), f_type i64 @0, f_bsize i64 @8. */
    public static final long SYS_FSTATFS = 138;
    /** statfs f_type of hugetlbfs (/dev/hugepages files, hugetlb memfds). */
    public static final long HUGETLBFS_MAGIC = 0x958458f6L;
    /** openat2(2) (Linux 5.6): openat with {@code struct open_how} {u64 flags, u64 mode, u64 resolve}. */
    public static final long SYS_OPENAT2 = 437;
    /** openat2 resolve: no component may leave the directory (no "..", no absolute link, no absolute name). */
    public static final long RESOLVE_BENEATH = 0x08;
    /** openat2 resolve: no /proc magic link ({@code /proc/self/fd/N}) is followed. */
    public static final long RESOLVE_NO_MAGICLINKS = 0x02;

    /** The page size everything here assumes (x86-64 base pages). */
    public static final int PAGE_SIZE = 4096;

    private Linux() {
    }
}
