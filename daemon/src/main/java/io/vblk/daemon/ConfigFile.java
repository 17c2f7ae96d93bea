package io.vblk.daemon;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.InvalidPathException;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Supplier;

import com.fasterxml.jackson.jr.ob.JSON;

import io.vblk.sys.DirectoryFd;
import io.vblk.sys.Errno;
import io.vblk.sys.Linux;
import io.vblk.sys.LockHolder;
import io.vblk.sys.Native;
import io.vblk.sys.NativeException;
import io.vblk.sys.OfdLock;
import io.vblk.vhost.Log;

/**
 * The daemon's configuration as a file: {@code config.save {path}} and {@code vblk daemon
 * --persist}. A file is only ever replaced whole: the new text goes to a temporary file beside it
 * (mode 0600: an export may name credentials), is made durable, renamed over the old one and
 * the directory made durable, so a crash at any point leaves the old file or the new one, never
 * a torn one. Writes of one daemon are serialized on this object, and the state each writes is
 * taken under that serialization, so the last change's state is the one the file ends with.
 */
final class ConfigFile implements AutoCloseable {
    /** Test hook: runs after the temporary file is durable, before the rename (a crash there). */
    static volatile Runnable beforeRename = () -> { };
    /** Test hook: runs after the last check of the file replaced, just before the names are swapped. */
    static volatile Runnable beforePublish = () -> { };

    private static final JSON PRETTY = JsonRpc.JSON_OUT.with(JSON.Feature.PRETTY_PRINT_OUTPUT);

    private final Log log;
    /** The file {@code --persist} keeps, or null. */
    private volatile Path persisted;
    /** The persisted file's lock, held while the daemon runs (under this). */
    private PersistLock lock;
    /** What the persisted file holds (the last successful write), or null before one. Under this. */
    private byte[] written;
    /** The fstat of the file that write made (identity, size, mtime), or null. Under this. */
    private DirectoryFd.Stat writtenStat;
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
     * is not the caller's) and naming a file (what it is, is checked as the write opens it).
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
        return p;
    }

    /**
     * Refuses a target that exists and is not a regular file: a directory, FIFO, socket or
     * device, and a symbolic link (the rename would replace the link, not the file it names).
     * By name: for a quick refusal at start; every write checks the file as opened.
     */
    static void checkTarget(Path p, String what) {
        if (Files.exists(p, LinkOption.NOFOLLOW_LINKS) && !Files.isRegularFile(p, LinkOption.NOFOLLOW_LINKS)) {
            throw notRegular(p, what);
        }
    }

    private static InvalidParams notRegular(Path p, String what) {
        return new InvalidParams(what + " " + p + ": not a regular file (a directory, FIFO, socket, device or symbolic link"
                + " is refused: the file is replaced whole by a rename)");
    }

    /** Where a write of {@code target} puts its text first: beside it, so the rename stays in one filesystem. */
    static Path temporary(Path target) {
        return target.resolveSibling("." + target.getFileName() + ".tmp");
    }

    /**
     * A check of the file a write is about to replace, as its directory (opened once, for the
     * whole write) holds it: {@code existing} is its fstat, null when there is none. It runs
     * before the temporary file is made and, when the name names another file by then, again
     * before the rename; it throws to refuse the write.
     */
    @FunctionalInterface
    interface TargetCheck {
        void check(DirectoryFd dir, String name, DirectoryFd.Stat existing);
    }

    /**
     * Replaces {@code target} with {@code bytes}, atomically and durably: temporary file (mode
     * 0600, created new: a leftover of a crashed write is deleted first, never written through),
     * fsync, rename, fsync of the directory. Every step names files relative to the target's
     * directory opened once (openat, renameat: a directory swapped for a symbolic link meanwhile
     * changes nothing), and the file replaced is checked as that directory holds it (fstat of
     * it opened O_PATH | O_NOFOLLOW: a regular file or none, then {@code check}). On a failure
     * before the rename the target is as it was and the temporary file is gone. Returns the
     * fstat of the file written.
     */
    static DirectoryFd.Stat write(Path target, byte[] bytes, TargetCheck check) throws IOException {
        Path dir = target.toAbsolutePath().getParent();
        String name = target.getFileName().toString();
        String tmp = temporary(target).getFileName().toString();
        try (DirectoryFd d = DirectoryFd.open(dir)) {
            DirectoryFd.Stat before = d.stat(name);
            if (before != null && !before.isRegularFile()) {
                throw notRegular(target, "config");
            }
            check.check(d, name, before);
            // A crashed write's: never read, only the rename publishes a file. Looked up first: on
            // a read-only file system unlinkat fails with EROFS even for a name that is not there,
            // and would be reported instead of the create that really fails.
            if (d.stat(tmp) != null) {
                d.unlink(tmp);
            }
            boolean created = false;
            boolean renamed = false;
            DirectoryFd.Stat made = null;
            try {
                int fd = d.openAt(tmp, Linux.O_WRONLY | Linux.O_CREAT | Linux.O_EXCL, 0600);
                if (fd < 0) {
                    throw new NativeException(-fd, "openat", dir, tmp, "O_CREAT|O_EXCL");
                }
                created = true;
                try {
                    DirectoryFd.writeAll(fd, bytes, temporary(target));
                    DirectoryFd.sync(fd, temporary(target));
                    made = DirectoryFd.fstat(fd);
                } finally {
                    DirectoryFd.closeFd(fd);
                }
                beforeRename.run();
                // Again: what the rename replaces is what the name names now, in this directory.
                DirectoryFd.Stat now = d.stat(name);
                if (now != null && !now.isRegularFile()) {
                    throw notRegular(target, "config");
                }
                if (!sameFile(before, now)) {
                    check.check(d, name, now);
                }
                beforePublish.run();
                renamed = publish(d, tmp, name, now, target);
            } finally {
                if (created && !renamed) {
                    try {
                        // Only the file this write made: after a swap that could not be undone
                        // the name holds the file it replaced, which is not this write's to delete.
                        DirectoryFd.Stat left = d.stat(tmp);
                        if (left != null && (made == null || sameFile(left, made))) {
                            d.unlink(tmp);
                        }
                    } catch (RuntimeException suppressed) {
                        // the write's own failure is the one reported
                    }
                }
            }
            d.fsync(); // the rename itself durable
            return made;
        }
    }

    /**
     * Puts the temporary file {@code tmp} at {@code name}, replacing exactly the file
     * {@code checked} (null: none): the names are swapped (renameat2 RENAME_EXCHANGE, or
     * RENAME_NOREPLACE when there was none), the file now at {@code tmp} is the one replaced,
     * and when that is not the one checked (a file renamed in after the check) they are swapped
     * back and the write refused. Where the filesystem does neither, a plain rename. True once
     * published (the old file then goes).
     */
    private static boolean publish(DirectoryFd d, String tmp, String name, DirectoryFd.Stat checked, Path target) {
        int rc = d.rename2(tmp, name, checked == null ? DirectoryFd.RENAME_NOREPLACE : DirectoryFd.RENAME_EXCHANGE);
        if (rc == -Errno.EINVAL || rc == -Errno.ENOSYS) {
            d.rename(tmp, name); // no renameat2 flags here (NFS, an old kernel): the checks above are all there is
            return true;
        }
        if (rc == -Errno.EEXIST) {
            throw new IllegalStateException(target + " was created while the configuration was written: not replaced");
        }
        if (rc < 0) {
            throw new NativeException(-rc, "renameat2", target, tmp, name);
        }
        if (checked == null) {
            return true;
        }
        DirectoryFd.Stat replaced = d.stat(tmp);
        if (!sameFile(checked, replaced)) {
            int back = d.rename2(tmp, name, DirectoryFd.RENAME_EXCHANGE);
            throw new IllegalStateException(target + " was replaced by another file while the configuration was written: not"
                    + " replaced" + (back < 0 ? " (and swapping it back failed: " + Errno.describe(-back) + ", the new text is at"
                    + " the name, the file replaced at " + tmp + ")" : ""));
        }
        try {
            d.unlink(tmp); // the old file
        } catch (RuntimeException e) {
            // left as the temporary file: never read, the next write deletes it
        }
        return true;
    }

    private static boolean sameFile(DirectoryFd.Stat a, DirectoryFd.Stat b) {
        return a == null ? b == null : b != null && a.dev() == b.dev() && a.ino() == b.ino();
    }

    /**
     * {@code config.save {path}}: writes the state {@code state} gives (taken under this
     * object's lock, after any persisting write in progress) to {@code target}, after
     * {@code check} passed on the file it replaces; that state. The persisted file itself is
     * written only when it is as the daemon last wrote it, or with {@code overwrite} (a hand
     * edit is not lost without being asked); it is then the daemon's again.
     */
    synchronized Map<String, Object> saveTo(Path target, boolean overwrite, TargetCheck check, Supplier<Map<String, Object>> state) {
        Map<String, Object> now = state.get();
        byte[] bytes = render(now);
        checkLoadable(bytes); // a file that would not load is never written
        Path file = persisted;
        boolean mine = file != null && Daemon.sameSocket(file.toAbsolutePath().normalize(), target.toAbsolutePath().normalize());
        TargetCheck all = mine && !overwrite ? (d, name, existing) -> {
            check.check(d, name, existing);
            String edit = handEdit(d, name, existing);
            if (edit != null) {
                throw new InvalidParams(edit + ": config.save with \"overwrite\": true replaces it with the daemon's configuration");
            }
        } : check;
        if (!mine) {
            refusePersistedByAnother(target); // (this daemon's own file: its own lock, it may)
        }
        DirectoryFd.Stat made;
        try {
            made = write(target, bytes, all);
        } catch (IOException | RuntimeException e) {
            if (e instanceof InvalidParams refused) {
                throw refused; // the target is not a regular file, or a file the check refused
            }
            throw new RpcError(RpcError.INTERNAL_ERROR, "cannot write " + target + ": " + e);
        }
        if (mine) {
            written = bytes;
            writtenStat = made;
            if (failing) {
                log.info("config: " + file + " written again (config.save)");
            }
            failing = false;
            lastError = null;
        }
        log.info("config: saved to " + target);
        return now;
    }

    /**
     * Starts persisting to {@code file} and writes {@code state} there at once (a missing file is
     * created, a hand-written one takes the daemon's form); a failure is logged and counted, and
     * the daemon serves on: the file already held what the daemon started with. Takes
     * {@code lock} (the file's, {@link #lock}) with it: released by {@link #close}.
     */
    void persistTo(Path file, PersistLock lock, Supplier<Map<String, Object>> state) {
        synchronized (this) {
            persisted = file;
            this.lock = lock;
            // What the file holds now is the daemon's to replace: it is what the daemon started
            // from. A file already in the daemon's form is left as it is (no write at every start).
            try (DirectoryFd d = DirectoryFd.open(file.toAbsolutePath().getParent())) {
                String name = file.getFileName().toString();
                DirectoryFd.Stat st = d.stat(name);
                written = st != null && st.isRegularFile() && st.size() <= DaemonCommand.Config.MAX_BYTES
                        ? read(d, name, (int) st.size() + 1) : null; // one more: a file grown meanwhile differs
                writtenStat = written == null ? null : st;
            } catch (RuntimeException e) {
                written = null;
                writtenStat = null;
            }
        }
        log.info("config: persisting every change to " + file);
        persist(state);
    }

    /** The text of {@code name} in {@code d} (at most {@code max} bytes read), or null when it cannot be read. */
    private static byte[] read(DirectoryFd d, String name, int max) {
        int fd = d.openAt(name, Linux.O_RDONLY | Linux.O_NONBLOCK, 0);
        if (fd < 0) {
            return null;
        }
        try {
            return DirectoryFd.readUpTo(fd, max, name);
        } finally {
            DirectoryFd.closeFd(fd);
        }
    }

    /**
     * Whether the persisted file {@code name} in {@code d} ({@code existing}: its fstat, null
     * when gone) is no longer what the daemon last wrote there: null when it is (the same file,
     * size and modification time, or else the same bytes) or when it is gone (nothing of anyone's
     * is lost by writing it again); else why it is not overwritten. Under this object's lock.
     */
    private String handEdit(DirectoryFd d, String name, DirectoryFd.Stat existing) {
        if (existing == null || existing.sameVersion(writtenStat)) {
            return null;
        }
        if (written != null && existing.isRegularFile() && existing.size() == written.length) {
            byte[] now = read(d, name, written.length + 1);
            if (Arrays.equals(now, written)) {
                writtenStat = existing; // touched, or written again with the same text
                return null;
            }
        }
        return "the file " + persisted + " was changed since the daemon wrote it (edited by hand?): not overwritten, so"
                + " that edit is not lost, and the daemon's configuration is not saved (restart the daemon to serve"
                + " what the file says";
    }

    /** The hand-edit refusal of a persisting write: the change stands, unsaved. */
    private static final class HandEdited extends RuntimeException {
        private static final long serialVersionUID = 1L;

        HandEdited(String message) {
            super(message, null, false, false);
        }
    }

    /**
     * {@code --persist}: rewrites the persisted file when {@code state} differs from what it
     * holds (an unchanged state, such as after a refused change, never touches it), unless the
     * file was changed since the daemon wrote it ({@link #handEdit}: refused, reported as a
     * failed write is). Returns null, or the reason the write failed: the state stays unsaved,
     * logged and counted, until a later write succeeds.
     */
    synchronized String persist(Supplier<Map<String, Object>> state) {
        Path file = persisted;
        if (file == null) {
            return null;
        }
        byte[] bytes = render(state.get());
        TargetCheck noHandEdit = (d, name, existing) -> {
            String edit = handEdit(d, name, existing);
            if (edit != null) {
                throw new HandEdited(edit + ", or config.save {\"path\": \"" + file + "\", \"overwrite\": true} to replace it"
                        + " with the daemon's)");
            }
        };
        try {
            if (Arrays.equals(bytes, written)) {
                // Nothing to write; but a file edited meanwhile does not hold the daemon's state.
                try (DirectoryFd d = DirectoryFd.open(file.toAbsolutePath().getParent())) {
                    String name = file.getFileName().toString();
                    noHandEdit.check(d, name, d.stat(name));
                }
                failing = false;
                lastError = null;
                return null;
            }
            checkLoadable(bytes); // the old file stays: it loads, this one would not
            writtenStat = write(file, bytes, noHandEdit);
            written = bytes;
            if (failing) {
                log.info("config: " + file + " written again");
            }
            failing = false;
            lastError = null;
            return null;
        } catch (IOException | RuntimeException e) {
            // A refused syscall's own message ("openat ...: Permission denied (errno 13)"), not
            // its class name: the text goes to the caller as persist_error and to config.status.
            String why = e instanceof HandEdited ? e.getMessage()
                    : "cannot write " + file + ": " + (e instanceof io.vblk.sys.NativeException ? e.getMessage() : e);
            boolean again = why.equals(lastError);
            failing = true;
            failures++;
            lastError = why;
            if (!again) {
                log.info("config: " + why + " (the change is in effect but not saved: a restart would lose it)");
            }
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
     * {@code --persist}: checks the {@code --config} file can be kept: it must be named, its
     * directory exist, and it be a regular file if it exists.
     */
    static void checkPersisted(Path file) {
        if (file == null) {
            throw new InvalidParams("--persist needs --config FILE: the file it keeps up to date");
        }
        checkTarget(file, "--config");
        if (!Files.isDirectory(file.toAbsolutePath().getParent())) {
            throw new InvalidParams("--config " + file + ": no such directory to keep the file in");
        }
    }

    /**
     * {@code --persist}: the {@code --config} file read at start (after {@link #lock}). When it
     * does not exist yet the daemon starts with no exports and creates it.
     */
    static DaemonCommand.Config readPersisted(Path file) {
        checkPersisted(file);
        if (!Files.exists(file, LinkOption.NOFOLLOW_LINKS)) {
            return new DaemonCommand.Config(List.of(), List.of());
        }
        return DaemonCommand.Config.read(file);
    }

    /** The lock file of persisted file {@code file}: beside it, never renamed (the file itself is replaced at each write). */
    static Path lockFile(Path file) {
        return file.resolveSibling("." + file.getFileName() + ".lock");
    }

    /**
     * One daemon persists one file: an exclusive OFD lock on the file's lock file
     * ({@link #lockFile}: the file itself is renamed over at every write, and a lock on it would
     * go with the old inode), held for the daemon's life: released when it closes, or by the
     * kernel when the process dies (never stale). The lock file holds the holder's pid, for the
     * refusal's message when /proc does not show the holder.
     */
    static final class PersistLock implements AutoCloseable {
        private final int fd;
        private boolean closed;

        private PersistLock(int fd) {
            this.fd = fd;
        }

        @Override
        public synchronized void close() {
            if (!closed) {
                closed = true;
                DirectoryFd.closeFd(fd); // the OFD lock goes with its open file description
            }
        }
    }

    /**
     * {@code vblk daemon --persist}: takes {@code file}'s lock, or refuses (naming the daemon that
     * holds it, with its pid when it can be found) when another daemon persists the file. Where
     * the filesystem has no OFD locks the daemon goes on unlocked (logged); null then.
     */
    static PersistLock lock(Path file, Log log) {
        checkPersisted(file);
        Path lockFile = lockFile(file);
        String name = lockFile.getFileName().toString();
        int fd;
        try (DirectoryFd d = DirectoryFd.open(file.toAbsolutePath().getParent())) {
            fd = d.openAt(name, Linux.O_RDWR | Linux.O_CREAT | Linux.O_NONBLOCK, 0600);
        } catch (NativeException e) {
            throw new InvalidParams("--config " + file + ": cannot open its directory: " + e.getMessage());
        }
        if (fd == -Errno.EACCES || fd == -Errno.EROFS || fd == -Errno.EPERM) {
            // A directory the daemon cannot write: it cannot write the file either (each change
            // says so), so no second daemon can overwrite this one's changes there.
            log.info("config: cannot create " + lockFile + " (" + Errno.describe(-fd) + "): not locked");
            return null;
        }
        if (fd < 0) {
            throw new InvalidParams("--config " + file + ": cannot open its lock file " + lockFile + ": " + Errno.describe(-fd));
        }
        boolean kept = false;
        try {
            DirectoryFd.Stat st = DirectoryFd.fstat(fd);
            if (!st.isRegularFile()) {
                throw new InvalidParams("--config " + file + ": its lock file " + lockFile + " is not a regular file");
            }
            int rc = OfdLock.lockExclusive(fd, 0, 0);
            if (rc == -Errno.EAGAIN || rc == -Errno.EACCES) {
                // A lock held by another process: status 1, not a bad argument's 2 (a restart
                // that overlaps the old daemon's drain passes once that daemon has exited).
                throw new RpcError(RpcError.IN_USE, "--config " + file + " is persisted by another daemon: " + holder(fd, st, lockFile)
                        + " holds its lock " + lockFile + ". Two daemons persisting one file would each overwrite the other's"
                        + " changes: refused (stop that daemon, or give this one another --config)");
            }
            if (rc < 0) {
                log.info("config: " + lockFile + ": no lock (" + Errno.describe(-rc) + "): a second daemon persisting "
                        + file + " would not be refused");
                return null;
            }
            byte[] pid = (ProcessHandle.current().pid() + "\n").getBytes(StandardCharsets.US_ASCII);
            if (Native.libc().ftruncate(fd, 0) == 0) {
                DirectoryFd.writeAll(fd, pid, lockFile); // a hint for the message above only
            }
            kept = true;
            return new PersistLock(fd);
        } finally {
            if (!kept) {
                DirectoryFd.closeFd(fd);
            }
        }
    }

    /**
     * Who holds the lock of lock file {@code lockFile} (open as {@code fd}, {@code st} its
     * fstat): the process /proc shows, else the pid the file holds (written by its holder).
     */
    private static String holder(int fd, DirectoryFd.Stat st, Path lockFile) {
        String holder = LockHolder.describe(LockHolder.kernelDev(fd, st.dev()), st.ino(), 0);
        if (!holder.contains("pid")) {
            String pid = new String(DirectoryFd.readUpTo(fd, 32, lockFile), StandardCharsets.US_ASCII).trim();
            holder = pid.matches("[0-9]{1,10}") ? "another daemon (pid " + pid + ", as " + lockFile + " says)" : holder;
        }
        return holder;
    }

    /**
     * config.save: refuses {@code target} when another daemon persists it (it holds the lock of
     * {@link #lockFile}): that daemon's next change would replace what this one writes, and a
     * restart of it would serve this daemon's disks, which it does not own. Nothing is refused
     * where the lock file is absent, not a regular file, or unlocked (its daemon has exited).
     */
    static void refusePersistedByAnother(Path target) {
        Path lockFile = lockFile(target);
        int fd;
        try (DirectoryFd d = DirectoryFd.open(target.toAbsolutePath().getParent())) {
            fd = d.openAt(lockFile.getFileName().toString(), Linux.O_RDONLY | Linux.O_NONBLOCK | Linux.O_NOFOLLOW, 0);
        } catch (RuntimeException e) {
            return; // no such directory: the write says so
        }
        if (fd < 0) {
            return;
        }
        try {
            DirectoryFd.Stat st = DirectoryFd.fstat(fd);
            int held = st.isRegularFile() ? OfdLock.test(fd, 0, 0) : OfdLock.F_UNLCK;
            if (held == OfdLock.F_WRLCK || held == OfdLock.F_RDLCK) {
                throw new RpcError(RpcError.IN_USE, "path " + target + " is persisted by another daemon: " + holder(fd, st, lockFile)
                        + " holds its lock " + lockFile + ": refused (that daemon rewrites it at its next change, and a"
                        + " restart of it would serve this daemon's exports; its own config.save writes it)");
            }
        } finally {
            DirectoryFd.closeFd(fd);
        }
    }

    /** Releases the persisted file's lock (the daemon's close). */
    @Override
    public void close() {
        PersistLock l;
        synchronized (this) {
            l = lock;
            lock = null;
        }
        if (l != null) {
            l.close();
        }
    }
}
