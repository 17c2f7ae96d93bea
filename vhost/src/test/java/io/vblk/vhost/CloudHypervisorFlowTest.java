package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;

import org.agrona.concurrent.UnsafeBuffer;
import org.junit.jupiter.api.Test;

import io.vblk.sys.Mapping;
import io.vblk.sys.Native;
import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.TestGuest;
import io.vblk.testkit.VhostUserFrontend;

/**
 * Cloud Hypervisor's vhost-user-blk frontend, replayed message by message (Cloud Hypervisor cannot
 * run here). Read from source:
 * <ul>
 * <li>cloud-hypervisor/cloud-hypervisor at ae44c2971c83dd2b1bd704fa81102ec0dec4e7d4 (v53.0-246):
 * {@code virtio-devices/src/vhost_user/blk.rs} (Blk::new: negotiation, GET_QUEUE_NUM, GET_CONFIG;
 * restore), {@code vu_common_ctrl.rs} (connect_vhost_user, negotiate_features_vhost_user,
 * setup_vhost_user, reinitialize_vhost_user, pause/resume, reset_vhost_user, add_memory_region,
 * update_log_base, set_vring_logging, start/stop_dirty_log), {@code mod.rs} (activate,
 * reconnect, DEFAULT_VIRTIO_FEATURES), {@code block/src/lib.rs} (VirtioBlockConfig, 60 bytes
 * packed); its Cargo.lock pins the {@code vhost} crate 0.17.0;</li>
 * <li>rust-vmm/vhost at 4e217d992c5782ef468d842acb1a29fd293c1751 (vhost crate 0.16.0 plus
 * later commits; the newest snapshot stored): {@code vhost/src/vhost_user/frontend.rs} (which
 * request waits for what: {@code wait_for_ack}, {@code recv_reply::<T>} of exactly
 * {@code size_of::<T>()} bytes), {@code connection.rs} ({@code recv_body}: reads header plus
 * {@code size_of::<T>()} bytes, blocking until they come), {@code message.rs} (payload layouts
 * and validators).</li>
 * </ul>
 *
 * <p>What differs from QEMU 7.2: SET_OWNER comes first, before GET_FEATURES; once REPLY_ACK is
 * negotiated every message, GETs included, carries NEED_REPLY; GET_CONFIG asks 60 bytes with
 * flags WRITABLE; SET_VRING_NUM of every queue comes before GET/SET_INFLIGHT_FD; each queue gets
 * ADDR, BASE (the guest's avail.idx), CALL, KICK, and only then SET_VRING_ENABLE 1 for all; a
 * pause is SET_VRING_ENABLE 0 and a resume SET_VRING_ENABLE 1 with nothing in between; a reconnect
 * sends SET_PROTOCOL_FEATURES without GET_PROTOCOL_FEATURES, the old inflight buffer, and the
 * guest's avail.idx as base; memory hot-plug is ADD_MEM_REG with the rings running; dirty logging
 * is SET_LOG_BASE (whose reply rust-vmm reads as a 16-byte VhostUserLog), SET_FEATURES | LOG_ALL,
 * then SET_VRING_ADDR with VHOST_VRING_F_LOG and the used ring's guest address.
 */
class CloudHypervisorFlowTest extends OneServerCase {
    static final int QUEUES = 2;
    static final int QUEUE_SIZE = 128;
    static final int SET_LOG_BASE = 6;
    /** VhostUserProtocolFeatures::DEVICE_STATE: asked for, vblk does not offer it. */
    static final long PF_DEVICE_STATE = 1L << 19;
    static final long PF_LOG_SHMFD = 1L << 1;
    /** What Blk::new asks for: CONFIG | MQ | CONFIGURE_MEM_SLOTS | REPLY_ACK | INFLIGHT_SHMFD | LOG_SHMFD | DEVICE_STATE. */
    static final long CH_PROTOCOL = VhostUserFrontend.PF_CONFIG | VhostUserFrontend.PF_MQ
            | VhostUserFrontend.PF_CONFIGURE_MEM_SLOTS | VhostUserFrontend.PF_REPLY_ACK | VhostUserFrontend.PF_INFLIGHT_SHMFD
            | PF_LOG_SHMFD | PF_DEVICE_STATE;
    static final long LOG_ALL = 1L << 26;
    /**
     * Blk::new's avail_features (SIZE_MAX, SEG_MAX, GEOMETRY, RO, BLK_SIZE, FLUSH, TOPOLOGY,
     * CONFIG_WCE, DISCARD, WRITE_ZEROES, MQ) | DEFAULT_VIRTIO_FEATURES (INDIRECT_DESC, EVENT_IDX,
     * VERSION_1, IN_ORDER, ORDER_PLATFORM, NOTIFICATION_DATA, PROTOCOL_FEATURES, LOG_ALL).
     */
    static final long CH_FEATURES = bits(1, 2, 4, 5, 6, 9, 10, 11, 13, 14, 12, 28, 29, 32, 35, 36, 38, 30, 26);
    /** sizeof(VirtioBlockConfig) in Cloud Hypervisor's block crate (packed, up to unused1[3]). */
    static final int CH_CONFIG_SIZE = 60;
    /** VhostUserConfigFlags::WRITABLE. */
    static final int CONFIG_WRITABLE = 1;

    private static long bits(int... bits) {
        long v = 0;
        for (int b : bits) {
            v |= 1L << b;
        }
        return v;
    }

    @Override
    ServerRig startRig(Path dir) throws IOException {
        return ServerRig.start(dir, QUEUES);
    }

    /** One Cloud Hypervisor connection (a VhostUserHandle) and the guest's queues. */
    final class Ch implements AutoCloseable {
        final VhostUserFrontend f;
        final BlkQueue[] qs;
        long backendFeatures;
        long ackedFeatures;
        long ackedProtocol;
        VhostUserFrontend.Inflight inflight;

        Ch(BlkQueue[] qs) {
            this.f = newSession();
            this.qs = qs;
        }

        /** connect_vhost_user: SET_OWNER then GET_FEATURES, on a fresh Frontend (no header flags). */
        void connect() {
            f.send(VhostUserFrontend.SET_OWNER, VhostUserFrontend.VERSION, null);
            backendFeatures = f.getFeatures();
        }

        /**
         * Blk::new: negotiate_features_vhost_user (GET/SET_PROTOCOL_FEATURES, then NEED_REPLY on
         * every header), GET_QUEUE_NUM, GET_CONFIG of 60 bytes with flags WRITABLE. Returns the
         * config bytes.
         */
        byte[] realize() {
            connect();
            long acked = CH_FEATURES & backendFeatures;
            assertTrue((acked & VhostUserFrontend.F_PROTOCOL_FEATURES) != 0, "PROTOCOL_FEATURES offered");
            long backendProtocol = f.getProtocolFeatures();
            ackedProtocol = CH_PROTOCOL & backendProtocol;
            setProtocolFeatures();
            assertEquals(0, ackedProtocol & PF_DEVICE_STATE, "DEVICE_STATE not offered: snapshots save no backend state");
            long queueNum = f.getU64(VhostUserFrontend.GET_QUEUE_NUM);
            assertTrue(queueNum >= QUEUES, "GET_QUEUE_NUM " + queueNum);
            VhostUserFrontend.Reply r = f.request(VhostUserFrontend.GET_CONFIG,
                    VhostUserFrontend.payload(12 + CH_CONFIG_SIZE).putInt(0, 0).putInt(4, CH_CONFIG_SIZE)
                            .putInt(8, CONFIG_WRITABLE));
            assertNotNull(r, "GET_CONFIG answered");
            // rust-vmm get_config: size non-zero, equal to the size asked, offset echoed; flags valid.
            assertEquals(12 + CH_CONFIG_SIZE, r.payload().capacity(), "GET_CONFIG reply size");
            assertEquals(0, r.payload().getInt(0), "offset echoed");
            assertEquals(CH_CONFIG_SIZE, r.payload().getInt(4), "size echoed");
            assertEquals(0, r.payload().getInt(8) & ~3, "flags within VhostUserConfigFlags");
            byte[] config = new byte[CH_CONFIG_SIZE];
            r.payload().get(12, config);
            // The guest acks every feature Cloud Hypervisor shows it (the intersection) but LOG_ALL.
            ackedFeatures = acked & ~LOG_ALL;
            return config;
        }

        /** SET_PROTOCOL_FEATURES (no NEED_REPLY yet), then set_hdr_flags(NEED_REPLY) with REPLY_ACK. */
        void setProtocolFeatures() {
            f.send(VhostUserFrontend.SET_PROTOCOL_FEATURES, VhostUserFrontend.VERSION, VhostUserFrontend.u64(ackedProtocol));
            if ((ackedProtocol & VhostUserFrontend.PF_REPLY_ACK) != 0) {
                f.useReplyAck(true);
                f.ackEverything(false);
                f.headerFlags(VhostUserFrontend.NEED_REPLY);
            }
        }

        /**
         * setup_vhost_user: SET_FEATURES, SET_MEM_TABLE, SET_VRING_NUM of every queue,
         * [GET_INFLIGHT_FD once] SET_INFLIGHT_FD, per queue SET_VRING_ADDR (flags 0, log 0),
         * SET_VRING_BASE {@code bases[i]}, SET_VRING_CALL, SET_VRING_KICK; then SET_VRING_ENABLE 1 each.
         */
        void setup(int[] bases) {
            f.setFeatures(ackedFeatures);
            f.post(VhostUserFrontend.SET_MEM_TABLE, VhostUserFrontend.memTable(guest.regions()), guest.fd, guest.fd);
            for (BlkQueue q : qs) {
                f.setVringNum(q.index, q.driver.size());
            }
            if ((ackedProtocol & VhostUserFrontend.PF_INFLIGHT_SHMFD) != 0) {
                if (inflight == null) {
                    inflight = f.getInflightFd(qs.length, qs[0].driver.size());
                    // rust-vmm recv_reply_with_files: a descriptor, num_queues and queue_size non-zero.
                    assertTrue(inflight.fd() >= 0 && inflight.mmapSize() > 0 && inflight.numQueues() > 0
                            && inflight.queueSize() > 0, "GET_INFLIGHT_FD " + inflight);
                }
                f.setInflightFd(inflight);
            }
            for (int i = 0; i < qs.length; i++) {
                BlkQueue q = qs[i];
                f.setVringAddr(q.index, q.descUser(), q.usedUser(), q.availUser());
                f.setVringBase(q.index, bases[i]);
                f.setVringFd(VhostUserFrontend.SET_VRING_CALL, q.index, q.call);
                f.setVringFd(VhostUserFrontend.SET_VRING_KICK, q.index, q.kick);
            }
            enable(true);
        }

        /** The guest's avail.idx of every queue: the base setup_vhost_user sends without saved bases. */
        int[] availBases() {
            int[] bases = new int[qs.length];
            for (int i = 0; i < qs.length; i++) {
                bases[i] = qs[i].driver.availIdx();
            }
            return bases;
        }

        /** enable_vhost_user_vrings: SET_VRING_ENABLE for each queue (pause, resume). */
        void enable(boolean on) {
            for (BlkQueue q : qs) {
                f.setVringEnable(q.index, on);
            }
        }

        /** reset_vhost_user: per queue SET_VRING_ENABLE 0 then GET_VRING_BASE. */
        int[] reset() {
            int[] bases = new int[qs.length];
            for (int i = 0; i < qs.length; i++) {
                f.setVringEnable(qs[i].index, false);
                bases[i] = f.getVringBase(qs[i].index);
            }
            return bases;
        }

        /**
         * update_log_base: a sealed memfd of last_ram_addr / (4096 * 8) + 1 bytes, sent with
         * SET_LOG_BASE {mmap_size, 0}; rust-vmm reads the reply as header + a valid 16-byte
         * VhostUserLog (recv_reply::&lt;VhostUserLog&gt;: mmap_size non-zero).
         */
        Mapping setLogBase(int[] fdOut) {
            long size = (TestGuest.HIGH_GPA + TestGuest.REGION_BYTES - 1) / (4096L * 8) + 1;
            int fd = LogProtocolTest.sealedMemfd(size);
            fdOut[0] = fd;
            VhostUserFrontend.Reply r = f.request(SET_LOG_BASE, LogProtocolTest.logDescription(size, 0), fd);
            assertNotNull(r, "SET_LOG_BASE answered");
            assertEquals(16, r.payload().capacity(), "SET_LOG_BASE reply: rust-vmm reads exactly a 16-byte VhostUserLog");
            assertTrue(r.payload().getLong(0) != 0, "the VhostUserLog of the reply is valid (mmap_size non-zero)");
            return Mapping.map(fd, 0, size, false, false);
        }

        /** set_vring_logging: SET_VRING_ADDR of each queue with flags VHOST_VRING_F_LOG and log_addr = used ring's gpa, or 0 and none. */
        void vringLogging(boolean on) {
            for (BlkQueue q : qs) {
                f.post(VhostUserFrontend.SET_VRING_ADDR, LogProtocolTest.addrWithLog(q.index, q.descUser(), q.usedUser(),
                        q.availUser(), on ? 1 : 0, on ? q.driver.usedGpa() : 0));
            }
        }

        private boolean closed;

        /** Drops the connection (Cloud Hypervisor drops its VhostUserHandle); once. */
        @Override
        public void close() {
            if (closed) {
                return;
            }
            closed = true;
            if (inflight != null) {
                Native.libc().close(inflight.fd());
            }
            f.close();
        }
    }

    private BlkQueue[] queues() {
        BlkQueue[] qs = new BlkQueue[QUEUES];
        for (int q = 0; q < QUEUES; q++) {
            qs[q] = guest.queue(q, QUEUE_SIZE, true);
        }
        return qs;
    }

    /** A write, its read-back and a flush on every queue, at a sector of each queue's own. */
    private static void io(BlkQueue[] qs, int seed) {
        for (BlkQueue q : qs) {
            long sector = 64L * (q.index + 1) + seed;
            byte[] data = BlkQueue.pattern(sector, 8192, seed);
            q.write(sector, data);
            assertArrayEquals(data, q.read(sector, 8192), "read-back on queue " + q.index);
            q.flush();
        }
    }

    private void noComplaints() {
        for (int s = 1; s <= sessions; s++) {
            assertEquals(0, rig.complaints(s).size(), String.valueOf(rig.complaints(s)));
        }
    }

    @Test
    void bootSetupAndIoAsCloudHypervisorSendsThem() {
        BlkQueue[] qs = queues();
        try (Ch ch = new Ch(qs)) {
            byte[] config = ch.realize();
            assertEquals(ServerRig.IMAGE_BYTES / 512, new UnsafeBuffer(config).getLong(0), "capacity in the 60 bytes asked");
            ch.setup(ch.availBases());
            io(qs, 1);
            int[] bases = ch.reset();
            for (int i = 0; i < QUEUES; i++) {
                assertEquals(qs[i].driver.availIdx(), bases[i], "GET_VRING_BASE after a reset");
            }
            // Device reset then the guest driver again: a new activation on the same connection.
            ch.inflight = null;
            for (BlkQueue q : qs) {
                q.driver.initialise();
            }
            ch.setup(ch.availBases());
            io(qs, 2);
        }
        noComplaints();
    }

    /** Adds a write of {@code data} at {@code sector} through the queue's data buffer and publishes it (kicking); returns its avail index. */
    private static int submitWrite(BlkQueue q, long sector, byte[] data) {
        new UnsafeBuffer(q.host(q.dataGpa), data.length).putBytes(0, data);
        int availIndex = q.driver.availIdx();
        q.add(BlkQueue.T_OUT, sector, q.dataGpa, data.length, false);
        q.publish();
        return availIndex;
    }

    /**
     * pause_vhost_user / resume_vhost_user: SET_VRING_ENABLE 0 then 1 and nothing else; a request
     * the guest made (and kicked) while paused is served once resumed.
     */
    @Test
    void pauseAndResumeAreRingEnablesOnly() {
        BlkQueue[] qs = queues();
        try (Ch ch = new Ch(qs)) {
            ch.realize();
            ch.setup(ch.availBases());
            io(qs, 3);
            ch.enable(false);
            BlkQueue q = qs[1];
            byte[] data = BlkQueue.pattern(900, 4096, 9);
            int at = submitWrite(q, 900, data);
            ch.enable(true);
            q.awaitUsed();
            assertEquals(0, q.status(at), "the write made while paused");
            assertArrayEquals(data, q.read(900, 4096));
            io(qs, 4);
        }
        noComplaints();
    }

    /**
     * The backend went away and came back: reconnect_inner runs connect_vhost_user with
     * reinitialize_vhost_user: SET_OWNER, GET_FEATURES, SET_PROTOCOL_FEATURES without
     * GET_PROTOCOL_FEATURES, then setup_vhost_user with the inflight buffer it already has and,
     * as base, the guest's avail.idx (no IN_ORDER: vblk does not offer it). A request the guest
     * made while the rings were paused was never popped: with the old buffer, vblk resumes from
     * used.idx, not from that base, so it is served and not skipped.
     */
    @Test
    void reconnectResumesWithTheOldInflightBufferAndServesWhatTheBaseSkips() {
        BlkQueue[] qs = queues();
        VhostUserFrontend.Inflight kept;
        long ackedFeatures;
        long ackedProtocol;
        BlkQueue q = qs[0];
        byte[] data = BlkQueue.pattern(1200, 4096, 12);
        int at;
        Ch first = new Ch(qs);
        first.realize();
        first.setup(first.availBases());
        io(qs, 5);
        first.enable(false);
        at = submitWrite(q, 1200, data);
        kept = first.inflight;
        ackedFeatures = first.ackedFeatures;
        ackedProtocol = first.ackedProtocol;
        first.inflight = null; // handed to the next connection
        first.close();
        rig.awaitGone(sessions);
        try (Ch ch = new Ch(qs)) {
            ch.connect();
            ch.ackedFeatures = ackedFeatures;
            ch.ackedProtocol = ackedProtocol;
            ch.setProtocolFeatures();
            ch.inflight = kept;
            int[] bases = ch.availBases();
            assertEquals((q.driver.usedIdx() + 1) & 0xffff, bases[0], "the base Cloud Hypervisor sends is past the unserved write");
            ch.setup(bases);
            q.awaitUsed();
            assertEquals(0, q.status(at), "the write made before the reconnect");
            assertArrayEquals(data, q.read(1200, 4096));
            io(qs, 6);
        }
        noComplaints();
    }

    /**
     * Memory hot-plug (add_memory_region with CONFIGURE_MEM_SLOTS negotiated): one ADD_MEM_REG,
     * 40 bytes (u64 padding + region), with the rings running; then I/O through the new region.
     * The new region is a second mapping of the guest memfd's low region at a new guest address,
     * so a write from it reads back through the old one.
     */
    @Test
    void memoryHotplugIsAddMemRegWithTheRingsRunning() {
        BlkQueue[] qs = queues();
        long hotGpa = 8L << 30;
        try (Ch ch = new Ch(qs); Mapping hot = Mapping.map(guest.fd, 0, TestGuest.REGION_BYTES, false, false)) {
            ch.realize();
            ch.setup(ch.availBases());
            io(qs, 7);
            ByteBuffer region = VhostUserFrontend.singleRegion(
                    new VhostUserFrontend.Region(hotGpa, TestGuest.REGION_BYTES, hot.address(), 0));
            assertEquals(40, region.capacity());
            ch.f.post(VhostUserFrontend.ADD_MEM_REG, region, guest.fd);
            BlkQueue q = qs[0];
            byte[] data = BlkQueue.pattern(1400, 4096, 14);
            long lowGpa = 3L << 20; // free low memory, reached at hotGpa + lowGpa through the new region
            new UnsafeBuffer(q.host(lowGpa), data.length).putBytes(0, data);
            int at = q.driver.availIdx();
            q.add(BlkQueue.T_OUT, 1400, hotGpa + lowGpa, data.length, false);
            q.publish();
            q.awaitUsed();
            assertEquals(0, q.status(at), "a write from hot-plugged memory");
            assertArrayEquals(data, q.read(1400, 4096), "read back through the old region");
            io(qs, 8);
        }
        noComplaints();
    }

    /**
     * A guest with more than 8 memory regions (boot RAM plus hot-plugged memory): every later
     * activation (here the guest driver's reset and restart; a reconnect likewise) sends the whole
     * table in one SET_MEM_TABLE (update_mem_table; rust-vmm's set_mem_table allows up to
     * MAX_ATTACHED_FD_ENTRIES, 32, one descriptor each). Cloud Hypervisor never asks
     * GET_MAX_MEM_SLOTS; with CONFIGURE_MEM_SLOTS negotiated vblk takes up to its 32 slots there too.
     */
    @Test
    void aTableOfTenRegionsAfterHotplugIsTakenAtTheNextActivation() {
        BlkQueue[] qs = queues();
        int extra = 8;
        Mapping[] hot = new Mapping[extra];
        try (Ch ch = new Ch(qs)) {
            ch.realize();
            ch.setup(ch.availBases());
            VhostUserFrontend.Region[] boot = guest.regions();
            VhostUserFrontend.Region[] all = java.util.Arrays.copyOf(boot, boot.length + extra);
            for (int i = 0; i < extra; i++) {
                hot[i] = Mapping.map(guest.fd, 0, TestGuest.REGION_BYTES, false, false);
                all[boot.length + i] = new VhostUserFrontend.Region((8L << 30) + i * TestGuest.REGION_BYTES,
                        TestGuest.REGION_BYTES, hot[i].address(), 0);
                ch.f.post(VhostUserFrontend.ADD_MEM_REG, VhostUserFrontend.singleRegion(all[boot.length + i]), guest.fd);
            }
            io(qs, 13);
            ch.reset();
            for (BlkQueue q : qs) {
                q.driver.initialise();
            }
            int[] fds = new int[all.length];
            java.util.Arrays.fill(fds, guest.fd);
            ch.f.setFeatures(ch.ackedFeatures);
            ch.f.post(VhostUserFrontend.SET_MEM_TABLE, VhostUserFrontend.memTable(all), fds);
            BlkQueue q = qs[0];
            long lowGpa = 3L << 20;
            byte[] data = BlkQueue.pattern(1600, 4096, 16);
            new UnsafeBuffer(q.host(lowGpa), data.length).putBytes(0, data);
            for (BlkQueue r : qs) {
                ch.f.setVringNum(r.index, r.driver.size());
            }
            // activate() starts from a new Inflight: GET_INFLIGHT_FD again.
            Native.libc().close(ch.inflight.fd());
            ch.inflight = ch.f.getInflightFd(qs.length, qs[0].driver.size());
            ch.f.setInflightFd(ch.inflight);
            for (BlkQueue r : qs) {
                ch.f.setVringAddr(r.index, r.descUser(), r.usedUser(), r.availUser());
                ch.f.setVringBase(r.index, r.driver.availIdx());
                ch.f.setVringFd(VhostUserFrontend.SET_VRING_CALL, r.index, r.call);
                ch.f.setVringFd(VhostUserFrontend.SET_VRING_KICK, r.index, r.kick);
            }
            ch.enable(true);
            int at = q.driver.availIdx();
            q.add(BlkQueue.T_OUT, 1600, (8L << 30) + (extra - 1) * TestGuest.REGION_BYTES + lowGpa, data.length, false);
            q.publish();
            q.awaitUsed();
            assertEquals(0, q.status(at), "a write from the last region of the table");
            assertArrayEquals(data, q.read(1600, 4096));
            io(qs, 14);
        } finally {
            for (Mapping m : hot) {
                if (m != null) {
                    m.close();
                }
            }
        }
        noComplaints();
    }

    /** The bound stays: 9 regions without CONFIGURE_MEM_SLOTS, 33 with it, are refused (and the connection kept). */
    @Test
    void aTableBeyondTheSlotsIsStillRefused() {
        for (boolean slots : new boolean[] {false, true}) {
            try (VhostUserFrontend f = newSession()) {
                f.setOwner();
                f.getFeatures();
                f.setProtocolFeatures(VhostUserFrontend.PF_REPLY_ACK | (slots ? VhostUserFrontend.PF_CONFIGURE_MEM_SLOTS : 0));
                int n = slots ? 33 : 9;
                VhostUserFrontend.Region[] rs = new VhostUserFrontend.Region[n];
                int[] fds = new int[Math.min(n, 32)];
                for (int i = 0; i < n; i++) {
                    rs[i] = new VhostUserFrontend.Region(i * TestGuest.REGION_BYTES, TestGuest.REGION_BYTES,
                            guest.user(TestGuest.LOW_GPA), 0);
                }
                java.util.Arrays.fill(fds, guest.fd);
                assertEquals(1, f.acked(VhostUserFrontend.SET_MEM_TABLE, VhostUserFrontend.memTable(rs), fds),
                        n + " regions, CONFIGURE_MEM_SLOTS " + slots);
                complained("SET_MEM_TABLE with " + n + " regions; 1 to " + (slots ? 32 : 8) + " allowed");
                assertEquals(0, f.acked(VhostUserFrontend.SET_MEM_TABLE, VhostUserFrontend.memTable(guest.regions()), guest.fd,
                        guest.fd), "a good table after");
            }
        }
    }

    /**
     * A migration's two ends (or a snapshot and its restore): the source pauses (SET_VRING_ENABLE
     * 0), takes its last dirty log (SET_LOG_BASE) and drops its connection (complete_migration);
     * the destination's Blk::new with the saved state connects (SET_OWNER, GET_FEATURES,
     * SET_PROTOCOL_FEATURES without GET_PROTOCOL_FEATURES, no GET_QUEUE_NUM, no GET_CONFIG) and
     * activates with a new inflight buffer and the guest's avail.idx as base (no DEVICE_STATE, so
     * no saved bases), and serves I/O. The destination connects after the source left, as on
     * another host. On one host (ch-remote send-migration --local) it could not: the destination
     * takes the socket path from the source's migrated VmConfig (vm_receive_config overrides only
     * VFIO fds) and connects during vm_receive_state, before the source's complete_migration
     * drops its connection; vblk serves one frontend at a time, so the destination's GET_FEATURES
     * waits, and with it the migration.
     */
    @Test
    void migrationDestinationRestoresWithoutQueriesAfterTheSourceLeft() {
        BlkQueue[] qs = queues();
        int[] fd = new int[1];
        int[] fd2 = new int[1];
        Ch source = new Ch(qs);
        try {
            source.realize();
            source.setup(source.availBases());
            io(qs, 17);
            try (Mapping log = source.setLogBase(fd)) {
                source.f.setFeatures(source.ackedFeatures | LOG_ALL);
                source.vringLogging(true);
                io(qs, 18);
                source.enable(false);
                try (Mapping last = source.setLogBase(fd2)) {
                    assertTrue(dirty(log, qs[0].dataGpa), "the log before the last round was marked");
                    assertEquals(log.length(), last.length());
                }
            } finally {
                Native.libc().close(fd[0]);
                if (fd2[0] > 0) {
                    Native.libc().close(fd2[0]);
                }
            }
        } finally {
            source.close();
        }
        rig.awaitGone(sessions);
        try (Ch dest = new Ch(qs)) {
            dest.connect();
            dest.ackedFeatures = source.ackedFeatures;
            dest.ackedProtocol = source.ackedProtocol;
            dest.setProtocolFeatures();
            dest.setup(dest.availBases());
            io(qs, 19);
        }
        noComplaints();
    }

    private static boolean dirty(Mapping log, long gpa) {
        long page = gpa >>> 12;
        return (new UnsafeBuffer(log.address(), (int) log.length()).getByte((int) (page >>> 3)) & (1 << (page & 7))) != 0;
    }

    /**
     * Live migration's dirty log: start_dirty_log (SET_LOG_BASE, SET_FEATURES | LOG_ALL, then
     * SET_VRING_ADDR of each queue with VHOST_VRING_F_LOG and the used ring's guest address), one
     * dirty_log round (a new SET_LOG_BASE: the old log is read, the new one marked from then on),
     * stop_dirty_log (SET_VRING_ADDR without the flag, SET_FEATURES without LOG_ALL), rings running
     * throughout.
     */
    @Test
    void dirtyLogRoundsAsCloudHypervisorDrivesThem() {
        BlkQueue[] qs = queues();
        int[] fd = new int[1];
        int[] fd2 = new int[1];
        try (Ch ch = new Ch(qs)) {
            ch.realize();
            assertTrue((ch.ackedProtocol & PF_LOG_SHMFD) != 0 && (ch.backendFeatures & LOG_ALL) != 0,
                    "supports_migration: LOG_ALL and LOG_SHMFD");
            ch.setup(ch.availBases());
            io(qs, 9);
            try (Mapping log = ch.setLogBase(fd)) {
                ch.f.setFeatures(ch.ackedFeatures | LOG_ALL);
                ch.vringLogging(true);
                io(qs, 10);
                for (BlkQueue q : qs) {
                    assertTrue(dirty(log, q.dataGpa) && dirty(log, q.driver.usedGpa()), "data and used ring of queue "
                            + q.index + " logged");
                }
                try (Mapping next = ch.setLogBase(fd2)) {
                    io(qs, 11);
                    assertTrue(dirty(next, qs[0].dataGpa), "the new log is marked");
                    ch.vringLogging(false);
                    ch.f.setFeatures(ch.ackedFeatures);
                    io(qs, 12);
                }
            } finally {
                Native.libc().close(fd[0]);
                if (fd2[0] > 0) {
                    Native.libc().close(fd2[0]);
                }
            }
        }
        noComplaints();
    }
}
