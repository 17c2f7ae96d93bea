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

    /** Raw drivers over back ends of {@code kind} on {@code image}. */
    static DriverFactory raw(BackendKind kind, Image image) {
        return depth -> {
            IoBackend backend = IoBackends.open(kind, image, depth);
            return new RawDriver(backend, image == null ? 0 : image.sizeBytes(),
                    image != null && image.readOnly(), true);
        };
    }
}
