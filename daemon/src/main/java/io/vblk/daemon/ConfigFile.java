package io.vblk.daemon;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.InvalidPathException;
import java.nio.file.LinkOption;
import java.nio.file.OpenOption;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.Supplier;

import com.fasterxml.jackson.jr.ob.JSON;

import io.vblk.vhost.Log;

/**
 * The daemon's configuration as a file: {@code config.save {path}} and {@code vblk daemon
 * --persist}. A file is only ever replaced whole: the new text goes to a temporary file beside it
 * (mode 0600: an export may name credentials), is made durable, renamed over the old one and
 * the directory made durable, so a crash at any point leaves the old file or the new one, never
 * a torn one. Writes of one daemon are serialized on this object, and the state each writes is
 * taken under that serialization, so the last change's state is the one the file ends with.
 */
final class ConfigFile {
    /** Test hook: runs after the temporary file is durable, before the rename (a crash there). */
    static volatile Runnable beforeRename = () -> { };

    private static final JSON PRETTY = JsonRpc.JSON_OUT.with(JSON.Feature.PRETTY_PRINT_OUTPUT);

    private final Log log;
    /** The file {@code --persist} keeps, or null. */
    private volatile Path persisted;
    /** What the persisted file holds (the last successful write), or null before one. Under this. */
    private byte[] written;
    private volatile boolean failing;
    private volatile long failures;
    private volatile String lastError;

    ConfigFile(Log log) {
        this.log = log;
    }

    /** The configuration as the file holds it: pretty-printed JSON and a final newline. */
    static byte[] render(Map<String, Object> config) {
        try {
            byte[] json = PRETTY.asBytes(config);
            byte[] out = Arrays.copyOf(json, json.length + 1);
            out[json.length] = '\n';
            return out;
        } catch (IOException e) {
            throw new IllegalStateException("cannot render the configuration", e); // maps, lists, strings, numbers only
        }
    }

    /**
     * Refuses {@code bytes} as the text of a configuration file when {@code vblk daemon --config}
     * would refuse to read it back (larger than {@link DaemonCommand.Config#MAX_BYTES}): a file
     * the same command line cannot load would lose every disk at the restart (rev13b). Changes
     * are refused before that (Daemon checks the room an add needs); this guards every write.
     */
    static void checkLoadable(byte[] bytes) {
        if (bytes.length > DaemonCommand.Config.MAX_BYTES) {
            throw new InvalidParams("the configuration would be " + bytes.length + " bytes, more than the "
                    + DaemonCommand.Config.MAX_BYTES + " a restart reads: not written");
        }
    }

    /**
     * The path a client named for {@code config.save}: absolute (the daemon's working directory
     * is not the caller's) and, if it exists, a regular file.
     */
    static Path target(String path) {
        Path p;
        try {
            p = Path.of(path);
        } catch (InvalidPathException e) {
            throw new InvalidParams("path: " + e.getMessage());
        }
        if (!p.isAbsolute() || p.getFileName() == null) {
            throw new InvalidParams("path must be an absolute file name (the daemon's working directory is not the caller's), got '"
                    + path + "'");
        }
        checkTarget(p, "path");
        return p;
    }

    /**
     * Refuses a target that exists and is not a regular file: a directory, FIFO, socket or
     * device, and a symbolic link (the rename would replace the link, not the file it names).
     */
    static void checkTarget(Path p, String what) {
        if (Files.exists(p, LinkOption.NOFOLLOW_LINKS) && !Files.isRegularFile(p, LinkOption.NOFOLLOW_LINKS)) {
            throw new InvalidParams(what + " " + p + ": not a regular file (a directory, FIFO, socket, device or symbolic link"
                    + " is refused: the file is replaced whole by a rename)");
        }
    }

    /** Where a write of {@code target} puts its text first: beside it, so the rename stays in one filesystem. */
    static Path temporary(Path target) {
        return target.resolveSibling("." + target.getFileName() + ".tmp");
    }

    /**
     * Replaces {@code target} with {@code bytes}, atomically and durably: temporary file (mode
     * 0600, created new: a leftover of a crashed write is deleted first, never written through),
     * fsync, rename, fsync of the directory. On a failure before the rename the target is as
     * it was and the temporary file is gone.
     */
    static void write(Path target, byte[] bytes) throws IOException {
        checkTarget(target, "config");
        Path dir = target.toAbsolutePath().getParent();
        Path tmp = temporary(target);
        Files.deleteIfExists(tmp); // a crashed write's: never read, only the rename publishes a file
        try {
            Set<OpenOption> options = Set.of(StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE, LinkOption.NOFOLLOW_LINKS);
            try (FileChannel ch = FileChannel.open(tmp, options, PosixFilePermissions.asFileAttribute(
                    PosixFilePermissions.fromString("rw-------")))) {
                ByteBuffer b = ByteBuffer.wrap(bytes);
                while (b.hasRemaining()) {
                    ch.write(b);
                }
                ch.force(true);
            }
            beforeRename.run();
            checkTarget(target, "config"); // again: what the rename replaces is the name, never a link's file
            Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException | RuntimeException e) {
            try {
                Files.deleteIfExists(tmp);
            } catch (IOException | RuntimeException suppressed) {
                e.addSuppressed(suppressed);
            }
            throw e;
        }
        try (FileChannel d = FileChannel.open(dir, StandardOpenOption.READ)) {
            d.force(true); // the rename itself durable
        }
    }

    /**
     * {@code config.save {path}}: writes the state {@code state} gives (taken under this
     * object's lock, after any persisting write in progress) to {@code target}; that state.
     */
    synchronized Map<String, Object> saveTo(Path target, Supplier<Map<String, Object>> state) {
        Map<String, Object> now = state.get();
        byte[] bytes = render(now);
        checkLoadable(bytes); // a file that would not load is never written
        try {
            write(target, bytes);
        } catch (IOException | RuntimeException e) {
            if (e instanceof InvalidParams refused) {
                throw refused; // the target turned into a directory or a link meanwhile
            }
            throw new RpcError(RpcError.INTERNAL_ERROR, "cannot write " + target + ": " + e);
        }
        log.info("config: saved to " + target);
        return now;
    }

    /**
     * Starts persisting to {@code file} and writes {@code state} there at once (a missing file is
     * created, a hand-written one takes the daemon's form); a failure is logged and counted, and
     * the daemon serves on: the file already held what the daemon started with.
     */
    void persistTo(Path file, Supplier<Map<String, Object>> state) {
        synchronized (this) {
            persisted = file;
            try {
                // A file already in the daemon's form is left as it is (no write at every start).
                written = Files.isRegularFile(file, LinkOption.NOFOLLOW_LINKS) && Files.size(file) <= DaemonCommand.Config.MAX_BYTES
                        ? Files.readAllBytes(file) : null;
            } catch (IOException e) {
                written = null;
            }
        }
        log.info("config: persisting every change to " + file);
        persist(state);
    }

    /**
     * {@code --persist}: rewrites the persisted file when {@code state} differs from what it
     * holds (an unchanged state, such as after a refused change, never touches it). Returns null,
     * or the reason the write failed: the state stays unsaved, logged and counted, until a later
     * write succeeds.
     */
    synchronized String persist(Supplier<Map<String, Object>> state) {
        Path file = persisted;
        if (file == null) {
            return null;
        }
        byte[] bytes = render(state.get());
        if (Arrays.equals(bytes, written)) {
            failing = false;
            lastError = null;
            return null;
        }
        try {
            checkLoadable(bytes); // the old file stays: it loads, this one would not
            write(file, bytes);
            written = bytes;
            if (failing) {
                log.info("config: " + file + " written again");
            }
            failing = false;
            lastError = null;
            return null;
        } catch (IOException | RuntimeException e) {
            String why = "cannot write " + file + ": " + e;
            failing = true;
            failures++;
            lastError = why;
            log.info("config: " + why + " (the change is in effect but not saved: a restart would lose it)");
            return why;
        }
    }

    /** Whether the daemon keeps a file up to date ({@code --persist}). */
    boolean persisting() {
        return persisted != null;
    }

    /** Whether the last write of the persisted file failed (the daemon's state is not saved). */
    boolean failing() {
        return failing;
    }

    /** Writes of the persisted file that failed since start. */
    long failures() {
        return failures;
    }

    /** {@code config.status}: where the daemon persists, and whether that works. */
    Map<String, Object> status() {
        Map<String, Object> m = new LinkedHashMap<>();
        Path file = persisted;
        m.put("persist", file == null ? null : file.toString());
        m.put("failing", failing);
        m.put("failures", failures);
        m.put("last_error", lastError);
        return m;
    }

    /** The configuration document: {@code {"iothreads": [...], "exports": [...]}}. */
    static Map<String, Object> document(List<Map<String, Object>> iothreads, List<Map<String, Object>> exports) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("iothreads", iothreads);
        m.put("exports", exports);
        return m;
    }

    /**
     * {@code --persist}: the {@code --config} file read at start. It must be named; when it does
     * not exist yet the daemon starts with no exports and creates it.
     */
    static DaemonCommand.Config readPersisted(Path file) {
        if (file == null) {
            throw new InvalidParams("--persist needs --config FILE: the file it keeps up to date");
        }
        checkTarget(file, "--config");
        if (!Files.isDirectory(file.toAbsolutePath().getParent())) {
            throw new InvalidParams("--config " + file + ": no such directory to keep the file in");
        }
        if (!Files.exists(file, LinkOption.NOFOLLOW_LINKS)) {
            return new DaemonCommand.Config(List.of(), List.of());
        }
        return DaemonCommand.Config.read(file);
    }
}
