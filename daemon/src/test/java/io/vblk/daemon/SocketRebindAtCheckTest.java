package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.TestGuest;
import io.vblk.testkit.VhostUserFrontend;
import io.vblk.vhost.SocketFile;

/**
 * The daemon's periodic socket check (Daemon#checkSockets, every 10 s) listens again at an
 * export's path by itself: the first check that finds the file gone tells it (socket_missing),
 * the next one still finding it gone rebinds, and a frontend connects by name again. A check
 * that finds the file in place does nothing.
 */
class SocketRebindAtCheckTest {
    @TempDir
    Path dir;

    @Test
    void theSecondCheckThatFindsTheSocketGoneRebindsIt() throws Exception {
        Path img = dir.resolve("d0.img");
        Files.write(img, new byte[1 << 20]);
        try (ExportFixture x = new ExportFixture(dir)) {
            ExportSpec spec = x.spec("d0", img);
            try (Export export = Export.open(spec, x.log, null, x.control)) {
                Path sock = export.socketPath();
                export.checkSocketAndRebind();
                assertFalse(export.socketMissing());

                Files.delete(sock);
                export.checkSocketAndRebind();
                assertTrue(export.socketMissing(), "the first check tells the loss");
                assertFalse(Files.exists(sock), "and leaves it visible for one period");
                export.checkSocketAndRebind();
                assertFalse(export.socketMissing(), "the next one rebinds");
                assertTrue(SocketFile.isSocket(sock));
                assertTrue(x.said("export d0: listening again on " + sock), x.lines.toString());
                try (TestGuest g = new TestGuest()) {
                    QemuFlow.goodFrontendRoundTrip(VhostUserFrontend.connect(sock), g, g.queue(0, 128, true), 1);
                }
            }
        }
    }
}
