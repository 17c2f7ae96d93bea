package io.vblk.aio;

/**
 * Opens back ends by kind.
 *
 * <pre>
 * try (Image image = Image.open(path, ImageOptions.defaults());
 *      IoBackend io = IoBackends.open(BackendKind.parse("io_uring"), image, 128)) { ... }
 * </pre>
 */
public final class IoBackends {
    private IoBackends() {
    }

    /** Opens a back end of {@code kind} on {@code image} with {@code depth} slots and default sizing. */
    public static IoBackend open(BackendKind kind, Image image, int depth) {
        return open(kind, image, BackendOptions.depth(depth));
    }

    /**
     * Opens a back end of {@code kind} on {@code image}. The image may be null only for
     * {@link BackendKind#NULL}.
     *
     * @throws IllegalArgumentException when the kind cannot run on this image or platform
     * @throws io.vblk.sys.NativeException when the kernel refuses to set it up (io_setup,
     *         io_uring_setup: the errno says why, e.g. EPERM when io_uring is disabled)
     */
    public static IoBackend open(BackendKind kind, Image image, BackendOptions options) {
        if (image == null && kind != BackendKind.NULL) {
            throw new IllegalArgumentException(kind + " needs an image");
        }
        if (image != null && image.isClosed()) {
            throw new IllegalArgumentException("image is closed: " + image);
        }
        switch (kind) {
            case LINUX_AIO:
                requireNative(kind, image);
                return new LinuxAioBackend(image, options);
            case IO_URING:
                requireNative(kind, image);
                return new IoUringBackend(image, options);
            case THREADS:
                return new ThreadPoolBackend(image, options);
            case NULL:
                return new NullBackend(image, options);
            default:
                throw new IllegalArgumentException("unknown back end " + kind);
        }
    }

    /**
     * Back ends whose {@link IoBackend#close()} gave up waiting for the kernel ({@code
     * vblk.aio.closeDrainMs}, 10 s) and whose operations the kernel has not finished since: each
     * keeps its slots, buffers and rings (and its device the guest memory) until it does. For
     * metrics: above 0 means I/O stuck in the kernel (a hung FUSE or NFS file, a frozen disk).
     * One reaper thread waits for them all; as it releases each, the back end's {@link
     * IoBackend#whenDrained} actions run (the caller's memory may go then).
     */
    public static int undrainedBackends() {
        return Undrained.count();
    }

    private static void requireNative(BackendKind kind, Image image) {
        if (!Image.LINUX || image.portable()) {
            throw new IllegalArgumentException(kind + " needs Linux and a natively opened image; use threads: " + image);
        }
    }
}
