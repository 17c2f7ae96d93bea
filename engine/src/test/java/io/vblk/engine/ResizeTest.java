package io.vblk.engine;

import static io.vblk.engine.BlkRequestDescriptor.S_IOERR;
import static io.vblk.engine.BlkRequestDescriptor.S_OK;
import static io.vblk.engine.BlkRequestDescriptor.T_IN;
import static io.vblk.engine.BlkRequestDescriptor.T_OUT;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.concurrent.CopyOnWriteArrayList;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.BackendKind;

/** Online resize through the embedding API: new capacity checked per request, config-change callback. */
class ResizeTest {
    private static final long BYTES = 8L << 20;

    @TempDir
    Path dir;

    @Test
    void growWhileRunningServesTheNewSectorsAndCallsBack() throws Exception {
        CopyOnWriteArrayList<BlkConfig> changes = new CopyOnWriteArrayList<>();
        DeviceListener listener = new DeviceListener() {
            @Override
            public void configChanged(BlkConfig config) {
                changes.add(config);
            }
        };
        try (DeviceRig rig = DeviceRig.builder(dir, BackendKind.IO_URING).imageBytes(BYTES).listener(listener).build()) {
            long buf = rig.buffer(0, 4096);
            long beyond = BYTES / 512 + 8;
            assertEquals(S_IOERR, rig.roundTrip(0, T_IN, beyond, buf, 4096, true), "beyond the end before the resize");
            rig.image.resize(2 * BYTES);
            rig.device.resize(2 * BYTES);
            assertEquals(1, changes.size());
            assertEquals(2 * BYTES / 512, changes.get(0).capacitySectors());
            assertEquals(2 * BYTES / 512, ByteBuffer.wrap(rig.device.configSpace()).order(ByteOrder.LITTLE_ENDIAN).getLong(0));
            assertEquals(S_OK, rig.roundTrip(0, T_OUT, beyond, buf, 4096, false));
            assertEquals(S_OK, rig.roundTrip(0, T_IN, beyond, buf, 4096, true));
            assertEquals(S_IOERR, rig.roundTrip(0, T_IN, 2 * BYTES / 512, buf, 4096, true), "beyond the new end");
            assertEquals(3, rig.device.counters(0).get(QueueCounters.READS), "requests counted by type, refused ones too");
            assertEquals(1, rig.device.counters(0).get(QueueCounters.WRITES));
            assertThrows(IllegalArgumentException.class, () -> rig.device.resize(1000));
        }
    }
}
