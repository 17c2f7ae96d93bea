package io.vblk.vhost;

import java.util.Arrays;
import java.util.stream.Collectors;

import io.vblk.sys.Native;
import io.vblk.sys.NativeException;
import io.vblk.sys.UnixSocket;

/**
 * Which frontends the server serves, by the uid the kernel vouches for (SO_PEERCRED, taken at
 * connect time; a frontend cannot forge it). The socket file's mode is the first gate; this one
 * still holds where the mode is opened for a group, or the file is reachable another way.
 */
public final class PeerFilter {
    private static final int ROOT = 0;

    private final int[] allowed;

    private PeerFilter(int[] allowed) {
        this.allowed = allowed.clone();
        Arrays.sort(this.allowed);
    }

    /** The server's own uid and root. */
    public static PeerFilter defaults() {
        int self = Native.libc().getuid();
        return self == ROOT ? new PeerFilter(new int[] {ROOT}) : new PeerFilter(new int[] {ROOT, self});
    }

    /** Exactly {@code uids} (root too only if listed). */
    public static PeerFilter of(int... uids) {
        if (uids.length == 0) {
            throw new IllegalArgumentException("no uid allowed: no frontend could ever connect");
        }
        return new PeerFilter(uids);
    }

    /**
     * Null when {@code client} may be served, else the one-line reason it is not (its pid and
     * uid, and who is allowed).
     */
    public String refusal(UnixSocket client) {
        int[] cred;
        try {
            cred = client.peerCredentials();
        } catch (NativeException e) {
            return "refused a connection whose credentials cannot be read (" + e.getMessage() + ")";
        }
        int uid = cred[1];
        if (Arrays.binarySearch(allowed, uid) >= 0) {
            return null;
        }
        return "refused a connection from pid " + cred[0] + ", uid " + Integer.toUnsignedString(uid)
                + ": uid not allowed (allowed: " + describe() + ")";
    }

    /** The allowed uids, comma-separated. */
    public String describe() {
        return Arrays.stream(allowed).mapToObj(Integer::toUnsignedString).collect(Collectors.joining(","));
    }
}
