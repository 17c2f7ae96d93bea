package io.vblk.block.qcow2;

import io.vblk.block.ImageLocks;
import io.vblk.sys.ImageLock.Locking;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

import io.vblk.aio.BackendKind;
import io.vblk.aio.BackendOptions;
import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.aio.IoBackend;
import io.vblk.aio.IoBackends;
import io.vblk.sys.NativeBuffer;

/**
 * A qcow2 image in a local file: per-request I/O through an aio back end of the chosen kind
 * (io_uring, linux-aio, threads), the synchronous steps with ordinary positional file I/O.
 */
final class FileHost extends Qcow2Host {
    private final Path path;
    private final Image image;
    private final BackendKind kind;
    private IoBackend io;
    private boolean closed;

    FileHost(Path path, BackendKind kind, boolean readOnly, boolean direct) {
        this(path, kind, readOnly, direct, Locking.ON);
    }

    /**
     * Opens the file and takes QEMU's image locks on it at once (a reader's use when read-only):
     * nothing is read into a cache or written (not even the rounding of the file to whole
     * clusters) before the check, and a refused image is closed again.
     */
    FileHost(Path path, BackendKind kind, boolean readOnly, boolean direct, Locking locking) {
        this.path = path;
        this.kind = kind;
        this.image = ImageLocks.openLocked(path, ImageOptions.defaults().readOnly(readOnly).direct(direct), locking);
    }

    @Override
    String name() {
        return path.toString();
    }

    @Override
    Image image() {
        return image;
    }

    @Override
    long sizeBytes() {
        return image.sizeBytes();
    }

    @Override
    long storedBytes() throws IOException {
        return java.nio.file.Files.size(path);
    }

    @Override
    boolean readOnly() {
        return image.readOnly();
    }

    @Override
    int offsetAlignment() {
        return image.offsetAlignment();
    }

    @Override
    boolean file() {
        return true;
    }

    @Override
    IoBackend openBackend(int depth) {
        if (io != null) {
            throw new IllegalStateException("the back end of " + path + " is open already");
        }
        io = IoBackends.open(kind, image, BackendOptions.depth(depth));
        return io;
    }

    @Override
    void read(long position, NativeBuffer dst, int length) throws IOException {
        try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
            Qcow2Image.readInto(ch, dst, position, length);
        }
    }

    @Override
    void writeDurably(long position, NativeBuffer src, int length) throws IOException {
        try (FileChannel ch = FileChannel.open(path, StandardOpenOption.WRITE)) {
            ByteBuffer bb = src.buffer().byteBuffer().duplicate();
            bb.clear().limit(length);
            long pos = position;
            while (bb.hasRemaining()) {
                pos += ch.write(bb, pos);
            }
            ch.force(false);
        }
    }

    @Override
    int extendTo(long newSizeBytes) {
        if (newSizeBytes <= image.sizeBytes()) {
            return 0;
        }
        return image.extendTo(newSizeBytes);
    }

    @Override
    void truncate(long sizeBytes) throws IOException {
        try (FileChannel ch = FileChannel.open(path, StandardOpenOption.WRITE)) {
            if (ch.size() > sizeBytes) {
                ch.truncate(sizeBytes);
            }
        }
    }

    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        try {
            if (io != null) {
                io.close();
            }
        } finally {
            ImageLocks.release(image); // now, not when the ring's teardown lets go of the file
            image.close();
        }
    }

    @Override
    public String toString() {
        return path.toString();
    }
}
