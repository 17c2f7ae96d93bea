package io.vblk.aio;

/**
 * How an {@link Image} is opened: an immutable value with withers.
 *
 * <pre>
 * ImageOptions.defaults()                  // read-write, O_DIRECT, fallocate for discard/write-zeroes
 * ImageOptions.defaults().readOnly(true)   // a read-only device: no write ever reaches the image
 * ImageOptions.defaults().direct(false)    // buffered: the host page cache is used
 * ImageOptions.defaults().bounceBudgetBytes(16 &lt;&lt; 20) // at most 16 MiB of borrowed bounce memory
 * </pre>
 */
public final class ImageOptions {
    private static final ImageOptions DEFAULTS = new ImageOptions(false, true, true, !Image.LINUX, BounceBudget.DEFAULT_BYTES, null);

    private final boolean readOnly;
    private final boolean direct;
    private final boolean fallocate;
    private final boolean portable;
    private final long bounceBudgetBytes;
    private final java.nio.file.Path beneath;

    private ImageOptions(boolean readOnly, boolean direct, boolean fallocate, boolean portable, long bounceBudgetBytes,
            java.nio.file.Path beneath) {
        this.beneath = beneath;
        this.readOnly = readOnly;
        this.direct = direct;
        this.fallocate = fallocate;
        this.portable = portable;
        this.bounceBudgetBytes = bounceBudgetBytes;
    }

    /** Read-write, O_DIRECT, fallocate used for discard and write-zeroes, native on Linux. */
    public static ImageOptions defaults() {
        return DEFAULTS;
    }

    /** Opens read-only: writes, discards and write-zeroes are refused with {@code -EROFS}. */
    public ImageOptions readOnly(boolean value) {
        return new ImageOptions(value, direct, fallocate, portable, bounceBudgetBytes, beneath);
    }

    /** O_DIRECT (the default) bypasses the host page cache; false opens buffered. */
    public ImageOptions direct(boolean value) {
        return new ImageOptions(readOnly, value, fallocate, portable, bounceBudgetBytes, beneath);
    }

    /**
     * Whether discard and write-zeroes may use fallocate (punch hole, zero range). False always
     * writes zeros, as happens anyway where the filesystem refuses fallocate.
     */
    public ImageOptions fallocate(boolean value) {
        return new ImageOptions(readOnly, direct, value, portable, bounceBudgetBytes, beneath);
    }

    /**
     * Opens through {@code java.nio} only, with no native calls: what every non-Linux host gets,
     * and only the thread and null back ends run on such an image. On Linux it is useful to test
     * that path.
     */
    public ImageOptions portable(boolean value) {
        return new ImageOptions(readOnly, direct, fallocate, value, bounceBudgetBytes, beneath);
    }

    /**
     * The bounce memory all of the image's back ends (one device) may borrow at once for
     * operations larger than a slot's retained 64 KiB; see {@link BounceBudget} for the policy.
     * Default {@link BounceBudget#DEFAULT_BYTES}; at least 4 MiB.
     *
     * @throws IllegalArgumentException below 4 MiB
     */
    public ImageOptions bounceBudgetBytes(long value) {
        new BounceBudget(value); // validates
        return new ImageOptions(readOnly, direct, fallocate, portable, value, beneath);
    }

    /**
     * Opens the image only if its name resolves beneath {@code dir} (an absolute directory, e.g.
     * a qcow2 image's backing directory), in one step by the kernel (openat2 RESOLVE_BENEATH,
     * see {@code PosixFile.openFileOrBlockDeviceBeneath}), so that no component swapped for a
     * link after a check can lead elsewhere. Null (the default): opened as named. Linux only.
     */
    public ImageOptions beneath(java.nio.file.Path dir) {
        if (dir != null && !dir.isAbsolute()) {
            throw new IllegalArgumentException("beneath: not an absolute directory: " + dir);
        }
        return new ImageOptions(readOnly, direct, fallocate, portable, bounceBudgetBytes, dir);
    }

    /** The directory the image must lie beneath, or null. */
    public java.nio.file.Path beneath() {
        return beneath;
    }

    /** The device's bounce budget in bytes. */
    public long bounceBudgetBytes() {
        return bounceBudgetBytes;
    }

    /** Whether the image is opened read-only. */
    public boolean readOnly() {
        return readOnly;
    }

    /** Whether the image is opened with O_DIRECT. */
    public boolean direct() {
        return direct;
    }

    /** Whether discard and write-zeroes may use fallocate. */
    public boolean fallocate() {
        return fallocate;
    }

    /** Whether the image is opened through {@code java.nio} only. */
    public boolean portable() {
        return portable;
    }

    @Override
    public String toString() {
        return "ImageOptions[" + (readOnly ? "ro" : "rw") + (direct ? ", direct" : ", buffered")
                + (fallocate ? "" : ", no fallocate") + (portable ? ", portable" : "")
                + (bounceBudgetBytes != BounceBudget.DEFAULT_BYTES ? ", bounce budget " + bounceBudgetBytes : "")
                + (beneath != null ? ", beneath " + beneath : "") + "]";
    }
}
