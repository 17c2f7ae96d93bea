package io.vblk.sys;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A close racing calls on other threads: no call may reach the descriptor number after the
 * kernel handed it to another file. Before the use count, a call that had read the number and
 * was about to enter the kernel wrote into whatever file reused it.
 */
class PosixFileCloseRaceTest {
    private static final int BLOCK = 4096;

    @TempDir
    Path dir;

    @AfterEach
    void unhook() {
        PosixFile.beforeCall = null;
    }

    private Path file(String name, byte fill) throws Exception {
        byte[] b = new byte[4 * BLOCK];
        Arrays.fill(b, fill);
        Path p = dir.resolve(name);
        Files.write(p, b);
        return p;
    }

    @Test
    void aCallInFlightKeepsTheNumberFromBeingReusedAndTheLastUseCloses() throws Exception {
        Path a = file("a", (byte) 0xAA);
        Path b = file("b", (byte) 0xBB);
        PosixFile fa = PosixFile.open(a, false, false);
        int number = fa.fd();
        CountDownLatch inCall = new CountDownLatch(1);
        CountDownLatch proceed = new CountDownLatch(1);
        PosixFile.beforeCall = () -> {
            PosixFile.beforeCall = null; // only the writer below
            inCall.countDown();
            try {
                proceed.await(30, TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        };
        NativeBuffer data = new NativeBuffer(BLOCK, BLOCK);
        data.buffer().setMemory(0, BLOCK, (byte) 0xCC);
        AtomicReference<Long> written = new AtomicReference<>();
        Thread writer = new Thread(() -> written.set(fa.pwrite(data.address(), BLOCK, 0)));
        writer.start();
        assertTrue(inCall.await(30, TimeUnit.SECONDS));
        fa.close(); // while the write holds its use
        assertTrue(fa.isClosed());
        assertEquals(-Errno.EBADF, fa.pread(data.address(), BLOCK, 0), "a call after close never starts");
        try (PosixFile fb = PosixFile.open(b, false, false)) {
            assertNotEquals(number, fb.fd(), "the number is still A's while a call uses it");
            proceed.countDown();
            writer.join(30_000);
            assertEquals(BLOCK, written.get(), "the call that started before the close finished on A");
            byte[] expectB = new byte[4 * BLOCK];
            Arrays.fill(expectB, (byte) 0xBB);
            assertArrayEquals(expectB, Files.readAllBytes(b), "nothing reached B");
            assertEquals((byte) 0xCC, Files.readAllBytes(a)[0]);
            // The last use closed A's descriptor: the number is free again.
            assertTrue(!Files.exists(Path.of("/proc/self/fd/" + number))
                    || !Files.readSymbolicLink(Path.of("/proc/self/fd/" + number)).equals(a.toRealPath()), "A closed");
        }
    }

    @Test
    void closesRacingManyCallsNeverTouchAFileThatReusedTheNumber() throws Exception {
        Path victim = file("victim", (byte) 0xBB);
        byte[] expect = Files.readAllBytes(victim);
        AtomicBoolean stop = new AtomicBoolean();
        AtomicReference<PosixFile> current = new AtomicReference<>();
        List<Thread> callers = new ArrayList<>();
        AtomicReference<Throwable> failure = new AtomicReference<>();
        for (int t = 0; t < 3; t++) {
            Thread c = new Thread(() -> {
                NativeBuffer buf = new NativeBuffer(BLOCK, BLOCK);
                buf.buffer().setMemory(0, BLOCK, (byte) 0xCC);
                try {
                    while (!stop.get()) {
                        PosixFile f = current.get();
                        if (f != null) {
                            long rc = f.pwrite(buf.address(), 512, 0);
                            assertTrue(rc == 512 || rc == -Errno.EBADF, "rc " + rc);
                            int s = f.fdatasync();
                            assertTrue(s == 0 || s == -Errno.EBADF, "fdatasync " + s);
                        }
                    }
                } catch (Throwable e) {
                    failure.compareAndSet(null, e);
                }
            });
            c.start();
            callers.add(c);
        }
        try (PosixFile guard = PosixFile.open(victim, true, false)) {
            for (int i = 0; i < 2000 && failure.get() == null; i++) {
                PosixFile f = PosixFile.open(file("t" + (i % 4), (byte) 0), false, false);
                current.set(f);
                Thread.onSpinWait();
                f.close();
                // Opened read-write right after the close: the number is the first one free.
                try (PosixFile v = PosixFile.open(victim, false, false)) {
                    assertTrue(v.fd() >= 0 && guard.fd() >= 0);
                }
            }
        } finally {
            stop.set(true);
            for (Thread c : callers) {
                c.join(30_000);
            }
        }
        if (failure.get() != null) {
            throw new AssertionError(failure.get());
        }
        assertArrayEquals(expect, Files.readAllBytes(victim), "no write through a reused number");
    }
}
