package io.vblk.sys;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.agrona.concurrent.UnsafeBuffer;
import org.junit.jupiter.api.Test;

/**
 * The kernel copy the back ends use for bounce buffers ({@link ProcessVm}): from or into a page
 * of a memfd truncated under its shared mapping it fails with EFAULT (partly, at the faulting
 * iovec) and no SIGBUS is raised, so the JVM simply goes on; and its sixth argument (flags)
 * arrives intact (jnr-ffi issue 181).
 */
class ProcessVmTest {
    private static final int PAGE = Linux.PAGE_SIZE;

    @Test
    void isAvailableHere() {
        assertTrue(ProcessVm.available(), "process_vm_readv refused: errno " + ProcessVm.probeErrno());
    }

    @Test
    void flagsArriveAsTheSixthArgument() {
        NativeBuffer b = new NativeBuffer(64);
        UnsafeBuffer u = b.buffer();
        u.putLong(0, 42);
        u.putLong(16, b.address());
        u.putLong(24, 8);
        u.putLong(32, b.address() + 8);
        u.putLong(40, 8);
        int pid = Native.libc().getpid();
        // Flags must be 0: a 1 that arrives is refused, a 0 that arrives is honoured. A corrupted
        // sixth argument would make both answers the same.
        assertEquals(-1, Native.libc().process_vm_readv(pid, b.address() + 32, 1, b.address() + 16, 1, 1));
        assertEquals(Errno.EINVAL, Native.errno());
        assertEquals(8, Native.libc().process_vm_readv(pid, b.address() + 32, 1, b.address() + 16, 1, 0));
        assertEquals(42, u.getLong(8));
    }

    @Test
    void aTruncatedMemfdFailsWithEfaultAndRaisesNoSignal() {
        int fd = Memfd.create("cut", 2L * PAGE);
        try (Mapping guest = Mapping.map(fd, 0, 2L * PAGE, false, false)) {
            UnsafeBuffer g = new UnsafeBuffer(guest.address(), 2 * PAGE);
            g.setMemory(0, 2 * PAGE, (byte) 7);
            assertEquals(0, Native.libc().ftruncate(fd, PAGE)); // the second page is gone
            NativeBuffer local = new NativeBuffer(2 * PAGE, PAGE);
            NativeBuffer iov = new NativeBuffer(64);
            UnsafeBuffer v = iov.buffer();
            long target = iov.address();
            long source = iov.address() + 32;
            v.putLong(0, local.address());
            v.putLong(8, 2L * PAGE);
            // Two source iovecs: the intact page, then the truncated one.
            v.putLong(32, guest.address());
            v.putLong(40, PAGE);
            v.putLong(48, guest.address() + PAGE);
            v.putLong(56, PAGE);

            // Read: the intact page moves, the copy stops at the truncated one.
            assertEquals(PAGE, ProcessVm.read(target, 1, source, 2));
            assertEquals(7, local.buffer().getByte(PAGE - 1));
            // Starting at the truncated page: nothing moves, EFAULT.
            assertEquals(-Errno.EFAULT, ProcessVm.read(target, 1, source + 16, 1));
            // Write: into the truncated page, EFAULT too.
            assertEquals(-Errno.EFAULT, ProcessVm.write(target, 1, source + 16, 1));
            // Into the intact page: fine.
            v.putLong(8, PAGE);
            local.buffer().putByte(0, (byte) 9);
            assertEquals(PAGE, ProcessVm.write(target, 1, source, 1));
            assertEquals(9, g.getByte(0));
        } finally {
            Native.libc().close(fd);
        }
        // Still here: no SIGBUS was raised (one would have been an InternalError, or a crash).
    }
}
