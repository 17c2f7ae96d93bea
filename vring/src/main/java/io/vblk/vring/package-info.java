/**
 * The split virtqueue (virtio 1.2 2.7) in guest memory: the device side
 * ({@link io.vblk.vring.SplitQueue}: pop descriptor chains, push used elements, notification
 * suppression), the driver side (in the test kit, {@code io.vblk.testkit.SplitQueueDriver}) and the ring layouts as
 * {@code *Descriptor} classes of named offsets.
 */
package io.vblk.vring;
