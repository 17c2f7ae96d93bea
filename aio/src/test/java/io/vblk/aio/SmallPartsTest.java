package io.vblk.aio;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

import io.vblk.sys.Errno;

class SmallPartsTest {
    @Test
    void ioVectorFillsToCapacityThenRefuses() {
        IoVector v = new IoVector(2);
        assertEquals(0, v.add(0x1000, 512));
        assertEquals(-Errno.EINVAL, v.add(0x3000, -1));
        assertEquals(0, v.add(0x2000, 1024));
        assertEquals(-Errno.EINVAL, v.add(0x3000, 1));
        assertEquals(2, v.count());
        assertEquals(1536, v.totalLength());
        assertEquals(0x2000, v.address(1));
        assertThrows(IndexOutOfBoundsException.class, () -> v.length(2));
        v.clear();
        assertEquals(0, v.count());
        assertEquals(0, v.totalLength());
    }

    @Test
    void backendKindsParseFromTheirNames() {
        assertEquals(BackendKind.LINUX_AIO, BackendKind.parse("linux-aio"));
        assertEquals(BackendKind.IO_URING, BackendKind.parse("io_uring"));
        assertEquals(BackendKind.IO_URING, BackendKind.parse("IO-URING"));
        assertEquals(BackendKind.THREADS, BackendKind.parse(" threads "));
        assertEquals(BackendKind.NULL, BackendKind.parse("null"));
        for (BackendKind kind : BackendKind.values()) {
            assertEquals(kind, BackendKind.parse(kind.cliName()));
        }
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> BackendKind.parse("aio"));
        assertTrue(e.getMessage().contains("linux-aio"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> BackendKind.parse(null));
    }

    @Test
    void spscRingIsFifoAndBounded() throws Exception {
        SpscIntRing ring = new SpscIntRing(3);
        for (int i = 0; i < 4; i++) {
            assertTrue(ring.offer(i));
        }
        assertFalse(ring.offer(4));
        assertEquals(4, ring.size());
        assertEquals(0, ring.poll());
        assertTrue(ring.offer(4));
        for (int i = 1; i <= 4; i++) {
            assertEquals(i, ring.poll());
        }
        assertEquals(-1, ring.poll());

        int count = 200_000;
        SpscIntRing handoff = new SpscIntRing(64);
        Thread producer = new Thread(() -> {
            for (int i = 0; i < count; ) {
                if (handoff.offer(i)) {
                    i++;
                } else {
                    Thread.onSpinWait();
                }
            }
        });
        producer.start();
        for (int expected = 0; expected < count; ) {
            int value = handoff.poll();
            if (value >= 0) {
                assertEquals(expected++, value);
            } else {
                Thread.onSpinWait();
            }
        }
        producer.join();
    }

    @Test
    void offHeapMemoryIsPageAlignedAndZeroedEitherWay() {
        for (OffHeap memory : new OffHeap[] {OffHeap.allocate(10_000), OffHeap.direct(10_000)}) {
            try (memory) {
                assertEquals(0, memory.address() % 4096);
                assertEquals(10_000, memory.length());
                org.agrona.concurrent.UnsafeBuffer bytes = new org.agrona.concurrent.UnsafeBuffer(memory.address(), 10_000);
                for (int i = 0; i < 10_000; i += 8) {
                    assertEquals(0, bytes.getLong(i));
                }
                bytes.putLong(9_992, -1);
            }
        }
    }

    @Test
    void backendOptionsRejectNonsense() {
        assertThrows(IllegalArgumentException.class, () -> BackendOptions.depth(0));
        assertThrows(IllegalArgumentException.class, () -> BackendOptions.depth(4).maxSegments(1025));
        assertEquals(4, BackendOptions.depth(4).workerThreads());
        assertEquals(BackendOptions.DEFAULT_MAX_WORKERS, BackendOptions.depth(128).workerThreads());
    }

    @Test
    void theNullBackEndNeedsNoImage() {
        try (IoBackend io = IoBackends.open(BackendKind.NULL, null, 4)) {
            Recorder rec = new Recorder(4);
            IoVector v = new IoVector(1);
            v.add(0, 4096);
            assertEquals(0, io.prepareRead(1L << 40, v, 0));
            assertEquals(0, io.prepareWriteZeroes(0, 1 << 20, true, 1));
            assertEquals(2, io.submit());
            assertEquals(2, io.poll(rec, 4));
            assertEquals(4096, rec.result(0));
            assertEquals(0, rec.result(1));
        }
        assertThrows(IllegalArgumentException.class, () -> IoBackends.open(BackendKind.THREADS, null, 4));
    }

    @Test
    void aSubmitterThatReapsGetsTheNullBackEndsCompletionsWithoutAnEventfdWrite() {
        IoVector v = new IoVector(1);
        v.add(0, 4096);
        try (IoBackend io = IoBackends.open(BackendKind.NULL, null, 4)) {
            // Declined offer (the default): a submit that finished operations raises the eventfd.
            assertEquals(0, io.prepareRead(0, v, 0));
            assertEquals(1, io.submit());
            assertFalse(io.completionsReady(), "nothing promised without the offer");
            assertEquals(1, io.completionEvent().await(0), "the eventfd was written");
            assertEquals(1, io.poll(new Recorder(4), 4));
        }
        try (IoBackend io = IoBackends.open(BackendKind.NULL, null, 4)) {
            assertTrue(io.reapOnSubmittingThread(), "the null back end takes the offer");
            assertFalse(io.completionsReady());
            assertEquals(0, io.prepareRead(0, v, 0));
            assertEquals(0, io.prepareFlush(1));
            assertFalse(io.completionsReady(), "prepared, not yet performed");
            assertEquals(2, io.pendingSubmit());
            assertEquals(2, io.submit());
            assertTrue(io.completionsReady(), "finished inside submit, waiting for poll");
            assertEquals(0, io.completionEvent().await(0), "and no eventfd write for them");
            assertEquals(2, io.inFlight(), "counted in flight until reaped");
            Recorder rec = new Recorder(4);
            assertEquals(1, io.poll(rec, 1), "a poll stopped at max");
            assertTrue(io.completionsReady(), "the rest is still reported");
            assertEquals(1, io.poll(rec, 4));
            assertFalse(io.completionsReady());
            assertEquals(0, io.inFlight());
            assertEquals(4096, rec.result(0));
            assertEquals(0, rec.result(1));
        }
    }
}
