package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.Image;
import io.vblk.aio.BackendKind;
import io.vblk.engine.BackendFactory;
import io.vblk.aio.ImageOptions;
import io.vblk.engine.BlkConfig;
import io.vblk.sys.Native;
import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.TestGuest;
import io.vblk.testkit.VhostUserFrontend;

/**
 * A session's once-a-second tick while one of its turns is stuck in a drain (GET_VRING_BASE with
 * a back end that does not complete, dirty logging on so the tick is wanted): the tick skips the
 * busy turn instead of waiting for it, so ticks neither pile up on the control threads (one per
 * second, each holding a thread) nor block the process-wide timer that runs them in one-server
 * serve() (where every other session's ticks would wait for this drain).
 */
class TickPileUpTest {
    @TempDir
    Path dir;

    @Test
    void ticksDoNotPileUpOnTheControlThreadsDuringAStuckDrain() throws Exception {
        run(false);
    }

    @Test
    void tickOnTheCallersThreadsNeverBlocksTheTimerDuringAStuckDrain() throws Exception {
        run(true);
    }

    private void run(boolean callersThreads) throws Exception {
        Path imagePath = dir.resolve("disk.img");
        Files.write(imagePath, new byte[(int) ServerRig.IMAGE_BYTES]);
        List<String> lines = new ArrayList<>();
        Log log = Log.to(l -> { synchronized (lines) { lines.add(l); } });
        AtomicInteger threads = new AtomicInteger();
        ExecutorService pool = Executors.newCachedThreadPool(r -> {
            Thread t = new Thread(r, "pool-" + threads.incrementAndGet());
            t.setDaemon(true);
            return t;
        });
        EventLoop loop = EventLoop.start("loop", log);
        AtomicReference<StalledRoundUnmapTest.StallingBackend> backend = new AtomicReference<>();
        try (Image image = Image.open(imagePath, ImageOptions.defaults()); TestGuest g = new TestGuest()) {
            BlkConfig config = BlkConfig.builder(ServerRig.IMAGE_BYTES).numQueues(1).queueSize(1024).segMax(254).build();
            BackendFactory real = new BackendChoice(BackendKind.IO_URING, image, log);
            BackendFactory f = depth -> {
                StalledRoundUnmapTest.StallingBackend b = new StalledRoundUnmapTest.StallingBackend(real.open(depth));
                backend.set(b);
                return b;
            };
            VhostUserServer server = VhostUserServer.builder(dir.resolve("s.sock"), config, f).log(log).name("x")
                    .controlThreads(loop, callersThreads ? Runnable::run : pool).connectionLinesPerMinute(Integer.MAX_VALUE).build();
            server.start();
            QemuFlow qemu = new QemuFlow(VhostUserFrontend.connect(dir.resolve("s.sock")), g, 1);
            BlkQueue q = g.queue(0, 64, true);
            qemu.init(LogProtocolTest.PROTOCOL, q);
            long features = qemu.linuxFeatures() & ~LogProtocolTest.LOG_ALL;
            qemu.start(features, true, null, q);
            int fd = LogProtocolTest.sealedMemfd(LogProtocolTest.logBytes());
            qemu.f.request(LogProtocolTest.SET_LOG_BASE, LogProtocolTest.logDescription(LogProtocolTest.logBytes(), 0), fd);
            qemu.f.setFeatures(features | LogProtocolTest.LOG_ALL);
            Thread.sleep(500);
            int before = threads.get();
            StalledRoundUnmapTest.StallingBackend b = backend.get();
            b.armed.set(true);
            q.add(BlkQueue.T_IN, 512, q.dataGpa, 4096, true);
            q.publish();
            assertTrue(b.inSubmit.await(30, TimeUnit.SECONDS));
            Thread setter = new Thread(() -> qemu.stop(q), "get-vring-base");
            setter.start(); // drains: the turn blocks on the stalled round
            Thread.sleep(5 * Session.TICK_MS);
            int during = threads.get();
            boolean timerInTick = timerInTick();
            b.release.countDown();
            setter.join(30_000);
            Native.libc().close(fd);
            qemu.close();
            server.close();
            assertTrue(during - before <= 1, "control threads grew from " + before + " to " + during);
            assertFalse(timerInTick, "the timer thread waits in a tick for the drain");
        } finally {
            loop.close();
            pool.shutdownNow();
        }
    }

    /** Whether the shared timer thread is inside a session's tick (it only is while one waits). */
    private static boolean timerInTick() {
        for (Map.Entry<Thread, StackTraceElement[]> e : Thread.getAllStackTraces().entrySet()) {
            if (e.getKey().getName().equals("vblk-vhost-timer")) {
                for (StackTraceElement f : e.getValue()) {
                    if (f.getClassName().equals(Session.class.getName()) && f.getMethodName().equals("tick")) {
                        return true;
                    }
                }
            }
        }
        return false;
    }
}
