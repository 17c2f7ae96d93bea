package io.vblk.engine;

import io.vblk.aio.BackendKind;
import io.vblk.aio.Image;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoBackends;

/** Opens one I/O back end per I/O thread, with room for {@code depth} operations in flight. */
@FunctionalInterface
public interface BackendFactory {
    /** Opens a back end; called once per I/O thread when the device is built. */
    IoBackend open(int depth);

    /** Back ends of {@code kind} over {@code image} (the device does not close the image). */
    static BackendFactory of(BackendKind kind, Image image) {
        return depth -> IoBackends.open(kind, image, depth);
    }
}
