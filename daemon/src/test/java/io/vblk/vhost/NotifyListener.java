package io.vblk.vhost;

import java.nio.charset.StandardCharsets;
import java.util.concurrent.TimeUnit;

import io.vblk.sys.Errno;
import io.vblk.sys.Linux;
import io.vblk.sys.Native;
import io.vblk.sys.NativeBuffer;

/**
 * What systemd listens on for sd_notify(3): a non-blocking AF_UNIX datagram socket bound to a
 * path, or to an abstract name when {@code name} starts with '@' (as NOTIFY_SOCKET names it).
 */
final class NotifyListener implements AutoCloseable {
    private static final int SOCK_DGRAM = 2;
    private final int fd;
    private final NativeBuffer in = new NativeBuffer(4096);

    NotifyListener(String name) {
        byte[] bytes = name.getBytes(StandardCharsets.UTF_8);
        NativeBuffer addr = new NativeBuffer(112);
        addr.buffer().putShort(0, (short) Linux.AF_UNIX);
        addr.buffer().putBytes(2, bytes);
        boolean abstractName = bytes[0] == '@';
        if (abstractName) {
            addr.buffer().putByte(2, (byte) 0);
        }
        fd = (int) Native.check(Native.libc().socket(Linux.AF_UNIX, SOCK_DGRAM | Linux.SOCK_CLOEXEC | Linux.SOCK_NONBLOCK, 0),
                "socket");
        Native.check(Native.libc().bind(fd, addr.address(), 2 + bytes.length + (abstractName ? 0 : 1)), "bind", name);
    }

    /** The next datagram, waiting up to {@code seconds} (a hang guard), or null when none came. */
    String next(long seconds) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
        while (System.nanoTime() < deadline) {
            long n = Native.libc().read(fd, in.address(), in.capacity());
            if (n >= 0) {
                byte[] b = new byte[(int) n];
                in.buffer().getBytes(0, b);
                return new String(b, StandardCharsets.UTF_8);
            }
            int errno = Native.errno();
            if (errno != Errno.EAGAIN && errno != Errno.EINTR) {
                throw new IllegalStateException("read: errno " + errno);
            }
            Thread.sleep(20);
        }
        return null;
    }

    /** Datagrams until one contains {@code wanted} (returned), or null after {@code seconds}. */
    String until(String wanted, long seconds) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
        while (System.nanoTime() < deadline) {
            String d = next(1);
            if (d != null && d.contains(wanted)) {
                return d;
            }
        }
        return null;
    }

    @Override
    public void close() {
        Native.libc().close(fd);
    }
}
