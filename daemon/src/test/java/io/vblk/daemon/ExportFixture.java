package io.vblk.daemon;

import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CopyOnWriteArrayList;

import io.vblk.vhost.Log;

/**
 * Exports opened directly (no daemon, no control socket) on control threads of their own, with
 * their log kept: for tests of {@link Export} itself. Close it after the exports.
 */
final class ExportFixture implements AutoCloseable {
    final List<String> lines = new CopyOnWriteArrayList<>();
    final Log log = Log.to(lines::add);
    final ControlThreads control = new ControlThreads(log);
    private final Path dir;

    ExportFixture(Path dir) {
        this.dir = dir;
    }

    /** The spec {@code vblk serve --image IMAGE --socket DIR/ID.sock [--KEY VALUE ...]} and {@code export.add} make. */
    ExportSpec spec(String id, Path image, String... keyValues) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("image", image.toString());
        m.put("socket", dir.resolve(id + ".sock").toString());
        for (int i = 0; i < keyValues.length; i += 2) {
            m.put(keyValues[i], keyValues[i + 1]);
        }
        return ExportSpec.parse(Params.commandLine(m), id);
    }

    /** Whether a line of the log contains {@code text}. */
    boolean said(String text) {
        return lines.stream().anyMatch(l -> l.contains(text));
    }

    @Override
    public void close() {
        control.close();
    }
}
