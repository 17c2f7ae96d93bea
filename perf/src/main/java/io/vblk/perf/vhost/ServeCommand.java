package io.vblk.perf.vhost;

import java.net.URISyntaxException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * Finds how to run {@code vblk serve}: an explicit command, else the vhost module's shaded jar
 * ({@code daemon/target/vblk.jar}, run with this JVM), else the launcher {@code scripts/vblk},
 * looked up from the repository this benchmark was built in ({@code VBLK_HOME} overrides).
 */
public final class ServeCommand {
    private ServeCommand() {
    }

    /**
     * The command, ending in {@code serve}.
     *
     * @param override a command line split on spaces, or null
     * @throws IllegalStateException naming where it looked
     */
    public static List<String> resolve(String override) {
        if (override != null && !override.isBlank()) {
            return Arrays.asList(override.trim().split("\\s+"));
        }
        List<Path> looked = new ArrayList<>();
        for (Path root : roots()) {
            Path jar = root.resolve("daemon/target/vblk.jar");
            looked.add(jar);
            if (Files.isRegularFile(jar)) {
                String java = ProcessHandle.current().info().command().orElse("java");
                return List.of(java, "-jar", jar.toString(), "serve");
            }
            Path script = root.resolve("scripts/vblk");
            looked.add(script);
            if (Files.isExecutable(script)) {
                return List.of(script.toString(), "serve");
            }
        }
        throw new IllegalStateException("cannot find vblk serve (looked at " + looked
                + "): build the daemon module, or pass --serve-cmd 'COMMAND serve'");
    }

    private static List<Path> roots() {
        List<Path> roots = new ArrayList<>();
        String home = System.getenv("VBLK_HOME");
        if (home != null && !home.isBlank()) {
            roots.add(Path.of(home));
        }
        java.security.CodeSource source = ServeCommand.class.getProtectionDomain().getCodeSource();
        if (source != null) {
            try {
                Path here = Path.of(source.getLocation().toURI()).toAbsolutePath();
                // perf/target/vblk-perf.jar or perf/target/classes: the first directory up with the
                // reactor's pom.xml and a vhost module is the repository
                for (Path p = here.getParent(); p != null; p = p.getParent()) {
                    if (Files.isRegularFile(p.resolve("pom.xml")) && Files.isDirectory(p.resolve("vhost"))) {
                        roots.add(p);
                        break;
                    }
                }
            } catch (URISyntaxException | IllegalArgumentException e) {
                // not a file location: only VBLK_HOME and the working directory
            }
        }
        roots.add(Path.of("").toAbsolutePath());
        return roots;
    }
}
