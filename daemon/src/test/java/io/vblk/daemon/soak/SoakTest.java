package io.vblk.daemon.soak;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.testkit.soak.Soak;

/**
 * The soak at CI size: 20 s of {@code vblk serve} (a real process on a real image file) under
 * mixed tagged I/O, with a stop/resume every second and a reconnect at 10 s; nothing lost, no
 * request failed, every block right through the device and in the file. {@code scripts/soak}
 * runs it for longer.
 */
class SoakTest {
    private static final long IMAGE_BYTES = 16L << 20;

    @TempDir
    Path dir;

    @Test
    void twentySecondsOfStopsResumesAndReconnectsLoseNothing() throws Exception {
        long seconds = Long.getLong("vblk.soak.seconds", 20);
        Soak.Report r = Soak.run(dir, TimeUnit.SECONDS.toNanos(seconds), IMAGE_BYTES, null, 32, 7, System.out);
        System.out.println(r);
        assertTrue(r.clean(), r.toString());
        assertEquals(0, r.lost(), r.toString());
        long blocks = IMAGE_BYTES / 4096;
        assertEquals(blocks, r.blocksVerifiedAtEnd(), r.toString());
        assertEquals(blocks, r.blocksVerifiedOnDisk(), r.toString());
        assertTrue(r.reconnects() >= seconds / 10 - 1 && r.reconnects() >= 1, r.toString());
        assertTrue(r.stopResumes() >= seconds - seconds / 10 - 3, r.toString());
        assertTrue(r.readsVerified() > 1000 && r.writesCompleted() > 1000, r.toString());
    }
}
