package io.vblk.aio;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Path;

import org.agrona.UnsafeApi;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.Errno;

/** Linux AIO specifics: the kernel taking batches partly, refusing iocbs, and both reaping paths. */
class LinuxAioBackendTest {
    static final int BLOCK = 4096;

    @TempDir
    Path dir;

    private Image image(int blocks) throws IOException {
        Path path = dir.resolve("img");
        try (RandomAccessFile file = new RandomAccessFile(path.toFile(), "rw")) {
            file.setLength((long) blocks * BLOCK);
        }
        return Image.open(path, ImageOptions.defaults());
    }

    /** Takes at most three iocbs per call, answers EAGAIN to every third call, EIO once. */
    private static final class StingySubmit implements LinuxAioBackend.SubmitCall {
        int calls;
        int maxCount;
        boolean failedOnce;

        @Override
        public long submit(long context, int count, long iocbArray) {
            calls++;
            maxCount = Math.max(maxCount, count);
            if (calls % 3 == 0) {
                return -Errno.EAGAIN;
            }
            if (calls == 5 && !failedOnce) {
                failedOnce = true;
                return -Errno.EIO;
            }
            return LinuxAioBackend.IO_SUBMIT.submit(context, Math.min(3, count), iocbArray);
        }
    }

    @Test
    void partialSubmissionEagainAndARefusedIocbLoseNothingAndDoubleNothing() throws IOException {
        int ops = 200;
        int depth = 32;
        StingySubmit stingy = new StingySubmit();
        try (Image image = image(64);
             LinuxAioBackend io = new LinuxAioBackend(image, BackendOptions.depth(depth), stingy, true);
             GuestMemory guest = new GuestMemory(depth * BLOCK)) {
            Recorder rec = new Recorder(ops);
            IoVector v = new IoVector(1);
            int next = 0;
            while (rec.count() < ops) {
                while (next < ops) {
                    v.clear();
                    v.add(guest.address((next % depth) * BLOCK), BLOCK);
                    if (io.prepareRead((long) (next % 64) * BLOCK, v, next) != 0) {
                        break;
                    }
                    next++;
                }
                int before = io.pendingSubmit();
                int rc = io.submit();
                assertTrue(rc == -Errno.EAGAIN ? io.pendingSubmit() == before : io.pendingSubmit() == before - rc,
                        "submit returned " + rc + " with " + before + " pending, now " + io.pendingSubmit());
                io.completionEvent().read();
                io.poll(rec, depth);
                if (io.inFlight() > 0) {
                    io.awaitCompletions(100);
                }
            }
            assertTrue(stingy.maxCount > 3, "batches were never larger than the kernel took");
            assertTrue(stingy.failedOnce);
            int failed = 0;
            for (int i = 0; i < ops; i++) {
                long result = rec.result(i);
                if (result == -Errno.EIO) {
                    failed++;
                } else {
                    assertEquals(BLOCK, result, "op " + i);
                }
            }
            assertEquals(1, failed, "exactly the refused iocb fails");
            assertEquals(depth, io.freeSlots());
        }
    }

    @Test
    void flushFallsBackToFdatasyncWhenTheKernelRefusesFdsync() throws IOException {
        int[] fdsyncCalls = {0};
        LinuxAioBackend.SubmitCall noFdsync = (context, count, iocbArray) -> {
            long firstIocb = UnsafeApi.getLong(null, iocbArray);
            if (UnsafeApi.getShort(null, firstIocb + LinuxAioDescriptor.IOCB_OPCODE_OFFSET) == LinuxAioDescriptor.IOCB_CMD_FDSYNC) {
                fdsyncCalls[0]++;
                return -Errno.EINVAL;
            }
            return LinuxAioBackend.IO_SUBMIT.submit(context, count, iocbArray);
        };
        try (Image image = image(16);
             LinuxAioBackend io = new LinuxAioBackend(image, BackendOptions.depth(4), noFdsync, true);
             GuestMemory guest = new GuestMemory(BLOCK)) {
            Recorder rec = new Recorder(4);
            IoVector v = new IoVector(1);
            v.add(guest.address(0), BLOCK);
            assertEquals(0, io.prepareFlush(0));
            assertEquals(0, io.prepareWrite(0, v, 1));
            io.submit();
            io.drain(rec);
            assertEquals(0, rec.result(0));
            assertEquals(BLOCK, rec.result(1));
            assertEquals(0, io.prepareFlush(2));
            io.submit();
            io.drain(rec);
            assertEquals(0, rec.result(2));
            assertEquals(1, fdsyncCalls[0], "after one refusal flushes no longer go to the kernel");
        }
    }

    @Test
    void completionsAreReadFromTheMappedRingByDefault() throws IOException {
        try (Image image = image(16);
             LinuxAioBackend io = new LinuxAioBackend(image, BackendOptions.depth(8))) {
            assertTrue(io.userSpaceReaping(), "the kernel's aio_ring header was not recognised");
        }
    }

    @Test
    void ioGeteventsReapingWorksToo() throws IOException {
        int ops = 300;
        int depth = 16;
        try (Image image = image(64);
             LinuxAioBackend io = new LinuxAioBackend(image, BackendOptions.depth(depth), LinuxAioBackend.IO_SUBMIT, false);
             GuestMemory guest = new GuestMemory(depth * BLOCK)) {
            assertTrue(!io.userSpaceReaping());
            Recorder rec = new Recorder(ops);
            IoVector v = new IoVector(1);
            int next = 0;
            while (rec.count() < ops) {
                while (next < ops) {
                    v.clear();
                    v.add(guest.address((next % depth) * BLOCK), BLOCK);
                    if (io.prepareWrite((long) (next % 64) * BLOCK, v, next) != 0) {
                        break;
                    }
                    next++;
                }
                io.submit();
                io.completionEvent().read();
                if (io.poll(rec, 5) == 0) {
                    io.awaitCompletions(100);
                }
            }
            rec.assertAll(0, ops, BLOCK);
        }
    }
}
