/**
 * Block drivers: the layer between the virtio-blk device and the I/O back ends. A driver turns
 * one guest request into one or more back-end operations (metadata, then data) on the I/O
 * thread that owns the request: {@code raw}, {@code qcow2} with backing chains, and the network
 * drivers ({@code nbd}, {@code rbd}).
 */
package io.vblk.block;
