package io.vblk.vhost;

import io.vblk.engine.BlockDevice;

import org.agrona.concurrent.UnsafeBuffer;

/**
 * The device config space (protocol feature CONFIG): GET_CONFIG answers with exactly the size
 * asked (QEMU asks 57 bytes of virtio_blk_config and refuses any other length), zero beyond
 * what the device defines. SET_CONFIG may only write what the guest may change; vblk offers no
 * writable field (CONFIG_WCE is not offered), so a write that would change a byte is refused.
 */
final class ConfigRequests {
    private final BlockDevice device;
    private final MessageChannel channel;
    /** The config space as of the current request: read from the device, which an online resize changes. */
    private byte[] config;

    ConfigRequests(BlockDevice device, MessageChannel channel) {
        this.device = device;
        this.channel = channel;
        this.config = device.configSpace();
    }

    /** Checks the {offset, size, flags, payload} framing and returns the size. */
    private static int checkFraming(Message m) {
        m.requireFds(0);
        if (Integer.compareUnsigned(m.size(), MessageDescriptor.CONFIG_PAYLOAD_OFFSET) < 0) {
            throw ProtocolError.rejected(m.name() + " payload of " + m.size() + " bytes has no config header");
        }
        long offset = Integer.toUnsignedLong(m.u32(MessageDescriptor.CONFIG_OFFSET_OFFSET));
        long size = Integer.toUnsignedLong(m.u32(MessageDescriptor.CONFIG_SIZE_OFFSET));
        if (size > MessageDescriptor.CONFIG_MAX_SIZE || offset > MessageDescriptor.CONFIG_MAX_SIZE - size) {
            throw ProtocolError.rejected(m.name() + " of " + size + " bytes at offset " + offset + " exceeds the "
                    + MessageDescriptor.CONFIG_MAX_SIZE + "-byte config space");
        }
        m.requireSize(MessageDescriptor.CONFIG_PAYLOAD_OFFSET + (int) size);
        return (int) size;
    }

    private byte configByte(int offset) {
        return offset < config.length ? config[offset] : 0;
    }

    void getConfig(Message m) {
        int size = checkFraming(m);
        config = device.configSpace();
        int offset = m.u32(MessageDescriptor.CONFIG_OFFSET_OFFSET);
        UnsafeBuffer reply = channel.replyPayload();
        reply.putInt(MessageDescriptor.CONFIG_OFFSET_OFFSET, offset);
        reply.putInt(MessageDescriptor.CONFIG_SIZE_OFFSET, size);
        reply.putInt(MessageDescriptor.CONFIG_FLAGS_OFFSET, m.u32(MessageDescriptor.CONFIG_FLAGS_OFFSET));
        for (int i = 0; i < size; i++) {
            reply.putByte(MessageDescriptor.CONFIG_PAYLOAD_OFFSET + i, configByte(offset + i));
        }
        channel.reply(m.request(), MessageDescriptor.CONFIG_PAYLOAD_OFFSET + size);
    }

    void setConfig(Message m) {
        int size = checkFraming(m);
        config = device.configSpace();
        int offset = m.u32(MessageDescriptor.CONFIG_OFFSET_OFFSET);
        for (int i = 0; i < size; i++) {
            if (m.payload().getByte(MessageDescriptor.CONFIG_PAYLOAD_OFFSET + i) != configByte(offset + i)) {
                throw ProtocolError.rejected("SET_CONFIG would change config byte " + (offset + i)
                        + "; no field of this device is writable");
            }
        }
    }

    /** GET_CONFIG's answer to a request it cannot serve: an empty payload, which QEMU takes as failure. */
    void refuse(Message m) {
        channel.reply(m.request(), 0);
    }
}
