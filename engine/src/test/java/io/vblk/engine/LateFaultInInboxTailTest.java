package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.reflect.Field;
import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.Test;

/**
 * Review rev15d: IoThread.onInboxEvent takes the command out of its inbox event
 * ({@code event.command = null}) before the try that guards the command, and then adds an
 * unfinished command to the pending commands outside that try. A late guest-memory fault (Java 17
 * raises the SIGBUS as an InternalError at a later safepoint, "possibly in a command that
 * touches no guest memory at all") that surfaces there - the ArrayList's growth, the handler's
 * return poll - leaves the handler: Disruptor's EventPoller does not advance past an event whose
 * handler threw, so the same event is delivered again, now with a null command. The command is
 * lost (its caller waits), and the null is run as a command: an NPE that FaultRecovery treats
 * as an internal error (every live queue of the thread quarantined), added to the pending commands,
 * and failing again every round for good. Here the fault is simulated by a pending list whose
 * first add throws the InternalError the JVM would. Fails today.
 */
class LateFaultInInboxTailTest {
    private static Tuning inline() {
        return Tuning.builder().threadingMode(ThreadingMode.SHARED).build();
    }

    /** A pending list whose first add fails as a late fault delivered inside it would. */
    @SuppressWarnings("serial")
    private static final class FaultOnFirstAdd extends ArrayList<InboxEvent.Command> {
        boolean thrown;

        @Override
        public boolean add(InboxEvent.Command c) {
            if (!thrown) {
                thrown = true;
                throw new InternalError("a fault occurred in a recent unsafe memory access operation in compiled Java code");
            }
            return super.add(c);
        }
    }

    @Test
    void aLateFaultAfterTheCommandLeftItsEventLosesNothingAndRunsNoNull() throws Exception {
        try (RoundRig rig = new RoundRig(inline(), null)) {
            Field f = PendingCommands.class.getDeclaredField("commands");
            f.setAccessible(true);
            FaultOnFirstAdd pending = new FaultOnFirstAdd();
            f.set(rig.thread.pendingCommands(), pending);
            int[] runs = {0};
            rig.thread.submitCommand(t -> ++runs[0] >= 2); // not finished at its first run: it is kept pending
            assertThrows(InternalError.class, rig.thread::doWork, "the late fault surfaces in the inbox handler's tail");
            for (int i = 0; i < 5; i++) {
                rig.thread.doWork(); // the next rounds (run()'s handler would call them again)
            }
            assertTrue(pending.stream().noneMatch(c -> c == null), "a null command is kept pending (run, and failing, every round): " + pending);
            assertEquals(2, runs[0], "the command never ran again: its caller waits for ever");
        }
    }
}
