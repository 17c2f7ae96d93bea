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
    void refusesMissingPartsUnknownParametersAndOtherSchemes() {
        assertThrows(IllegalArgumentException.class, () -> NbdAddress.parse("nbds+unix:///x"));
        assertThrows(IllegalArgumentException.class, () -> NbdAddress.parse("nbd+unix:///x"));
        assertThrows(IllegalArgumentException.class, () -> NbdAddress.parse("http://x/y"));
        assertThrows(IllegalArgumentException.class, () -> NbdAddress.parse("nbd:///x"));
        assertThrows(IllegalArgumentException.class, () -> NbdAddress.parse("nbd://h/x?sokcet=/a"));
        assertNotNull(NbdAddress.parse("nbd://h/x?x-experimental=1"));
    }

    @Test
    void parsesTlsUrisAndTheirParameters() throws Exception {
        NbdAddress tcp = NbdAddress.parse("nbds://storage.example:10810/vol");
        assertTrue(tcp.tls());
        assertEquals("storage.example", tcp.host());
        assertEquals("nbds://storage.example:10810/vol", tcp.toString());
        NbdTls t = tcp.tlsCredentials(null);
        assertNull(t.caFile(), "no directory: the JVM's trust store");
        assertTrue(t.verifyPeer());
        Path creds = java.nio.file.Files.createTempDirectory("nbdtls");
        NbdAddress unix = NbdAddress.parse("nbds+unix:///vol?socket=/run/s.sock&tls-certificates=" + creds
                + "&tls-hostname=store1&tls-verify-peer=0&tls-type=x509");
        assertTrue(unix.tls());
        NbdTls u = unix.tlsCredentials(null);
        assertEquals("store1", u.hostname());
        assertFalse(u.verifyPeer());
        // Credentials given by the caller win over the URI's directory; the URI's host name still applies.
        assertEquals("store1", unix.tlsCredentials(NbdTls.defaults()).hostname());
        assertNull(NbdAddress.parse("nbd://h/x").tlsCredentials(NbdTls.defaults()), "a plain address never uses TLS");
        java.nio.file.Files.delete(creds);
    }

    @Test
    void refusesTlsParametersOnPlainUrisAndUnsupportedTlsTypes() {
        assertThrows(IllegalArgumentException.class, () -> NbdAddress.parse("nbd://h/x?tls-certificates=/etc/pki"));
        assertThrows(IllegalArgumentException.class, () -> NbdAddress.parse("nbds://h/x?tls-type=psk"));
        assertThrows(IllegalArgumentException.class, () -> NbdAddress.parse("nbds://h/x?tls-verify-peer=maybe"));
    }

    @Test
    void tcpResolvesAnyHostIncludingIpv6() throws Exception {
        assertFalse(NbdSocket.isLoopback("192.0.2.1"), "remote hosts are allowed, and known as remote");
        assertTrue(NbdSocket.isLoopback("127.0.0.1"));
        assertTrue(NbdSocket.isLoopback("[::1]"));
        assertEquals("::1", NbdAddress.parse("nbd://[::1]:10809/x").host().replace("[", "").replace("]", ""));
    }
}
