package io.vblk.engine;

import io.vblk.aio.BackendKind;
import io.vblk.aio.BackendOptions;
import io.vblk.aio.Image;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoBackends;
import io.vblk.block.RawDriver;
import io.vblk.sys.Native;
import io.vblk.sys.NativeException;

/** Opens one I/O back end per I/O thread, with room for {@code depth} operations in flight. */
@FunctionalInterface
public interface BackendFactory {
    /** Opens a back end; called once per I/O thread when the device is built. */
    IoBackend open(int depth);

    /**
     * As {@link #open(int)}, told whether the I/O thread that submits will also reap ({@link
     * ThreadingMode#SHARED}): only then may an io_uring ring be single-issuer ({@link
     * BackendOptions#singleIssuer()}). By default {@link #open(int)}.
     */
    default IoBackend open(int depth, boolean submitterReaps) {
        return open(depth);
    }

    /**
     * Makes every completed write durable (the device's {@link BlockDevice#sync()}: a migration's
     * source before it hands over, a backend before it lets go of the image). Nothing by default
     * (a null disk).
     */
    default void sync() {
    }

    /**
     * The size in bytes of the disk the back ends serve, as it is now, or -1 when unknown (the
     * default). When known, {@link BlockDevice.Builder#build()} refuses a config larger than the
     * disk and {@link BlockDevice#resize} a capacity the disk does not have yet.
     */
    default long sizeBytes() {
        return -1;
    }

    /**
     * Whether the disk refuses writes (default false). When true, {@link
     * BlockDevice.Builder#build()} requires a read-only config ({@link BlkConfig.Builder#readOnly}).
     */
    default boolean readOnly() {
        return false;
    }

    /**
     * What gives the disk a new size when the device's raw drivers are resized ({@link
     * BlockDevice#resizeDrivers}), or null (the default) when nothing can: resizeDrivers then
     * throws UnsupportedOperationException.
     */
    default RawDriver.Resizer resizer() {
        return null;
    }

    /**
     * Back ends of {@code kind} over {@code image} (the device does not close the image); io_uring
     * rings single-issuer where the I/O thread reaps if {@link BackendOptions#SINGLE_ISSUER_DEFAULT}.
     */
    static BackendFactory of(BackendKind kind, Image image) {
        return of(kind, image, BackendOptions.SINGLE_ISSUER_DEFAULT);
    }

    /**
     * As {@link #of(BackendKind, Image)}, an io_uring ring set up single-issuer with deferred task
     * running when {@code singleIssuer} and the I/O thread reaps ({@link BackendOptions#singleIssuer()};
     * that thread then owns it).
     */
    static BackendFactory of(BackendKind kind, Image image, boolean singleIssuer) {
        return new BackendFactory() {
            @Override
            public IoBackend open(int depth) {
                return IoBackends.open(kind, image, depth);
            }

            @Override
            public IoBackend open(int depth, boolean submitterReaps) {
                return IoBackends.open(kind, image, BackendOptions.depth(depth).singleIssuer(singleIssuer && submitterReaps));
            }

            @Override
            public void sync() {
                syncImage(image);
            }

            @Override
            public long sizeBytes() {
                return image == null ? -1 : image.refreshSize(); // a file another tool grew counts as grown
            }

            @Override
            public boolean readOnly() {
                return image != null && image.readOnly();
            }

            @Override
            public RawDriver.Resizer resizer() {
                return image == null ? null : image::resize; // ftruncate: a writable regular file (else it says why)
            }
        };
    }

    /** fdatasync(2) of {@code image} unless it is null or read-only. */
    static void syncImage(Image image) {
        if (image != null && !image.readOnly() && !image.isClosed()) {
            // Image.fdatasync, not fdatasync(image.fd()): a close racing this check answers
            // EBADF instead of syncing whatever file reuses the number.
            int rc = image.fdatasync();
            if (rc < 0) {
                throw new NativeException(-rc, "fdatasync", image.path());
            }
        }
    }
}
