package io.vblk.sys;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.ImageLock.LockedException;
import io.vblk.sys.ImageLock.Locking;

/**
 * A lock whose only holder is an io_uring ring no process has open, as a SIGKILLed vblk leaves
 * its image while the kernel tears the ring down (measured here: 20-40 ms after the reap): the
 * next open says once that it waits, and gets the image when the kernel lets go (the ring is
 * closed only after that line, so the wait is certain); with
 * {@link ImageLock#DEAD_HOLDER_WAIT_PROPERTY} 0 it is refused at once, naming no holder.
 */
class DeadHolderWaitTest {
    @TempDir
    Path dir;

    /**
     * Takes a writer's lock on {@code image} and leaves the description to a ring only; the
     * ring's fd, or -1. Made on a thread that then ends, as a killed process's threads have: a
     * live creator would have to run the ring's exit task work before the kernel lets go.
     */
    private static int ringHolding(Path image) throws InterruptedException {
        int[] out = {-1};
        Thread t = new Thread(() -> out[0] = ringOf(image), "ring-maker");
        t.start();
        t.join();
        return out[0];
    }

    private static int ringOf(Path image) {
        try (PosixFile f = PosixFile.open(image, false, false)) {
            ImageLock.acquire(f.fd(), image, ImageLock.WRITER, Locking.ON, s -> { });
            NativeBuffer params = new NativeBuffer(120);
            long ring = Native.syscall(Linux.SYS_IO_URING_SETUP, 4, params.address(), 0, 0, 0);
            if (ring < 0) {
                return -1;
            }
            NativeBuffer arg = new NativeBuffer(Integer.BYTES);
            arg.buffer().putInt(0, f.fd());
            assertTrue(Native.syscall(Linux.SYS_IO_URING_REGISTER, ring, 2 /* IORING_REGISTER_FILES */, arg.address(), 1, 0) >= 0);
            java.lang.ref.Reference.reachabilityFence(params);
            java.lang.ref.Reference.reachabilityFence(arg);
            return (int) ring;
        }
    }

    @Test
    void aLockOnlyARingHoldsIsWaitedOutAndTheWaitSaid() throws Exception {
        Path image = dir.resolve("a.img");
        Files.write(image, new byte[1 << 20]);
        int ring = ringHolding(image);
        assumeTrue(ring >= 0, "io_uring refused here");
        List<String> said = new CopyOnWriteArrayList<>();
        String before = System.getProperty(ImageLock.DEAD_HOLDER_WAIT_PROPERTY);
        // A hang guard: a ring closed in a live JVM took 3.5 s and more than 10 s here to let go.
        System.setProperty(ImageLock.DEAD_HOLDER_WAIT_PROPERTY, "120000");
        try (PosixFile f = PosixFile.open(image, false, false)) {
            // The ring goes only once the wait was announced: the kernel lets go while we wait.
            boolean locked = ImageLock.acquire(f.fd(), image, ImageLock.WRITER, Locking.ON, line -> {
                said.add(line);
                DirectoryFd.closeFd(ring);
            });
            assertTrue(locked);
        } finally {
            if (said.isEmpty()) {
                DirectoryFd.closeFd(ring);
            }
            restore(before);
        }
        assertEquals(1, said.size(), said.toString());
        assertTrue(said.get(0).contains(image.toString()) && said.get(0).contains("no live process"), said.get(0));
    }

    @Test
    void aWaitBoundedToZeroRefusesAtOnce() throws Exception {
        Path image = dir.resolve("b.img");
        Files.write(image, new byte[1 << 20]);
        int ring = ringHolding(image);
        assumeTrue(ring >= 0, "io_uring refused here");
        String before = System.getProperty(ImageLock.DEAD_HOLDER_WAIT_PROPERTY);
        System.setProperty(ImageLock.DEAD_HOLDER_WAIT_PROPERTY, "0");
        List<String> said = new CopyOnWriteArrayList<>();
        try (PosixFile f = PosixFile.open(image, false, false)) {
            LockedException e = assertThrows(LockedException.class,
                    () -> ImageLock.acquire(f.fd(), image, ImageLock.WRITER, Locking.ON, said::add));
            assertEquals(LockHolder.UNKNOWN, e.holder());
            assertEquals(List.of(), said);
        } finally {
            DirectoryFd.closeFd(ring);
            restore(before);
        }
    }

    /** A process being torn down (here a zombie: exited, not yet reaped) is never named as a live holder. */
    @Test
    void aZombieIsNoLiveHolder() throws Exception {
        assumeTrue(Files.isExecutable(Path.of("/usr/bin/python3")) || Files.isExecutable(Path.of("/bin/python3")), "no python3");
        // python3 forks a child that exits at once and is never reaped while python3 sleeps.
        Process p = new ProcessBuilder("python3", "-c",
                "import os,sys,time\npid=os.fork()\nif pid==0: os._exit(0)\nprint(pid); sys.stdout.flush(); time.sleep(60)").start();
        try {
            long pid = Long.parseLong(new java.io.BufferedReader(new java.io.InputStreamReader(p.getInputStream())).readLine().trim());
            Path proc = Path.of("/proc/" + pid);
            for (int i = 0; i < 500 && !Files.readString(proc.resolve("status")).contains("State:\tZ"); i++) {
                Thread.sleep(10); // the child's exit is on its way
            }
            assertTrue(LockHolder.exiting(proc), Files.readString(proc.resolve("status")));
            assertTrue(!LockHolder.exiting(Path.of("/proc/" + ProcessHandle.current().pid())), "this live process");
            assertTrue(!LockHolder.exiting(Path.of("/proc/" + p.pid())), "a sleeping live process");
        } finally {
            p.destroyForcibly().waitFor();
        }
    }

    private static void restore(String before) {
        if (before == null) {
            System.clearProperty(ImageLock.DEAD_HOLDER_WAIT_PROPERTY);
        } else {
            System.setProperty(ImageLock.DEAD_HOLDER_WAIT_PROPERTY, before);
        }
    }
}
