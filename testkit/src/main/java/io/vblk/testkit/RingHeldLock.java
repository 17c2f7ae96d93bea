package io.vblk.testkit;

import io.vblk.sys.DirectoryFd;
import io.vblk.sys.ImageLock;
import io.vblk.sys.Linux;
import io.vblk.sys.Native;
import io.vblk.sys.NativeBuffer;
import io.vblk.sys.PosixFile;
import java.nio.file.Path;

/**
 * An image's writer lock held by an io_uring ring alone, as a SIGKILLed vblk leaves it while the
 * kernel tears its ring down: the image's open file description (with its OFD locks) is the
 * ring's registered file and no process has it open, so no {@code /proc/PID/fdinfo} shows the
 * lock. {@link #close} closes the ring; the kernel's teardown then drops the description and its
 * locks (a moment after a killed process's reap; seconds, at times, for a ring closed in a live
 * JVM).
 */
public final class RingHeldLock implements AutoCloseable {
    private static final int IORING_REGISTER_FILES = 2;
    private final int ring;
    private boolean closed;

    private RingHeldLock(int ring) {
        this.ring = ring;
    }

    /**
     * Takes {@link ImageLock#WRITER} on {@code image} and leaves it to a ring only; null where
     * io_uring is refused. The ring is made on a thread that then ends, as a killed process's are.
     */
    public static RingHeldLock hold(Path image) throws InterruptedException {
        int[] out = {-1};
        RuntimeException[] failed = {null};
        Thread t = new Thread(() -> {
            try {
                out[0] = ringOf(image);
            } catch (RuntimeException e) {
                failed[0] = e;
            }
        }, "ring-maker");
        t.start();
        t.join();
        if (failed[0] != null) {
            throw failed[0];
        }
        return out[0] < 0 ? null : new RingHeldLock(out[0]);
    }

    private static int ringOf(Path image) {
        try (PosixFile f = PosixFile.open(image, false, false)) {
            ImageLock.acquire(f.fd(), image, ImageLock.WRITER, ImageLock.Locking.ON, s -> { });
            NativeBuffer params = new NativeBuffer(120);
            long ring = Native.syscall(Linux.SYS_IO_URING_SETUP, 4, params.address(), 0, 0, 0);
            java.lang.ref.Reference.reachabilityFence(params);
            if (ring < 0) {
                return -1;
            }
            NativeBuffer arg = new NativeBuffer(Integer.BYTES);
            arg.buffer().putInt(0, f.fd());
            long rc = Native.syscall(Linux.SYS_IO_URING_REGISTER, ring, IORING_REGISTER_FILES, arg.address(), 1, 0);
            java.lang.ref.Reference.reachabilityFence(arg);
            if (rc < 0) {
                DirectoryFd.closeFd((int) ring);
                return -1;
            }
            return (int) ring; // the image's descriptor closes here; the ring keeps its description, and the locks
        }
    }

    /** Closes the ring (once): the kernel drops the image's description when its teardown ends. */
    @Override
    public synchronized void close() {
        if (!closed) {
            closed = true;
            DirectoryFd.closeFd(ring);
        }
    }
}
