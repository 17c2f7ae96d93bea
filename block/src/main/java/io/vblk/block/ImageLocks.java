package io.vblk.block;

import io.vblk.aio.Image;
import io.vblk.sys.ImageLock;
import io.vblk.sys.ImageLock.Locking;

/**
 * Takes QEMU's image locks ({@link ImageLock}) on an opened {@link Image}: a writer's use for a
 * writable image, a reader's use for a read-only one (a read-only export, every backing file).
 * Every image file vblk serves is locked this way right after its open, before anything is read
 * into a cache or written (the qcow2 open path included: the file is not even rounded to whole
 * clusters before the check). An embedder that opens a raw {@link Image} itself calls
 * {@link #lock} once after the open.
 *
 * <p>The locks belong to the image's open file description: closing the image (export removal,
 * device close) or the death of the process releases them; a second open of one file in this
 * process conflicts with the first as another process would.
 */
public final class ImageLocks {
    private ImageLocks() {
    }

    /**
     * Locks {@code image} for its own use: a writer's when it is writable, else a reader's. Nothing
     * for a portable image (no descriptor: java.nio's locks are process-wide POSIX locks, not QEMU's).
     *
     * @return whether locks are held
     * @throws ImageLock.LockedException when QEMU, another vblk or another export holds a
     *         conflicting lock (the message names the permission and the holder); the image stays
     *         open, the caller closes it
     * @throws io.vblk.sys.NativeException when {@code locking} is on and the kernel refuses OFD locks
     */
    public static boolean lock(Image image, Locking locking) {
        return lock(image, image.readOnly(), locking);
    }

    /** As {@link #lock(Image, Locking)}, with a reader's use whenever {@code readerUse}. */
    public static boolean lock(Image image, boolean readerUse, Locking locking) {
        return lock(image, readerUse, locking, System.err::println);
    }

    /** As {@link #lock(Image, boolean, Locking)}, saying to {@code log} what it must (a wait for a dead holder, locking=auto). */
    public static boolean lock(Image image, boolean readerUse, Locking locking, java.util.function.Consumer<String> log) {
        if (locking == Locking.OFF || image.portable()) {
            return false;
        }
        return ImageLock.acquire(image.fd(), image.path(), readerUse ? ImageLock.READER : ImageLock.WRITER, locking, log);
    }

    /**
     * Drops the locks of {@code image} now, for an owner about to close it. Closing the descriptor
     * alone is not always enough at once: an io_uring ring that registered the file holds the
     * open file description until the kernel's asynchronous ring teardown ends, and the locks
     * with it. Call after the back ends are closed, before {@link Image#close()}. Nothing for a
     * portable or closed image.
     */
    public static void release(Image image) {
        if (image != null && !image.portable() && !image.isClosed()) {
            try {
                ImageLock.release(image.fd());
            } catch (IllegalStateException e) {
                // Closed meanwhile: the locks went with the descriptor.
            }
        }
    }

    /** Opens and locks in one step, closing the image when the lock is refused. */
    public static Image openLocked(java.nio.file.Path path, io.vblk.aio.ImageOptions options, Locking locking) {
        Image image = Image.open(path, options);
        try {
            lock(image, locking);
            return image;
        } catch (RuntimeException e) {
            image.close();
            throw e;
        }
    }
}
