package io.vblk.vhost;

import java.io.IOException;
import java.nio.file.Path;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.TestGuest;
import io.vblk.testkit.VhostUserFrontend;

/**
 * Tests against one server (one queue) and one test guest, both fresh for every test. The server
 * numbers its frontends in connection order and logs by that number, so the connections are
 * opened here and counted in {@link #sessions}: the latest connection is frontend
 * {@code sessions} in the server's log.
 */
abstract class OneServerCase {
    @TempDir
    Path dir;
    ServerRig rig;
    TestGuest guest;
    int sessions;

    @BeforeEach
    void startServer() throws IOException {
        rig = startRig(dir);
        guest = new TestGuest();
    }

    /** The server of each test (one queue, default options); a case may start another kind. */
    ServerRig startRig(Path dir) throws IOException {
        return ServerRig.start(dir, 1);
    }

    @AfterEach
    void stopServer() {
        guest.close();
        rig.close();
    }

    /** A new connection with nothing sent yet: frontend number {@link #sessions}. */
    VhostUserFrontend newSession() {
        sessions++;
        return rig.connect();
    }

    /** A new connection, to be driven as QEMU 7.2 drives it. */
    QemuFlow qemuSession() {
        return new QemuFlow(newSession(), guest, 1);
    }

    /** Waits until the server logs a line about the latest session containing {@code expected}. */
    void complained(String expected) {
        rig.awaitLine(l -> l.startsWith("frontend " + sessions + ": ") && l.contains(expected));
    }
}
