package io.vblk.aio;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;

/**
 * Whether guest memory is registered with a back end as fixed buffers ({@link
 * IoBackend#registerBuffers}): io_uring then reads and writes one-segment transfers with
 * READ_FIXED/WRITE_FIXED and skips pinning and importing the user pages per operation.
 *
 * <p>The trade-off: registration pins every page of the registered memory (FOLL_LONGTERM) for
 * as long as it stays registered. The whole guest becomes resident and unmovable: a balloon or
 * free page reporting can no longer give its memory back to the host, pages cannot be swapped,
 * migrated or compacted, and a table of sparse memory (a frontend may send up to 16 TiB) would
 * be faulted in completely. Per I/O it saves the page pinning the kernel otherwise does: on this
 * machine fio gained 10-35% IOPS at depth 128 on a file with {@code fixedbufs=1}.
 *
 * <ul>
 *   <li>{@link #AUTO} (the default): register only a table whose total size is at most
 *       {@link #autoLimitBytes()}: min(2 GiB, an eighth of the host's MemTotal). Small guests
 *       (test and appliance VMs, the benchmark's guests of a few MiB) gain the speed at the cost
 *       of at most that much resident memory per table, and of a quarter of MemTotal for all
 *       the tables of the process ({@link #processLimitBytes()}); a large guest, the kind that
 *       relies on ballooning and overcommit, and any oversized or hostile table (pinning faults
 *       in every page: 1 GiB of untouched memfd took about 4.6 s here) are left unpinned.</li>
 *   <li>{@link #ON}: register any table the kernel can take (at most 16384 pieces of 1 GiB) and
 *       that fits in the host's memory (MemTotal); for trusted frontends whose memory should
 *       be resident anyway (hugepages, no ballooning).</li>
 *   <li>{@link #OFF}: never register.</li>
 * </ul>
 */
public enum FixedBufferMode {
    /** Register small tables only (see {@link #autoLimitBytes()}). */
    AUTO("auto"),
    /** Register any table that fits the kernel's caps and the host's memory. */
    ON("on"),
    /** Never register. */
    OFF("off");

    /** {@link #AUTO}'s absolute cap: 2 GiB. */
    public static final long AUTO_MAX_BYTES = 2L << 30;
    /** The most memory one ring can register: 16384 buffers of 1 GiB. */
    public static final long KERNEL_MAX_BYTES = (long) IoUringDescriptor.MAX_REGISTERED_BUFFERS
            * IoUringDescriptor.MAX_REGISTERED_BUFFER_BYTES;

    private final String cliName;

    FixedBufferMode(String cliName) {
        this.cliName = cliName;
    }

    /** The configuration name: {@code auto}, {@code on} or {@code off}. */
    public String cliName() {
        return cliName;
    }

    /**
     * Why a table of {@code totalBytes} is not registered under this mode, or null when it is.
     */
    public String refusal(long totalBytes) {
        switch (this) {
            case OFF:
                return "fixed buffers off";
            case AUTO:
                long limit = autoLimitBytes();
                return totalBytes <= limit ? null
                        : "auto: guest memory of " + totalBytes + " bytes is above " + limit + " (min(2 GiB, MemTotal/8)): not pinned";
            default:
                long host = HostMemory.TOTAL_BYTES;
                if (totalBytes > KERNEL_MAX_BYTES) {
                    return "on: guest memory of " + totalBytes + " bytes is above io_uring's " + KERNEL_MAX_BYTES;
                }
                return host > 0 && totalBytes > host
                        ? "on: guest memory of " + totalBytes + " bytes is above the host's MemTotal " + host : null;
        }
    }

    /**
     * The most guest memory all tables registered at once in this process may total under this
     * mode: for {@link #AUTO} a quarter of MemTotal (8 GiB when it cannot be read), so that many
     * small guests served by one daemon cannot pin the host's memory between them; for {@link #ON}
     * MemTotal (no bound when it cannot be read); 0 for {@link #OFF}.
     */
    public long processLimitBytes() {
        long host = HostMemory.TOTAL_BYTES;
        switch (this) {
            case OFF:
                return 0;
            case AUTO:
                return host > 0 ? host / 4 : 4 * AUTO_MAX_BYTES;
            default:
                return host > 0 ? host : Long.MAX_VALUE;
        }
    }

    /** {@link #AUTO}'s bound: min(2 GiB, MemTotal / 8); 2 GiB when MemTotal cannot be read. */
    public static long autoLimitBytes() {
        long host = HostMemory.TOTAL_BYTES;
        return host > 0 ? Math.min(AUTO_MAX_BYTES, host / 8) : AUTO_MAX_BYTES;
    }

    /**
     * Parses {@code auto}, {@code on} or {@code off} (case-insensitive).
     *
     * @throws IllegalArgumentException naming the valid choices
     */
    public static FixedBufferMode parse(String name) {
        if (name != null) {
            String wanted = name.trim().toLowerCase(Locale.ROOT);
            for (FixedBufferMode mode : values()) {
                if (mode.cliName.equals(wanted)) {
                    return mode;
                }
            }
        }
        throw new IllegalArgumentException("unknown fixed-buffers mode '" + name + "': expected auto, on or off");
    }

    @Override
    public String toString() {
        return cliName;
    }

    /** The host's MemTotal, read once from /proc/meminfo (0 if unreadable). */
    private static final class HostMemory {
        static final long TOTAL_BYTES = read();

        private static long read() {
            try {
                for (String line : Files.readAllLines(Path.of("/proc/meminfo"))) {
                    if (line.startsWith("MemTotal:")) {
                        String[] f = line.trim().split("\\s+");
                        return Long.parseLong(f[1]) * 1024; // in kB
                    }
                }
            } catch (IOException | RuntimeException e) {
                // not Linux, or no procfs: the absolute cap applies
            }
            return 0;
        }
    }
}
