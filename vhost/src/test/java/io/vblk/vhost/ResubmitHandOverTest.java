package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import org.agrona.UnsafeApi;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;
import io.vblk.aio.Image;
import io.vblk.aio.ImageOptions;
import io.vblk.engine.BlkConfig;
import io.vblk.engine.Tuning;
import io.vblk.sys.Mapping;
import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.TestGuest;

/**
 * Review 11a: GET_VRING_BASE must answer only after every request behind the index it answers
 * has completed. After an inflight recovery the device resumes at {@code used.idx + k} with k
 * heads queued for resubmission; when those have not all been popped yet (a throttled export,
 * a full request pool, or simply a stop that comes before the first round) the stop drains only
 * what was popped and answers {@code used.idx + k}. A migration destination (fresh inflight
 * buffer) resumes there: the unresubmitted requests are never executed and never completed.
 */
class ResubmitHandOverTest {
    static final int BLOCK = 4096;

    @TempDir
    Path dir;

    private static long sector(int i) {
        return 256 + 16L * i;
    }

    private static byte[] imageBytes(Path image, long offset, int length) throws IOException {
        try (RandomAccessFile f = new RandomAccessFile(image.toFile(), "r")) {
            byte[] b = new byte[length];
            f.seek(offset);
            f.readFully(b);
            return b;
        }
    }

    @Test
    void getVringBaseDoesNotAnswerPastResubmissionsThatNeverRan() throws Exception {
        Path imagePath = dir.resolve("disk.img");
        Files.write(imagePath, new byte[(int) ServerRig.IMAGE_BYTES]);
        Path socket = dir.resolve("vhost.sock");
        List<String> lines = new ArrayList<>();
        Log log = Log.to(l -> {
            synchronized (lines) {
                lines.add(l);
            }
        });
        try (Image image = Image.open(imagePath, ImageOptions.defaults())) {
            BlkConfig config = BlkConfig.builder(ServerRig.IMAGE_BYTES).numQueues(1).queueSize(1024).segMax(254)
                    .serial("rev11a").build();
            // An export throttled to 1 IOPS (vblk daemon's iops_limit): one request per second.
            Tuning tuning = Tuning.builder().iopsLimit(1).build();
            VhostUserServer server = VhostUserServer.builder(socket, config,
                    new BackendChoice(BackendKind.IO_URING, image, log)).tuning(tuning).log(log).name("rev11a").build();
            Thread serving = new Thread(server::serve, "rev11a-server");
            serving.start();
            try (TestGuest g = new TestGuest();
                 QemuFlow qemu = new QemuFlow(VhostUserFrontend_connect(socket), g, 1)) {
                int size = 32;
                BlkQueue q = g.queue(0, size, true);
                qemu.init(CrashRecoveryTest.PROTOCOL, q);
                qemu.inflight = qemu.f.getInflightFd(1, size);
                int[] h = new int[3];
                for (int i = 0; i < 3; i++) {
                    long data = q.dataGpa + (long) BLOCK * i;
                    byte[] pattern = BlkQueue.pattern(sector(i), BLOCK, 40 + i);
                    UnsafeApi.copyMemory(pattern, UnsafeApi.arrayBaseOffset(byte[].class), null, q.host(data), BLOCK);
                    h[i] = q.add(BlkQueue.T_OUT, sector(i), data, BLOCK, false);
                }
                q.publish();
                // The region a crashed backend left: the three writes popped (in order), none completed.
                try (Mapping m = Mapping.map(qemu.inflight.fd(), 0, qemu.inflight.mmapSize(), false, false)) {
                    long r = m.address();
                    UnsafeApi.putShort(r + 8, (short) 1);
                    UnsafeApi.putShort(r + 10, (short) size);
                    UnsafeApi.putShort(r + 12, (short) 0);
                    UnsafeApi.putShort(r + 14, (short) 0);
                    for (int i = 0; i < 3; i++) {
                        UnsafeApi.putByte(r + 16 + 16L * h[i], (byte) 1);
                        UnsafeApi.putLong(r + 16 + 16L * h[i] + 8, i);
                    }
                }
                // QEMU reconnects and rewinds to used.idx = 0.
                qemu.start(qemu.linuxFeatures(), true, new int[] {0}, q);
                assertEquals(h[0], q.awaitUsed(), "the first resubmission runs");
                // Now the VM stops for a migration: SET_VRING_ENABLE 0, GET_VRING_BASE.
                int base = qemu.stop(q)[0];
                // Drained means: every request the device consumed (avail index < base) completed.
                assertEquals(base, q.driver.usedIdx(), "GET_VRING_BASE answered " + base + " but only "
                        + q.driver.usedIdx() + " of the requests behind it completed (statuses " + q.status(0) + ","
                        + q.status(1) + "," + q.status(2) + ")");
                for (int i = 0; i < 3; i++) {
                    assertArrayEquals(BlkQueue.pattern(sector(i), BLOCK, 40 + i),
                            imageBytes(imagePath, sector(i) * 512, BLOCK), "write " + i + " behind the answered index");
                }
            } finally {
                server.close();
                serving.join(10_000);
                synchronized (lines) {
                    lines.forEach(l -> System.out.println("server: " + l));
                }
            }
        }
    }

    private static io.vblk.testkit.VhostUserFrontend VhostUserFrontend_connect(Path socket) {
        return io.vblk.testkit.VhostUserFrontend.connect(socket);
    }
}
