package io.vblk.block.qcow2;

import java.io.IOException;

import io.vblk.aio.Image;
import io.vblk.aio.IoBackend;
import io.vblk.sys.NativeBuffer;

/**
 * A file host whose next header write lands, then reports an error (its fdatasync failed); or
 * is refused before it reaches the file; or whose next write after a header write is refused.
 */
final class HeaderFaultHost extends Qcow2Host {
    private final FileHost file;
    boolean failNextHeaderWrite;
    boolean dropNextHeaderWrite;
    boolean failWriteAfterHeader;
    private boolean headerWritten;
    /** The offset alignment reported (O_DIRECT's unit on a 4 KiB-sector disk), or 0 for the file's own. */
    private final int alignment;

    HeaderFaultHost(FileHost file) {
        this(file, 0);
    }

    /** A host that reports {@code alignment} as its offset alignment (reads and writes still reach the file). */
    HeaderFaultHost(FileHost file, int alignment) {
        this.file = file;
        this.alignment = alignment;
    }

    @Override
    void writeDurably(long position, NativeBuffer src, int length) throws IOException {
        if (position == 0 && dropNextHeaderWrite) {
            dropNextHeaderWrite = false;
            throw new NotWritten("injected: the header write failed");
        }
        if (position != 0 && headerWritten && failWriteAfterHeader) {
            failWriteAfterHeader = false;
            throw new NotWritten("injected: a write after the header failed");
        }
        file.writeDurably(position, src, length);
        headerWritten |= position == 0;
        if (position == 0 && failNextHeaderWrite) {
            failNextHeaderWrite = false;
            throw new IOException("injected: fdatasync after the header write failed");
        }
    }

    @Override
    String name() {
        return file.name();
    }

    @Override
    long sizeBytes() {
        return file.sizeBytes();
    }

    @Override
    long storedBytes() throws IOException {
        return file.storedBytes();
    }

    @Override
    boolean readOnly() {
        return file.readOnly();
    }

    @Override
    int offsetAlignment() {
        return alignment != 0 ? alignment : file.offsetAlignment();
    }

    @Override
    boolean file() {
        return true;
    }

    @Override
    Image image() {
        return file.image();
    }

    @Override
    int syncData() {
        return file.syncData();
    }

    @Override
    void refreshSize() {
        file.refreshSize();
    }

    @Override
    void activateLocks() {
        file.activateLocks();
    }

    @Override
    void inactivateLocks() {
        file.inactivateLocks();
    }

    /** A driver on this host, as {@link Qcow2#open} builds one (16 L2 cache tables). */
    Qcow2Driver open(Qcow2Options options) throws IOException {
        IoBackend io = openBackend(64);
        Qcow2Image meta = Qcow2Image.read(this, Math.max(512, offsetAlignment()), true, false,
                Qcow2Options.CHAIN_L1_BUDGET_BYTES);
        return new Qcow2Driver(meta, this, io, null, 16, options);
    }

    @Override
    IoBackend openBackend(int depth) {
        return file.openBackend(depth);
    }

    @Override
    void read(long position, NativeBuffer dst, int length) throws IOException {
        file.read(position, dst, length);
    }

    @Override
    int extendTo(long newSizeBytes) {
        return file.extendTo(newSizeBytes);
    }

    @Override
    void truncate(long sizeBytes) throws IOException {
        file.truncate(sizeBytes);
    }

    @Override
    public void close() {
        file.close();
    }
}
