package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * SocketFile.listen sets the socket's mode after bind: a writer of the directory that swaps the
 * new socket for a symbolic link in that window must not get the mode put on the link's target
 * (here a private file of ours, 0600, that a mode of 0666 would open to everyone). Before the
 * fix chmod followed the link: the target became 0666 and listen succeeded.
 */
class SocketFileSymlinkSwapTest {
    @TempDir
    Path dir;

    @AfterEach
    void clearSeam() {
        SocketFile.afterBind = null;
    }

    @Test
    void aSymlinkSwappedInAfterBindIsNotFollowed() throws IOException {
        Path secret = Files.writeString(dir.resolve("secret"), "private");
        Files.setPosixFilePermissions(secret, PosixFilePermissions.fromString("rw-------"));
        Path sock = dir.resolve("vhost.sock");
        SocketFile.afterBind = () -> {
            try {
                Files.delete(sock);
                Files.createSymbolicLink(sock, secret);
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        };
        UncheckedIOException e = assertThrows(UncheckedIOException.class, () -> SocketFile.listen(sock, 4, 0666, null));
        assertTrue(String.valueOf(e.getCause().getMessage()).contains("no longer the socket"), e.toString());
        assertEquals("rw-------", PosixFilePermissions.toString(Files.getPosixFilePermissions(secret)),
                "the link's target keeps its mode");
        assertEquals("private", Files.readString(secret));
        assertTrue(!Files.exists(sock, LinkOption.NOFOLLOW_LINKS), "the failed set-up removes what is at the path (the link, not its target)");
    }

    @Test
    void withoutASwapTheModeIsSet() throws IOException {
        Path sock = dir.resolve("vhost.sock");
        SocketFile f = SocketFile.listen(sock, 4, 0660, null);
        try {
            assertEquals("rw-rw----", PosixFilePermissions.toString(Files.getPosixFilePermissions(sock, LinkOption.NOFOLLOW_LINKS)));
        } finally {
            f.closeAndRemove();
        }
    }
}
