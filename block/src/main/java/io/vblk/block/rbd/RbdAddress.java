package io.vblk.block.rbd;

import java.util.LinkedHashMap;
import java.util.Map;

/**
 * An RBD image in QEMU's syntax: {@code rbd:POOL[/NAMESPACE]/IMAGE[@SNAP][:conf=PATH][:id=USER]
 * [:KEY=VALUE...]}, where other {@code KEY=VALUE} pairs are Ceph options and {@code \:} is a
 * literal colon. A snapshot is read-only.
 */
public final class RbdAddress {
    private final String pool;
    private final String namespace;
    private final String image;
    private final String snapshot;
    private final String conf;
    private final String id;
    private final Map<String, String> options;

    private RbdAddress(String pool, String namespace, String image, String snapshot, String conf, String id,
            Map<String, String> options) {
        this.pool = pool;
        this.namespace = namespace;
        this.image = image;
        this.snapshot = snapshot;
        this.conf = conf;
        this.id = id;
        this.options = options;
    }

    /** Whether {@code address} names an RBD image. */
    public static boolean matches(String address) {
        return address.startsWith("rbd:");
    }

    /** Parses {@code address}; throws IllegalArgumentException naming the bad part. */
    public static RbdAddress parse(String address) {
        if (!matches(address)) {
            throw new IllegalArgumentException("not an RBD address (rbd:POOL/IMAGE...): " + address);
        }
        java.util.List<String> parts = splitUnescaped(address.substring(4));
        String path = parts.get(0);
        String snapshot = null;
        int at = path.indexOf('@');
        if (at >= 0) {
            snapshot = path.substring(at + 1);
            path = path.substring(0, at);
            if (snapshot.isEmpty()) {
                throw new IllegalArgumentException("empty snapshot name in " + address);
            }
        }
        String[] names = path.split("/", -1);
        if (names.length < 2 || names.length > 3) {
            throw new IllegalArgumentException("expected rbd:POOL/IMAGE or rbd:POOL/NAMESPACE/IMAGE: " + address);
        }
        for (String n : names) {
            if (n.isEmpty()) {
                throw new IllegalArgumentException("empty pool, namespace or image name in " + address);
            }
        }
        String conf = null;
        String id = null;
        Map<String, String> options = new LinkedHashMap<>();
        for (int i = 1; i < parts.size(); i++) {
            String kv = parts.get(i);
            int eq = kv.indexOf('=');
            if (eq <= 0) {
                throw new IllegalArgumentException("expected KEY=VALUE after ':' in " + address + ": " + kv);
            }
            String key = kv.substring(0, eq);
            String value = kv.substring(eq + 1);
            if (key.equals("conf")) {
                conf = value;
            } else if (key.equals("id")) {
                id = value;
            } else {
                options.put(key, value);
            }
        }
        return new RbdAddress(names[0], names.length == 3 ? names[1] : null, names[names.length - 1], snapshot, conf, id,
                Map.copyOf(options));
    }

    private static java.util.List<String> splitUnescaped(String s) {
        java.util.List<String> parts = new java.util.ArrayList<>();
        StringBuilder current = new StringBuilder();
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c == '\\' && i + 1 < s.length()) {
                current.append(s.charAt(++i));
            } else if (c == ':') {
                parts.add(current.toString());
                current.setLength(0);
            } else {
                current.append(c);
            }
        }
        parts.add(current.toString());
        return parts;
    }

    public String pool() {
        return pool;
    }

    /** The RADOS namespace, or null. */
    public String namespace() {
        return namespace;
    }

    public String image() {
        return image;
    }

    /** The snapshot, or null for the image itself. */
    public String snapshot() {
        return snapshot;
    }

    /** The ceph.conf path, or null for librados' default search. */
    public String conf() {
        return conf;
    }

    /** The client id (user without "client."), or null for the default ("admin"). */
    public String id() {
        return id;
    }

    /** Other Ceph options to set. */
    public Map<String, String> options() {
        return options;
    }

    @Override
    public String toString() {
        return "rbd:" + pool + "/" + (namespace == null ? "" : namespace + "/") + image
                + (snapshot == null ? "" : "@" + snapshot) + (conf == null ? "" : ":conf=" + conf)
                + (id == null ? "" : ":id=" + id);
    }
}
