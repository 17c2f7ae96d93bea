package io.vblk.daemon;

import io.vblk.vhost.SocketFile;

import java.io.IOException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashSet;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;

/**
 * Socket files a kill -9 left behind: an export being added or removed at that moment has its
 * socket file on disk and no entry in the persisted file, and a restart would never mention it.
 * At start the directories the persisted exports' sockets live in are looked at once, and the
 * socket files in them that no entry names and nobody listens on are reported in one line; they
 * are left in place (an operator's, or a program's, that vblk cannot tell is abandoned). Listening
 * is read from /proc/net/unix, never by connecting to another program's socket.
 */
final class StaleSockets {
    /** Paths named in the line at most; the rest are counted. */
    static final int MAX_LISTED = 10;

    private StaleSockets() {
    }

    /**
     * The line to log about stale socket files in the directories of {@code sockets} (those the
     * configuration's exports name; {@code control}, the daemon's control socket, is never one),
     * or null when there are none or /proc/net/unix cannot be read.
     */
    static String report(Collection<Path> sockets, Path control) {
        Set<Path> names = new HashSet<>();
        names.add(control.toAbsolutePath().normalize());
        Set<Path> dirs = new LinkedHashSet<>();
        for (Path p : sockets) {
            Path a = p.toAbsolutePath().normalize();
            names.add(a);
            if (a.getParent() != null) {
                dirs.add(a.getParent());
            }
        }
        Set<String> listening = listeningPaths();
        if (listening == null) {
            return null; // cannot tell who listens: no guess
        }
        List<Path> stale = new ArrayList<>();
        for (Path dir : dirs) {
            try (DirectoryStream<Path> files = Files.newDirectoryStream(dir)) {
                for (Path f : files) {
                    if (!names.contains(f) && SocketFile.isSocket(f) && !listening.contains(f.toString())) {
                        stale.add(f);
                    }
                }
            } catch (IOException | RuntimeException e) {
                // A directory gone or unreadable: its exports fail on their own, saying why.
            }
        }
        if (stale.isEmpty()) {
            return null;
        }
        StringBuilder line = new StringBuilder().append(stale.size())
                .append(stale.size() == 1 ? " socket file" : " socket files")
                .append(" beside the configured exports' sockets that no entry names and nobody listens on")
                .append(" (left by a kill during an add or a remove?), not removed: ");
        for (int i = 0; i < Math.min(MAX_LISTED, stale.size()); i++) {
            line.append(i == 0 ? "" : ", ").append(stale.get(i));
        }
        if (stale.size() > MAX_LISTED) {
            line.append(" and ").append(stale.size() - MAX_LISTED).append(" more");
        }
        return line.toString();
    }

    /**
     * Paths of the listening Unix sockets of this network namespace (/proc/net/unix: flags with
     * __SO_ACCEPTCON, 0x10000); null when it cannot be read.
     */
    static Set<String> listeningPaths() {
        Set<String> paths = new HashSet<>();
        List<String> lines;
        try {
            lines = Files.readAllLines(Path.of("/proc/net/unix"));
        } catch (IOException | RuntimeException e) {
            return null;
        }
        // Num RefCount Protocol Flags Type St Inode Path
        for (int i = 1; i < lines.size(); i++) {
            String[] f = lines.get(i).trim().split("\\s+", 8);
            if (f.length < 8 || !f[7].startsWith("/")) {
                continue;
            }
            try {
                if ((Long.parseLong(f[3], 16) & 0x10000) != 0) {
                    paths.add(f[7]);
                }
            } catch (NumberFormatException e) {
                // a line of another layout: skipped
            }
        }
        return paths;
    }
}
