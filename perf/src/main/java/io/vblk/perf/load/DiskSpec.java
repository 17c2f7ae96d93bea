package io.vblk.perf.load;

import java.nio.file.Path;
import java.util.Objects;

import io.vblk.perf.report.ResultTable;

/**
 * What the serving side reads and writes: a file or block device (raw or qcow2), a null device
 * of a given size (requests complete without touching any data), or a network disk (an NBD
 * export or an RBD image, named by its address).
 *
 * @param path           the image, or null for a null device or a network disk
 * @param nullSizeBytes  the null device's size; ignored for a path
 * @param format         {@code raw} or {@code qcow2}
 * @param network        the network disk's address ({@code nbd://}, {@code nbd+unix://}, {@code rbd:}), or null
 */
public record DiskSpec(Path path, long nullSizeBytes, String format, String network) {
    /** A file or block device. */
    public static DiskSpec file(Path path) {
        return new DiskSpec(Objects.requireNonNull(path, "path"), 0, "raw", null);
    }

    /** A null device of {@code sizeBytes}. */
    public static DiskSpec nullDevice(long sizeBytes) {
        return new DiskSpec(null, sizeBytes, "raw", null);
    }

    /** A qcow2 image file (served with {@code --format qcow2}, or qemu-storage-daemon's qcow2 driver). */
    public static DiskSpec qcow2(Path path) {
        return new DiskSpec(Objects.requireNonNull(path, "path"), 0, "qcow2", null);
    }

    /** A network disk at {@code address}. */
    public static DiskSpec network(String address) {
        return new DiskSpec(null, 0, "raw", Objects.requireNonNull(address, "address"));
    }

    /** Whether the file is a qcow2 image. */
    public boolean isQcow2() {
        return "qcow2".equals(format);
    }

    /** Whether this is a null device. */
    public boolean isNull() {
        return path == null && network == null;
    }

    /** Whether this is a network disk. */
    public boolean isNetwork() {
        return network != null;
    }

    /** The spelling {@code vblk serve --image} and the tables use: the path, null:SIZE or the address. */
    public String describe() {
        if (network != null) {
            return network;
        }
        return isNull() ? "null:" + ResultTable.size(nullSizeBytes) : path.toString() + (isQcow2() ? " (qcow2)" : "");
    }

    @Override
    public String toString() {
        return describe();
    }
}
