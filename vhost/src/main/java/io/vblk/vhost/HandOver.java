package io.vblk.vhost;

import java.io.IOException;
import java.io.UncheckedIOException;

import io.vblk.block.ImageActivation;
import io.vblk.engine.BlockDevice;

/**
 * The image's side of a live migration's hand-over, as the device's start and stop drive it
 * ({@link QueueControl}): {@link #activate} before the first ring starts while inactive,
 * {@link #inactivate} after a stop for a frontend that logged dirty pages. A raw image changes
 * only its locks ({@link ImageActivation}); a format image (qcow2) is handed over by its block
 * drivers on their I/O threads ({@link io.vblk.block.BlockDriver#activate}), which also drop or
 * re-read every piece of metadata they keep. Control path only.
 */
interface HandOver {
    /** Whether the image is this backend's (the writer's locks held, metadata trusted). */
    boolean active();

    /**
     * Takes the image over if inactive; returns whether it changed state.
     *
     * @throws RuntimeException with the reason when it cannot (another backend holds the
     *         image): the image stays inactive
     */
    boolean activate();

    /** Hands the image over if active; returns whether it changed state. */
    boolean inactivate();

    /** The image, for log lines. */
    String image();

    /** Whether the hand-over moves image locks (false: a network disk, which has none). */
    default boolean locked() {
        return true;
    }

    /** A raw image's hand-over: its locks. */
    static HandOver of(ImageActivation a) {
        return new HandOver() {
            @Override
            public boolean active() {
                return a.active();
            }

            @Override
            public boolean activate() {
                return a.activate();
            }

            @Override
            public boolean inactivate() {
                return a.inactivate();
            }

            @Override
            public String image() {
                return String.valueOf(a.image().path());
            }
        };
    }

    /**
     * A format image's hand-over through the block drivers of {@code device}, inactive at first
     * when {@code incoming}; {@code locked} false for an image on a network disk (no locks).
     */
    static HandOver ofDrivers(BlockDevice device, String image, boolean incoming, boolean locked) {
        return new HandOver() {
            private boolean active = !incoming;

            @Override
            public synchronized boolean active() {
                return active;
            }

            @Override
            public synchronized boolean activate() {
                if (active) {
                    return false;
                }
                try {
                    device.activateDrivers();
                } catch (IOException e) {
                    throw new UncheckedIOException(e.getMessage(), e);
                }
                active = true;
                return true;
            }

            @Override
            public synchronized boolean inactivate() {
                if (!active) {
                    return false;
                }
                try {
                    device.inactivateDrivers();
                } catch (IOException e) {
                    throw new UncheckedIOException(e.getMessage(), e);
                }
                active = false;
                return true;
            }

            @Override
            public String image() {
                return image;
            }

            @Override
            public boolean locked() {
                return locked;
            }
        };
    }
}
