package io.vblk.block.qcow2;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import io.vblk.aio.BackendKind;
import io.vblk.sys.NativeBuffer;

/**
 * The process {@link Qcow2DirectMemoryDosTest} runs under a small -XX:MaxDirectMemorySize
 * (rev15a's DirectMemoryDos): a benign disk opens and serves one write; hostile images with
 * large L1 tables (links to the images named on the command line, largest first) are opened
 * until each kind is refused, filling the direct-memory pool every disk shares; then the benign
 * disk writes and reads 4 KiB in each of 40 L2 tables' ranges. Prints "REFUSED class: message"
 * for each refusal, "BENIGN OK" or "BENIGN FAILED ..."/"BENIGN THREW ...".
 */
public final class DirectMemoryHog {
    private static final long GIB = 1L << 30;
    private static final int TABLES = 40;

    private DirectMemoryHog() {
    }

    public static void main(String[] args) throws Exception {
        Path benign = Path.of(args[0]);
        Qcow2Driver good = Qcow2.open(benign, BackendKind.THREADS, 8, Qcow2Options.defaults().direct(false));
        DriverRig rig = new DriverRig(good);
        NativeBuffer buf = DriverRig.buffer(4096);
        System.out.println("first write: " + rig.one(rig.write(0, buf, 4096)));
        List<Qcow2Driver> held = new ArrayList<>();
        Qcow2Options ro = Qcow2Options.defaults().readOnly(true).direct(false);
        for (int k = 1; k < args.length; k++) {
            Path hostile = Path.of(args[k]);
            for (int i = 0; i < 100_000; i++) {
                Path copy = hostile.resolveSibling(hostile.getFileName() + "." + i);
                Files.createLink(copy, hostile);
                try {
                    held.add(Qcow2.open(copy, BackendKind.THREADS, 8, ro));
                } catch (Throwable t) {
                    System.out.println("REFUSED " + (t instanceof IllegalStateException ? "IllegalStateException"
                            : t.getClass().getName()) + ": " + t.getMessage());
                    break;
                }
            }
        }
        System.out.println("hostile images open: " + held.size());
        try {
            for (int t = 1; t <= TABLES; t++) {
                for (int j = 0; j < 4096; j++) {
                    buf.buffer().putByte(j, (byte) t);
                }
                long w = rig.one(rig.write(t * GIB, buf, 4096));
                if (w != 4096) {
                    System.out.println("BENIGN FAILED write at " + t + " GiB: " + w);
                    return;
                }
            }
            for (int t = 1; t <= TABLES; t++) {
                long r = rig.one(rig.read(t * GIB, buf, 4096));
                if (r != 4096 || buf.buffer().getByte(0) != (byte) t || buf.buffer().getByte(4095) != (byte) t) {
                    System.out.println("BENIGN FAILED read at " + t + " GiB: " + r);
                    return;
                }
            }
            System.out.println("BENIGN OK");
        } catch (Throwable t) {
            System.out.println("BENIGN THREW " + t);
        }
        System.out.flush();
        Runtime.getRuntime().halt(0); // the drivers are not closed: quicker, nothing to keep
    }
}
