package io.vblk.vhost;

import io.vblk.aio.BackendKind;
import io.vblk.aio.BackendOptions;
import io.vblk.aio.Image;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoBackends;
import io.vblk.engine.BackendFactory;

/**
 * Opens the back end the command asked for; io_uring falls back to Linux AIO, with one logged
 * line, where the kernel refuses to set it up (disabled by sysctl, seccomp, an old kernel).
 */
public final class BackendChoice implements BackendFactory {
    private final BackendKind wanted;
    private final Image image;
    private final Log log;
    private volatile BackendKind inEffect;

    /** Back ends of {@code wanted} over {@code image} (null only for the null back end). */
    public BackendChoice(BackendKind wanted, Image image, Log log) {
        this.wanted = wanted;
        this.image = image;
        this.log = log;
        this.inEffect = wanted;
    }

    @Override
    public IoBackend open(int depth) {
        return open(depth, false);
    }

    /** io_uring rings single-issuer where the I/O thread reaps, if asked ({@link BackendOptions#SINGLE_ISSUER_DEFAULT}). */
    @Override
    public IoBackend open(int depth, boolean submitterReaps) {
        if (wanted != BackendKind.IO_URING) {
            return IoBackends.open(wanted, image, depth);
        }
        try {
            return IoBackends.open(BackendKind.IO_URING, image,
                    BackendOptions.depth(depth).singleIssuer(BackendOptions.SINGLE_ISSUER_DEFAULT && submitterReaps));
        } catch (RuntimeException e) {
            if (inEffect == BackendKind.IO_URING) {
                log.info("io_uring cannot be set up (" + e.getMessage() + "); using linux-aio");
            }
            inEffect = BackendKind.LINUX_AIO;
            return IoBackends.open(BackendKind.LINUX_AIO, image, depth);
        }
    }

    /** fdatasync of the image (nothing for the null disk or a read-only image). */
    @Override
    public void sync() {
        BackendFactory.syncImage(image);
    }

    /** The kind actually opened (after any fallback). */
    public BackendKind inEffect() {
        return inEffect;
    }
}
