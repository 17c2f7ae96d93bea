package io.vblk.testkit;

import java.lang.management.ManagementFactory;
import java.util.ArrayList;
import java.util.List;

/**
 * The JVM flags every vblk JVM needs (facts.md: Agrona's access to jdk.internal.misc, native
 * access, the jnr-ffi 6th-argument bug), for tests and tools that start another JVM. The one list
 * is the parent pom's {@code vblk.jvm.flags} property: surefire passes it to the tests as the
 * system property of that name and scripts read it from the pom. A JVM started without the
 * property passes on the flags it was itself started with.
 */
public final class JvmFlags {
    /** The system property that carries the list (space-separated). */
    public static final String PROPERTY = "vblk.jvm.flags";

    private JvmFlags() {
    }

    /** The flags, one argument each. */
    public static List<String> list() {
        String value = System.getProperty(PROPERTY);
        if (value != null && !value.isBlank()) {
            return List.of(value.trim().split("\\s+"));
        }
        List<String> own = new ArrayList<>();
        List<String> args = ManagementFactory.getRuntimeMXBean().getInputArguments();
        for (int i = 0; i < args.size(); i++) {
            String a = args.get(i);
            if ((a.equals("--add-exports") || a.equals("--add-opens")) && i + 1 < args.size()) {
                own.add(a);
                own.add(args.get(++i));
            } else if (a.startsWith("--add-exports=") || a.startsWith("--add-opens=") || a.startsWith("--enable-native-access")
                    || a.startsWith("-Djnr.")) {
                own.add(a);
            }
        }
        if (own.isEmpty()) {
            throw new IllegalStateException("no JVM flags: set -D" + PROPERTY + " (the parent pom's list)");
        }
        return own;
    }
}
