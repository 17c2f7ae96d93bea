package io.vblk.aio;

import java.util.SplittableRandom;

import org.agrona.concurrent.UnsafeBuffer;

import io.vblk.sys.Mapping;

/** Test stand-in for guest memory: a page-aligned anonymous mapping with byte access. */
final class GuestMemory implements AutoCloseable {
    private final Mapping mapping;
    private final UnsafeBuffer bytes;

    GuestMemory(int sizeBytes) {
        mapping = Mapping.anonymous(sizeBytes, true);
        bytes = new UnsafeBuffer(mapping.address(), sizeBytes);
    }

    long address(int offset) {
        return mapping.address() + offset;
    }

    UnsafeBuffer bytes() {
        return bytes;
    }

    void fillRandom(int offset, int length, long seed) {
        SplittableRandom random = new SplittableRandom(seed);
        for (int i = 0; i < length; i++) {
            bytes.putByte(offset + i, (byte) random.nextInt(1, 256));
        }
    }

    void fill(int offset, int length, byte value) {
        bytes.setMemory(offset, length, value);
    }

    byte[] copy(int offset, int length) {
        byte[] out = new byte[length];
        bytes.getBytes(offset, out);
        return out;
    }

    @Override
    public void close() {
        mapping.close();
    }
}
