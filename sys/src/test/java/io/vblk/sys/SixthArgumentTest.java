package io.vblk.sys;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;

import org.agrona.concurrent.UnsafeBuffer;
import org.junit.jupiter.api.Test;

/**
 * jnr-ffi issue 181: the x86-64 fast stubs corrupt the 6th argument of 6-argument functions.
 * mmap's 6th argument is the file offset: a corrupted one fails with EINVAL or maps the wrong page.
 */
class SixthArgumentTest {
    @Test
    void mmapOffsetArrivesIntact() {
        int pages = 8;
        int fd = Memfd.create("sixth-arg", (long) pages * Linux.PAGE_SIZE);
        try {
            try (Mapping whole = Mapping.map(fd, 0, (long) pages * Linux.PAGE_SIZE, false, false)) {
                UnsafeBuffer b = new UnsafeBuffer(whole.address(), (int) whole.length());
                for (int p = 0; p < pages; p++) {
                    b.putLong(p * Linux.PAGE_SIZE, 0x1000_0000L + p);
                }
            }
            for (int p = 1; p < pages; p++) {
                long offset = (long) p * Linux.PAGE_SIZE;
                try (Mapping one = Mapping.map(fd, offset, Linux.PAGE_SIZE, true, false)) {
                    assertEquals(0x1000_0000L + p, new UnsafeBuffer(one.address(), 8).getLong(0),
                            "page mapped at offset " + offset);
                }
            }
        } finally {
            Native.libc().close(fd);
        }
    }

    @Test
    void rawSyscallPassesItsFifthArgumentAsTheSixthParameter() {
        // pread64(fd, buf, count, offset) via syscall(17, ...): a4 is the offset; a5 unused but passed.
        int fd = Memfd.create("syscall-arg", 2 * Linux.PAGE_SIZE);
        NativeBuffer src = new NativeBuffer(8);
        src.buffer().putLong(0, 0xCAFEBABEL);
        try {
            assertEquals(8, Native.libc().pwrite(fd, src.address(), 8, Linux.PAGE_SIZE + 8));
            NativeBuffer dst = new NativeBuffer(8);
            long rc = Native.syscall(17, fd, dst.address(), 8, Linux.PAGE_SIZE + 8, 0x5555_5555_5555L);
            assertEquals(8, rc);
            assertEquals(0xCAFEBABEL, dst.buffer().getLong(0));
            // getpid through syscall agrees with libc: the number (first parameter) arrives too.
            assertEquals(Native.libc().getpid(), Native.syscall(Linux.SYS_GETPID, 0, 0, 0, 0, 0));
            assertNotEquals(0, Native.libc().getpid());
        } finally {
            Native.libc().close(fd);
        }
    }
}
