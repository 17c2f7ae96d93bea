package io.vblk.block;

import io.vblk.aio.BackendKind;
import io.vblk.aio.Image;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoBackends;

/**
 * Opens one block driver per I/O thread, with room for {@code depth} requests in flight. The
 * device closes the drivers it opened; whoever opened the image closes the image.
 */
@FunctionalInterface
public interface DriverFactory {
    /** Opens a driver; called once per I/O thread when the device is built. */
    BlockDriver open(int depth);

    /**
     * Makes every write the device completed durable (a migration's source before it hands over,
     * a backend before it lets go of the image); called with the queues stopped. Drivers write
     * their metadata through before completing a request, so this is an fdatasync of the files
     * written. Nothing by default.
     */
    default void sync() {
    }

    /** Raw drivers over back ends of {@code kind} on {@code image}. */
    static DriverFactory raw(BackendKind kind, Image image) {
        return depth -> {
            IoBackend backend = IoBackends.open(kind, image, depth);
            RawDriver driver = new RawDriver(backend, image == null ? 0 : image.sizeBytes(),
                    image != null && image.readOnly(), true);
            return image == null ? driver : driver.resizableBy(image::resize);
        };
    }
}
