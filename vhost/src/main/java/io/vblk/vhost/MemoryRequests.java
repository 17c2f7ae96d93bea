package io.vblk.vhost;

import java.util.ArrayList;
import java.util.List;

import io.vblk.hostmem.GuestMemory;

/**
 * The guest memory table: SET_MEM_TABLE (all regions at once, one descriptor each),
 * GET_MAX_MEM_SLOTS, ADD_MEM_REG and REM_MEM_REG (one region at a time, refused unless
 * CONFIGURE_MEM_SLOTS was negotiated: a frontend that did not negotiate it has not agreed to the
 * slot limit these messages work within).
 *
 * <p>Every change maps a complete new table first; only a table that mapped is installed, with
 * running rings drained around the switch. A refused change leaves the current table in place
 * and closes the descriptors that came with it.
 */
final class MemoryRequests {
    private final FrontendState state;
    private final QueueControl control;
    private final MessageChannel channel;

    MemoryRequests(FrontendState state, QueueControl control, MessageChannel channel) {
        this.state = state;
        this.control = control;
        this.channel = channel;
    }

    void setMemTable(Message m) {
        state.requireOwner(m);
        if (Integer.compareUnsigned(m.size(), MessageDescriptor.TABLE_REGIONS_OFFSET) < 0) {
            throw ProtocolError.rejected("SET_MEM_TABLE payload of " + m.size() + " bytes has no region count");
        }
        long count = Integer.toUnsignedLong(m.u32(MessageDescriptor.TABLE_NREGIONS_OFFSET));
        int max = maxTableRegions();
        if (count < 1 || count > max) {
            throw ProtocolError.rejected("SET_MEM_TABLE with " + count + " regions; 1 to " + max + " allowed");
        }
        int regions = (int) count;
        m.requireSize(MessageDescriptor.tableLength(regions));
        m.requireFds(regions);
        List<MemoryTable.Region> wanted = new ArrayList<>(regions);
        for (int i = 0; i < regions; i++) {
            wanted.add(region(m, MessageDescriptor.tableRegionOffset(i), m.takeFd(i)));
        }
        install(wanted);
    }

    /**
     * Regions one SET_MEM_TABLE may carry: the spec's baseline of 8, or with CONFIGURE_MEM_SLOTS
     * the slots offered (GET_MAX_MEM_SLOTS). Cloud Hypervisor (rust-vmm, up to 32 descriptors a
     * message) sends its whole table, hot-plugged regions included, in one SET_MEM_TABLE at every
     * activation and reconnect, and never asks GET_MAX_MEM_SLOTS.
     */
    private int maxTableRegions() {
        return state.configureMemSlots() ? FrontendState.MAX_MEM_SLOTS : MessageDescriptor.TABLE_MAX_REGIONS;
    }

    void getMaxMemSlots(Message m) {
        state.requireMemSlots(m);
        m.requireSize(0);
        m.requireFds(0);
        channel.replyU64(m.request(), FrontendState.MAX_MEM_SLOTS);
    }

    void addMemReg(Message m) {
        state.requireOwner(m);
        state.requireMemSlots(m);
        m.requireSize(MessageDescriptor.SINGLE_REGION_LENGTH);
        m.requireFds(1);
        MemoryTable.Region added = region(m, MessageDescriptor.SINGLE_REGION_OFFSET, m.takeFd(0));
        if (state.memory.regions().size() >= FrontendState.MAX_MEM_SLOTS) {
            Descriptors.close(added.fd());
            throw ProtocolError.rejected("ADD_MEM_REG beyond the " + FrontendState.MAX_MEM_SLOTS + " memory slots offered");
        }
        install(state.memory.with(added));
    }

    /**
     * The spec says no descriptor should come with REM_MEM_REG but allows one for old frontends;
     * if it comes it is closed unused (by the message).
     */
    void remMemReg(Message m) {
        state.requireOwner(m);
        state.requireMemSlots(m);
        m.requireSize(MessageDescriptor.SINGLE_REGION_LENGTH);
        if (m.fdCount() > 1) {
            m.requireFds(1);
        }
        MemoryTable.Region gone = region(m, MessageDescriptor.SINGLE_REGION_OFFSET, -1);
        int index = state.memory.find(gone);
        if (index < 0) {
            throw ProtocolError.rejected("REM_MEM_REG " + gone + " names no region of the table " + state.memory);
        }
        List<MemoryTable.Region> remaining = new ArrayList<>(state.memory.regions());
        remaining.remove(index);
        install(remaining);
    }

    private static MemoryTable.Region region(Message m, int offset, int fd) {
        return new MemoryTable.Region(
                m.u64(offset + MessageDescriptor.REGION_GUEST_ADDR_OFFSET),
                m.u64(offset + MessageDescriptor.REGION_SIZE_OFFSET),
                m.u64(offset + MessageDescriptor.REGION_USER_ADDR_OFFSET),
                m.u64(offset + MessageDescriptor.REGION_MMAP_OFFSET_OFFSET),
                fd);
    }

    /**
     * Maps {@code wanted} and installs it; on any failure (an Error too: the session survives it)
     * a table never installed is unmapped, its bytes given back, and the descriptors not already
     * in the table closed. A table the device took before the failure (BlockDevice.setMemory
     * failed after switching, e.g. restarting a queue) is the one in use: it is made current
     * here, and the table it replaced unmapped, as a successful install would have.
     */
    private void install(List<MemoryTable.Region> wanted) {
        GuestMemory mapped = null;
        try {
            mapped = MemoryTable.map(wanted, state.memory.maxBytes(),
                    state.memory.memory() != null ? MemoryTable.bytes(state.memory.regions()) : 0);
            control.installMemory(wanted, mapped);
        } catch (Throwable e) {
            if (mapped != null && state.memory.memory() != mapped && control.device().memory() == mapped) {
                state.memory.replace(wanted, mapped);
            } else if (mapped == null || state.memory.memory() != mapped) {
                if (mapped != null) {
                    state.memory.unmap(mapped, wanted);
                }
                for (MemoryTable.Region r : wanted) {
                    if (!state.memory.regions().contains(r)) {
                        Descriptors.close(r.fd());
                    }
                }
            }
            throw e;
        }
    }
}
