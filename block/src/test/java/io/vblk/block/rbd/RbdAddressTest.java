package io.vblk.block.rbd;

import static org.junit.jupiter.api.Assertions.*;

import org.junit.jupiter.api.Test;

class RbdAddressTest {
    @Test
    void parsesQemuSyntax() {
        RbdAddress a = RbdAddress.parse("rbd:pool1/vol1@snap:conf=/etc/ceph/x.conf:id=user:rbd_cache=false");
        assertEquals("pool1", a.pool());
        assertNull(a.namespace());
        assertEquals("vol1", a.image());
        assertEquals("snap", a.snapshot());
        assertEquals("/etc/ceph/x.conf", a.conf());
        assertEquals("user", a.id());
        assertEquals("false", a.options().get("rbd_cache"));
        RbdAddress ns = RbdAddress.parse("rbd:p/ns/img:mon_host=127.0.0.1\\:3300");
        assertEquals("ns", ns.namespace());
        assertEquals("img", ns.image());
        assertNull(ns.snapshot());
        assertEquals("127.0.0.1:3300", ns.options().get("mon_host"));
    }

    @Test
    void refusesIncompleteAddresses() {
        assertThrows(IllegalArgumentException.class, () -> RbdAddress.parse("rbd:pool"));
        assertThrows(IllegalArgumentException.class, () -> RbdAddress.parse("rbd:pool/"));
        assertThrows(IllegalArgumentException.class, () -> RbdAddress.parse("rbd:pool/img@"));
        assertThrows(IllegalArgumentException.class, () -> RbdAddress.parse("rbd:pool/img:novalue"));
        assertThrows(IllegalArgumentException.class, () -> RbdAddress.parse("nbd://x/y"));
    }
}
