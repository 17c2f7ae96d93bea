package io.vblk.daemon;

import java.nio.charset.StandardCharsets;

import io.vblk.sys.Linux;
import io.vblk.sys.Native;
import io.vblk.sys.NativeBuffer;
import io.vblk.vhost.Log;

/**
 * systemd's readiness protocol (sd_notify(3)) without libsystemd: when the service manager set
 * {@code NOTIFY_SOCKET} (a path, or an abstract name starting with '@'), each state is one
 * datagram on that AF_UNIX socket ({@code READY=1}, {@code STOPPING=1}, {@code STATUS=...}). With
 * {@code Type=notify} a unit that orders VMs after the daemon starts them once every export of
 * the configuration has been tried, not when the process merely exists. Without the variable
 * every call does nothing. A send that fails is logged once and otherwise ignored: the daemon
 * serves whether or not systemd hears of it.
 */
final class SystemdNotify {
    private static final int SOCK_DGRAM = 2;
    private static final int SUN_PATH_MAX = 108;

    private final String socket;
    private final Log log;
    private volatile boolean failedOnce;

    SystemdNotify(String socket, Log log) {
        this.socket = socket == null || socket.isEmpty() ? null : socket;
        this.log = log;
    }

    /** From the environment ({@code NOTIFY_SOCKET}). */
    static SystemdNotify fromEnvironment(Log log) {
        return new SystemdNotify(System.getenv("NOTIFY_SOCKET"), log);
    }

    boolean enabled() {
        return socket != null;
    }

    /** Sends {@code state} (newline-separated assignments) as one datagram; does nothing without NOTIFY_SOCKET. */
    void send(String state) {
        if (socket == null) {
            return;
        }
        String error = sendOnce(socket, state);
        if (error != null && !failedOnce) {
            failedOnce = true;
            log.info("systemd: cannot notify NOTIFY_SOCKET=" + socket + ": " + error + " (further failures not logged)");
        }
    }

    /** Sends one datagram; null when sent, else why not. */
    private static String sendOnce(String target, String state) {
        byte[] name = target.getBytes(StandardCharsets.UTF_8);
        boolean abstractName = name[0] == '@';
        if (name.length >= SUN_PATH_MAX || (!abstractName && name[0] != '/')) {
            return "not an absolute path or '@' name of at most " + (SUN_PATH_MAX - 1) + " bytes";
        }
        NativeBuffer addr = new NativeBuffer(2 + SUN_PATH_MAX);
        addr.buffer().putShort(0, (short) Linux.AF_UNIX);
        addr.buffer().putBytes(2, name);
        if (abstractName) {
            addr.buffer().putByte(2, (byte) 0); // an abstract address: a leading NUL, its length exact
        }
        int addrLen = 2 + name.length + (abstractName ? 0 : 1);
        byte[] text = state.getBytes(StandardCharsets.UTF_8);
        NativeBuffer data = new NativeBuffer(Math.max(1, text.length));
        data.buffer().putBytes(0, text);
        int fd = Native.libc().socket(Linux.AF_UNIX, SOCK_DGRAM | Linux.SOCK_CLOEXEC, 0);
        if (fd < 0) {
            return "socket: errno " + Native.errno();
        }
        try {
            if (Native.libc().connect(fd, addr.address(), addrLen) < 0) {
                return "connect: errno " + Native.errno();
            }
            long n = Native.libc().write(fd, data.address(), text.length);
            return n == text.length ? null : "write: errno " + Native.errno();
        } finally {
            Native.libc().close(fd);
        }
    }
}
