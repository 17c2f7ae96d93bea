package io.vblk.aio;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assumptions.assumeFalse;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import io.vblk.sys.Native;
import io.vblk.sys.NativeBuffer;

/**
 * Review rev13b: the shared reaper of undrained back ends is created by whichever thread first
 * closes one undrained, and a thread inherits its creator's CPU affinity: a device's I/O thread
 * pinned to one CPU left the reaper pinned there for the JVM's life. Now the reaper's thread
 * ({@link Undrained#unpinnedDaemon}, what {@link Undrained#kept} starts it with) takes the
 * process's CPU set first. Created here from a thread pinned to CPU 0, its Cpus_allowed_list
 * (read by the kernel, /proc/thread-self/status) is the process's.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS) // a hang guard
class UndrainedReaperAffinityTest {

    private static String cpusAllowed(String statusFile) throws IOException {
        for (String line : Files.readAllLines(Path.of(statusFile))) {
            if (line.startsWith("Cpus_allowed_list:")) {
                return line.substring("Cpus_allowed_list:".length()).trim();
            }
        }
        throw new IOException("no Cpus_allowed_list in " + statusFile);
    }

    @Test
    void theReaperCreatedByAPinnedThreadRunsOnTheProcessCpus() throws Exception {
        String process = cpusAllowed("/proc/self/status");
        assumeFalse(process.equals("0"), "the process may run on CPU 0 only: nothing to tell apart");
        CompletableFuture<String> pinnedCreator = new CompletableFuture<>();
        CompletableFuture<String> reaper = new CompletableFuture<>();
        Thread creator = new Thread(() -> {
            try {
                NativeBuffer mask = new NativeBuffer(Long.BYTES);
                mask.buffer().putLong(0, 1L); // CPU 0 only
                assertEquals(0, Native.libc().sched_setaffinity(0, Long.BYTES, mask.address()), "pinning the creator");
                pinnedCreator.complete(cpusAllowed("/proc/thread-self/status"));
                Thread t = Undrained.unpinnedDaemon("reaper-like", () -> {
                    try {
                        reaper.complete(cpusAllowed("/proc/thread-self/status"));
                    } catch (IOException | RuntimeException e) {
                        reaper.completeExceptionally(e);
                    }
                });
                t.start();
                t.join();
            } catch (Throwable e) {
                pinnedCreator.completeExceptionally(e);
                reaper.completeExceptionally(e);
            }
        }, "pinned-closer");
        creator.start();
        creator.join();
        assertEquals("0", pinnedCreator.get(), "the creator is pinned to CPU 0");
        assertEquals(process, reaper.get(), "the reaper's CPUs, created by a thread pinned to CPU 0");
    }
}
