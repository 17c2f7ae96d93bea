package io.vblk.vhost;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

/**
 * The process-wide guest-memory budget: the most guest memory the memory tables of all
 * frontends of this process may map at once. By default the memory this process can be given at
 * all: the host's MemTotal, or the memory cgroup's limit when one is set (cgroup v2
 * {@code memory.max}, v1 {@code memory.limit_in_bytes}, the smallest along the cgroup's path),
 * whichever is smaller.
 *
 * <p>Why: a frontend's memfd may be sparse and costs the frontend nothing, while every page the
 * device writes into it is allocated on this process's fault and charged to its cgroup (rev16c:
 * +195 MiB for 50,000 4 KiB reads into a sparse 64 GiB memfd). The per-export cap
 * ({@link VhostUserServer.Builder#maxGuestMemory}, default 1 TiB) is above any host's memory and
 * so never bound; the budget binds by default: no table, and no set of tables, larger than the
 * memory the process could ever hold is mapped. It does not divide the budget between exports:
 * a frontend may take as much of it as its export's cap allows, so an operator serving tenants
 * who do not trust each other sets each export's cap near its guest's RAM (the daemon says so
 * once when an export keeps the default).
 *
 * <p>Set by {@code vblk daemon/serve --guest-memory-budget}, or the system property
 * {@value #PROPERTY} (bytes); at most {@link MemoryTable#MAX_MAPPED_BYTES}, the address-space bound.
 */
final class GuestMemoryBudget {
    /** System property overriding the host-derived default (bytes). */
    static final String PROPERTY = "vblk.vhost.guestMemoryBudget";
    /** How an operator raises the budget, for the refusal's message. */
    static final String OPTION = "vblk daemon/serve --guest-memory-budget";

    private static volatile long bytes = initial();

    private GuestMemoryBudget() {
    }

    static long bytes() {
        return bytes;
    }

    static void set(long value) {
        if (value < VhostUserServer.MIN_GUEST_MEMORY || value > MemoryTable.MAX_MAPPED_BYTES) {
            throw new IllegalArgumentException("guest-memory budget " + value + " bytes: " + VhostUserServer.MIN_GUEST_MEMORY
                    + " to " + MemoryTable.MAX_MAPPED_BYTES + " allowed");
        }
        bytes = value;
    }

    private static long initial() {
        String set = System.getProperty(PROPERTY);
        if (set != null) {
            try {
                long v = Long.parseLong(set.trim());
                if (v >= VhostUserServer.MIN_GUEST_MEMORY && v <= MemoryTable.MAX_MAPPED_BYTES) {
                    return v;
                }
            } catch (NumberFormatException e) {
                // fall through to the host's memory
            }
        }
        return hostDefault();
    }

    /** min(MemTotal, the memory cgroup's limit), at most the address-space bound. */
    static long hostDefault() {
        long limit = Math.min(memTotal(), cgroupLimit());
        return Math.max(VhostUserServer.MIN_GUEST_MEMORY, Math.min(limit, MemoryTable.MAX_MAPPED_BYTES));
    }

    private static long memTotal() {
        try {
            for (String l : Files.readAllLines(Path.of("/proc/meminfo"))) {
                if (l.startsWith("MemTotal:")) {
                    return Long.parseLong(l.replaceAll("[^0-9]", "")) * 1024;
                }
            }
        } catch (IOException | RuntimeException e) {
            // unknown: the address-space bound stays
        }
        return Long.MAX_VALUE;
    }

    /** The smallest memory limit along this process's cgroup path (v2 and v1), or Long.MAX_VALUE. */
    private static long cgroupLimit() {
        long limit = Long.MAX_VALUE;
        try {
            List<String> lines = Files.readAllLines(Path.of("/proc/self/cgroup"));
            for (String l : lines) {
                String[] f = l.split(":", 3);
                if (f.length < 3) {
                    continue;
                }
                if (f[0].equals("0") && f[1].isEmpty()) {
                    limit = Math.min(limit, smallestAlong(Path.of("/sys/fs/cgroup"), f[2], "memory.max"));
                } else if (List.of(f[1].split(",")).contains("memory")) {
                    limit = Math.min(limit, smallestAlong(Path.of("/sys/fs/cgroup/memory"), f[2], "memory.limit_in_bytes"));
                }
            }
        } catch (IOException | RuntimeException e) {
            // no cgroup information: MemTotal alone
        }
        return limit;
    }

    private static long smallestAlong(Path root, String path, String file) {
        long limit = Long.MAX_VALUE;
        Path dir = root;
        for (String part : ("/" + path).split("/")) {
            if (!part.isEmpty()) {
                dir = dir.resolve(part);
            }
            try {
                String v = Files.readString(dir.resolve(file)).trim();
                if (!v.equals("max")) {
                    limit = Math.min(limit, Long.parseLong(v)); // v1 "no limit" is a huge number: min keeps MemTotal
                }
            } catch (IOException | RuntimeException e) {
                // not there (not mounted, another namespace): look further
            }
        }
        return limit;
    }
}
