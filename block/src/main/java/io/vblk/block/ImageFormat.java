package io.vblk.block;

import java.util.Locale;

/** The image formats a disk can be served in. The format is always named, never guessed. */
public enum ImageFormat {
    /** The file is the disk, byte for byte. */
    RAW("raw"),
    /** QEMU's copy-on-write format, versions 2 and 3, with backing chains. */
    QCOW2("qcow2");

    private final String cliName;

    ImageFormat(String cliName) {
        this.cliName = cliName;
    }

    /** The name used on command lines: {@code raw} or {@code qcow2}. */
    public String cliName() {
        return cliName;
    }

    /** Parses a command-line name (case-insensitive). */
    public static ImageFormat parse(String name) {
        if (name != null) {
            String n = name.trim().toLowerCase(Locale.ROOT);
            for (ImageFormat f : values()) {
                if (f.cliName.equals(n)) {
                    return f;
                }
            }
        }
        throw new IllegalArgumentException("unknown image format '" + name + "': expected raw or qcow2");
    }

    @Override
    public String toString() {
        return cliName;
    }
}
