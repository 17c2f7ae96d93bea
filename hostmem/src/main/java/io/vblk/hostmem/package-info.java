/**
 * Guest memory: an immutable, sorted table of regions (guest-physical address to host mapping,
 * length, read-only flag), bounds-checked translation of guest ranges into host segments, and
 * the publication of a new table while the data plane runs ({@link io.vblk.hostmem.MemoryMap}).
 */
package io.vblk.hostmem;
