package io.vblk.block.qcow2;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import io.vblk.testkit.QemuTools;

/**
 * Real qcow2 images made by {@code qemu-img} and {@code qemu-io}, the starting points the hostile
 * image property ({@link Qcow2HostileImagePropertyTest}) mutates: data, zero, discarded and
 * compressed (deflate and zstd) clusters, compat 0.10 and 1.1, clusters of 512 B to 2 MiB,
 * refcount widths 1 to 64 bits, an internal snapshot (in the top image and in a backing file), a
 * backing chain of three. Built once per
 * run in a directory of their own; each image comes with what QEMU reads from it
 * ({@code qemu-img convert -O raw}).
 *
 * <p>Guest data is {@linkplain #tag tagged}: every 8-byte word of a sector says which sector it
 * is and which writer wrote it, so a read that returns anything else (a metadata sector, bytes
 * of another sector) is visible.
 */
final class HostileCorpus {
    /** One image: its files (the top first, then its backing chain) and the guest content QEMU reads. */
    record Image(String name, List<Path> files, byte[] expected, boolean snapshots) {
        long virtualSize() {
            return expected.length;
        }
    }

    /** The high 16 bits of every data word written by the corpus or by the property's writes. */
    static final long TAG_MARK = 0xC0DEL << 48;

    private final Path dir;
    final List<Image> images = new ArrayList<>();
    private int tagFiles;

    private HostileCorpus(Path dir) {
        this.dir = dir;
    }

    /** The word each 8 bytes of guest sector {@code sector} hold when writer {@code gen} (0..255) wrote it. */
    static long tag(long sector, int gen) {
        return TAG_MARK | ((long) (gen & 0xff) << 40) | (sector & 0xff_ffff_ffffL);
    }

    /** {@code len} bytes of tagged data for guest offset {@code off} (both multiples of 512). */
    static byte[] tagged(long off, int len, int gen) {
        ByteBuffer b = ByteBuffer.allocate(len).order(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < len; i += 8) {
            b.putLong(i, tag((off + i) >>> 9, gen));
        }
        return b.array();
    }

    static HostileCorpus build(Path dir) {
        HostileCorpus c = new HostileCorpus(dir);
        c.single("v3-64k-rc64", "4M", 1, "compat=1.1,cluster_size=65536,refcount_bits=64",
                "data 0 128k", "data 320k 4k", "zero 128k 64k", "data 448k 64k", "discard 448k 64k",
                "compressed 640k 128k", "data 1M 8k", "data 3M 64k");
        c.single("v2-4k", "8M", 1, "compat=0.10,cluster_size=4096",
                "data 0 40k", "discard 8k 4k", "compressed 64k 16k", "data 2M 3k", "data 4M 4k", "zero 4100k 4k",
                "data 7M 12k");
        c.single("v3-512-rc1", "512k", 1, "compat=1.1,cluster_size=512,refcount_bits=1",
                "data 0 20k", "zero 4k 1k", "discard 8k 512", "compressed 40k 4k", "data 100k 1536", "data 300k 32k");
        c.single("v3-2m-zstd", "8M", 1, "compat=1.1,cluster_size=2097152,compression_type=zstd",
                "data 0 64k", "zero 2M 2M", "compressed 4M 2M", "data 6M 4k");
        c.converted();
        c.chain();
        c.snapshot();
        c.snapshotBase();
        return c;
    }

    /** An image of {@code size} with {@code options}, then qemu-io's writes by the recipe. */
    private Image single(String name, String size, int gen, String options, String... recipe) {
        Path p = dir.resolve(name + ".qcow2");
        qemuImg("create", "-q", "-f", "qcow2", "-o", options, p.toString(), size);
        apply(p, gen, recipe);
        return add(name, List.of(p), false);
    }

    /** A raw disk of tagged data converted with {@code -c} (every cluster compressed), then partly rewritten. */
    private void converted() {
        Path raw = dir.resolve("convert-src.raw");
        byte[] data = new byte[1 << 20];
        System.arraycopy(tagged(0, 256 << 10, 1), 0, data, 0, 256 << 10);
        System.arraycopy(tagged(768 << 10, 64 << 10, 1), 0, data, 768 << 10, 64 << 10);
        write(raw, data);
        Path p = dir.resolve("convert-c.qcow2");
        qemuImg("convert", "-q", "-c", "-f", "raw", "-O", "qcow2", "-o", "compat=1.1,cluster_size=4096",
                raw.toString(), p.toString());
        apply(p, 2, "data 16k 8k", "discard 32k 4k", "zero 40k 8k", "data 900k 2k");
        add("convert-c", List.of(p), false);
    }

    /** base (compat 0.10, 4 KiB clusters) <- mid (64 KiB) <- top (4 KiB), each with data of its own. */
    private void chain() {
        Path base = dir.resolve("chain-base.qcow2");
        qemuImg("create", "-q", "-f", "qcow2", "-o", "compat=0.10,cluster_size=4096", base.toString(), "1M");
        apply(base, 1, "data 0 256k", "data 900k 4k");
        Path mid = dir.resolve("chain-mid.qcow2");
        qemuImg("create", "-q", "-f", "qcow2", "-o", "compat=1.1,cluster_size=65536", "-b", base.getFileName().toString(),
                "-F", "qcow2", mid.toString(), "1M");
        apply(mid, 2, "data 64k 64k", "zero 192k 64k", "data 512k 4k");
        Path top = dir.resolve("chain-top.qcow2");
        qemuImg("create", "-q", "-f", "qcow2", "-o", "compat=1.1,cluster_size=4096", "-b", mid.getFileName().toString(),
                "-F", "qcow2", top.toString(), "1M");
        apply(top, 3, "data 4k 8k", "zero 100k 4k", "data 70k 2k", "discard 8k 4k", "compressed 600k 8k");
        add("chain", List.of(top, mid, base), false);
    }

    /** An internal snapshot: shared clusters without COPIED, a snapshot table, a second L1 table. */
    private void snapshot() {
        Path p = dir.resolve("snap.qcow2");
        qemuImg("create", "-q", "-f", "qcow2", "-o", "compat=1.1,cluster_size=65536", p.toString(), "1M");
        apply(p, 1, "data 0 192k", "data 512k 64k");
        qemuImg("snapshot", "-c", "s1", p.toString());
        apply(p, 2, "data 64k 4k", "discard 512k 64k");
        add("snap", List.of(p), true);
    }

    /**
     * A writable overlay on a base with an internal snapshot: a backing level keeps its
     * snapshots (only the top is refused for them), and their tables are metadata there too.
     */
    private void snapshotBase() {
        Path base = dir.resolve("snapbase-base.qcow2");
        qemuImg("create", "-q", "-f", "qcow2", "-o", "compat=1.1,cluster_size=65536", base.toString(), "1M");
        apply(base, 1, "data 0 192k", "data 640k 64k");
        qemuImg("snapshot", "-c", "s1", base.toString());
        apply(base, 2, "data 64k 4k", "data 700k 4k");
        Path top = dir.resolve("snapbase-top.qcow2");
        qemuImg("create", "-q", "-f", "qcow2", "-o", "compat=1.1,cluster_size=4096", "-b", base.getFileName().toString(),
                "-F", "qcow2", top.toString(), "1M");
        apply(top, 3, "data 8k 8k", "zero 128k 4k");
        add("snapbase", List.of(top, base), false);
    }

    /**
     * Runs the recipe through one qemu-io: {@code data OFF LEN} (tagged data of writer
     * {@code gen}), {@code compressed OFF LEN} (the same, written compressed), {@code zero}
     * (write -z, a zero cluster where the image can say so), {@code discard}.
     */
    private void apply(Path p, int gen, String... recipe) {
        List<String> args = new ArrayList<>(List.of("-f", "qcow2"));
        for (String step : recipe) {
            String[] w = step.split(" ");
            long off = bytes(w[1]);
            int len = (int) bytes(w[2]);
            String cmd;
            switch (w[0]) {
                case "data":
                case "compressed": {
                    Path src = dir.resolve("tags-" + tagFiles++);
                    write(src, tagged(off, len, gen));
                    cmd = "write -q" + (w[0].equals("compressed") ? " -c" : "") + " -s " + src + " " + off + " " + len;
                    break;
                }
                case "zero":
                    cmd = "write -q -z " + off + " " + len;
                    break;
                default:
                    cmd = "discard -q " + off + " " + len;
            }
            args.add("-c");
            args.add(cmd);
        }
        args.add(p.toString());
        QemuTools.Run r = QemuTools.qemuIo(args.toArray(new String[0]));
        if (r.code() != 0 || r.output().contains("error") || r.output().contains("failed")) {
            throw new IllegalStateException("qemu-io " + args + ": " + r);
        }
    }

    private Image add(String name, List<Path> files, boolean snapshots) {
        Path raw = dir.resolve(name + ".expected.raw");
        qemuImg("convert", "-q", "-f", "qcow2", "-O", "raw", files.get(0).toString(), raw.toString());
        try {
            Image image = new Image(name, files, Files.readAllBytes(raw), snapshots);
            Files.delete(raw);
            images.add(image);
            return image;
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    private static long bytes(String s) {
        char unit = s.charAt(s.length() - 1);
        if (unit == 'k' || unit == 'M') {
            return Long.parseLong(s.substring(0, s.length() - 1)) << (unit == 'k' ? 10 : 20);
        }
        return Long.parseLong(s);
    }

    private static void qemuImg(String... args) {
        QemuTools.Run r = QemuTools.qemuImg(args);
        if (r.code() != 0) {
            throw new IllegalStateException("qemu-img " + String.join(" ", args) + ": " + r);
        }
    }

    private static void write(Path p, byte[] data) {
        try {
            Files.write(p, data);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
