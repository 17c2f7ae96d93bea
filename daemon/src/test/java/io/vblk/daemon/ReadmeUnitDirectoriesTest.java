package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.junit.jupiter.api.Test;

/**
 * Review rev17c: the README's systemd unit, followed literally, failed: {@code --config
 * /etc/vblk/daemon.json --persist} exits 2 ("no such directory to keep the file in") because
 * nothing creates /etc/vblk. Every directory the unit's ExecStart names for {@code --control}
 * and {@code --config} must be one systemd makes for the unit (RuntimeDirectory=,
 * ConfigurationDirectory=, StateDirectory=).
 */
class ReadmeUnitDirectoriesTest {
    private static final Map<String, String> ROOTS = Map.of("RuntimeDirectory", "/run/", "ConfigurationDirectory", "/etc/",
            "StateDirectory", "/var/lib/");

    @Test
    void everyDirectoryTheUnitNamesIsCreatedBySystemd() throws Exception {
        String readme = Files.readString(Path.of("..", "README.md"));
        int at = readme.indexOf("```ini\n[Unit]");
        assertTrue(at >= 0, "the README has its unit");
        String unit = readme.substring(at, readme.indexOf("```\n", at + 6)).replace("\\\n", " ");
        Map<String, Boolean> made = new HashMap<>();
        Matcher dirs = Pattern.compile("(?m)^(RuntimeDirectory|ConfigurationDirectory|StateDirectory)=(.+)$").matcher(unit);
        while (dirs.find()) {
            for (String d : dirs.group(2).trim().split("\\s+")) {
                made.put(ROOTS.get(dirs.group(1)) + d, true);
            }
        }
        Matcher paths = Pattern.compile("--(control|config) (/\\S+)").matcher(unit);
        int found = 0;
        while (paths.find()) {
            found++;
            String dir = Path.of(paths.group(2)).getParent().toString();
            assertTrue(made.containsKey(dir), "--" + paths.group(1) + " " + paths.group(2) + ": no *Directory= line of the unit"
                    + " creates " + dir + " (made: " + made.keySet() + ")");
        }
        assertTrue(found == 2, "the unit's ExecStart names --control and --config");
    }
}
