package io.vblk.perf.vhost;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;

import org.HdrHistogram.Histogram;

import io.vblk.engine.BlkConfigDescriptor;
import io.vblk.engine.BlkFeatures;
import io.vblk.hostmem.GuestMemory;
import io.vblk.perf.load.Contender;
import io.vblk.perf.load.GuestQueue;
import io.vblk.perf.load.LoadGenerator;
import io.vblk.perf.load.ProcessMeter;
import io.vblk.perf.load.RunObserver;
import io.vblk.perf.load.Workload;
import io.vblk.perf.report.BenchResult;
import io.vblk.perf.report.Latency;
import io.vblk.sys.EventFd;
import io.vblk.sys.Memfd;
import io.vblk.sys.Native;
import io.vblk.testkit.VhostUserFrontend;

/**
 * A vhost-user-blk backend behind a socket, driven by this process as the frontend and guest at
 * once: the QEMU 7.2 start-up sequence over {@link VhostUserFrontend}, guest memory on a memfd
 * this process maps and shares, then a {@link LoadGenerator} that kicks through the kick
 * eventfds and sleeps on the call eventfds (or polls the used rings). At the end the rings are
 * disabled and stopped with GET_VRING_BASE and the connection is closed, so the same backend
 * serves the next run.
 *
 * <p>Works with any vhost-user-blk backend: {@code vblk serve}, qemu-storage-daemon's export,
 * others. CPU per I/O is the backend process's (found from the socket's peer credentials unless
 * a pid is given); its allocation cannot be seen from here.
 */
public final class VhostUserContender implements Contender {
    private static final long CONNECT_TIMEOUT_MS = 20_000;
    private static final int MIB = 1 << 20;
    /**
     * Whether the guest's kick, call and error eventfds are blocking (process-wide, set once by
     * the command). Non-blocking by default, as every real frontend creates them (QEMU's
     * event_notifier_init and Cloud Hypervisor's EventFd both pass EFD_NONBLOCK). The difference
     * matters to a backend that signals a descriptor it does not own without ever blocking:
     * {@code vblk serve} writes the call eventfd through io_uring, which performs a write to a
     * non-blocking eventfd inline but hands one to a blocking eventfd to a kernel worker thread
     * (a wake-up and two context switches per interrupt), while qemu-storage-daemon writes it
     * directly.
     */
    private static volatile boolean blockingEventFds;

    private final Path socket;
    private final String target;
    private final String backend;
    private final String waitDescription;
    private final String device;
    private final long backendPid;

    /**
     * @param target          who serves: "vblk-serve", "qemu-storage-daemon", "external"
     * @param backend         its I/O back end as reported in tables ("io_uring", "null", "?")
     * @param waitDescription its wait strategy as reported ("adaptive", "poll-max-ns=0", "-")
     * @param device          what it serves, for tables
     * @param backendPid      the backend process, or -1 to take the socket's peer
     */
    public VhostUserContender(Path socket, String target, String backend, String waitDescription, String device, long backendPid) {
        this.socket = socket;
        this.target = target;
        this.backend = backend;
        this.waitDescription = waitDescription;
        this.device = device;
        this.backendPid = backendPid;
    }

    /** Makes the guest's eventfds of every later run blocking (true) or non-blocking (false, the default). */
    public static void blockingEventFds(boolean value) {
        blockingEventFds = value;
    }

    @Override
    public String label() {
        return target + " at " + socket;
    }

    @Override
    public BenchResult run(String name, Workload w, RunObserver observer) {
        int queues = w.queues();
        EventFd[] kicks = new EventFd[queues];
        EventFd[] calls = new EventFd[queues];
        EventFd[] errs = new EventFd[queues];
        int memfd = -1;
        try (VhostUserFrontend frontend = VhostUserFrontend.connect(socket, CONNECT_TIMEOUT_MS)) {
            long pid = backendPid > 0 ? backendPid : frontend.peerPid();
            long features = negotiate(frontend, w);
            boolean nonBlocking = !blockingEventFds;
            for (int q = 0; q < queues; q++) {
                calls[q] = EventFd.create(nonBlocking);
                errs[q] = EventFd.create(nonBlocking);
                frontend.setVringFd(VhostUserFrontend.SET_VRING_CALL, q, calls[q].fd());
                frontend.setVringFd(VhostUserFrontend.SET_VRING_ERR, q, errs[q].fd());
            }
            ByteBuffer config = ByteBuffer.wrap(frontend.getConfig(VhostUserFrontend.BLK_CONFIG_LENGTH)).order(ByteOrder.LITTLE_ENDIAN);
            long capacity = config.getLong(BlkConfigDescriptor.CAPACITY) * 512;
            if (w.rw().writes() && BlkFeatures.has(features, BlkFeatures.RO)) {
                throw new IllegalStateException("the backend at " + socket + " offers a read-only disk; the workload writes");
            }
            frontend.setU64(VhostUserFrontend.SET_FEATURES, features);
            long perQueue = w.guestBytesPerQueue();
            long memBytes = (perQueue * queues + 2L * MIB - 1) & -(2L * MIB);
            memfd = Memfd.create("vblk-bench-guest", memBytes);
            try (GuestMemory memory = GuestMemory.builder().addRegion(0, memBytes, memfd, 0, 0, false).build()) {
                long host = memory.region(0).hostAddress();
                frontend.setMemTable(0, memBytes, host, 0, memfd);
                long range = w.rangeBytes() > 0 ? Math.min(w.rangeBytes(), capacity) : capacity;
                GuestQueue[] guestQueues = new GuestQueue[queues];
                for (int q = 0; q < queues; q++) {
                    guestQueues[q] = new GuestQueue(q, memory, q * perQueue, perQueue, w, range);
                    frontend.setVringState(VhostUserFrontend.SET_VRING_NUM, q, guestQueues[q].driver().size());
                    frontend.setVringState(VhostUserFrontend.SET_VRING_BASE, q, 0);
                    frontend.setVringAddr(q, host + guestQueues[q].driver().descGpa(), host + guestQueues[q].driver().usedGpa(),
                            host + guestQueues[q].driver().availGpa());
                    kicks[q] = EventFd.create(nonBlocking);
                    frontend.setVringFd(VhostUserFrontend.SET_VRING_KICK, q, kicks[q].fd());
                }
                for (int q = 0; q < queues; q++) {
                    frontend.setVringState(VhostUserFrontend.SET_VRING_ENABLE, q, 1);
                }
                return drive(name, w, observer, frontend, pid, kicks, calls, errs, guestQueues);
            }
        } finally {
            closeAll(kicks);
            closeAll(calls);
            closeAll(errs);
            if (memfd >= 0) {
                Native.libc().close(memfd);
            }
        }
    }

    /** GET_FEATURES .. SET_OWNER; returns the virtio features to set (SET_FEATURES comes after GET_CONFIG, as QEMU does). */
    private long negotiate(VhostUserFrontend frontend, Workload w) {
        long offered = frontend.getU64(VhostUserFrontend.GET_FEATURES);
        if (!BlkFeatures.has(offered, BlkFeatures.VERSION_1) || (offered & VhostUserFrontend.F_PROTOCOL_FEATURES) == 0) {
            throw new IllegalStateException(String.format("backend at %s offers features 0x%x without VERSION_1 or PROTOCOL_FEATURES",
                    socket, offered));
        }
        long protocol = frontend.getU64(VhostUserFrontend.GET_PROTOCOL_FEATURES);
        long wantProtocol = protocol & (VhostUserFrontend.PF_CONFIG | VhostUserFrontend.PF_REPLY_ACK
                | (w.queues() > 1 ? VhostUserFrontend.PF_MQ : 0));
        if ((wantProtocol & VhostUserFrontend.PF_CONFIG) == 0) {
            throw new IllegalStateException(String.format("backend at %s lacks protocol feature CONFIG (offers 0x%x)", socket, protocol));
        }
        frontend.setU64(VhostUserFrontend.SET_PROTOCOL_FEATURES, wantProtocol);
        frontend.useReplyAck((wantProtocol & VhostUserFrontend.PF_REPLY_ACK) != 0);
        if (w.queues() > 1) {
            if ((wantProtocol & VhostUserFrontend.PF_MQ) == 0) {
                throw new IllegalStateException("backend at " + socket + " does not offer several queues (protocol feature MQ)");
            }
            long max = frontend.getU64(VhostUserFrontend.GET_QUEUE_NUM);
            if (max < w.queues()) {
                throw new IllegalStateException("backend at " + socket + " offers " + max + " queues; the workload needs " + w.queues());
            }
        }
        frontend.request(VhostUserFrontend.SET_OWNER);
        long want = BlkFeatures.bit(BlkFeatures.VERSION_1) | VhostUserFrontend.F_PROTOCOL_FEATURES
                | BlkFeatures.bit(BlkFeatures.BLK_SIZE) | BlkFeatures.bit(BlkFeatures.SEG_MAX) | BlkFeatures.bit(BlkFeatures.SIZE_MAX)
                | BlkFeatures.bit(BlkFeatures.RO) | BlkFeatures.bit(BlkFeatures.FLUSH)
                | (w.eventIdx() ? BlkFeatures.bit(BlkFeatures.RING_EVENT_IDX) : 0)
                | (w.indirect() ? BlkFeatures.bit(BlkFeatures.RING_INDIRECT_DESC) : 0)
                | (w.queues() > 1 ? BlkFeatures.bit(BlkFeatures.MQ) : 0);
        long missing = want & ~offered & (BlkFeatures.bit(BlkFeatures.RING_EVENT_IDX) | BlkFeatures.bit(BlkFeatures.RING_INDIRECT_DESC)
                | BlkFeatures.bit(BlkFeatures.MQ));
        if (missing != 0) {
            throw new IllegalStateException(String.format("backend at %s does not offer features 0x%x the workload needs (offers 0x%x)",
                    socket, missing, offered));
        }
        return want & offered;
    }

    private BenchResult drive(String name, Workload w, RunObserver observer, VhostUserFrontend frontend, long pid, EventFd[] kicks,
                              EventFd[] calls, EventFd[] errs, GuestQueue[] guestQueues) {
        LoadGenerator guest = new LoadGenerator(guestQueues, q -> kicks[q].signal(), new CallWait(calls), w);
        Histogram latency = new Histogram(GuestQueue.MAX_LATENCY_NS, 3);
        ProcessMeter meter = new ProcessMeter(pid);
        LoadGenerator.Stats stats;
        observer.started(name, guest::completedSoFar, w.warmupNs(), w.runtimeNs());
        try {
            stats = guest.run(w.warmupNs(), w.runtimeNs(), latency, meter);
        } finally {
            observer.finished();
        }
        for (int q = 0; q < guestQueues.length; q++) {
            frontend.setVringState(VhostUserFrontend.SET_VRING_ENABLE, q, 0);
        }
        for (int q = 0; q < guestQueues.length; q++) {
            int base = frontend.getVringBase(q);
            if (base != guestQueues[q].driver().availIdx()) {
                throw new IllegalStateException("queue " + q + ": GET_VRING_BASE says " + base + ", the guest made "
                        + guestQueues[q].driver().availIdx() + " available");
            }
        }
        for (int q = 0; q < errs.length; q++) {
            if (errs[q].await(0) > 0) {
                throw new IllegalStateException("the backend signalled an error on queue " + q + " (its error eventfd)");
            }
        }
        return new BenchResult(name, "vhost-user", target, backend, waitDescription, "-", device, w, stats.requests(),
                stats.requests() * w.blockSize(), stats.seconds(), stats.errors(), Latency.of(latency), meter.cpuNs(),
                pid > 0 ? "backend process " + pid : "n/a", Double.NaN, withWaits(stats, meter));
    }

    /**
     * The guest's events per I/O and the run-queue wait per I/O of the backend process and of
     * the guest thread ({@code backend_wait_us_per_io}, {@code guest_wait_us_per_io}).
     */
    static java.util.Map<String, Double> withWaits(LoadGenerator.Stats stats, ProcessMeter meter) {
        java.util.Map<String, Double> m = new java.util.TreeMap<>(stats.perIo());
        long n = stats.requests();
        m.put("backend_wait_us_per_io", n > 0 ? meter.waitNs() / 1e3 / n : Double.NaN);
        m.put("guest_wait_us_per_io", n > 0 ? meter.callerWaitNs() / 1e3 / n : Double.NaN);
        return m;
    }

    private static void closeAll(EventFd[] fds) {
        for (EventFd fd : fds) {
            if (fd != null) {
                fd.close();
            }
        }
    }
}
