package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.IoBackend;
import io.vblk.engine.BackendFactory;
import io.vblk.engine.SharedIoThread;
import io.vblk.engine.WaitStrategy;
import io.vblk.testkit.ForwardingBackend;
import io.vblk.testkit.TestGuest;

/**
 * Review 10a: a late guest-memory fault (the InternalError HotSpot raises for a SIGBUS in an Unsafe
 * access, delivered at a later point of the thread) that lands in a shared I/O thread's idle
 * path kills that thread, and with it every export on it. Seen for real with
 * FuseMemoryStallAttackTest (after the FUSE connection was aborted, the pending page fault
 * became SIGBUS and the JVM delivered it in IoUringBackend.queuedCount <- SlottedBackend.pendingSubmit
 * <- RawDriver.pendingSubmit <- IoThread.prepareSleep <- SharedIoThread.sleep <- KernelIdleStrategy.idle
 * <- SharedIoThread.run: "Exception in thread "shared" java.lang.InternalError"). A truncated
 * memfd can be delivered there just as well. Deterministic here: export A's back end throws that
 * same InternalError once from pendingSubmit() (a seam, as FaultSeamTest does for other points).
 * Export B, on the same shared thread, must keep serving.
 */
class SharedThreadLateFaultAttackTest {
    @TempDir
    Path dir;

    static final AtomicBoolean ARMED = new AtomicBoolean();

    /** Export A's back end: throws the JVM's late-fault InternalError once from pendingSubmit when armed. */
    static final class LateFault extends ForwardingBackend {
        LateFault(IoBackend real) {
            super(real);
        }

        @Override
        public int pendingSubmit() {
            if (ARMED.get() && StackWalker.getInstance().walk(f -> f.anyMatch(x -> x.getMethodName().equals("prepareSleep")))
                    && ARMED.compareAndSet(true, false)) {
                throw new InternalError("a fault occurred in a recent unsafe memory access operation in compiled Java code");
            }
            return super.pendingSubmit();
        }
    }

    @Test
    void aLateFaultInTheIdlePathLeavesTheOtherExportsOfASharedThreadServing() throws Exception {
        SharedIoThread shared = new SharedIoThread("shared", WaitStrategy.BLOCKING, 0);
        ServerRig a = ServerRig.startShared(Files.createDirectory(dir.resolve("a")), shared,
                real -> new BackendFactory() {
                    @Override
                    public IoBackend open(int depth) {
                        return new LateFault(real.open(depth));
                    }

                    @Override
                    public IoBackend open(int depth, boolean submitterReaps) {
                        return new LateFault(real.open(depth, submitterReaps));
                    }

                    @Override
                    public void sync() {
                        real.sync();
                    }
                });
        ServerRig b = ServerRig.startShared(Files.createDirectory(dir.resolve("b")), shared);
        TestGuest guest = new TestGuest();
        try {
            VhostUserProtocolTest.assertGoodFrontendDoesIo(b, guest);
            ARMED.set(true);
            // B's next frontend wakes the shared thread; its next sleep asks A's back end.
            AtomicReference<Throwable> failed = new AtomicReference<>();
            CountDownLatch done = new CountDownLatch(1);
            Thread t = new Thread(() -> {
                try {
                    for (int i = 0; i < 3; i++) {
                        VhostUserProtocolTest.assertGoodFrontendDoesIo(b, guest);
                    }
                } catch (Throwable e) {
                    failed.set(e);
                }
                done.countDown();
            }, "export-b");
            t.setDaemon(true);
            t.start();
            boolean served = done.await(30, TimeUnit.SECONDS);
            assertTrue(!ARMED.get(), "the fault was thrown");
            assertTrue(served, "export B not served within 30 s after a late fault landed in the shared thread's idle"
                    + " path (thread alive: " + threadAlive("shared") + ")");
            assertTrue(failed.get() == null, "export B failed: " + failed.get());
            assertTrue(threadAlive("shared"), "the shared I/O thread ended");
        } finally {
            guest.close();
            Thread c = new Thread(() -> {
                b.close();
                a.close();
            });
            c.setDaemon(true);
            c.start();
            c.join(20_000);
        }
    }

    private static boolean threadAlive(String name) {
        return Thread.getAllStackTraces().keySet().stream().anyMatch(th -> th.getName().equals(name) && th.isAlive());
    }
}
