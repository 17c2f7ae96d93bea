package io.vblk.aio;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Path;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import org.agrona.UnsafeApi;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.Errno;
import io.vblk.sys.FaultPoints;

/**
 * Linux AIO's recovery of an io_submit answer lost to a late fault (LinuxAioBackend.resolveCall:
 * the leading iocbs whose key the kernel overwrote are the taken ones) against a key left over
 * from an earlier call. The kernel writes an iocb's key (KIOCB_KEY, 0) before it dispatches the
 * opcode, and can still refuse that iocb synchronously after (fs/aio.c __io_submit_one: an
 * FDSYNC on a file without fsync, aio_prep_rw's checks, ENOMEM); io_submit then returns how many
 * it took before it, and that iocb is queued again with the kernel's 0 in its key. If the next
 * io_submit does not reach it (EAGAIN: the AIO ring is full, refused before any key write) and
 * a late fault cuts that answer off, the stale 0 reads as "taken": the iocb stays counted in
 * flight for ever and nothing submits it (a drain that never returns). The kernel's two answers
 * are reproduced by the replaceable SubmitCall (the refusal-after-key cannot be chosen on a
 * file system with fsync); the iocbs the kernel does take go to the real io_submit.
 */
class AioKeyRecoveryAttackTest {
    private static final int BLOCK = 4096;
    private static final int DEPTH = 8;

    @TempDir
    Path dir;

    @AfterEach
    void disarm() {
        FaultPoints.disarm();
    }

    @Test
    void aKeyTheKernelWroteBeforeRefusingIsNotReadAsTakenByTheNextCall() throws Exception {
        int ops = 4;
        int[] calls = {0};
        LinuxAioBackend.SubmitCall kernel = (context, count, iocbs) -> {
            int call = calls[0]++;
            if (call == 0) {
                // Takes the first two; reaches the third, writes its key, refuses it.
                long rc = LinuxAioBackend.IO_SUBMIT.submit(context, Math.min(2, count), iocbs);
                if (rc == 2 && count > 2) {
                    long third = UnsafeApi.getLong(iocbs + 2L * Long.BYTES);
                    UnsafeApi.putInt(third + LinuxAioDescriptor.IOCB_KEY_OFFSET, 0);
                }
                return rc;
            }
            if (call == 1) {
                FaultPoints.arm(FaultPoints.SUBMIT_RETURNED); // this answer is lost
                return -Errno.EAGAIN; // ring full: refused before any key is written
            }
            return LinuxAioBackend.IO_SUBMIT.submit(context, count, iocbs);
        };
        try (Image image = Image.open(newFile(), ImageOptions.defaults());
             GuestMemory guest = new GuestMemory(8 * BLOCK)) {
            LinuxAioBackend io = new LinuxAioBackend(image, BackendOptions.depth(DEPTH), kernel, true);
            try {
                for (int i = 0; i < ops; i++) {
                    IoVector v = new IoVector(1);
                    v.add(guest.address(i * BLOCK), BLOCK);
                    assertEquals(0, io.prepareRead((long) i * BLOCK, v, i));
                }
                assertThrows(InternalError.class, io::submit);
                assertTrue(FaultPoints.fired());
                // pendingSubmit() first: the submitting thread asks it every round, and it resolves the lost answer.
                assertEquals(ops - 2, io.pendingSubmit(), "the refused one and the one never reached are pending again");
                assertEquals(2, io.inFlight(), "only the two the kernel took are in flight");
                Recorder rec = new Recorder(DEPTH);
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60); // a hang guard
                while (io.inFlight() > 0 || io.pendingSubmit() > 0) {
                    assertTrue(System.nanoTime() < deadline, "in flight stays " + io.inFlight() + ", pending "
                            + io.pendingSubmit() + " after " + rec.count() + " completions");
                    io.submit();
                    if (io.poll(rec, DEPTH) == 0) {
                        io.awaitCompletions(10);
                    }
                }
                rec.assertAll(0, ops, BLOCK); // each once
                assertEquals(DEPTH, io.freeSlots());
            } finally {
                CompletableFuture<Void> close = CompletableFuture.runAsync(io::close, r -> {
                    Thread t = new Thread(r);
                    t.setDaemon(true);
                    t.start();
                });
                try {
                    close.get(30, TimeUnit.SECONDS);
                } catch (java.util.concurrent.TimeoutException e) {
                    throw new AssertionError("close never returned: an iocb counted in flight that nothing submits", e);
                }
            }
        }
    }

    private Path newFile() throws IOException {
        Path path = dir.resolve("img");
        try (RandomAccessFile file = new RandomAccessFile(path.toFile(), "rw")) {
            file.setLength(64L * BLOCK);
        }
        return path;
    }
}
