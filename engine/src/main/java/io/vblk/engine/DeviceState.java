package io.vblk.engine;

import java.util.Arrays;
import java.util.Objects;

import io.vblk.vring.QueueState;

/**
 * What a migration carries of a virtio-blk device besides guest memory and the disk: the
 * negotiated features, the config space (to check the destination serves the same disk), and
 * each queue's {@link QueueState} (ring layout, next available and next used index; null for a
 * queue the driver never set up). Taken by {@link BlockDevice#saveState()} with the queues
 * stopped, given to {@link BlockDevice#restoreState} on the destination.
 *
 * @param features negotiated virtio features
 * @param config   the virtio_blk_config bytes
 * @param queues   one state per queue, null where not configured
 */
public record DeviceState(long features, byte[] config, QueueState[] queues) {
    /** Copies the arrays: a state is a value. */
    public DeviceState {
        config = Objects.requireNonNull(config, "config").clone();
        queues = Objects.requireNonNull(queues, "queues").clone();
    }

    @Override
    public byte[] config() {
        return config.clone();
    }

    @Override
    public QueueState[] queues() {
        return queues.clone();
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof DeviceState s && features == s.features && Arrays.equals(config, s.config)
                && Arrays.equals(queues, s.queues);
    }

    @Override
    public int hashCode() {
        return Objects.hash(features, Arrays.hashCode(config), Arrays.hashCode(queues));
    }

    @Override
    public String toString() {
        return String.format("DeviceState[features 0x%x, %d config bytes, queues %s]", features, config.length,
                Arrays.toString(queues));
    }
}
