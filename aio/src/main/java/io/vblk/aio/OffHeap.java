package io.vblk.aio;

import org.agrona.UnsafeApi;

import io.vblk.sys.Linux;
import io.vblk.sys.Mapping;

/**
 * Page-aligned, zeroed off-heap memory for slots' iovecs and bounce buffers: an anonymous mmap
 * on Linux (outside the JVM's direct-memory limit, returned to the kernel at close), aligned
 * malloc'd memory elsewhere (mmap flags differ between systems; malloc needs none).
 */
abstract class OffHeap implements AutoCloseable {
    /** Allocates {@code sizeBytes}, page-aligned and zeroed. */
    static OffHeap allocate(long sizeBytes) {
        return Image.LINUX ? new Mapped(Mapping.anonymous(sizeBytes, false)) : direct(sizeBytes);
    }

    /** Allocates aligned malloc'd memory: what {@link #allocate} does off Linux. */
    static OffHeap direct(long sizeBytes) {
        return new Direct(sizeBytes);
    }

    /** The first byte. */
    abstract long address();

    /** The usable length in bytes. */
    abstract long length();

    @Override
    public abstract void close();

    private static final class Mapped extends OffHeap {
        private final Mapping mapping;

        Mapped(Mapping mapping) {
            this.mapping = mapping;
        }

        @Override
        long address() {
            return mapping.address();
        }

        @Override
        long length() {
            return mapping.length();
        }

        @Override
        public void close() {
            mapping.close();
        }
    }

    private static final class Direct extends OffHeap {
        private final long base;
        private final long address;
        private final long length;
        private boolean freed;

        Direct(long sizeBytes) {
            if (sizeBytes <= 0) {
                throw new IllegalArgumentException("off-heap size must be positive: " + sizeBytes);
            }
            // malloc'd, over-allocated by a page to align the start.
            base = UnsafeApi.allocateMemory(sizeBytes + Linux.PAGE_SIZE);
            address = (base + Linux.PAGE_SIZE - 1) & -(long) Linux.PAGE_SIZE;
            length = sizeBytes;
            UnsafeApi.setMemory(address, sizeBytes, (byte) 0);
        }

        @Override
        long address() {
            return address;
        }

        @Override
        long length() {
            return length;
        }

        @Override
        public synchronized void close() {
            if (!freed) {
                freed = true;
                UnsafeApi.freeMemory(base);
            }
        }
    }
}
