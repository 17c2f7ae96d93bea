package io.vblk.vhost;

import java.nio.file.Path;
import java.nio.file.attribute.GroupPrincipal;
import java.util.ArrayDeque;
import java.util.Objects;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Executor;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import io.vblk.engine.BackendFactory;
import io.vblk.engine.BlkConfig;
import io.vblk.engine.BlockDevice;
import io.vblk.engine.SharedIoThread;
import io.vblk.engine.Tuning;
import io.vblk.sys.Errno;
import io.vblk.sys.NativeException;
import io.vblk.sys.UnixSocket;

/**
 * A vhost-user-blk backend: one {@link BlockDevice} served on a Unix socket to one frontend at a
 * time (QEMU's {@code vhost-user-blk-pci}, Cloud Hypervisor, a load generator). Further
 * frontends are accepted, logged once with their pid and the served one's, and wait unanswered;
 * when a frontend goes, its rings are drained, the device is reset, everything it sent is
 * closed, and the next one is served.
 *
 * <pre>{@code
 * try (VhostUserServer server = VhostUserServer.builder(socket, config, BackendFactory.of(kind, image))
 *         .tuning(tuning).log(Log.to(System.err)).build()) {
 *     server.serve();          // returns after stop(), e.g. from a shutdown hook
 * }
 * }</pre>
 *
 * <p>{@link #serve()} runs on the caller's thread, which handles the socket: every control
 * message is handled there, the data plane runs on the device's own threads. A daemon with many
 * servers gives them all one {@link EventLoop} and a small handler pool
 * ({@link Builder#controlThreads}) and calls {@link #start()}: no thread per server. Either
 * way the socket is read without blocking, so a frontend that stops in the middle of a message
 * holds no thread. Nothing a frontend sends ends serving: a bad request is refused or ends that
 * connection only.
 *
 * <p>Access: the socket file is mode 0600 unless {@link Builder#socketMode} and
 * {@link Builder#socketGroup} open it to a group, and a connection whose peer uid (SO_PEERCRED)
 * is not allowed ({@link Builder#allowUids}; by default the server's own uid and root) is logged
 * in one line and closed before a single message is read.
 */
public final class VhostUserServer implements AutoCloseable {
    /**
     * System property that lets memory regions be files on any file system. By default a region
     * must be shared memory (memfd, tmpfs such as /dev/shm) or hugetlbfs, what QEMU's
     * memory-backend-memfd and memory-backend-file on /dev/shm or /dev/hugepages send: a page
     * fault on a file served by FUSE, NFS or 9p can wait for ever, and a data-plane thread
     * blocked in it keeps the whole JVM from its next safepoint.
     */
    public static final String GUEST_MEMORY_ANY_FILE_SYSTEM = "vblk.vhost.guestMemoryAnyFileSystem";

    /**
     * Default guest-memory cap of a server ({@link Builder#maxGuestMemory}): 1 TiB, above the RAM
     * of the guests a block device is commonly attached to; 64 servers at the cap fit the
     * process's mapping budget.
     */
    public static final long DEFAULT_MAX_GUEST_MEMORY = MemoryTable.DEFAULT_MAX_GUEST_BYTES;
    /**
     * The process-wide guest-memory budget: the most guest memory the memory tables of all
     * frontends of this process (every server) may map at once; a SET_MEM_TABLE or ADD_MEM_REG
     * that would pass it is refused, the message naming the option. By default the host's
     * MemTotal, or the memory cgroup's limit when smaller (the system property
     * {@code vblk.vhost.guestMemoryBudget}, in bytes, overrides it): a frontend's sparse memfd
     * costs it nothing, while every page the device writes in it is allocated on this process's
     * fault, so no table larger than the memory the process can hold is mapped. The per-server
     * cap ({@link Builder#maxGuestMemory}) divides it: left at its default, one frontend may take
     * the whole budget.
     */
    public static long guestMemoryBudget() {
        return GuestMemoryBudget.bytes();
    }

    /**
     * Sets {@link #guestMemoryBudget()} for the whole process, from {@link #MIN_GUEST_MEMORY} to
     * 64 TiB (the address-space bound); tables already mapped stay.
     */
    public static void guestMemoryBudget(long bytes) {
        GuestMemoryBudget.set(bytes);
    }

    /** The default of {@link #guestMemoryBudget()} on this host: min(MemTotal, the memory cgroup's limit). */
    public static long hostGuestMemoryBudget() {
        return GuestMemoryBudget.hostDefault();
    }

    /** Largest guest-memory cap: the most any one table may map (16 TiB). */
    public static final long MAX_GUEST_MEMORY = MemoryTable.MAX_TABLE_BYTES;
    /** Smallest guest-memory cap (1 MiB). */
    public static final long MIN_GUEST_MEMORY = 1L << 20;

    /** Frontends kept waiting (accepted) while one is served; as many more wait in the kernel's backlog. */
    static final int BACKLOG = 4;
    private static final long CLOSE_WAIT_SECONDS = 30;
    /**
     * System property: milliseconds {@link #close()} waits for the frontend's drain, and then
     * again for the device's (default 30 s each). Past them the device closes undrained.
     */
    public static final String CLOSE_WAIT_MS = "vblk.vhost.closeWaitMs";
    /** How long {@link #close()} waits for the serving thread's drain, and then the device's (tests shorten it). */
    long closeWaitMs = Long.getLong(CLOSE_WAIT_MS, TimeUnit.SECONDS.toMillis(CLOSE_WAIT_SECONDS));
    /** How long {@link #close()} then waits for the device's own drain before closing it undrained. */
    long deviceDrainWaitMs = closeWaitMs;

    /**
     * System property: milliseconds a served frontend may stay silent (not one whole message
     * sent since it connected) while another frontend waits, default 20 000. Past it the silent
     * one is closed, logged with why, and the waiting one served: a process of an allowed uid that
     * connects and never speaks would otherwise hold the export's only slot for ever. A frontend
     * that has sent any message is never closed for this (a QEMU paused long after set-up stays).
     */
    public static final String SILENT_FRONTEND_MS = "vblk.vhost.silentFrontendMs";
    static final long DEFAULT_SILENT_FRONTEND_MS = 20_000;
    /** The bound of {@link #SILENT_FRONTEND_MS} (tests shorten it). */
    long silentFrontendMs = Long.getLong(SILENT_FRONTEND_MS, DEFAULT_SILENT_FRONTEND_MS);

    /**
     * One daemon thread, for the whole process and made when a frontend first waits, that checks
     * a served frontend's silence when its bound is up (a shutdown(2) under the listener's lock).
     */
    private static final class SilenceTimer {
        static final ScheduledExecutorService TIMER = timer();

        private static ScheduledExecutorService timer() {
            ScheduledThreadPoolExecutor t = new ScheduledThreadPoolExecutor(1, r -> {
                Thread th = new Thread(r, "vblk-vhost-silence");
                th.setDaemon(true);
                return th;
            });
            t.setRemoveOnCancelPolicy(true);
            return t;
        }
    }

    /** The listening socket; replaced by {@link #rebind()} (under this and listenLock). */
    private volatile SocketFile socketFile;
    /** The socket file's mode and group, for {@link #rebind()}. */
    private final int socketMode;
    private final GroupPrincipal socketGroup;
    private final BlockDevice device;
    private final KickPoller poller;
    private final QueueErrors errors;
    private final Log log;
    private final PeerFilter peers;
    /** Lines a frontend can cause at will (connects, disconnects, refusals): rate-limited per server. */
    private final LogLimit connections;
    private final CountDownLatch finished = new CountDownLatch(1);
    private volatile boolean stopping;
    private volatile boolean serving;
    private volatile Session current;
    private final AtomicInteger sessions = new AtomicInteger();
    private boolean closed;
    private final String name;
    /** The most guest memory one memory table of a frontend may map ({@link Builder#maxGuestMemory}). */
    private final long maxGuestBytes;
    /** The image's hand-over in a migration (inactive until the device starts), or null. */
    private final HandOver activation;
    private final EventLoop sharedLoop;
    private final Executor sharedHandlers;
    /** The caller's loop in {@link #serve()} without control threads; closed when serving ends. */
    private volatile EventLoop ownLoop;
    private EventLoop loop;
    private Executor handlers;
    /** Orders the listener's turns, session ends and stop; never held across a drain. */
    private final Object listenLock = new Object();
    private EventLoop.Registration listening;
    /** Accepted frontends waiting for the served one to go, oldest first (guarded by listenLock). */
    private final ArrayDeque<UnixSocket> waiting = new ArrayDeque<>();
    /** The listener is not watched because {@link #BACKLOG} frontends wait (guarded by listenLock). */
    private boolean listenerPaused;
    /** When {@link #current} began to be served, System.nanoTime (guarded by listenLock). */
    private long servedAtNs;
    /** The session whose silence check is scheduled, or null (guarded by listenLock). */
    private Session silenceWatched;

    private VhostUserServer(Builder b) {
        this.log = b.log;
        this.name = b.name;
        this.maxGuestBytes = b.maxGuestBytes;
        this.sharedLoop = b.loop;
        this.sharedHandlers = b.handlers;
        this.peers = b.allowUids == null ? PeerFilter.defaults() : PeerFilter.of(b.allowUids);
        this.connections = new LogLimit(log, System::nanoTime, b.connectionLines, LogLimit.WINDOW_NS);
        SocketFile.check(b.socket);
        GroupPrincipal group = b.socketGroup == null ? null : SocketFile.group(b.socketGroup);
        this.socketMode = b.socketMode;
        this.socketGroup = group;
        this.errors = new QueueErrors(b.config.numQueues(), log);
        BlockDevice.Builder db = BlockDevice.builder(b.config, b.backends).tuning(b.tuning).listener(errors).name(b.name);
        if (b.ioThreads != null) {
            db.ioThreads(b.ioThreads);
        }
        if (b.drivers != null) {
            db.drivers(b.drivers);
        }
        this.device = db.build();
        this.activation = b.activation != null ? HandOver.of(b.activation)
                : b.driversHandOver ? HandOver.ofDrivers(device, b.handOverImage, b.incoming, b.handOverLocked) : null;
        this.poller = new KickPoller(device);
        try {
            this.socketFile = SocketFile.listen(b.socket, BACKLOG, b.socketMode, group);
        } catch (RuntimeException e) {
            device.close();
            throw e;
        }
    }

    /** A server for a device with {@code config} whose I/O goes through {@code backends}, listening on {@code socket}. */
    public static Builder builder(Path socket, BlkConfig config, BackendFactory backends) {
        return new Builder(socket, config, backends);
    }

    /** The device served (for counters). */
    public BlockDevice device() {
        return device;
    }

    /**
     * Online resize: the device takes the new capacity and the connected frontend, if it gave a
     * backend channel, is told with BACKEND_CONFIG_CHANGE_MSG (QEMU then re-reads the config and
     * interrupts the guest, whose driver picks up the new size). The image must already have
     * the new size. Returns whether a frontend was told.
     */
    public boolean resize(long capacityBytes) {
        device.resize(capacityBytes);
        Session s = current;
        boolean told = s != null && s.notifyConfigChange();
        log.info("resized to " + capacityBytes + " bytes" + (told ? "; frontend " + s.id() + " told" : s != null
                ? "; the frontend gave no backend channel (a resumed session has none) and was not told: the guest"
                        + " keeps the old size until it reads the config again" : ""));
        return told;
    }

    /**
     * The frontend served now.
     *
     * @param id the server's number of the connection (1 for the first since start)
     * @param pid its process id (SO_PEERCRED at accept), or -1 if it could not be read
     * @param uid its user id, or -1 if it could not be read
     * @param connectedAtMs when it was accepted, epoch milliseconds
     * @param queuesStarted how many of the device's queues run now
     */
    public record Frontend(int id, int pid, long uid, long connectedAtMs, int queuesStarted) {
    }

    /**
     * The frontend served now, or null when none is (frontends kept waiting are not served) or
     * the served one has already hung up (its teardown may still run: a remove right after a
     * VM let go of its disk is not refused for it). Any thread; a snapshot (one poll(2)).
     */
    public Frontend frontend() {
        Session s = current;
        if (s == null || s.frontendGone()) {
            return null;
        }
        int running = 0;
        for (int q = 0; q < device.numQueues(); q++) {
            if (device.isRunning(q)) {
                running++;
            }
        }
        return s.frontend(running);
    }

    /** Where the server listens. */
    public Path socketPath() {
        return socketFile.path();
    }

    /**
     * Starts serving on the control threads given to {@link Builder#controlThreads} and returns
     * at once: frontends are accepted and served one at a time until {@link #stop()}, their
     * messages read and handled by those threads, with no thread of this server's own.
     *
     * @throws IllegalStateException without control threads, or when already started (a
     *         server closed before it started stays closed)
     */
    public void start() {
        if (sharedLoop == null) {
            throw new IllegalStateException("start() needs control threads (Builder.controlThreads); serve() runs on the caller's");
        }
        listen(sharedLoop, sharedHandlers);
    }

    /**
     * Accepts and serves frontends one at a time until {@link #stop()}. With control threads
     * ({@link Builder#controlThreads}) it starts on them and waits; without, the caller's thread
     * is the event loop and handles every message.
     */
    public void serve() {
        if (sharedLoop != null) {
            if (!listen(sharedLoop, sharedHandlers)) {
                return; // closed before it started
            }
            try {
                finished.await();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            return;
        }
        EventLoop own = EventLoop.onCaller(name + "-socket", log);
        ownLoop = own;
        try {
            if (listen(own, Runnable::run)) {
                own.run();
            }
        } finally {
            own.release();
        }
    }

    /** Watches the listening socket; false (and nothing done) when the server is already closed. */
    private boolean listen(EventLoop loop, Executor handlers) {
        synchronized (this) {
            if (serving) {
                throw new IllegalStateException("already serving");
            }
            if (closed) {
                return false;
            }
            serving = true;
        }
        this.loop = loop;
        this.handlers = handlers;
        socketFile.socket().setNonBlocking();
        synchronized (listenLock) {
            listening = loop.register(socketFile.socket().fd(), handlers, this::acceptTurn);
        }
        return true;
    }

    /**
     * The listening socket is ready: accepts a frontend and serves it, or, while another is
     * served, keeps it waiting (logged once, with both peers) until that one has gone. The
     * listening socket stays watched while a frontend is served, so a second frontend is seen
     * and logged at once instead of waiting silently in the kernel's backlog; once
     * {@link #BACKLOG} are kept waiting it is not watched until one is served.
     */
    private void acceptTurn() {
        synchronized (listenLock) {
            if (stopping) {
                stopListening();
                return;
            }
            UnixSocket client;
            try {
                client = socketFile.socket().acceptNonBlocking();
            } catch (NativeException e) {
                if (stopping) {
                    stopListening();
                    return;
                }
                log.info("accept failed: " + e.getMessage());
                // Out of descriptors or similar: do not spin while it lasts.
                sleepQuietly(100);
                listening.rearm();
                return;
            }
            if (client == null) {
                listening.rearm();
                return;
            }
            if (stopping) {
                client.close();
                stopListening();
                return;
            }
            String refusal = peers.refusal(client);
            if (refusal != null) {
                connections.info(LogLimit.Kind.REFUSED, refusal);
                client.close();
                listening.rearm();
                return;
            }
            Session served = current;
            if (served != null) {
                waiting.add(client);
                watchSilence(); // before the line: a test that saw it finds the check scheduled
                // Not when the served one has already hung up and is being torn down: this is its
                // successor (QEMU's reconnect=1 connects again at once after it gave up), served soon.
                if (!served.frontendGone()) {
                    connections.info("a frontend" + Session.peerOf(client) + " waits: " + served.describe()
                            + " is connected, and a device serves one frontend at a time; this one is served when it goes");
                }
                if (waiting.size() < BACKLOG) {
                    listening.rearm();
                } else {
                    listenerPaused = true; // the next ones wait in the kernel's backlog
                }
                return;
            }
            serve(client);
            if (!stopping || current != null) {
                listening.rearm();
            } else {
                finishServing();
            }
        }
    }

    /**
     * A stop has come to the listener: serving finishes now when no frontend is served, else when
     * the served one has drained and gone ({@link #sessionEnded}). Holds listenLock.
     */
    private void stopListening() {
        if (current == null) {
            finishServing();
        }
    }

    /**
     * Serves {@code client} as the current frontend; false (client closed, logged) when it
     * cannot be watched. Holds listenLock, and no frontend is served.
     */
    private boolean serve(UnixSocket client) {
        Session session = new Session(sessions.incrementAndGet(), client, device, errors, poller, log, this::sessionEnded,
                activation, connections, maxGuestBytes);
        current = session;
        servedAtNs = System.nanoTime();
        // Pairs with stop(): it sets 'stopping' then reads 'current'; we write 'current'
        // then read 'stopping', so one of us sees the other.
        if (stopping) {
            session.shutdown();
        }
        try {
            session.start(loop, handlers);
            return true;
        } catch (RuntimeException e) {
            // Not watched (the loop is closing, or epoll refused): nothing of it to tear down.
            log.info("frontend " + session.id() + ": cannot be served: " + e);
            current = null;
            client.close();
            return false;
        }
    }

    /** The frontend has gone and the device is reset: the next one, waiting or to come, may be served. */
    private void sessionEnded(Session s) {
        synchronized (listenLock) {
            current = null;
            if (stopping) {
                finishServing();
                return;
            }
            while (current == null && !waiting.isEmpty()) {
                serve(waiting.poll());
            }
            watchSilence();
            if (current == null && stopping) {
                finishServing();
            } else if (listenerPaused) {
                listenerPaused = false;
                listening.rearm();
            }
        }
    }

    /**
     * While a frontend waits, schedules the check of the served one's silence for when its
     * {@link #silentFrontendMs} (counted from when it began to be served) is up; nothing for
     * one that has spoken. Holds listenLock.
     */
    private void watchSilence() {
        Session s = current;
        if (s == null || waiting.isEmpty() || silenceWatched == s || s.heardFrom()) {
            return;
        }
        silenceWatched = s;
        long left = servedAtNs + TimeUnit.MILLISECONDS.toNanos(silentFrontendMs) - System.nanoTime();
        SilenceTimer.TIMER.schedule(() -> silenceCheck(s), Math.max(0, left), TimeUnit.NANOSECONDS);
    }

    /**
     * {@code s}'s bound is up: closes it if it is still served, has sent no message, and a
     * frontend still connected waits; its teardown then serves the waiting one. On the timer.
     */
    private void silenceCheck(Session s) {
        synchronized (listenLock) {
            if (silenceWatched == s) {
                silenceWatched = null;
            }
            if (current != s || stopping || !aFrontendWaits()) {
                return;
            }
            if (s.shutdownIfSilent()) {
                connections.info(LogLimit.Kind.CLOSED, s.describe() + " sent no message in " + silentFrontendMs
                        + " ms while another frontend waits: closing it to serve the waiting one (" + SILENT_FRONTEND_MS + ")");
            }
        }
    }

    /** Waits until the silence checks due now have run (tests: the timer runs them in order). */
    static void awaitSilenceChecks() throws Exception {
        SilenceTimer.TIMER.submit(() -> { }).get(30, TimeUnit.SECONDS);
    }

    /** Whether a frontend kept waiting is still connected. Holds listenLock. */
    private boolean aFrontendWaits() {
        for (UnixSocket w : waiting) {
            if (!w.peerHungUp()) {
                return true;
            }
        }
        return false;
    }

    /** Closes the frontends kept waiting (serving has ended). Holds listenLock. */
    private void closeWaiting() {
        for (UnixSocket w; (w = waiting.poll()) != null; ) {
            w.close();
        }
    }

    private static void sleepQuietly(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    /** No frontend is served and none will be. */
    private void finishServing() {
        if (finished.getCount() == 0) {
            return;
        }
        listening.cancel();
        connections.flush();
        if (!waiting.isEmpty()) {
            log.info("serving stopped: " + waiting.size() + " waiting frontend(s) disconnected");
            closeWaiting();
        }
        finished.countDown();
        EventLoop own = ownLoop;
        if (own != null) {
            own.close();
        }
    }

    /**
     * Makes {@link #serve()} return: the current frontend's connection is shut down (its rings are
     * drained by the serving thread) and no further one is accepted. Any thread; idempotent, and
     * a no-op once {@link #close()} has begun.
     */
    public synchronized void stop() {
        if (closed) {
            return;
        }
        stopping = true;
        Session s = current;
        if (s != null) {
            s.shutdown();
        }
        // shutdown(2) on a listening socket makes it ready (and accept fail) at once on Linux:
        // an armed listener's turn comes and sees 'stopping'.
        socketFile.socket().shutdown();
    }

    /**
     * Listens again at the socket's path with a new socket (same mode and group), for a socket
     * file removed under a running server (a cleaner of /run, an operator's mistake): frontends
     * could no longer reach it by name. The frontend served now and those kept waiting are
     * untouched; the old listening socket is closed (its file, gone or another's, is left alone).
     * Like the first listen it replaces a stale socket file and never a live one.
     *
     * @throws IllegalStateException when the server does not serve (not started, stopping, closed)
     * @throws IllegalArgumentException when the path is unusable or another process listens there
     * @throws java.io.UncheckedIOException when the socket cannot be bound there (its directory gone, a
     *         file that is no socket in its place)
     */
    public synchronized void rebind() {
        if (closed || stopping || !serving) {
            throw new IllegalStateException("the server does not serve");
        }
        synchronized (listenLock) {
            if (finished.getCount() == 0) {
                throw new IllegalStateException("the server does not serve");
            }
            SocketFile old = socketFile;
            SocketFile fresh = SocketFile.listen(old.path(), BACKLOG, socketMode, socketGroup);
            EventLoop.Registration watched;
            try {
                fresh.socket().setNonBlocking();
                watched = loop.register(fresh.socket().fd(), handlers, this::acceptTurn);
            } catch (RuntimeException e) {
                fresh.closeAndRemove();
                throw e;
            }
            listening.cancel();
            socketFile = fresh;
            listening = watched; // armed: a turn of the old one still queued accepts from this one
            listenerPaused = false;
            old.socket().close();
        }
        log.info("listening again on " + socketFile.path() + " (its socket file had been removed or replaced)");
    }

    /**
     * {@link #stop()}, unless a frontend is served now (one that has already hung up does not
     * count, as in {@link #frontend()}): checked and stopped under the lock the listener's turns
     * take, so no frontend can be accepted between the check and the stop (a removal that found
     * no VM attached never cuts off one that came just then). A frontend connecting after it is
     * closed unserved. Returns whether it stopped (true also when already stopping or closed).
     */
    public synchronized boolean stopUnlessServing() {
        if (closed || stopping) {
            return true;
        }
        synchronized (listenLock) {
            Session s = current;
            if (s != null && !s.frontendGone()) {
                return false;
            }
            stopping = true; // the listener's next turn closes whom it accepts
        }
        stop();
        return true;
    }

    /** Waits until {@link #serve()} has returned; true if it did within the timeout. */
    public boolean awaitStopped(long timeout, TimeUnit unit) throws InterruptedException {
        return !serving || finished.await(timeout, unit);
    }

    /**
     * Stops serving, waits for the serving thread to drain, closes the device (its I/O threads and
     * back ends) and removes the socket file. The image stays the caller's.
     */
    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        stop();
        closed = true;
        try {
            if (!awaitStopped(closeWaitMs, TimeUnit.MILLISECONDS)) {
                log.info("the serving thread did not stop within " + closeWaitMs + " ms; closing anyway");
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        synchronized (listenLock) {
            if (listening != null) {
                listening.cancel(); // before the descriptor closes, even after a stuck drain
            }
            closeWaiting();
        }
        poller.close();
        // Bounded: a back end that never completes what is in flight must not hold export.remove
        // (or the daemon's shutdown) for ever. Undrained, the device stays unquiesced: the
        // session's teardown keeps the guest memory mapped until the kernel has finished what the
        // back ends left (BlockDevice.whenQuiesced), and its pending GET_VRING_BASE fails
        // (the connection closes unanswered) rather than answer with requests in flight.
        if (!device.close(deviceDrainWaitMs)) {
            log.info("the device did not drain within " + deviceDrainWaitMs + " ms: closed with requests still in flight"
                    + " (a back end that does not complete them)");
        }
        socketFile.closeAndRemove();
    }

    /** Builder for {@link VhostUserServer}. */
    public static final class Builder {
        private final Path socket;
        private final BlkConfig config;
        private final BackendFactory backends;
        private io.vblk.block.DriverFactory drivers;
        private io.vblk.block.ImageActivation activation;
        private boolean driversHandOver;
        private boolean incoming;
        private String handOverImage;
        private boolean handOverLocked;
        private Tuning tuning = Tuning.defaults();
        private Log log = Log.to(System.err);
        private String name = "vblk";
        private int socketMode = SocketFile.DEFAULT_MODE;
        private String socketGroup;
        private int[] allowUids;
        private SharedIoThread[] ioThreads;
        private EventLoop loop;
        private Executor handlers;
        private int connectionLines = LogLimit.LINES;
        private long maxGuestBytes = DEFAULT_MAX_GUEST_MEMORY;

        private Builder(Path socket, BlkConfig config, BackendFactory backends) {
            this.socket = Objects.requireNonNull(socket, "socket");
            this.config = Objects.requireNonNull(config, "config");
            this.backends = Objects.requireNonNull(backends, "backends");
        }

        /**
         * The most guest memory a frontend's memory table may map (the sum of its regions), from
         * 1 MiB to {@link #MAX_GUEST_MEMORY}; a larger table is refused. Default
         * {@link #DEFAULT_MAX_GUEST_MEMORY}. Every byte of it is mapped into this process, and a
         * page the device writes that the frontend never touched (a sparse memfd) is allocated
         * on this process's fault and charged to its memory cgroup: the cap bounds what one
         * frontend can make the process map and allocate, and keeps a few frontends from taking
         * the mapping budget all frontends of the process share.
         */
        public Builder maxGuestMemory(long bytes) {
            if (bytes < MIN_GUEST_MEMORY || bytes > MAX_GUEST_MEMORY) {
                throw new IllegalArgumentException("max guest memory " + bytes + " bytes: " + MIN_GUEST_MEMORY + " to "
                        + MAX_GUEST_MEMORY + " allowed");
            }
            maxGuestBytes = bytes;
            return this;
        }

        /** Serves the disk through these block drivers (e.g. qcow2) instead of raw ones. */
        public Builder drivers(io.vblk.block.DriverFactory value) {
            drivers = Objects.requireNonNull(value, "drivers");
            return this;
        }

        /**
         * Hands the image over in live migrations ({@link io.vblk.block.ImageActivation}): an
         * inactive image takes the writer's locks when the device starts (the ring does not start
         * while another backend holds them), and drops them back after a stop for a frontend
         * that logged dirty pages (a migration's source). Default: none.
         */
        public Builder activation(io.vblk.block.ImageActivation value) {
            activation = Objects.requireNonNull(value, "activation");
            return this;
        }

        /**
         * Hands a format image (qcow2) over in live migrations through its block drivers
         * ({@link io.vblk.block.BlockDriver#activate}, {@link io.vblk.block.BlockDriver#inactivate}),
         * at the same points as {@link #activation}: inactive at first when {@code incoming}
         * (the drivers opened the image inactive), activated before the first ring starts,
         * inactivated after a stop for a frontend that logged dirty pages. {@code image} names it
         * in log lines. Default: none.
         */
        public Builder driversHandOver(boolean incoming, String image) {
            return driversHandOver(incoming, image, true);
        }

        /**
         * As {@link #driversHandOver(boolean, String)}; {@code locked} false for an image on a
         * network disk, whose drivers hand over cached state and flush only (there are no locks
         * to move), as the log lines then say.
         */
        public Builder driversHandOver(boolean incoming, String image, boolean locked) {
            driversHandOver = true;
            this.incoming = incoming;
            handOverImage = Objects.requireNonNull(image, "image");
            handOverLocked = locked;
            return this;
        }

        /** The device's data-plane tuning (default {@link Tuning#defaults()}). */
        public Builder tuning(Tuning value) {
            tuning = Objects.requireNonNull(value, "tuning");
            return this;
        }

        /** Where event lines go (default stderr). */
        public Builder log(Log value) {
            log = Objects.requireNonNull(value, "log");
            return this;
        }

        /** Permission bits of the socket file (default 0600); the owner keeps read and write. */
        public Builder socketMode(int value) {
            if (value < 0 || value > 0777 || (value & 0600) != 0600) {
                throw new IllegalArgumentException("socket mode 0" + Integer.toOctalString(value)
                        + ": expected permission bits 0600 to 0777");
            }
            socketMode = value;
            return this;
        }

        /** Group of the socket file, by name or numeric gid (default: left as created, the server's). */
        public Builder socketGroup(String value) {
            socketGroup = Objects.requireNonNull(value, "group");
            return this;
        }

        /**
         * The peer uids served (SO_PEERCRED); any other connection is logged and closed. Default:
         * the server's own uid and root.
         */
        public Builder allowUids(int... uids) {
            if (uids.length == 0) {
                throw new IllegalArgumentException("allowUids: at least one uid");
            }
            allowUids = uids.clone();
            return this;
        }

        /**
         * Runs the device's queues on these shared I/O threads instead of threads of its own
         * (see {@code BlockDevice.Builder.ioThreads}).
         */
        public Builder ioThreads(SharedIoThread... value) {
            ioThreads = value.clone();
            return this;
        }

        /**
         * Serves the socket and its frontends' control messages from {@code loop}, handling them
         * on {@code handlers} (a small pool shared by many servers: a handler may block while a
         * ring drains), instead of a thread of the server's own; then {@link #start()} serves.
         */
        public Builder controlThreads(EventLoop loop, Executor handlers) {
            this.loop = Objects.requireNonNull(loop, "loop");
            this.handlers = Objects.requireNonNull(handlers, "handlers");
            return this;
        }

        /**
         * Lines per minute logged about what a frontend can repeat at will: connects,
         * disconnects, refused and waiting connections (default 10; {@code Integer.MAX_VALUE}: no
         * limit, for tests that wait for each). Past it they are counted, and the count logged
         * in one line ("N similar lines suppressed") by the next such line after the minute, or
         * when serving stops. A reconnect loop otherwise floods the log (rev15c: 10,000 lines in 5.4 s).
         */
        public Builder connectionLinesPerMinute(int value) {
            if (value < 1) {
                throw new IllegalArgumentException("connection lines per minute: at least 1, got " + value);
            }
            connectionLines = value;
            return this;
        }

        /** Prefix of the device's thread names. */
        public Builder name(String value) {
            name = Objects.requireNonNull(value, "name");
            return this;
        }

        /**
         * Builds the device, starts its I/O threads and listens on the socket (mode 0600 unless
         * set otherwise).
         *
         * @throws IllegalArgumentException when the socket path is unusable (missing directory,
         *         not a socket already there) or the socket group does not exist
         * @throws java.io.UncheckedIOException when the socket cannot be created (permissions,
         *         address in use)
         * @throws io.vblk.sys.NativeException when the kernel refuses to set up the back end
         */
        public VhostUserServer build() {
            return new VhostUserServer(this);
        }
    }
}
