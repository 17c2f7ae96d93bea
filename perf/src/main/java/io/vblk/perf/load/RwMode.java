package io.vblk.perf.load;

import java.util.Locale;

/** The access pattern of a workload, with fio's names. */
public enum RwMode {
    /** Random reads. */
    RANDREAD("randread", true, true, false),
    /** Random writes. */
    RANDWRITE("randwrite", true, false, true),
    /** Sequential reads. */
    READ("read", false, true, false),
    /** Sequential writes. */
    WRITE("write", false, false, true),
    /** Random reads and writes, mixed by {@link Workload#readPercent()}. */
    RANDRW("randrw", true, true, true);

    private final String fioName;
    private final boolean random;
    private final boolean reads;
    private final boolean writes;

    RwMode(String fioName, boolean random, boolean reads, boolean writes) {
        this.fioName = fioName;
        this.random = random;
        this.reads = reads;
        this.writes = writes;
    }

    /** fio's {@code --rw} value, also the command-line spelling. */
    public String fioName() {
        return fioName;
    }

    /** Whether offsets are random (else each queue walks the device sequentially). */
    public boolean random() {
        return random;
    }

    /** Whether the workload reads. */
    public boolean reads() {
        return reads;
    }

    /** Whether the workload writes. */
    public boolean writes() {
        return writes;
    }

    /** Parses a fio name. */
    public static RwMode parse(String name) {
        String n = name.trim().toLowerCase(Locale.ROOT);
        for (RwMode m : values()) {
            if (m.fioName.equals(n)) {
                return m;
            }
        }
        throw new IllegalArgumentException("unknown --rw '" + name + "' (expected randread, randwrite, read, write or randrw)");
    }

    @Override
    public String toString() {
        return fioName;
    }
}
