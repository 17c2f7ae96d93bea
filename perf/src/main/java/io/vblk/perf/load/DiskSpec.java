package io.vblk.perf.load;

import java.nio.file.Path;
import java.util.Objects;

import io.vblk.perf.report.ResultTable;

/**
 * What the serving side reads and writes: a file or block device, or a null device of a given
 * size (requests complete without touching any data).
 *
 * @param path           the image, or null for a null device
 * @param nullSizeBytes  the null device's size; ignored for a path
 */
public record DiskSpec(Path path, long nullSizeBytes, String format) {
    /** A file or block device. */
    public static DiskSpec file(Path path) {
        return new DiskSpec(Objects.requireNonNull(path, "path"), 0, "raw");
    }

    /** A null device of {@code sizeBytes}. */
    public static DiskSpec nullDevice(long sizeBytes) {
        return new DiskSpec(null, sizeBytes, "raw");
    }

    /** Whether this is a null device. */
    /** A qcow2 image file (served with {@code --format qcow2}, or qemu-storage-daemon's qcow2 driver). */
    public static DiskSpec qcow2(Path path) {
        return new DiskSpec(Objects.requireNonNull(path, "path"), 0, "qcow2");
    }

    /** Whether the file is a qcow2 image. */
    public boolean isQcow2() {
        return "qcow2".equals(format);
    }

    public boolean isNull() {
        return path == null;
    }

    /** The spelling {@code vblk serve --image} and the tables use: the path, or null:SIZE. */
    public String describe() {
        return isNull() ? "null:" + ResultTable.size(nullSizeBytes) : path.toString() + (isQcow2() ? " (qcow2)" : "");
    }

    @Override
    public String toString() {
        return describe();
    }
}
