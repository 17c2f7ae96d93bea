package io.vblk.sys;

/** The errno values vblk reacts to (Linux x86-64 numbering). */
public final class Errno {
    public static final int EPERM = 1;
    public static final int ENOENT = 2;
    public static final int EINTR = 4;
    public static final int EIO = 5;
    public static final int EBADF = 9;
    public static final int EAGAIN = 11;
    public static final int ENOMEM = 12;
    public static final int EACCES = 13;
    public static final int EFAULT = 14;
    public static final int EBUSY = 16;
    public static final int EEXIST = 17;
    /** openat2 RESOLVE_BENEATH: the name would leave the directory. */
    public static final int EXDEV = 18;
    public static final int ENODEV = 19;
    public static final int ENOTDIR = 20;
    public static final int EINVAL = 22;
    public static final int EFBIG = 27;
    public static final int ENOSPC = 28;
    public static final int ESPIPE = 29;
    public static final int EROFS = 30;
    public static final int EPIPE = 32;
    public static final int ENOLCK = 37;
    public static final int ENOSYS = 38;
    /** Too many links, or (openat2 RESOLVE_NO_MAGICLINKS, O_NOFOLLOW) a link refused. */
    public static final int ELOOP = 40;
    public static final int EOPNOTSUPP = 95;
    public static final int ECONNRESET = 104;
    public static final int ETIME = 62;
    public static final int ECANCELED = 125;

    private Errno() {
    }

    /** libc's text for {@code errno}, for messages built off the hot path. */
    public static String describe(int errno) {
        try {
            String text = Native.libc().strerror(errno);
            return text == null ? "unknown" : text;
        } catch (RuntimeException | LinkageError e) {
            return "unknown";
        }
    }
}
