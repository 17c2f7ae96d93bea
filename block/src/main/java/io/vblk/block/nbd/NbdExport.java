package io.vblk.block.nbd;

/**
 * What the handshake learnt about an export: its size, transmission flags, block-size
 * constraints and whether structured replies are on.
 */
final class NbdExport {
    final long sizeBytes;
    final int flags;
    final int minBlock;
    final int preferredBlock;
    final int maxPayload;
    final boolean structuredReplies;

    NbdExport(long sizeBytes, int flags, int minBlock, int preferredBlock, int maxPayload, boolean structuredReplies) {
        this.sizeBytes = sizeBytes;
        this.flags = flags;
        this.minBlock = minBlock;
        this.preferredBlock = preferredBlock;
        this.maxPayload = maxPayload;
        this.structuredReplies = structuredReplies;
    }

    boolean has(int flag) {
        return (flags & flag) != 0;
    }

    boolean readOnly() {
        return has(NbdProtocol.FLAG_READ_ONLY);
    }

    @Override
    public String toString() {
        return "NbdExport[size=" + sizeBytes + ", flags=0x" + Integer.toHexString(flags) + ", block=" + minBlock
                + "/" + preferredBlock + "/" + maxPayload + ", structured=" + structuredReplies + "]";
    }
}
