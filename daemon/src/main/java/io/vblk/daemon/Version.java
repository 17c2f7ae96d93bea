package io.vblk.daemon;

import picocli.CommandLine.IVersionProvider;

/** The version every command and {@code daemon.version} report ({@code vblk bench} too). */
public final class Version implements IVersionProvider {
    static final String VBLK = "0.1.0-SNAPSHOT";

    /** For picocli, which creates it reflectively. */
    public Version() {
    }

    @Override
    public String[] getVersion() {
        return new String[] {"vblk " + VBLK + " (Java " + Runtime.version() + ")"};
    }
}
