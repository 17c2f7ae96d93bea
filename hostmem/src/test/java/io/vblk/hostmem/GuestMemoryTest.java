package io.vblk.hostmem;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import org.agrona.concurrent.UnsafeBuffer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.Mapping;
import io.vblk.sys.Memfd;
import io.vblk.sys.Native;

class GuestMemoryTest {
    private static final long KIB = 1024;
    private static final long MIB = 1024 * KIB;
    private static final long GIB = 1024 * MIB;
    /** A host address that is never dereferenced: regions built on it only test arithmetic. */
    private static final long FAKE_HOST = 0x7100_0000_0000L;

    /** Collects segments as {host, length} pairs. */
    static final class Segments implements SegmentSink {
        final List<long[]> list = new ArrayList<>();
        int limit = Integer.MAX_VALUE;

        @Override
        public boolean segment(long hostAddress, int length) {
            if (list.size() == limit) {
                return false;
            }
            list.add(new long[] {hostAddress, length});
            return true;
        }
    }

    @Test
    void translatesARangeInsideOneRegion() {
        try (GuestMemory mem = GuestMemory.builder().guarded(true).addMemfd(0x10000, 64 * KIB).build()) {
            long host = mem.region(0).hostAddress();
            assertEquals(host + 0x100, mem.hostAddress(0x10100, 512, true));
            assertEquals(host, mem.hostAddress(0x10000, 64 * KIB, false));
            Segments s = new Segments();
            assertEquals(1, mem.translate(0x10100, 512, true, s));
            assertArrayEquals(new long[] {host + 0x100, 512}, s.list.get(0));
            // the memory is real: write through the host address, read it back
            UnsafeBuffer b = new UnsafeBuffer(host, (int) (64 * KIB));
            b.putLong(0x100, 0x1122334455667788L);
            assertEquals(0x1122334455667788L, b.getLong(0x100));
        }
    }

    @Test
    void refusesRangesThatLeaveTheLastRegionOrStartInAHole() {
        try (GuestMemory mem = GuestMemory.builder().addMemfd(0x10000, 64 * KIB).build()) {
            Segments s = new Segments();
            assertEquals(GuestMemory.NO_ADDRESS, mem.hostAddress(0x1ffff, 2, false));
            assertEquals(GuestMemory.NOT_MAPPED, mem.translate(0x1ffff, 2, false, s));
            assertEquals(GuestMemory.NO_ADDRESS, mem.hostAddress(0xffff, 1, false));
            assertEquals(GuestMemory.NOT_MAPPED, mem.translate(0xffff, 2, false, s));
            assertEquals(GuestMemory.NO_ADDRESS, mem.hostAddress(0x20000, 1, false));
            assertTrue(s.list.isEmpty());
            assertTrue(mem.hostAddress(0x1ffff, 1, false) > 0, "last byte of the region");
        }
    }

    @Test
    void splitsARangeAcrossAdjacentRegions() {
        try (GuestMemory mem = GuestMemory.builder().guarded(true)
                .addMemfd(0, 4 * KIB).addMemfd(4 * KIB, 8 * KIB).addMemfd(12 * KIB, 4 * KIB).build()) {
            assertEquals(GuestMemory.NO_ADDRESS, mem.hostAddress(4 * KIB - 16, 32, false), "one region only");
            Segments s = new Segments();
            assertEquals(3, mem.translate(4 * KIB - 16, 16 + 8 * KIB + 100, true, s));
            assertArrayEquals(new long[] {mem.region(0).hostAddress() + 4 * KIB - 16, 16}, s.list.get(0));
            assertArrayEquals(new long[] {mem.region(1).hostAddress(), 8 * KIB}, s.list.get(1));
            assertArrayEquals(new long[] {mem.region(2).hostAddress(), 100}, s.list.get(2));
        }
    }

    @Test
    void refusesARangeAcrossAHoleAndEmitsNothing() {
        try (GuestMemory mem = GuestMemory.builder().addMemfd(0, 4 * KIB).addMemfd(8 * KIB, 4 * KIB).build()) {
            Segments s = new Segments();
            assertEquals(GuestMemory.NOT_MAPPED, mem.translate(4 * KIB - 1, 2, false, s));
            assertTrue(s.list.isEmpty(), "the valid first part must not be emitted");
        }
    }

    @Test
    void refusesWritesToReadOnlyRegionsAndAllowsReads() {
        int fd = Memfd.create("ro", 8 * KIB);
        try (GuestMemory mem = GuestMemory.builder().addMemfd(0, 4 * KIB).addRegion(4 * KIB, 4 * KIB, fd, 0, 0, true)
                .build()) {
            assertTrue(mem.hostAddress(4 * KIB, 16, false) > 0);
            assertEquals(GuestMemory.NO_ADDRESS, mem.hostAddress(4 * KIB, 16, true));
            Segments s = new Segments();
            assertEquals(GuestMemory.READ_ONLY, mem.translate(4 * KIB - 8, 16, true, s));
            assertTrue(s.list.isEmpty());
            assertEquals(2, mem.translate(4 * KIB - 8, 16, false, s));
        } finally {
            Native.libc().close(fd);
        }
    }

    @Test
    void neverWrapsPastTheTopOfTheAddressSpace() {
        long top = -64 * KIB; // 0xffff_ffff_ffff_0000: the region ends exactly at 2^64
        try (GuestMemory mem = GuestMemory.builder().addMemfd(0, 4 * KIB).addMemfd(top, 64 * KIB).build()) {
            Segments s = new Segments();
            assertTrue(mem.hostAddress(-1L, 1, false) > 0, "last byte of the address space");
            assertEquals(GuestMemory.NO_ADDRESS, mem.hostAddress(-1L, 2, false));
            assertEquals(GuestMemory.NOT_MAPPED, mem.translate(-1L, 2, false, s), "must not wrap into gpa 0");
            assertEquals(GuestMemory.NOT_MAPPED, mem.translate(top, Long.MAX_VALUE, false, s));
            assertEquals(GuestMemory.NO_ADDRESS, mem.hostAddress(0, Long.MAX_VALUE, false));
            assertEquals(GuestMemory.NO_ADDRESS, mem.hostAddress(0, Long.MIN_VALUE, false));
            assertEquals(GuestMemory.BAD_LENGTH, mem.translate(0, -1, false, s));
            assertEquals(0, mem.translate(0x123456789L, 0, false, s), "an empty range touches nothing");
            assertEquals(GuestMemory.NO_ADDRESS, mem.hostAddress(0, 0, false));
            assertTrue(s.list.isEmpty());
        }
    }

    @Test
    void rejectsBadTables() {
        assertThrows(IllegalArgumentException.class, () -> GuestMemory.builder().addHostMemory(0, 0, FAKE_HOST, false).build());
        IllegalArgumentException wrap = assertThrows(IllegalArgumentException.class,
                () -> GuestMemory.builder().addHostMemory(-4096, 8192, FAKE_HOST, false).build());
        assertTrue(wrap.getMessage().contains("wraps"), wrap.getMessage());
        IllegalArgumentException overlap = assertThrows(IllegalArgumentException.class, () -> GuestMemory.builder()
                .addHostMemory(0x1000, 0x2000, FAKE_HOST, false).addHostMemory(0x2fff, 0x10, FAKE_HOST, false).build());
        assertTrue(overlap.getMessage().contains("0x1000") && overlap.getMessage().contains("0x2fff"), overlap.getMessage());
        assertThrows(IllegalArgumentException.class, () -> GuestMemory.builder().addRegion(0, 4096, -1, 0, 0, false));
    }

    @Test
    void sortsRegionsByUnsignedGuestAddress() {
        try (GuestMemory mem = GuestMemory.builder().addHostMemory(-8192, 4096, FAKE_HOST, false)
                .addHostMemory(0x1000, 0x1000, FAKE_HOST + 0x10000, false)
                .addHostMemory(0, 0x1000, FAKE_HOST + 0x20000, false).build()) {
            assertEquals(0, mem.region(0).guestAddress());
            assertEquals(0x1000, mem.region(1).guestAddress());
            assertEquals(-8192, mem.region(2).guestAddress());
            assertEquals(2, mem.regionOf(-8192 + 4095));
            assertEquals(-1, mem.regionOf(-4096));
        }
    }

    @Test
    void cutsSegmentsAtOneGibibyte() {
        // arithmetic only: FAKE_HOST is never dereferenced
        try (GuestMemory mem = GuestMemory.builder().addHostMemory(0, 4 * GIB, FAKE_HOST, false)
                .addHostMemory(4 * GIB, GIB, FAKE_HOST + 8 * GIB, false).build()) {
            Segments s = new Segments();
            assertEquals(4, mem.translate(GIB + 10, 3 * GIB + 100, false, s));
            assertArrayEquals(new long[] {FAKE_HOST + GIB + 10, GIB}, s.list.get(0));
            assertArrayEquals(new long[] {FAKE_HOST + 2 * GIB + 10, GIB}, s.list.get(1));
            assertArrayEquals(new long[] {FAKE_HOST + 3 * GIB + 10, GIB - 10}, s.list.get(2));
            assertArrayEquals(new long[] {FAKE_HOST + 8 * GIB, 110}, s.list.get(3));
        }
    }

    @Test
    void aSinkCanStopTheTranslation() {
        try (GuestMemory mem = GuestMemory.builder().addMemfd(0, 4 * KIB).addMemfd(4 * KIB, 4 * KIB)
                .addMemfd(8 * KIB, 4 * KIB).build()) {
            Segments s = new Segments();
            s.limit = 2;
            assertEquals(GuestMemory.SINK_STOPPED, mem.translate(0, 12 * KIB, false, s));
            assertEquals(2, s.list.size());
        }
    }

    /** QEMU with -m 3G on q35: gpa 0 size 2G at offset 0, gpa 4G size 1G at offset 2G, one memfd (scaled down). */
    @Test
    void mapsTwoRegionsOfOneMemfdAtDifferentOffsetsLikeQemu() {
        int fd = Memfd.create("qemu-ram", 3 * MIB);
        try (GuestMemory mem = GuestMemory.builder().guarded(true)
                .addRegion(4 * MIB, MIB, fd, 2 * MIB, 0x7f00_0020_0000L, false)
                .addRegion(0, 2 * MIB, fd, 0, 0x7f00_0000_0000L, false).build();
                Mapping whole = Mapping.map(fd, 0, 3 * MIB, false, false)) {
            assertEquals(2, mem.regionCount());
            assertEquals(2 * MIB, mem.region(1).fdOffset());
            new UnsafeBuffer(mem.hostAddress(4 * MIB + 8, 8, true), 8).putLong(0, 0xfeedL);
            new UnsafeBuffer(mem.hostAddress(8, 8, true), 8).putLong(0, 0xbeefL);
            UnsafeBuffer file = new UnsafeBuffer(whole.address(), (int) whole.length());
            assertEquals(0xfeedL, file.getLong((int) (2 * MIB + 8)), "gpa 4M+8 is fd offset 2M+8");
            assertEquals(0xbeefL, file.getLong(8));
            assertEquals(GuestMemory.NO_ADDRESS, mem.hostAddress(2 * MIB, 1, false), "the hole between 2M and 4M");
            assertEquals(4 * MIB + 0x10, mem.userToGuest(0x7f00_0020_0010L));
            assertEquals(0x10, mem.userToGuest(0x7f00_0000_0010L));
            assertEquals(-1, mem.userToGuest(0x7f00_0030_0000L));
        } finally {
            Native.libc().close(fd);
        }
    }

    @Test
    void mapsAnUnalignedFdOffset() {
        int fd = Memfd.create("unaligned", 16 * KIB);
        try (Mapping whole = Mapping.map(fd, 0, 16 * KIB, false, false);
                GuestMemory mem = GuestMemory.builder().addRegion(0, 4 * KIB, fd, 4096 + 100, 0, false).build()) {
            new UnsafeBuffer(whole.address(), (int) (16 * KIB)).putByte(4096 + 100, (byte) 42);
            assertEquals(42, new UnsafeBuffer(mem.hostAddress(0, 1, false), 1).getByte(0));
        } finally {
            Native.libc().close(fd);
        }
    }

    @Test
    void mapsFiles(@TempDir Path dir) throws IOException {
        Path image = dir.resolve("ram.img");
        byte[] content = new byte[8192];
        content[4096 + 7] = 7;
        Files.write(image, content);
        try (GuestMemory mem = GuestMemory.builder().addFile(0x100000, 4096, image, 4096, true).build()) {
            assertTrue(mem.region(0).readOnly());
            assertTrue(mem.region(0).fd() >= 0);
            assertEquals(7, new UnsafeBuffer(mem.hostAddress(0x100007, 1, false), 1).getByte(0));
            assertEquals(GuestMemory.NO_ADDRESS, mem.hostAddress(0x100007, 1, true));
        }
        assertThrows(IllegalArgumentException.class,
                () -> GuestMemory.builder().addFile(0, 8192, image, 4096, true).build(), "runs past the end of the file");
    }

    @Test
    void manyRegionsAreFoundByBinarySearch() {
        GuestMemory.Builder b = GuestMemory.builder();
        for (int i = 0; i < 64; i++) {
            b.addMemfd(i * 2 * 4096L, 4096); // every other page: 64 regions with holes between
        }
        try (GuestMemory mem = b.build()) {
            assertEquals(64, mem.regionCount());
            for (int i = 0; i < 64; i++) {
                long gpa = i * 2 * 4096L;
                assertEquals(mem.region(i).hostAddress() + 5, mem.hostAddress(gpa + 5, 10, false));
                assertEquals(GuestMemory.NO_ADDRESS, mem.hostAddress(gpa + 4096, 1, false));
            }
        }
    }

    @Test
    void closeIsIdempotentAndLeavesBorrowedDescriptorsOpen() {
        int fd = Memfd.create("borrowed", 4096);
        try {
            GuestMemory mem = GuestMemory.builder().addRegion(0, 4096, fd, 0, 0, false).build();
            assertFalse(mem.isClosed());
            mem.close();
            mem.close();
            assertTrue(mem.isClosed());
            assertTrue(Native.libc().fcntl(fd, io.vblk.sys.Linux.F_GETFL, 0) >= 0, "caller's fd still open");
        } finally {
            Native.libc().close(fd);
        }
    }

    @Test
    void closeWithAUserAttachedUnmapsOnlyWhenItDetaches() {
        GuestMemory mem = GuestMemory.builder().addMemfd(0, 1 << 20).build();
        long host = mem.hostAddress(0, 4096, true);
        Object device = "device-1";
        mem.attach(device);
        mem.close();
        assertTrue(mem.isClosed());
        assertFalse(mem.isUnmapped(), "unmapped under its user");
        assertEquals(List.of("device-1"), mem.users());
        org.agrona.UnsafeApi.putLong(host, 42); // still mapped: before the fix, SIGSEGV
        assertThrows(IllegalStateException.class, () -> mem.attach("device-2"));
        mem.detach(device);
        assertTrue(mem.isUnmapped());
    }

    /** Session 17: what is held for as long as the memory stays mapped (a budget) goes back at the real unmap. */
    @Test
    void whenUnmappedRunsAtTheRealUnmap() {
        java.util.concurrent.atomic.AtomicInteger ran = new java.util.concurrent.atomic.AtomicInteger();
        GuestMemory alone = GuestMemory.builder().addMemfd(0, 1 << 20).build();
        alone.whenUnmapped(ran::incrementAndGet);
        assertEquals(0, ran.get());
        alone.close();
        assertEquals(1, ran.get(), "unmapped at close: no user");
        alone.whenUnmapped(ran::incrementAndGet);
        assertEquals(2, ran.get(), "already unmapped: at once");

        GuestMemory used = GuestMemory.builder().addMemfd(0, 1 << 20).build();
        used.whenUnmapped(ran::incrementAndGet);
        used.attach("device-1");
        used.attach("device-2");
        used.close();
        used.detach("device-1");
        assertEquals(2, ran.get(), "still mapped under device-2");
        used.detach("device-2");
        assertTrue(used.isUnmapped());
        assertEquals(3, ran.get(), "once, at the last detach");
        used.detach("device-2");
        used.close();
        assertEquals(3, ran.get(), "never again");
    }
}
