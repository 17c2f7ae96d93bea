package io.vblk.block.nbd;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Path;

import org.junit.jupiter.api.Test;

class NbdAddressTest {
    @Test
    void parsesTcpAndUnixUris() {
        NbdAddress tcp = NbdAddress.parse("nbd://127.0.0.1:10810/disk0");
        assertEquals("127.0.0.1", tcp.host());
        assertEquals(10810, tcp.port());
        assertEquals("disk0", tcp.exportName());
        assertNull(tcp.socket());
        assertEquals(NbdAddress.DEFAULT_PORT, NbdAddress.parse("nbd://localhost/").port());
        assertEquals("", NbdAddress.parse("nbd://localhost").exportName());
        NbdAddress unix = NbdAddress.parse("nbd+unix:///vol%201?socket=/tmp/a%20b.sock");
        assertEquals(Path.of("/tmp/a b.sock"), unix.socket());
        assertEquals("vol 1", unix.exportName());
    }

    @Test
    void refusesTlsMissingPartsAndOtherSchemes() {
        assertThrows(IllegalArgumentException.class, () -> NbdAddress.parse("nbds://127.0.0.1/x"));
        assertThrows(IllegalArgumentException.class, () -> NbdAddress.parse("nbd+unix:///x"));
        assertThrows(IllegalArgumentException.class, () -> NbdAddress.parse("http://x/y"));
        assertThrows(IllegalArgumentException.class, () -> NbdAddress.parse("nbd:///x"));
    }

    @Test
    void tcpIsLimitedToLoopback() {
        assertThrows(java.io.IOException.class, () -> NbdSocket.loopback("192.0.2.1"));
    }
}
