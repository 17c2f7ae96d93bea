package io.vblk.block;

import java.util.function.Consumer;

import io.vblk.aio.Image;
import io.vblk.sys.ImageLock;
import io.vblk.sys.ImageLock.Locking;

/**
 * Active and inactive images, as QEMU hands an image over in a live migration
 * (BDRV_O_INACTIVE): the destination ({@code -incoming}) opens the image inactive, holding only
 * the locks of a consistent reader that shares writing ({@link ImageLock#INACTIVE}), while the
 * source still writes it; the source drops its writer's locks back to the inactive set when it
 * hands over (its device stopped, drained and synced for a frontend that logged dirty pages);
 * whichever side's device starts next takes the writer's locks ({@link ImageLock#WRITER}) again.
 * If another process still holds them then, {@link #activate} refuses, naming the holder, and
 * the image stays inactive: nothing is written unlocked.
 *
 * <p>Only a writable image on a descriptor, locked by vblk, changes state; for a read-only
 * image, a portable one, or {@code locking} off (or auto on a filesystem without OFD locks)
 * every call is a no-op and the image counts as active. Control path only (device start and
 * stop), never per request. Thread-safe.
 */
public final class ImageActivation {
    private final Image image;
    private final Locking locking;
    private final boolean locked;
    private boolean active;

    private ImageActivation(Image image, Locking locking, boolean locked, boolean active) {
        this.image = image;
        this.locking = locking;
        this.locked = locked;
        this.active = active;
    }

    /**
     * Locks the freshly opened {@code image}: a writable one inactive when {@code incoming}, else
     * as {@link ImageLocks#lock(Image, Locking)} does (a writer's or a reader's use).
     *
     * @throws ImageLock.LockedException when another user's locks conflict (the image stays open)
     */
    public static ImageActivation lock(Image image, Locking locking, boolean incoming, Consumer<String> log) {
        if (locking == Locking.OFF || image.portable()) {
            return new ImageActivation(image, locking, false, true);
        }
        if (!incoming || image.readOnly()) {
            return new ImageActivation(image, locking, ImageLocks.lock(image, image.readOnly(), locking, log), true);
        }
        boolean locked = ImageLock.acquire(image.fd(), image.path(), ImageLock.INACTIVE, locking, log);
        return new ImageActivation(image, locking, locked, !locked);
    }

    /** An image vblk did not lock (or that has no descriptor): always active, nothing to hand over. */
    public static ImageActivation unlocked(Image image) {
        return new ImageActivation(image, Locking.OFF, false, true);
    }

    /** Whether the image holds its own use's locks (a writer's), rather than the inactive set. */
    public synchronized boolean active() {
        return active;
    }

    /** Whether the image changes state at all (writable, locked by vblk). */
    public boolean handsOver() {
        return locked && !image.readOnly();
    }

    /**
     * Takes the writer's locks if the image is inactive; nothing if it is active already.
     * Returns whether it changed state.
     *
     * @throws ImageLock.LockedException when another process (or export) still holds a conflicting
     *         lock; the image stays inactive
     */
    public synchronized boolean activate() {
        if (active || !handsOver()) {
            return false;
        }
        ImageLock.change(image.fd(), image.path(), ImageLock.INACTIVE, ImageLock.WRITER, locking);
        active = true;
        return true;
    }

    /**
     * Drops the writer's locks back to the inactive set (after the device drained and synced):
     * another backend may now take the image over. Nothing if already inactive. Returns whether
     * it changed state.
     */
    public synchronized boolean inactivate() {
        if (!active || !handsOver()) {
            return false;
        }
        ImageLock.change(image.fd(), image.path(), ImageLock.WRITER, ImageLock.INACTIVE, locking);
        active = false;
        return true;
    }

    /** The image this controls. */
    public Image image() {
        return image;
    }
}
