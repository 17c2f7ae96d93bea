package io.vblk.testkit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;

import org.junit.jupiter.api.Test;

/** The one list of JVM flags reaches the tests that start JVMs of their own. */
class JvmFlagsTest {
    @Test
    void theParentPomsListReachesTheTests() {
        String property = System.getProperty(JvmFlags.PROPERTY);
        assertTrue(property != null && !property.isBlank(), "surefire passes -D" + JvmFlags.PROPERTY);
        List<String> flags = JvmFlags.list();
        assertEquals(List.of(property.trim().split("\\s+")), flags);
        assertTrue(flags.contains("--enable-native-access=ALL-UNNAMED"), flags.toString());
        assertTrue(flags.contains("-Djnr.ffi.x86asm.enabled=false"), flags.toString());
        int exports = flags.indexOf("--add-exports");
        assertTrue(exports >= 0 && flags.get(exports + 1).equals("java.base/jdk.internal.misc=ALL-UNNAMED"), flags.toString());
    }

    @Test
    void withoutThePropertyTheFlagsThisJvmWasStartedWith() {
        String saved = System.getProperty(JvmFlags.PROPERTY);
        System.clearProperty(JvmFlags.PROPERTY);
        try {
            // surefire started this JVM with the pom's argLine, which holds the same list (the
            // JVM may report "--add-exports X" as "--add-exports=X")
            assertEquals(normal(saved.trim().replaceAll("\\s+", " ")), normal(String.join(" ", JvmFlags.list())));
        } finally {
            System.setProperty(JvmFlags.PROPERTY, saved);
        }
    }

    private static String normal(String flags) {
        return flags.replace("--add-exports ", "--add-exports=");
    }
}
