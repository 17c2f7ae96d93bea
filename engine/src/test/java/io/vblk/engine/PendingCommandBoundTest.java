package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/**
 * Review rev15d finding 4: a command that throws (not a late fault, which is delivered once: a
 * bug) every round stayed pending for ever, run and failing each round with its caller waiting.
 * After a bound the I/O thread gives it up and tells it (its caller's wait fails).
 */
class PendingCommandBoundTest {
    @Test
    void aCommandThatThrowsEveryRoundIsGivenUpAfterTheBound() throws Exception {
        try (RoundRig rig = new RoundRig(Tuning.builder().threadingMode(ThreadingMode.SHARED).build(), null)) {
            int[] runs = {0};
            Throwable[] abandoned = {null};
            rig.thread.submitCommand(new InboxEvent.Command() {
                @Override
                public boolean run(IoThread t) {
                    runs[0]++;
                    throw new IllegalStateException("a bug");
                }

                @Override
                public void abandon(Throwable cause) {
                    abandoned[0] = cause;
                }
            });
            for (int i = 0; i < 3 * PendingCommands.MAX_FAILURES; i++) {
                rig.thread.doWorkIsolated();
            }
            assertTrue(rig.thread.pendingCommands().isEmpty(), "the failing command stays pending for ever");
            assertEquals(PendingCommands.MAX_FAILURES, runs[0], "runs before it is given up");
            assertTrue(abandoned[0] instanceof IllegalStateException, "its caller is told: " + abandoned[0]);
        }
    }
}
