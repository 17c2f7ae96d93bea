package io.vblk.daemon;

import picocli.CommandLine.IVersionProvider;

/** The version every command and {@code daemon.version} report. */
final class Version implements IVersionProvider {
    static final String VBLK = "0.1.0-SNAPSHOT";

    @Override
    public String[] getVersion() {
        return new String[] {"vblk " + VBLK + " (Java " + Runtime.version() + ")"};
    }
}
