package io.vblk.vhost;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.EnumMap;
import java.util.List;
import java.util.Map;
import java.util.Random;

import org.agrona.concurrent.UnsafeBuffer;

import io.vblk.sys.Epoll;
import io.vblk.sys.Errno;
import io.vblk.sys.EventFd;
import io.vblk.sys.Linux;
import io.vblk.sys.Memfd;
import io.vblk.sys.Native;
import io.vblk.sys.NativeBuffer;
import io.vblk.sys.UnixSocket;
import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.TestGuest;
import io.vblk.testkit.VhostUserFrontend;

/**
 * A structure-aware vhost-user frontend fuzzer. Each connection starts from the message sequence
 * QEMU 7.2 sends (realize, DRIVER_OK, guest I/O, reset; facts.md), with the memory table, ring
 * addresses and kick/call descriptors of a real guest, and then applies one to five mutations:
 * reorder, drop, duplicate, truncate the sequence, cut a message short, fragment it across
 * sendmsg calls, oversize or undersize it, wrong flags, a random request id, other descriptors
 * (counts 0 to 32; eventfds, memfds, files, pipes, sockets, directories, epoll, /dev/null, ones
 * closed right after sending, a memfd shrunk under the mapping) and field-aware payload mutation
 * of SET_MEM_TABLE, ADD/REM_MEM_REG, SET_VRING_ADDR, GET/SET_CONFIG and the vring states. One
 * connection in ten is an unstructured random stream instead.
 *
 * <p>Everything a connection does follows from its seed ({@link #connectionSeed}): a failure
 * names the seed and connection, and {@link #describe} lists its messages.
 */
final class FrontendFuzzer {
    /** Descriptor kinds a message may carry. */
    enum FdKind {
        GUEST_MEMFD, RING_KICK, RING_CALL, EVENTFD, EVENTFD_CLOSED, SMALL_MEMFD, SHRINKING_MEMFD, REGULAR_FILE, DEV_NULL, DIRECTORY, PIPE,
        SOCKET, EPOLL,
        /** Issue 10: a blocking eventfd (no EFD_NONBLOCK), empty. */
        BLOCKING_EVENTFD,
        /** Issue 10: a blocking eventfd whose counter is full: a plain write(2) of 1 blocks forever. */
        BLOCKING_FULL_EVENTFD,
        /** Issue 10: the write end of a blocking pipe that is full, its reader idle. */
        FULL_PIPE,
        /** Issue 10: one end of a blocking socket pair whose buffers are full. */
        FULL_SOCKET,
        /**
         * Issue 10: a memfd of its own for the low (data-only) region, the rings staying in the
         * intact guest memfd; a TRUNCATE_DATA step later cuts it at a random length.
         */
        DATA_MEMFD,
        /**
         * A memfd of {@link #SEALED_BYTES} sealed against shrinking and growing, as QEMU makes its
         * dirty-log and inflight memfds: what SET_LOG_BASE and SET_INFLIGHT_FD take.
         */
        SEALED_MEMFD
    }

    /** How the bytes of a message reach the socket. */
    enum Delivery {
        /** One sendmsg, as QEMU does. */
        WHOLE,
        /** Two or three sendmsg calls; the descriptors ride on one of them. */
        FRAGMENTED,
        /** A prefix only, then the frontend hangs up. */
        CUT
    }

    /** The mutations, counted for the report. */
    enum Mutation {
        REORDER, DROP, DUPLICATE, TRUNCATE_SEQUENCE, CUT_MESSAGE, FRAGMENT, OVERSIZE, UNDERSIZE, WRONG_FLAGS,
        RANDOM_REQUEST, DESCRIPTORS, PAYLOAD_FIELD, PAYLOAD_BYTES, SPLICE, GUEST_IO,
        /** Issue 10: the data region in a memfd of its own, truncated at a random point (before, during or after I/O). */
        DATA_ONLY_TRUNCATE,
        /** Issue 10: a memory table and an interrupt (call fd of any kind) swapped right after I/O is kicked. */
        SWAP_IN_FLIGHT,
        RANDOM_STREAM
    }

    /** Pseudo-request: the guest publishes requests on the fuzzed ring and kicks. */
    static final int GUEST_IO = -1000;
    /** Pseudo-request: the frontend truncates its data-only memfd to the payload's u64 length. */
    static final int TRUNCATE_DATA = -1001;
    /**
     * Pseudo-request: the guest writes garbage into the fuzzed ring ({@link #tamper}; payload:
     * u32 kind, u32 argument, u64 value) and kicks.
     */
    static final int RING_GARBAGE = -1002;
    /** Pseudo-request: the frontend waits (payload: u32 milliseconds), so rings run and faults land mid-sequence. */
    static final int PAUSE = -1003;
    /** Bytes of a {@link FdKind#SEALED_MEMFD}: room for a dirty log of 1 M pages and any inflight buffer of 2 queues. */
    static final long SEALED_BYTES = 256L << 10;
    private static final int MAX_FRAME = 12 + 8192;
    private static final int REPLY_WAIT_MS = 20;
    private static final long PF_ALL = VhostUserProtocolTest.ALL_PROTOCOL;
    private static final long RESET_DEVICE_PF = 1L << 13;

    /** One message of a sequence. */
    static final class Msg {
        int request;
        int flags = VhostUserFrontend.VERSION;
        byte[] payload = new byte[0];
        /**
         * Size announced in the header (a u32, so a long: an int would take sizes of 2^31 and more
         * for "not declared"); -1: the payload's length.
         */
        long declaredSize = -1;
        FdKind[] fds = new FdKind[0];
        Delivery delivery = Delivery.WHOLE;

        Msg(int request, ByteBuffer payload, FdKind... fds) {
            this.request = request;
            this.payload = payload == null ? new byte[0] : payload.array().clone();
            this.fds = fds;
        }

        Msg copy() {
            Msg m = new Msg(request, null, fds.clone());
            m.flags = flags;
            m.payload = payload.clone();
            m.declaredSize = declaredSize;
            m.delivery = delivery;
            return m;
        }

        int size() {
            return declaredSize >= 0 ? (int) declaredSize : payload.length;
        }

        @Override
        public String toString() {
            if (request == GUEST_IO) {
                return "GUEST_IO";
            }
            if (request == RING_GARBAGE || request == PAUSE) {
                ByteBuffer b = ByteBuffer.wrap(payload).order(ByteOrder.LITTLE_ENDIAN);
                return request == PAUSE ? "PAUSE(" + b.getInt(0) + " ms)"
                        : "RING_GARBAGE(kind " + b.getInt(0) + ", " + b.getInt(4) + ", 0x" + Long.toHexString(b.getLong(8)) + ")";
            }
            if (request == TRUNCATE_DATA) {
                return "TRUNCATE_DATA(to " + ByteBuffer.wrap(payload).order(ByteOrder.LITTLE_ENDIAN).getLong(0) + " bytes)";
            }
            return Request.name(request) + "(flags 0x" + Integer.toHexString(flags) + ", size " + Integer.toUnsignedString(size())
                    + (declaredSize >= 0 ? " declared, " + payload.length + " sent" : "") + ", fds " + Arrays.toString(fds)
                    + (delivery != Delivery.WHOLE ? ", " + delivery : "") + ")";
        }
    }

    private final Path socketPath;
    private final TestGuest guest;
    /** The fuzzed ring (queue 0): its kick and call eventfds are RING_KICK and RING_CALL. */
    final BlkQueue queue;
    private final Path scratchFile;
    private final NativeBuffer frame = new NativeBuffer(MAX_FRAME);
    private final NativeBuffer replies = new NativeBuffer(16384);
    private final Map<Mutation, Long> mutations = new EnumMap<>(Mutation.class);
    private final Map<FdKind, Long> fdKinds = new EnumMap<>(FdKind.class);
    /** What the daemon offers (GET_FEATURES), acked whole as Linux does; set before the first connection. */
    long offeredFeatures = 0x1_7000_6e46L | VhostUserFrontend.F_PROTOCOL_FEATURES;
    long connections;
    long messages;
    long descriptorsSent;
    long closedByServer;

    FrontendFuzzer(Path socketPath, TestGuest guest, Path scratchFile) {
        this.socketPath = socketPath;
        this.guest = guest;
        this.queue = guest.queue(0, 128, true, 3);
        this.scratchFile = scratchFile;
    }

    static long connectionSeed(long seed, long connection) {
        return seed * 0x9E3779B97F4A7C15L + connection;
    }

    // ---------------------------------------------------------------- the sequence QEMU sends

    /** The QEMU 7.2 sequence for one connection, with this connection's protocol features. */
    List<Msg> template(Random r) {
        long pf = switch (r.nextInt(4)) {
            case 0 -> VhostUserFrontend.PF_CONFIG;
            case 1 -> VhostUserFrontend.PF_CONFIG | VhostUserFrontend.PF_REPLY_ACK;
            default -> PF_ALL | (r.nextBoolean() ? RESET_DEVICE_PF : 0);
        };
        boolean ack = (pf & VhostUserFrontend.PF_REPLY_ACK) != 0;
        long features = offeredFeatures;
        queue.driver.initialise();
        List<Msg> s = new ArrayList<>();
        s.add(new Msg(VhostUserFrontend.GET_FEATURES, null));
        s.add(new Msg(VhostUserFrontend.GET_PROTOCOL_FEATURES, null));
        s.add(new Msg(VhostUserFrontend.SET_PROTOCOL_FEATURES, VhostUserFrontend.u64(pf)));
        if ((pf & VhostUserFrontend.PF_MQ) != 0) {
            s.add(new Msg(VhostUserFrontend.GET_QUEUE_NUM, null));
        }
        if ((pf & VhostUserFrontend.PF_CONFIGURE_MEM_SLOTS) != 0) {
            s.add(new Msg(VhostUserFrontend.GET_MAX_MEM_SLOTS, null));
        }
        s.add(acked(new Msg(VhostUserFrontend.SET_OWNER, null), ack));
        s.add(new Msg(VhostUserFrontend.GET_FEATURES, null));
        s.add(acked(new Msg(VhostUserFrontend.SET_VRING_CALL, VhostUserFrontend.u64(0), FdKind.RING_CALL), ack));
        s.add(acked(new Msg(VhostUserFrontend.SET_VRING_ERR, VhostUserFrontend.u64(0), FdKind.EVENTFD), ack));
        s.add(new Msg(VhostUserFrontend.GET_CONFIG, VhostUserFrontend.config(0, 57, null)));
        s.add(acked(new Msg(VhostUserFrontend.SET_FEATURES, VhostUserFrontend.u64(features)), ack));
        s.add(acked(new Msg(VhostUserFrontend.SET_VRING_CALL, VhostUserFrontend.u64(0), FdKind.RING_CALL), ack));
        s.add(acked(new Msg(VhostUserFrontend.SET_FEATURES, VhostUserFrontend.u64(features)), ack));
        VhostUserFrontend.Region[] regions = guest.regions();
        if ((pf & VhostUserFrontend.PF_CONFIGURE_MEM_SLOTS) != 0) {
            for (VhostUserFrontend.Region region : regions) {
                s.add(acked(new Msg(VhostUserFrontend.ADD_MEM_REG, VhostUserFrontend.singleRegion(region), FdKind.GUEST_MEMFD), ack));
            }
        } else {
            s.add(acked(new Msg(VhostUserFrontend.SET_MEM_TABLE, VhostUserFrontend.memTable(regions), FdKind.GUEST_MEMFD,
                    FdKind.GUEST_MEMFD), ack));
        }
        s.add(acked(new Msg(VhostUserFrontend.SET_VRING_NUM, VhostUserFrontend.state(0, queue.driver.size())), ack));
        s.add(acked(new Msg(VhostUserFrontend.SET_VRING_BASE, VhostUserFrontend.state(0, 0)), ack));
        s.add(acked(new Msg(VhostUserFrontend.SET_VRING_ADDR, VhostUserFrontend.addr(0, queue.descUser(), queue.usedUser(),
                queue.availUser())), ack));
        s.add(acked(new Msg(VhostUserFrontend.SET_VRING_KICK, VhostUserFrontend.u64(0), FdKind.RING_KICK), ack));
        s.add(acked(new Msg(VhostUserFrontend.SET_VRING_ENABLE, VhostUserFrontend.state(0, 1)), ack));
        s.add(new Msg(GUEST_IO, null));
        s.add(new Msg(VhostUserFrontend.GET_CONFIG, VhostUserFrontend.config(0, 57, null)));
        s.add(new Msg(GUEST_IO, null));
        s.add(acked(new Msg(VhostUserFrontend.SET_VRING_ENABLE, VhostUserFrontend.state(0, 0)), ack));
        s.add(new Msg(VhostUserFrontend.GET_VRING_BASE, VhostUserFrontend.state(0, 0)));
        if ((pf & VhostUserFrontend.PF_CONFIGURE_MEM_SLOTS) != 0 && r.nextBoolean()) {
            s.add(acked(new Msg(VhostUserFrontend.REM_MEM_REG, VhostUserFrontend.singleRegion(regions[0])), ack));
        }
        if ((pf & RESET_DEVICE_PF) != 0 && r.nextBoolean()) {
            s.add(acked(new Msg(VhostUserFrontend.RESET_DEVICE, null), ack));
        }
        return s;
    }

    private static Msg acked(Msg m, boolean ack) {
        if (ack) {
            m.flags |= VhostUserFrontend.NEED_REPLY;
        }
        return m;
    }

    // ---------------------------------------------------------------- mutation

    /** This connection's messages: the template mutated, or (one in ten) a random stream. */
    List<Msg> generate(Random r) {
        List<Msg> s = template(r);
        if (r.nextInt(10) == 0) {
            count(Mutation.RANDOM_STREAM);
            return randomStream(r, s);
        }
        int n = 1 + r.nextInt(5);
        for (int i = 0; i < n && !s.isEmpty(); i++) {
            mutate(r, s);
        }
        return s;
    }

    private List<Msg> randomStream(Random r, List<Msg> template) {
        List<Msg> out = new ArrayList<>(template.subList(0, r.nextInt(template.size())));
        int n = 5 + r.nextInt(30);
        for (int i = 0; i < n; i++) {
            Msg m = new Msg(r.nextInt(50), null);
            m.flags = r.nextInt(8) == 0 ? r.nextInt(16) : VhostUserFrontend.VERSION | (r.nextBoolean() ? VhostUserFrontend.NEED_REPLY : 0);
            m.payload = new byte[r.nextInt(4) == 0 ? r.nextInt(300) : new int[] {0, 8, 40, 69, 72}[r.nextInt(5)]];
            r.nextBytes(m.payload);
            m.fds = randomFds(r, r.nextInt(6) == 0 ? 1 + r.nextInt(3) : 0);
            out.add(m);
        }
        return out;
    }

    private void mutate(Random r, List<Msg> s) {
        Mutation op = Mutation.values()[r.nextInt(Mutation.RANDOM_STREAM.ordinal())];
        count(op);
        int i = r.nextInt(s.size());
        Msg m = s.get(i);
        switch (op) {
            case REORDER -> s.add(r.nextInt(s.size()), s.remove(i));
            case DROP -> s.remove(i);
            case DUPLICATE -> s.add(i + r.nextInt(s.size() - i + 1), m.copy());
            case TRUNCATE_SEQUENCE -> s.subList(i, s.size()).clear();
            case CUT_MESSAGE -> {
                m.delivery = Delivery.CUT;
                s.subList(i + 1, s.size()).clear();
            }
            case FRAGMENT -> m.delivery = Delivery.FRAGMENTED;
            case OVERSIZE -> {
                switch (r.nextInt(3)) {
                    case 0 -> m.declaredSize = m.payload.length + 1 + r.nextInt(64);
                    case 1 -> m.declaredSize = r.nextBoolean() ? 4097 + r.nextInt(4096) : Integer.toUnsignedLong(r.nextInt() | 0x8000_0000);
                    default -> m.payload = Arrays.copyOf(m.payload, m.payload.length + 1 + r.nextInt(r.nextBoolean() ? 64 : 4200));
                }
            }
            case UNDERSIZE -> {
                if (m.payload.length > 0) {
                    m.declaredSize = r.nextInt(m.payload.length);
                } else {
                    m.payload = new byte[1 + r.nextInt(16)];
                    m.declaredSize = 0;
                }
            }
            case WRONG_FLAGS -> m.flags = switch (r.nextInt(5)) {
                case 0 -> m.flags ^ VhostUserFrontend.NEED_REPLY;
                case 1 -> (m.flags & ~3) | r.nextInt(4);
                case 2 -> m.flags | VhostUserFrontend.REPLY;
                case 3 -> m.flags | (1 << (4 + r.nextInt(28)));
                default -> r.nextInt();
            };
            case RANDOM_REQUEST -> m.request = r.nextInt(4) == 0 ? r.nextInt() : r.nextInt(50);
            case DESCRIPTORS -> m.fds = randomFds(r, r.nextInt(4) == 0 ? r.nextInt(UnixSocket.MAX_FDS + 1) : r.nextInt(4));
            case PAYLOAD_FIELD -> mutateField(r, m);
            case PAYLOAD_BYTES -> {
                for (int k = 0, n = 1 + r.nextInt(4); k < n && m.payload.length > 0; k++) {
                    m.payload[r.nextInt(m.payload.length)] = (byte) r.nextInt(256);
                }
            }
            case SPLICE -> {
                List<Msg> other = template(r);
                s.add(r.nextInt(s.size() + 1), other.get(r.nextInt(other.size())).copy());
            }
            case GUEST_IO -> s.add(r.nextInt(s.size() + 1), new Msg(GUEST_IO, null));
            case DATA_ONLY_TRUNCATE -> dataOnlyTruncate(r, s);
            case SWAP_IN_FLIGHT -> swapInFlight(r, s);
            default -> throw new IllegalStateException(op.toString());
        }
    }

    /**
     * Moves the low (data) region of the memory table into a memfd of its own and truncates that
     * file at a random length: before the guest's I/O, right after its kick (requests in flight),
     * or later. The rings and headers stay in the intact guest memfd, so the fault lands after a
     * request was claimed (issue 10, bug 3), at a random point of its life.
     */
    private void dataOnlyTruncate(Random r, List<Msg> s) {
        int table = -1;
        for (int i = 0; i < s.size(); i++) {
            Msg m = s.get(i);
            if ((m.request == VhostUserFrontend.SET_MEM_TABLE && m.fds.length > 0)
                    || (m.request == VhostUserFrontend.ADD_MEM_REG && m.fds.length > 0 && table < 0)) {
                table = i;
            }
        }
        if (table < 0) {
            return;
        }
        s.get(table).fds[0] = FdKind.DATA_MEMFD;
        long length = switch (r.nextInt(4)) {
            case 0 -> 0;
            case 1 -> (long) r.nextInt((int) (TestGuest.REGION_BYTES / 4096)) * 4096;
            case 2 -> r.nextInt((int) TestGuest.REGION_BYTES);
            default -> (1L << 20) + r.nextInt(1 << 20); // inside the data buffers
        };
        Msg cut = new Msg(TRUNCATE_DATA, ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(0, length));
        int io = indexOf(s, GUEST_IO, table + 1);
        int at = io >= 0 && r.nextBoolean() ? io + 1 : table + 1 + r.nextInt(s.size() - table);
        s.add(at, cut);
    }

    /** Right after a GUEST_IO (requests kicked, in flight): a new memory table, a new call fd, or both. */
    private void swapInFlight(Random r, List<Msg> s) {
        int io = indexOf(s, GUEST_IO, r.nextInt(s.size()));
        if (io < 0) {
            io = indexOf(s, GUEST_IO, 0);
        }
        if (io < 0) {
            return;
        }
        List<Msg> swap = new ArrayList<>();
        int what = r.nextInt(3);
        if (what != 1) {
            Msg table = new Msg(VhostUserFrontend.SET_MEM_TABLE, VhostUserFrontend.memTable(guest.regions()),
                    r.nextInt(3) == 0 ? FdKind.DATA_MEMFD : FdKind.GUEST_MEMFD, FdKind.GUEST_MEMFD);
            swap.add(acked(table, r.nextBoolean()));
        }
        if (what != 0) {
            FdKind[] kinds = {FdKind.EVENTFD, FdKind.RING_CALL, FdKind.EVENTFD_CLOSED, FdKind.BLOCKING_EVENTFD,
                FdKind.BLOCKING_FULL_EVENTFD, FdKind.FULL_PIPE, FdKind.FULL_SOCKET, FdKind.REGULAR_FILE};
            swap.add(acked(new Msg(VhostUserFrontend.SET_VRING_CALL, VhostUserFrontend.u64(0), kinds[r.nextInt(kinds.length)]),
                    r.nextBoolean()));
        }
        if (r.nextBoolean()) {
            swap.add(new Msg(GUEST_IO, null)); // and more I/O on the swapped table
        }
        s.addAll(io + 1, swap);
    }

    private static int indexOf(List<Msg> s, int request, int from) {
        for (int i = Math.max(0, from); i < s.size(); i++) {
            if (s.get(i).request == request) {
                return i;
            }
        }
        return -1;
    }

    private FdKind[] randomFds(Random r, int n) {
        FdKind[] kinds = new FdKind[n];
        for (int i = 0; i < n; i++) {
            kinds[i] = FdKind.values()[r.nextInt(FdKind.values().length)];
        }
        return kinds;
    }

    /** The fields of each payload layout the backend parses: {offset, width in bytes}. */
    static int[][] fields(Msg m) {
        switch (m.request) {
            case VhostUserFrontend.SET_MEM_TABLE: {
                int regions = Math.max(0, Math.min(8, (m.payload.length - 8) / 32));
                int[][] f = new int[2 + 4 * regions][];
                f[0] = new int[] {0, 4};
                f[1] = new int[] {4, 4};
                for (int i = 0; i < regions; i++) {
                    for (int k = 0; k < 4; k++) {
                        f[2 + 4 * i + k] = new int[] {8 + 32 * i + 8 * k, 8};
                    }
                }
                return f;
            }
            case VhostUserFrontend.ADD_MEM_REG:
            case VhostUserFrontend.REM_MEM_REG:
                return new int[][] {{0, 8}, {8, 8}, {16, 8}, {24, 8}, {32, 8}};
            case VhostUserFrontend.SET_VRING_ADDR:
                return new int[][] {{0, 4}, {4, 4}, {8, 8}, {16, 8}, {24, 8}, {32, 8}};
            case VhostUserFrontend.GET_CONFIG:
            case VhostUserFrontend.SET_CONFIG:
                return new int[][] {{0, 4}, {4, 4}, {8, 4}};
            case VhostUserFrontend.GET_INFLIGHT_FD:
            case VhostUserFrontend.SET_INFLIGHT_FD:
                return new int[][] {{0, 8}, {8, 8}, {16, 2}, {18, 2}};
            case Request.SET_LOG_BASE:
                return new int[][] {{0, 8}, {8, 8}};
            default:
                return m.payload.length >= 8 ? new int[][] {{0, 4}, {4, 4}, {0, 8}} : new int[0][];
        }
    }

    private void mutateField(Random r, Msg m) {
        int[][] f = fields(m);
        if (f.length == 0) {
            m.payload = new byte[8];
            r.nextBytes(m.payload);
            return;
        }
        int[] field = f[r.nextInt(f.length)];
        if (field[0] + field[1] > m.payload.length) {
            return;
        }
        ByteBuffer b = ByteBuffer.wrap(m.payload).order(ByteOrder.LITTLE_ENDIAN);
        if (field[1] == 8) {
            b.putLong(field[0], interesting(r, b.getLong(field[0])));
        } else if (field[1] == 2) {
            b.putShort(field[0], (short) interesting(r, b.getShort(field[0]) & 0xFFFF));
        } else {
            b.putInt(field[0], (int) interesting(r, b.getInt(field[0]) & 0xFFFF_FFFFL));
        }
    }

    /** Values near edges and near the old value: where parsers go wrong. */
    private static long interesting(Random r, long old) {
        return switch (r.nextInt(12)) {
            case 0 -> 0;
            case 1 -> 1;
            case 2 -> -1;
            case 3 -> Long.MAX_VALUE;
            case 4 -> Long.MIN_VALUE;
            case 5 -> old + 1 - 2L * r.nextInt(2);
            case 6 -> old + (r.nextBoolean() ? 4096 : -4096);
            case 7 -> old ^ (1L << r.nextInt(64));
            case 8 -> 1L << r.nextInt(64);
            case 9 -> old << 1;
            case 10 -> 0xFFFF_FFFFL + r.nextInt(3) - 1;
            default -> r.nextLong();
        };
    }

    private void count(Mutation m) {
        mutations.merge(m, 1L, Long::sum);
    }

    // ---------------------------------------------------------------- sending

    /**
     * Runs one fuzzed connection: sends {@code sequence}, draining replies after each message,
     * until the sequence ends, the server closes the connection, or a message is cut; then hangs
     * up. Returns the number of messages sent.
     */
    int run(List<Msg> sequence, Random r) {
        connections++;
        int sent = 0;
        List<Integer> toClose = new ArrayList<>();
        int shrinkPending = -1;
        int dataFd = -1;
        try (UnixSocket socket = UnixSocket.connect(socketPath); Epoll epoll = new Epoll(1)) {
            epoll.add(socket.fd(), Linux.EPOLLIN, 0);
            for (Msg m : sequence) {
                if (m.request == GUEST_IO) {
                    guestIo(r);
                    continue;
                }
                if (m.request == RING_GARBAGE) {
                    ByteBuffer b = ByteBuffer.wrap(m.payload).order(ByteOrder.LITTLE_ENDIAN);
                    tamper(b.getInt(0), b.getInt(4), b.getLong(8));
                    continue;
                }
                if (m.request == PAUSE) {
                    pause(ByteBuffer.wrap(m.payload).order(ByteOrder.LITTLE_ENDIAN).getInt(0));
                    continue;
                }
                if (m.request == TRUNCATE_DATA) {
                    if (dataFd >= 0) {
                        Native.libc().ftruncate(dataFd, ByteBuffer.wrap(m.payload).order(ByteOrder.LITTLE_ENDIAN).getLong(0));
                    }
                    continue;
                }
                int[] fds = new int[m.fds.length];
                int shrink = -1;
                for (int i = 0; i < fds.length; i++) {
                    fds[i] = open(m.fds[i], toClose);
                    if (m.fds[i] == FdKind.SHRINKING_MEMFD) {
                        shrink = fds[i];
                    }
                    if (m.fds[i] == FdKind.DATA_MEMFD) {
                        dataFd = fds[i];
                    }
                }
                boolean delivered = send(socket, m, fds, r);
                closeSentCopies(m, fds, toClose);
                if (shrinkPending >= 0) {
                    // One message later: after the backend has checked and mapped the file.
                    Native.libc().ftruncate(shrinkPending, 0);
                }
                shrinkPending = shrink;
                if (!delivered) {
                    break;
                }
                sent++;
                messages++;
                descriptorsSent += fds.length;
                if (m.delivery == Delivery.CUT || !drain(socket, epoll, expectsReply(m))) {
                    break;
                }
            }
        } finally {
            if (shrinkPending >= 0) {
                Native.libc().ftruncate(shrinkPending, 0);
            }
            for (int fd : toClose) {
                Native.libc().close(fd);
            }
        }
        return sent;
    }

    private static boolean expectsReply(Msg m) {
        return Request.hasOwnReply(m.request) || (m.flags & VhostUserFrontend.NEED_REPLY) != 0;
    }

    /** A descriptor of {@code kind}; the ones to close after the connection go to {@code toClose}. */
    private int open(FdKind kind, List<Integer> toClose) {
        fdKinds.merge(kind, 1L, Long::sum);
        int fd;
        switch (kind) {
            case GUEST_MEMFD:
                return guest.fd;
            case RING_KICK:
                return queue.kick.fd();
            case RING_CALL:
                return queue.call.fd();
            case EVENTFD, EVENTFD_CLOSED:
                fd = (int) Native.check(Native.libc().eventfd(0, Linux.EFD_CLOEXEC | Linux.EFD_NONBLOCK), "eventfd");
                break;
            case SMALL_MEMFD:
                fd = Memfd.create("fuzz-small", 4096);
                break;
            case SHRINKING_MEMFD:
                fd = Memfd.create("fuzz-shrinking", 2 * TestGuest.REGION_BYTES);
                break;
            case SEALED_MEMFD:
                fd = sealedMemfd();
                break;
            case DATA_MEMFD:
                // As large as the whole guest file, so the table's offsets stay valid for any region.
                fd = Memfd.create("fuzz-data", 2 * TestGuest.REGION_BYTES);
                break;
            case REGULAR_FILE:
                fd = (int) Native.check(Native.libc().open(scratchFile.toString(), Linux.O_RDWR | Linux.O_CLOEXEC, 0), "open");
                break;
            case DEV_NULL:
                fd = (int) Native.check(Native.libc().open("/dev/null", Linux.O_RDONLY | Linux.O_CLOEXEC, 0), "open");
                break;
            case DIRECTORY:
                fd = (int) Native.check(Native.libc().open(scratchFile.getParent().toString(),
                        Linux.O_RDONLY | Linux.O_CLOEXEC | 0200000 /* O_DIRECTORY */, 0), "open");
                break;
            case PIPE: {
                NativeBuffer pair = new NativeBuffer(8);
                long rc = Native.syscall(293 /* pipe2 */, pair.address(), Linux.O_CLOEXEC, 0, 0, 0);
                if (rc < 0) {
                    throw new IllegalStateException("pipe2: " + Errno.describe((int) -rc));
                }
                Native.libc().close(pair.buffer().getInt(4)); // the write end: the reader sees EOF
                fd = pair.buffer().getInt(0);
                break;
            }
            case SOCKET:
                fd = (int) Native.check(Native.libc().socket(Linux.AF_UNIX, Linux.SOCK_STREAM | Linux.SOCK_CLOEXEC, 0), "socket");
                break;
            case EPOLL:
                fd = (int) Native.check(Native.libc().epoll_create1(Linux.EPOLL_CLOEXEC), "epoll_create1");
                break;
            case BLOCKING_EVENTFD, BLOCKING_FULL_EVENTFD:
                fd = (int) Native.check(Native.libc().eventfd(0, Linux.EFD_CLOEXEC), "eventfd");
                if (kind == FdKind.BLOCKING_FULL_EVENTFD) {
                    NativeBuffer max = new NativeBuffer(8);
                    max.buffer().putLong(0, 0xfffffffffffffffeL);
                    Native.libc().write(fd, max.address(), 8);
                }
                break;
            case FULL_PIPE: {
                NativeBuffer pair = new NativeBuffer(8);
                long rc = Native.syscall(293 /* pipe2 */, pair.address(), Linux.O_CLOEXEC, 0, 0, 0);
                if (rc < 0) {
                    throw new IllegalStateException("pipe2: " + Errno.describe((int) -rc));
                }
                toClose.add(pair.buffer().getInt(0)); // the reader stays open and idle
                fd = pair.buffer().getInt(4);
                fill(fd);
                break;
            }
            case FULL_SOCKET: {
                NativeBuffer pair = new NativeBuffer(8);
                long rc = Native.syscall(53 /* socketpair */, Linux.AF_UNIX, Linux.SOCK_STREAM | Linux.SOCK_CLOEXEC, 0,
                        pair.address(), 0);
                if (rc < 0) {
                    throw new IllegalStateException("socketpair: " + Errno.describe((int) -rc));
                }
                toClose.add(pair.buffer().getInt(1 * 4)); // the peer stays open and never reads
                fd = pair.buffer().getInt(0);
                fill(fd);
                break;
            }
            default:
                throw new IllegalStateException(kind.toString());
        }
        toClose.add(fd);
        return fd;
    }

    /** Kinds whose sender's copy is closed as soon as the message is out (the backend holds the only one). */
    private static void closeSentCopies(Msg m, int[] fds, List<Integer> toClose) {
        for (int i = 0; i < fds.length; i++) {
            if (m.fds[i] == FdKind.EVENTFD_CLOSED) {
                // Out of the list too: closed again after the connection, its number may by then
                // be another descriptor's, the server's own when it runs in this process (its
                // event loop's epoll, found by HostileFrontendPropertyTest).
                toClose.remove(Integer.valueOf(fds[i]));
                Native.libc().close(fds[i]);
                fds[i] = -1;
            }
        }
    }

    /** Sends {@code m} as its delivery says; false when the server has already closed the connection. */
    private boolean send(UnixSocket socket, Msg m, int[] fds, Random r) {
        UnsafeBuffer b = frame.buffer();
        int length = 12 + Math.min(m.payload.length, MAX_FRAME - 12);
        b.putInt(0, m.request);
        b.putInt(4, m.flags);
        b.putInt(8, m.size());
        b.putBytes(12, m.payload, 0, length - 12);
        int[] liveFds = Arrays.stream(fds).filter(fd -> fd >= 0).toArray();
        switch (m.delivery) {
            case WHOLE:
                return sendPart(socket, 0, length, liveFds);
            case CUT:
                return sendPart(socket, 0, 1 + r.nextInt(Math.max(1, length - 1)), liveFds);
            case FRAGMENTED: {
                int first = 1 + r.nextInt(Math.max(1, length - 1));
                int second = first + r.nextInt(length - first + 1);
                int carrier = r.nextInt(3);
                return sendPart(socket, 0, first, carrier == 0 ? liveFds : new int[0])
                        && sendPart(socket, first, second - first, carrier == 1 ? liveFds : new int[0])
                        && sendPart(socket, second, length - second, carrier == 2 ? liveFds : new int[0]);
            }
            default:
                throw new IllegalStateException(m.delivery.toString());
        }
    }

    private boolean sendPart(UnixSocket socket, int offset, int length, int[] fds) {
        if (length == 0) {
            return true; // descriptors need a byte to ride on: an empty part carries none
        }
        long rc = socket.send(frame.address() + offset, length, fds, fds.length);
        if (rc == -Errno.EPIPE || rc == -Errno.ECONNRESET) {
            return false;
        }
        if (rc != length) {
            throw new IllegalStateException("sendmsg returned " + rc + " for " + length + " bytes");
        }
        return true;
    }

    /**
     * Reads whatever the server has sent, waiting briefly when a reply is due. False when it has
     * closed the connection.
     */
    private boolean drain(UnixSocket socket, Epoll epoll, boolean replyDue) {
        int[] fdsIn = new int[UnixSocket.MAX_FDS];
        int[] fdCount = new int[1];
        int wait = replyDue ? REPLY_WAIT_MS : 0;
        while (epoll.await(wait) > 0) {
            long rc = socket.receive(replies.address(), replies.buffer().capacity(), fdsIn, fdCount);
            for (int i = 0; i < fdCount[0]; i++) {
                Native.libc().close(fdsIn[i]);
            }
            if (rc == 0 || rc == -Errno.ECONNRESET) {
                closedByServer++;
                return false;
            }
            if (rc < 0 && rc != -Errno.EINTR) {
                throw new IllegalStateException("recvmsg: " + Errno.describe((int) -rc));
            }
            wait = 0;
        }
        return true;
    }

    private static int sealedMemfd() {
        int fd = (int) Native.check(Native.libc().memfd_create("fuzz-sealed", Linux.MFD_CLOEXEC | Linux.MFD_ALLOW_SEALING),
                "memfd_create");
        if (Native.libc().ftruncate(fd, SEALED_BYTES) == -1
                || Native.libc().fcntl(fd, 1033 /* F_ADD_SEALS */, 0x2 | 0x4 /* F_SEAL_SHRINK | F_SEAL_GROW */) == -1) {
            int errno = Native.errno();
            Native.libc().close(fd);
            throw new IllegalStateException("sealed memfd: " + Errno.describe(errno));
        }
        return fd;
    }

    private static void pause(int ms) {
        try {
            Thread.sleep(Math.max(0, Math.min(ms, 200)));
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    /** Ring garbage kinds of {@link #RING_GARBAGE}. */
    static final int GARBAGE_KINDS = 8;

    /**
     * A hostile guest's ring (RING_GARBAGE): writes one kind of garbage into the fuzzed ring
     * behind the driver's back and kicks. {@code arg} and {@code value} pick the wild numbers.
     * 0: a head beyond the ring; 1: a descriptor chained to itself; 2: a buffer outside guest
     * memory; 3: a length of 4 GiB - 1; 4: avail.idx far ahead of what was made available;
     * 5: an indirect table of a bad length; 6: a descriptor of random bits; 7: used_event anywhere.
     */
    void tamper(int kind, int arg, long value) {
        io.vblk.testkit.RingTamperer t = io.vblk.testkit.RingTamperer.of(queue.driver);
        int size = queue.driver.size();
        int head = Math.floorMod(arg, size);
        long header = queue.dataGpa; // any guest address will do: the device reads a header from it
        try {
            switch (Math.floorMod(kind, GARBAGE_KINDS)) {
                case 0 -> t.offerRaw(size + Math.floorMod(arg, 0x10000 - size));
                case 1 -> {
                    t.writeDescriptor(head, header, 16, io.vblk.vring.VirtqDescriptor.F_NEXT, head);
                    t.offerRaw(head);
                }
                case 2 -> {
                    t.writeDescriptor(head, value, 512, io.vblk.vring.VirtqDescriptor.F_WRITE, 0);
                    t.offerRaw(head);
                }
                case 3 -> {
                    t.writeDescriptor(head, header, -1, io.vblk.vring.VirtqDescriptor.F_NEXT, (head + 1) % size);
                    t.writeDescriptor((head + 1) % size, header, 1, io.vblk.vring.VirtqDescriptor.F_WRITE, 0);
                    t.offerRaw(head);
                }
                case 4 -> t.writeAvailIdx(queue.driver.availIdx() + 1 + Math.floorMod(arg, 0x10000));
                case 5 -> {
                    t.writeDescriptor(head, header, (int) value, io.vblk.vring.VirtqDescriptor.F_INDIRECT, 0);
                    t.offerRaw(head);
                }
                case 6 -> {
                    t.writeDescriptor(head, value, arg, (int) (value >>> 48), (int) (value >>> 32) & 0xFFFF);
                    t.offerRaw(head);
                }
                default -> t.writeUsedEvent(arg);
            }
            queue.driver.publishAvail();
        } catch (RuntimeException ignored) {
            // The driver's bookkeeping refuses after earlier garbage: the ring is garbage already.
        }
        queue.kick.signal();
    }

    /** The guest's side: a few reads and writes (some beyond the disk's end) published and kicked. */
    private void guestIo(Random r) {
        int n = 1 + r.nextInt(8);
        for (int i = 0; i < n; i++) {
            boolean write = r.nextBoolean();
            long sector = r.nextInt(16) == 0 ? (ServerRig.IMAGE_BYTES / 512) - r.nextInt(4) : r.nextInt(4096) * 8L;
            try {
                queue.add(write ? BlkQueue.T_OUT : BlkQueue.T_IN, sector, queue.dataGpa + 4096L * r.nextInt(16),
                        512 * (1 + r.nextInt(8)), !write);
            } catch (RuntimeException full) { // full, or refused after RING_GARBAGE broke the driver's bookkeeping
                break;
            }
        }
        try {
            queue.publish();
        } catch (RuntimeException broken) {
            queue.kick.signal();
        }
    }

    /** The messages of a connection, one per line, for a failure report. */
    static String describe(List<Msg> sequence) {
        StringBuilder sb = new StringBuilder();
        for (Msg m : sequence) {
            sb.append("  ").append(m).append('\n');
        }
        return sb.toString();
    }

    /** The counts, one line. */
    String summary() {
        return connections + " connections, " + messages + " messages, " + descriptorsSent + " descriptors sent, "
                + closedByServer + " connections closed by the server; mutations " + mutations + "; descriptor kinds " + fdKinds;
    }

    /** Fills a blocking pipe or socket until a write would block, and leaves it blocking (also FrontendFdTest). */
    static void fill(int fd) {
        int flags = Native.libc().fcntl(fd, 3 /* F_GETFL */, 0);
        Native.libc().fcntl(fd, 4 /* F_SETFL */, flags | 04000 /* O_NONBLOCK */);
        NativeBuffer b = new NativeBuffer(65536);
        while (Native.libc().write(fd, b.address(), 65536) > 0) {
            // until EAGAIN
        }
        while (Native.libc().write(fd, b.address(), 1) > 0) {
            // to the last byte
        }
        Native.libc().fcntl(fd, 4 /* F_SETFL */, flags);
    }

    /** Empties the fuzzed ring's kick and call eventfds between connections. */
    void drainRingEventfds() {
        drainEventfd(queue.call);
        drainEventfd(queue.kick);
    }

    private static void drainEventfd(EventFd e) {
        e.read();
    }
}
