package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.aio.IoBackend;
import io.vblk.sys.FaultPoints;
import io.vblk.testkit.ForwardingBackend;

/**
 * Commands the I/O thread gives up on after {@link PendingCommands#MAX_FAILURES} throwing
 * runs ({@link InboxEvent.Command#abandon}) must tell their caller. Two had no abandon: a queue's
 * drain (clearQuarantine), whose caller then waited for ever, and a shared member's lend (a
 * driver step such as a resize), whose caller waited out the lend's 120 s deadline while the
 * member stayed PAUSING, never popping its queues again. Here every run of the command meets a
 * late guest-memory fault (the JVM's error, thrown by the back end when the command asks it for
 * its in-flight count, as a fault landing there would be delivered).
 */
@Timeout(value = 90, unit = TimeUnit.SECONDS) // a hang guard: the lend's own deadline is 120 s
class CommandAbandonTest {
    @TempDir
    Path dir;

    /** Throws the JVM's guest-memory fault from inFlight() while armed and called from a frame {@code where} picks. */
    static final class FaultingInFlight extends ForwardingBackend {
        final AtomicBoolean armed = new AtomicBoolean();
        final AtomicInteger thrown = new AtomicInteger();
        final AtomicBoolean hold = new AtomicBoolean();
        private final java.util.function.Predicate<StackWalker.StackFrame> where;

        FaultingInFlight(IoBackend real, java.util.function.Predicate<StackWalker.StackFrame> where) {
            super(real);
            this.where = where;
        }

        @Override
        public int inFlight() {
            if (armed.get() && StackWalker.getInstance().walk(s -> s.anyMatch(where))) {
                thrown.incrementAndGet();
                throw new InternalError(FaultPoints.MESSAGE);
            }
            return super.inFlight();
        }

        @Override
        public int submit() {
            return hold.get() ? 0 : super.submit(); // held: what is prepared stays pending
        }
    }

    private static boolean inLendCommand(StackWalker.StackFrame f) {
        return f.getClassName().matches("io\\.vblk\\.engine\\.BackendLend\\$\\d+") && f.getMethodName().equals("run");
    }

    @Test
    void aLendWhoseRunKeepsFaultingFailsItsCallerAndLeavesTheMemberServing() throws Exception {
        FaultingInFlight[] backend = new FaultingInFlight[1];
        try (SharedIoThread shared = new SharedIoThread("shared-abandon", WaitStrategy.BLOCKING, 0);
             DeviceRig rig = DeviceRig.builder(dir, BackendKind.IO_URING).ioThreads(shared)
                     .backends(f -> depth -> backend[0] = new FaultingInFlight(f.open(depth), CommandAbandonTest::inLendCommand))
                     .build()) {
            rig.roundTrip(0, T_IN, 0, rig.buffer(0, 4096), 4096, true);
            backend[0].armed.set(true);
            java.io.IOException e = assertThrows(java.io.IOException.class, () -> rig.device.resizeDrivers(8L << 20));
            backend[0].armed.set(false);
            assertEquals(PendingCommands.MAX_FAILURES, backend[0].thrown.get(), "runs before it was given up: " + e);
            IoThread member = rig.device.ioThread(0);
            CompletableFuture<Object[]> state = new CompletableFuture<>();
            member.submitCommand(t -> {
                state.complete(new Object[] {t.lendState(), t.lend().lendsWaiting()});
                return true;
            });
            Object[] seen = state.get(30, TimeUnit.SECONDS);
            assertEquals(BackendLend.State.SERVING, seen[0], "the member stays paused for a lend nobody will finish");
            assertEquals(0, seen[1], "lends counted as waiting");
        }
    }

    @Test
    void aDrainWhoseRunKeepsFaultingFailsClearQuarantine() throws Exception {
        FaultingInFlight[] backend = new FaultingInFlight[1];
        Tuning tuning = Tuning.builder().waitStrategy(WaitStrategy.BLOCKING).build();
        try (DeviceRig rig = DeviceRig.builder(dir, BackendKind.IO_URING).tuning(tuning)
                .backends(f -> depth -> backend[0] = new FaultingInFlight(f.open(depth),
                        fr -> fr.getMethodName().equals("settleLost")))
                .build()) {
            long buf = rig.buffer(0, 4096);
            backend[0].hold.set(true);
            rig.add(0, T_IN, 0, buf, 4096, true); // prepared, held: stays in flight
            rig.kick(0);
            QuarantineDrainTest.awaitCounter(rig, QueueCounters.REQUESTS, 1);
            FaultPoints.arm(FaultPoints.PARSE);
            try {
                rig.add(0, T_IN, 8, rig.buffer(0, 4096), 4096, true); // its parse faults: the queue is quarantined
                rig.kick(0);
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
                while (!rig.device.isBroken(0) && System.nanoTime() < deadline) {
                    Thread.sleep(5);
                }
            } finally {
                FaultPoints.disarm();
            }
            assertTrue(rig.device.isBroken(0), "not quarantined");
            backend[0].armed.set(true);
            CompletableFuture<Void> clear = CompletableFuture.runAsync(() -> rig.device.clearQuarantine(0));
            ExecutionException e = assertThrows(ExecutionException.class, () -> clear.get(60, TimeUnit.SECONDS),
                    "the drain's caller was never told");
            backend[0].armed.set(false);
            assertEquals(PendingCommands.MAX_FAILURES, backend[0].thrown.get(), "runs before it was given up: " + e);
            backend[0].hold.set(false); // the held read goes out: the close drains it
            rig.kick(0);
        }
    }
}
