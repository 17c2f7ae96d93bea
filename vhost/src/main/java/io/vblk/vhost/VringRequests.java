package io.vblk.vhost;

import io.vblk.engine.BlockDevice;
import io.vblk.hostmem.DirtyLog;
import io.vblk.hostmem.GuestMemory;
import io.vblk.sys.EventFd;
import io.vblk.vring.AvailRingDescriptor;
import io.vblk.vring.UsedRingDescriptor;
import io.vblk.vring.VirtqDescriptor;

/**
 * Ring set-up and control: SET_VRING_NUM, _ADDR, _BASE, _KICK, _CALL, _ERR, _ENABLE and
 * GET_VRING_BASE.
 */
final class VringRequests {
    private final FrontendState state;
    private final QueueControl control;
    private final MessageChannel channel;
    private final int maxQueueSize;

    VringRequests(FrontendState state, QueueControl control, MessageChannel channel) {
        this.state = state;
        this.control = control;
        this.channel = channel;
        this.maxQueueSize = control.device().config().queueSize();
    }

    /** The ring a vring-state message ({index, num}) names. */
    private Vring stateTarget(Message m) {
        m.requireSize(MessageDescriptor.STATE_LENGTH);
        m.requireFds(0);
        state.requireOwner(m);
        return state.vring(m, Integer.toUnsignedLong(m.u32(MessageDescriptor.STATE_INDEX_OFFSET)));
    }

    private static long stateNum(Message m) {
        return Integer.toUnsignedLong(m.u32(MessageDescriptor.STATE_NUM_OFFSET));
    }

    private static void requireStopped(Message m, Vring v) {
        if (v.running) {
            throw ProtocolError.rejected(m.name() + " while vring " + v.index + " runs (GET_VRING_BASE stops it)");
        }
    }

    /** The split ring's size must be a power of 2 (virtio 1.2 2.7) no larger than the device offers. */
    void setNum(Message m) {
        Vring v = stateTarget(m);
        requireStopped(m, v);
        long num = stateNum(m);
        if (num < 1 || num > maxQueueSize || Long.bitCount(num) != 1) {
            throw ProtocolError.rejected("SET_VRING_NUM " + num + " for vring " + v.index + ": a power of 2 up to "
                    + maxQueueSize + " expected");
        }
        v.num = (int) num;
    }

    /** A split ring's index is 16 bits wide. */
    void setBase(Message m) {
        Vring v = stateTarget(m);
        requireStopped(m, v);
        long base = stateNum(m);
        if (base > 0xFFFF) {
            throw ProtocolError.rejected("SET_VRING_BASE " + base + " for vring " + v.index + " does not fit 16 bits");
        }
        v.base = (int) base;
    }

    /** Stops and drains the ring, and answers where it stopped; only a new SET_VRING_KICK restarts it. */
    void getBase(Message m) {
        Vring v = stateTarget(m);
        int base = control.stopForHandOver(v);
        // The frontend reset this ring: the only way out of a quarantine short of a device reset.
        control.device().clearQuarantine(v.index);
        v.kickReady = false;
        control.replaceKick(v, null);
        channel.replyPayload().putInt(MessageDescriptor.STATE_INDEX_OFFSET, v.index);
        channel.replyPayload().putInt(MessageDescriptor.STATE_NUM_OFFSET, base);
        channel.reply(m.request(), MessageDescriptor.STATE_LENGTH);
    }

    void setEnable(Message m) {
        Vring v = stateTarget(m);
        long enable = stateNum(m);
        if (enable > 1) {
            throw ProtocolError.rejected("SET_VRING_ENABLE " + enable + " for vring " + v.index + ": 0 or 1 expected");
        }
        v.enabled = enable == 1;
        if (v.enabled) {
            control.startIfReady(v);
        } else {
            control.stop(v);
        }
    }

    /**
     * Ring addresses are the frontend's virtual addresses: each must translate through a region's
     * user address, and with the size known the whole ring must fit in guest memory. An address
     * change while the ring runs is applied stopped.
     */
    void setAddr(Message m) {
        m.requireSize(MessageDescriptor.ADDR_LENGTH);
        m.requireFds(0);
        state.requireOwner(m);
        Vring v = state.vring(m, Integer.toUnsignedLong(m.u32(MessageDescriptor.ADDR_INDEX_OFFSET)));
        GuestMemory memory = state.memory.memory();
        if (memory == null) {
            throw ProtocolError.rejected("SET_VRING_ADDR for vring " + v.index + " before any memory table");
        }
        long desc = m.u64(MessageDescriptor.ADDR_DESC_OFFSET);
        long used = m.u64(MessageDescriptor.ADDR_USED_OFFSET);
        long avail = m.u64(MessageDescriptor.ADDR_AVAIL_OFFSET);
        int size = Math.max(v.num, 1);
        checkInMemory(memory, v, "descriptor table", desc, VirtqDescriptor.tableBytes(size));
        checkInMemory(memory, v, "available ring", avail, AvailRingDescriptor.bytes(size));
        checkInMemory(memory, v, "used ring", used, UsedRingDescriptor.bytes(size));
        long usedLog = usedLogAddress(m, v, size);
        if (v.running && v.addressed && v.descUser == desc && v.usedUser == used && v.availUser == avail) {
            // A migration switching VHOST_VRING_F_LOG on the running ring: nothing to drain.
            control.setUsedRingLog(v, usedLog);
            return;
        }
        control.stop(v);
        v.descUser = desc;
        v.usedUser = used;
        v.availUser = avail;
        v.addressed = true;
        control.setUsedRingLog(v, usedLog);
        control.startIfReady(v);
    }

    /**
     * Where the used ring's writes are logged: with VHOST_VRING_F_LOG at {@code log_guest_addr}
     * (vhost-user.rst, "Migration": it need not be in guest memory, but the ring's last byte must
     * fall inside the log; a log too small only loses marks, counted), without it not at all.
     * Any other flag is refused.
     */
    private static long usedLogAddress(Message m, Vring v, int size) {
        int flags = m.u32(MessageDescriptor.ADDR_FLAGS_OFFSET);
        if ((flags & ~VHOST_VRING_F_LOG) != 0) {
            throw ProtocolError.rejected(String.format("SET_VRING_ADDR for vring %d: unknown flags 0x%x", v.index, flags));
        }
        if ((flags & VHOST_VRING_F_LOG) == 0) {
            return BlockDevice.USED_LOG_OFF;
        }
        long logAddr = m.u64(MessageDescriptor.ADDR_LOG_OFFSET);
        long last = logAddr + UsedRingDescriptor.bytes(size) - 1;
        // The largest log (LogArea.MAX_LOG_BYTES) covers 2^45 bytes of guest addresses.
        long limit = LogArea.MAX_LOG_BYTES * 8 * DirtyLog.PAGE_SIZE;
        if (logAddr < 0 || Long.compareUnsigned(last, logAddr) < 0 || last >= limit) {
            throw ProtocolError.rejected(String.format("SET_VRING_ADDR for vring %d: log_guest_addr 0x%x is beyond any"
                    + " log", v.index, logAddr));
        }
        return logAddr;
    }

    /** SET_VRING_ADDR flag: log the used ring's writes at log_guest_addr. */
    static final int VHOST_VRING_F_LOG = 1;

    private static void checkInMemory(GuestMemory memory, Vring v, String what, long userAddress, long bytes) {
        long gpa = memory.userToGuest(userAddress);
        if (gpa == -1 || memory.hostAddress(gpa, bytes, true) == GuestMemory.NO_ADDRESS) {
            throw ProtocolError.rejected(String.format("vring %d %s at 0x%x (%d bytes) is not inside guest memory %s",
                    v.index, what, userAddress, bytes, memory));
        }
    }

    /** The vring an fd message ({u64: index | no-fd flag}) names, after checking its descriptors. */
    private Vring fdTarget(Message m) {
        m.requireSize(MessageDescriptor.U64_LENGTH);
        state.requireOwner(m);
        long value = m.u64();
        if ((value & ~(MessageDescriptor.FD_INDEX_MASK | MessageDescriptor.FD_NOFD_MASK)) != 0) {
            throw ProtocolError.rejected(String.format("%s payload 0x%x has bits other than the index and \"no fd\"",
                    m.name(), value));
        }
        Vring v = state.vring(m, value & MessageDescriptor.FD_INDEX_MASK);
        m.requireFds(noFd(m) ? 0 : 1);
        return v;
    }

    private static boolean noFd(Message m) {
        return (m.u64() & MessageDescriptor.FD_NOFD_MASK) != 0;
    }

    /** Takes the eventfd of an fd message, or null for "no fd". */
    private static EventFd eventFd(Message m) {
        if (noFd(m)) {
            return null;
        }
        int fd = m.takeFd(0);
        if (!Descriptors.isEventFd(fd)) {
            Descriptors.close(fd);
            throw ProtocolError.rejected(m.name() + " descriptor is not an eventfd");
        }
        return EventFd.wrap(fd);
    }

    /** A kick starts the ring (if everything else is set); "no fd" makes it a polled ring. */
    void setKick(Message m) {
        Vring v = fdTarget(m);
        control.replaceKick(v, eventFd(m));
        v.kickReady = true;
        control.startIfReady(v);
    }

    /** The call eventfd may be replaced at any time, running or not (QEMU does at each start). */
    void setCall(Message m) {
        Vring v = fdTarget(m);
        control.replaceCall(v, eventFd(m));
    }

    void setErr(Message m) {
        Vring v = fdTarget(m);
        control.replaceError(v.index, eventFd(m));
    }
}
