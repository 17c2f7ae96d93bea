package io.vblk.engine;

/**
 * The device as the data plane sees it: the offered config plus what the driver negotiated.
 * Read by the I/O threads on every request; written only while the device is stopped, except
 * the config as a whole, which a resize replaces (a volatile reference: a request is checked
 * against either the old capacity or the new, never a mix).
 */
final class DeviceModel {
    private volatile BlkConfig config;
    private volatile long negotiated;

    DeviceModel(BlkConfig config) {
        this.config = config;
        this.negotiated = config.offeredFeatures();
    }

    BlkConfig config() {
        return config;
    }

    void setConfig(BlkConfig value) {
        config = value;
    }

    void negotiate(long driverFeatures) {
        negotiated = driverFeatures & config.offeredFeatures();
    }

    long negotiatedFeatures() {
        return negotiated;
    }

    boolean negotiated(int bit) {
        return BlkFeatures.has(negotiated, bit);
    }

    long capacitySectors() {
        return config.capacitySectors();
    }

    boolean readOnly() {
        return config.readOnly();
    }

    byte[] serial() {
        return config.serialBytes();
    }

    int segMax() {
        return config.segMax();
    }

    int maxDiscardSeg() {
        return config.maxDiscardSeg();
    }

    int maxWriteZeroesSeg() {
        return config.maxWriteZeroesSeg();
    }

    long maxDiscardSectors() {
        return config.maxDiscardSectors();
    }

    long maxWriteZeroesSectors() {
        return config.maxWriteZeroesSectors();
    }

    int maxSegmentsPerRange() {
        return Math.max(config.maxDiscardSeg(), config.maxWriteZeroesSeg());
    }
}
