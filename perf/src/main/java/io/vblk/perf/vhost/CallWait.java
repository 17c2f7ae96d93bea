package io.vblk.perf.vhost;

import org.agrona.concurrent.UnsafeBuffer;

import io.vblk.perf.load.LoadGenerator;
import io.vblk.sys.EventFd;
import io.vblk.sys.Linux;
import io.vblk.sys.Native;
import io.vblk.sys.NativeBuffer;

/**
 * The guest sleeping on its queues' call eventfds: poll(2) on all of them, then read each one
 * that fired to reset it. Poll-then-read rather than a blocking read, because the backend may
 * have made the descriptors non-blocking (it shares their open file description).
 * Allocation-free.
 *
 * <pre>
 * struct pollfd (8 bytes): int fd @0, short events @4, short revents @6
 * </pre>
 */
final class CallWait implements LoadGenerator.InterruptWait {
    private static final int POLLFD_LENGTH = 8;

    private final EventFd[] calls;
    private final UnsafeBuffer pollfds;

    CallWait(EventFd[] calls) {
        this.calls = calls.clone();
        this.pollfds = new NativeBuffer(POLLFD_LENGTH * calls.length, 8).buffer();
        for (int i = 0; i < calls.length; i++) {
            pollfds.putInt(i * POLLFD_LENGTH, calls[i].fd());
            pollfds.putShort(i * POLLFD_LENGTH + 4, Linux.POLLIN);
        }
    }

    @Override
    public void await(long timeoutNs) {
        for (int i = 0; i < calls.length; i++) {
            pollfds.putShort(i * POLLFD_LENGTH + 6, (short) 0);
        }
        int timeoutMs = (int) Math.max(1, timeoutNs / 1_000_000L);
        int ready = Native.libc().poll(pollfds.addressOffset(), calls.length, timeoutMs);
        if (ready <= 0) {
            return;
        }
        for (int i = 0; i < calls.length; i++) {
            if ((pollfds.getShort(i * POLLFD_LENGTH + 6) & Linux.POLLIN) != 0) {
                calls[i].read();
            }
        }
    }
}
