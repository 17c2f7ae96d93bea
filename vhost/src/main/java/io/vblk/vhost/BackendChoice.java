package io.vblk.vhost;

import java.util.ArrayList;
import java.util.List;
import java.util.function.UnaryOperator;

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
    /** Applied to every back end opened (the identity, but in tests). */
    private final UnaryOperator<IoBackend> wrap;
    /**
     * The back ends opened and not known to have closed drained, for {@link #closedDrained()}
     * (pruned at each open, so a long-lived export that reconnects often keeps few).
     */
    private final List<IoBackend> opened = new ArrayList<>();

    /** Back ends of {@code wanted} over {@code image} (null only for the null back end). */
    public BackendChoice(BackendKind wanted, Image image, Log log) {
        this(wanted, image, log, UnaryOperator.identity());
    }

    /**
     * As {@link #BackendChoice(BackendKind, Image, Log)}, each back end passed through {@code
     * wrap} before the device gets it (tests: a back end that reports an undrained close).
     */
    public BackendChoice(BackendKind wanted, Image image, Log log, UnaryOperator<IoBackend> wrap) {
        this.wanted = wanted;
        this.image = image;
        this.log = log;
        this.inEffect = wanted;
        this.wrap = wrap;
    }

    @Override
    public IoBackend open(int depth) {
        return open(depth, false);
    }

    /** io_uring rings single-issuer where the I/O thread reaps, if asked ({@link BackendOptions#SINGLE_ISSUER_DEFAULT}). */
    @Override
    public IoBackend open(int depth, boolean submitterReaps) {
        IoBackend b = wrap.apply(openKind(depth, submitterReaps));
        synchronized (opened) {
            opened.removeIf(IoBackend::closedDrained);
            opened.add(b);
        }
        return b;
    }

    /**
     * Whether every back end opened so far was closed and its close confirmed that nothing it
     * handed to the kernel can still reach the image ({@link IoBackend#closedDrained()}). False
     * while one is open (a device not closed, or an I/O thread whose last round outlived its
     * shutdown and closes its back end only when that round ends) and after a close that left
     * operations with the kernel: the image's locks must then stay with the file until the
     * kernel lets go of it. True when none was opened.
     */
    public boolean closedDrained() {
        synchronized (opened) {
            for (IoBackend b : opened) {
                if (!b.closedDrained()) {
                    return false;
                }
            }
            return true;
        }
    }

    private IoBackend openKind(int depth, boolean submitterReaps) {
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
