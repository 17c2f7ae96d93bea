package io.vblk.vring;

/**
 * The VIRTIO_F_EVENT_IDX arithmetic (virtio 1.2 2.7.7 and 2.7.10) on free-running u16 indices.
 */
public final class EventIndex {
    private EventIndex() {
    }

    /**
     * Whether moving an index from {@code oldIdx} to {@code newIdx} crossed {@code event}, i.e.
     * {@code event} lies in {@code [oldIdx, newIdx)} modulo 2<sup>16</sup>: the other side asked
     * to be notified when the entry at {@code event} is published. This is {@code vring_need_event}.
     */
    public static boolean needEvent(int event, int newIdx, int oldIdx) {
        return ((newIdx - event - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
    }

    /** How far {@code to} is ahead of {@code from}, modulo 2<sup>16</sup>. */
    public static int distance(int from, int to) {
        return (to - from) & 0xffff;
    }
}
