package io.vblk.vhost;

import java.util.concurrent.Executor;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.ScheduledThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.locks.ReentrantLock;
import java.util.function.Consumer;

import io.vblk.engine.BlockDevice;
import io.vblk.sys.UnixSocket;

/**
 * One frontend connection, from accept to close: reads requests, hands each to the handler of
 * its group, acknowledges, refuses, and on the way out gives the device back clean.
 *
 * <pre>
 *            SET_OWNER                       end of stream, fatal error, or shutdown
 *  CONNECTED ---------&gt; OWNED -------------------------------------------------------&gt; CLOSED
 *  (features and         (memory, rings, features,           teardown: drain and stop every
 *   queries only)         device reset)                      ring, reset the device, close
 *                                                           every descriptor, unmap memory
 * </pre>
 *
 * <p>A connection whose first message belongs to the device's start (SET_FEATURES,
 * GET_INFLIGHT_FD, ...) goes straight to OWNED with every offered protocol feature: a resumed
 * session ({@link Request#resumesSession}).
 *
 * <p>Errors: a refused request is answered with a failure where the protocol has one (REPLY_ACK
 * with need_reply: a non-zero u64; GET_CONFIG: an empty payload; GET_INFLIGHT_FD: a buffer of
 * size 0); where it has none, or the stream itself is broken, the connection ends. Either way
 * one line is logged, and the server goes on to the next connection.
 */
final class Session {
    private final int id;
    private final String who;
    /** The peer's " (pid P, uid U)" from SO_PEERCRED, read once at accept (or "" if unreadable). */
    private final String peer;
    /** The peer's pid and uid (SO_PEERCRED), or -1 each when unreadable; for {@link #frontend}. */
    private final int peerPid;
    private final long peerUid;
    /** When the connection was accepted (epoch milliseconds). */
    private final long connectedAtMs = System.currentTimeMillis();
    /** Connect and disconnect lines, which a frontend in a loop could repeat at will, go through it. */
    private final LogLimit connections;
    private final UnixSocket socket;
    private final MessageChannel channel;
    private final Message message = new Message();
    private final FrontendState state;
    private final QueueControl control;
    private final FeatureRequests features;
    private final MemoryRequests memory;
    private final VringRequests vrings;
    private final ConfigRequests config;
    private final InflightRequests inflight;
    private final LogRequests logs;
    private final Log log;
    private final Consumer<Session> onEnd;
    /**
     * Held for a whole turn (one message); not the session's monitor, so a resize never waits for
     * a drain. A lock (not a monitor) so that a tick can skip a busy turn instead of waiting.
     */
    private final ReentrantLock turnLock = new ReentrantLock();
    /**
     * Set by the timer when it hands a tick to the handlers, cleared by the tick: at most one tick
     * of this session is queued or running, so ticks never pile up on the control threads.
     */
    private final AtomicBoolean tickQueued = new AtomicBoolean();
    private EventLoop.Registration registration;
    private boolean ended;
    private long messages;
    /** The last request handled, or -1 (for the line logged when the frontend goes early). */
    private int lastRequest = -1;
    /** The frontend's channel for backend requests (SET_BACKEND_REQ_FD), or null; guarded by this. */
    private BackendChannel backend;
    /** Set under the session's lock when the socket is closed, so a late shutdown never hits a reused descriptor. */
    private boolean closed;
    /** The frontend has sent a whole message (guarded by this): never closed for silence then. */
    private boolean heard;
    /** Closed by {@link #shutdownIfSilent} (written under this; read by the turn that then sees the end). */
    private volatile boolean silenced;
    /** Where turns run ({@link #start}); the timer hands {@link #tick} to it too. */
    private Executor handlers;
    /** The periodic {@link QueueControl#tick} while it is wanted, or null; guarded by turnLock. */
    private ScheduledFuture<?> ticks;

    /** How often {@link QueueControl#tick} runs while wanted. */
    static final long TICK_MS = 1000;

    /**
     * One daemon thread for every session's ticks: it only hands each tick to the session's
     * handlers (control threads), never runs one itself unless the handlers are the caller's
     * own (one-server serve(), where it runs on this thread; a tick skips a turn that is busy, never
     * waits for it, but its own work, an image activation, runs here).
     */
    private static final class Timer {
        static final ScheduledExecutorService TIMER = timer();

        private static ScheduledExecutorService timer() {
            ScheduledThreadPoolExecutor t = new ScheduledThreadPoolExecutor(1, r -> {
                Thread th = new Thread(r, "vblk-vhost-timer");
                th.setDaemon(true);
                return th;
            });
            t.setRemoveOnCancelPolicy(true);
            return t;
        }
    }

    Session(int id, UnixSocket socket, BlockDevice device, QueueErrors errors, KickPoller poller, Log log,
            Consumer<Session> onEnd) {
        this(id, socket, device, errors, poller, log, onEnd, null, new LogLimit(log), MemoryTable.DEFAULT_MAX_GUEST_BYTES);
    }

    /** {@code maxGuestBytes}: the most guest memory one memory table of this frontend may map. */
    Session(int id, UnixSocket socket, BlockDevice device, QueueErrors errors, KickPoller poller, Log log,
            Consumer<Session> onEnd, HandOver activation, LogLimit connections, long maxGuestBytes) {
        this.id = id;
        this.who = "frontend " + id;
        this.socket = socket;
        int[] cred = credentials(socket);
        this.peerPid = cred == null ? -1 : cred[0];
        this.peerUid = cred == null ? -1 : Integer.toUnsignedLong(cred[1]);
        this.peer = cred == null ? "" : " (pid " + cred[0] + ", uid " + Integer.toUnsignedString(cred[1]) + ")";
        this.connections = connections;
        this.channel = new MessageChannel(socket);
        this.log = log;
        this.onEnd = onEnd;
        this.state = new FrontendState(device.numQueues(), maxGuestBytes, log);
        this.control = new QueueControl(device, state, errors, poller, log, who, activation);
        this.features = new FeatureRequests(state, control, channel);
        this.memory = new MemoryRequests(state, control, channel);
        this.vrings = new VringRequests(state, control, channel);
        this.config = new ConfigRequests(device, channel);
        this.inflight = new InflightRequests(state, control, channel);
        this.logs = new LogRequests(state, control, channel);
    }

    int id() {
        return id;
    }

    /**
     * Serves the connection from {@code loop}: each time the (non-blocking) socket is readable,
     * one turn runs on {@code handlers} (see {@link #turn()}). Returns at once; when the
     * connection has ended and its state is torn down, {@code onEnd} is called (on a handler
     * thread). Never throws for anything the frontend does.
     */
    void start(EventLoop loop, Executor handlers) {
        connections.info(who + " connected" + peer);
        this.handlers = handlers;
        control.onWantTicks(this::wantTicks);
        turnLock.lock(); // the first turn may come at once: let it find the registration
        try {
            registration = loop.register(socket.fd(), handlers, this::turn);
        } finally {
            turnLock.unlock();
        }
    }

    /**
     * One turn: reads what has come, handles the message if it is whole, and watches the socket
     * again. One message per turn, so a frontend flooding requests is served in turn with every
     * other connection of the loop, and half a message waits in the channel without a thread.
     * Turns of one session never overlap (one-shot registration); the lock orders their memory.
     *
     * <p>The rings are drained before the socket closes: a frontend that sees the connection drop
     * (QEMU) rewinds its available index to {@code used.idx} and offers the rest again on
     * reconnect, so every request the device popped must be in the used ring by then. The last
     * log line comes after the teardown, when the device is free for the next frontend.
     */
    private void turn() {
        turnLock.lock();
        try {
            if (ended) {
                return;
            }
            String end = null;
            LogLimit.Kind kind = LogLimit.Kind.CONNECTION;
            try {
                int got = channel.receive(message);
                if (got == MessageChannel.MESSAGE) {
                    messages++;
                    lastRequest = message.request();
                    if (messages == 1 && !heard()) {
                        // Closed for its silence just before this came (VhostUserServer's bound).
                        message.closeFds();
                        end = disconnected();
                    } else {
                        if (messages == 1 && Request.resumesSession(lastRequest)) {
                            resume(message);
                        }
                        dispatch(message);
                        message.closeFds();
                    }
                } else if (got == MessageChannel.END) {
                    end = disconnected();
                }
            } catch (ProtocolError e) {
                end = who + ": connection closed: " + e.getMessage();
                kind = LogLimit.Kind.CLOSED;
            } catch (Throwable e) {
                // An Error (dispatch turns RuntimeExceptions into ProtocolErrors): an
                // OutOfMemoryError mapping or answering, a StackOverflowError. Without this the
                // session would never turn again and never tear down (fds, mappings, its device
                // held). Torn down and logged, not rethrown: the JVM's own OOM options
                // (-XX:+ExitOnOutOfMemoryError, HeapDumpOnOutOfMemoryError) act when it is
                // thrown, not when it is caught, and a rethrow would only end this thread, which
                // for `vblk serve` (handlers on the caller's loop) is the event loop itself.
                end = who + ": connection closed: internal error: " + e;
                kind = null;
            }
            if (end == null) {
                try {
                    registration.rearm();
                    return;
                } catch (RuntimeException e) {
                    end = who + ": connection closed: cannot watch its socket: " + e;
                    kind = null;
                }
            }
            finish(end, kind);
        } finally {
            turnLock.unlock();
        }
    }

    /**
     * Tears the session down and logs {@code end}: through the rate limit as {@code kind}, or
     * always when {@code kind} is null or the teardown failed (vblk's own failures, which a
     * connect loop must not hide).
     */
    private void finish(String end, LogLimit.Kind kind) {
        ended = true;
        if (ticks != null) {
            ticks.cancel(false);
            ticks = null;
        }
        registration.cancel();
        message.closeFds();
        try {
            control.teardown();
        } catch (Throwable e) { // an Error too: the session is closed and its owner told whatever happens
            end += "; teardown failed: " + e;
            kind = null;
        } finally {
            synchronized (this) {
                closed = true;
                channel.close();
                if (backend != null) {
                    backend.close();
                    backend = null;
                }
            }
        }
        if (kind == null) {
            log.info(end);
        } else {
            connections.info(kind, end);
        }
        onEnd.accept(this);
    }

    /**
     * The line for a frontend that closed the connection. One that goes before starting a ring
     * gave up during set-up: the line names its last request, and after GET_QUEUE_NUM the likely
     * reason (QEMU's vhost-user-blk with num-queues above the device's count disconnects there,
     * saying so only on its own stderr).
     */
    private String disconnected() {
        if (silenced) {
            return who + " disconnected: closed by the server, it had sent no message while another frontend waited";
        }
        String line = who + " disconnected after " + messages + " messages";
        if (stoppedByServer) {
            // Not the frontend's doing: no guess at why it left.
            return line + ": the export stops (a shutdown or its removal closed the connection)";
        }
        if (control.everStarted() || lastRequest < 0) {
            return line;
        }
        line += ", the last " + Request.name(lastRequest) + ", before starting a ring";
        if (lastRequest == Request.GET_QUEUE_NUM) {
            int n = state.vrings.length;
            line += " (the device has " + n + (n == 1 ? " queue" : " queues")
                    + ": a frontend that asks for more gives up here; serve more with --queues, export.add \"queues\")";
        }
        return line;
    }

    /** "frontend N (pid P, uid U)": for lines about this frontend logged by others (any thread). */
    String describe() {
        return who + peer;
    }

    /** " (pid P, uid U)" of {@code socket}'s peer (SO_PEERCRED), or "" if it cannot be read. */
    static String peerOf(UnixSocket socket) {
        int[] cred = credentials(socket);
        return cred == null ? "" : " (pid " + cred[0] + ", uid " + Integer.toUnsignedString(cred[1]) + ")";
    }

    private static int[] credentials(UnixSocket socket) {
        try {
            return socket.peerCredentials();
        } catch (RuntimeException e) {
            return null;
        }
    }

    /** This frontend as {@link VhostUserServer#frontend()} describes it: pid, uid, since when. */
    VhostUserServer.Frontend frontend(int queuesStarted) {
        return new VhostUserServer.Frontend(id, peerPid, peerUid, connectedAtMs, queuesStarted);
    }

    /**
     * Whether the frontend has gone (closed its end, or this session has closed the connection)
     * though the session may not have seen it yet. Any thread.
     */
    synchronized boolean frontendGone() {
        return closed || socket.peerHungUp();
    }

    /** SET_BACKEND_REQ_FD: keeps the socket on which backend requests go (replacing an earlier one). */
    private void setBackendReqFd(Message m) {
        if (!ProtocolFeatures.has(state.protocolFeatures, ProtocolFeatures.BACKEND_REQ)) {
            throw ProtocolError.rejected("SET_BACKEND_REQ_FD without protocol feature BACKEND_REQ negotiated");
        }
        m.requireFds(1);
        BackendChannel next = new BackendChannel(m.takeFd(0));
        BackendChannel previous;
        synchronized (this) {
            previous = backend;
            backend = next;
        }
        if (previous != null) {
            previous.close();
        }
    }

    /**
     * Tells the frontend that the config space changed (BACKEND_CONFIG_CHANGE_MSG). Any thread.
     * Returns false when this frontend gave no backend channel or has gone.
     */
    synchronized boolean notifyConfigChange() {
        return !closed && backend != null && backend.configChanged();
    }

    /**
     * Ends the connection, as {@link #shutdown()}, if the frontend has not sent one whole message
     * yet (VhostUserServer's bound for a silent frontend holding the slot another waits for);
     * whether it did. A frontend that has sent any message is never closed this way. Any thread.
     */
    synchronized boolean shutdownIfSilent() {
        if (heard || closed) {
            return false;
        }
        silenced = true;
        channel.shutdown();
        return true;
    }

    /** Whether the frontend has sent a whole message. Any thread. */
    synchronized boolean heardFrom() {
        return heard;
    }

    /** The first message has come: false when the connection was closed for its silence before. */
    private synchronized boolean heard() {
        if (silenced) {
            return false;
        }
        heard = true;
        return true;
    }

    /** Ends the connection from another thread: its next turn sees the end of the stream and tears down. */
    synchronized void shutdown() {
        if (!closed) {
            stoppedByServer = true;
            channel.shutdown();
        }
    }

    /** Starts the periodic {@link QueueControl#tick} if it is not running (under turnLock). */
    private void wantTicks() {
        if (ticks == null && !ended) {
            ticks = Timer.TIMER.scheduleWithFixedDelay(() -> {
                if (!tickQueued.compareAndSet(false, true)) {
                    return; // the last tick has not run yet (the handlers are busy): no second one
                }
                try {
                    handlers.execute(this::tick);
                } catch (RejectedExecutionException e) {
                    tickQueued.set(false); // the handlers are shutting down: so is this session
                } catch (Throwable e) {
                    // Never out of the periodic task: the executor would cancel it silently
                    // while ticks stays set, and no tick would ever run again.
                    tickQueued.set(false);
                    log.info(who + ": periodic check not started: " + e);
                }
            }, TICK_MS, TICK_MS, TimeUnit.MILLISECONDS);
        }
    }

    /**
     * One tick on a handler thread, in turn with the session's messages; stops the ticks when no
     * longer wanted. A turn in progress (a drain can hold it for as long as the back end is
     * stuck) makes the tick skip, never wait: a waiting tick would hold a control thread (or, in
     * one-server serve(), the timer every session shares) for the whole drain; the next second's
     * tick tries again.
     */
    private void tick() {
        tickQueued.set(false);
        if (!turnLock.tryLock()) {
            return;
        }
        boolean error = false;
        try {
            if (ended || ticks == null) {
                return;
            }
            boolean more;
            try {
                more = control.tick();
            } catch (ProtocolError e) {
                // A ring that cannot start, its error eventfd signalled: the frontend reconnects.
                log.info(who + ": connection closed: " + e.getMessage());
                more = false;
                error = true;
            } catch (RuntimeException e) {
                log.info(who + ": periodic check failed: " + e);
                more = false;
            } catch (Throwable e) {
                // An Error, as in a turn: the session is in no known state; end it (the next
                // turn reads the end of the stream and tears down) rather than let the error
                // out of the timer (which would cancel every later tick silently).
                log.info(who + ": connection closed: internal error in the periodic check: " + e);
                more = false;
                error = true;
            }
            if (!more) {
                ticks.cancel(false);
                ticks = null;
            }
        } finally {
            turnLock.unlock();
        }
        if (error) {
            synchronized (this) { // not shutdown(): not the server's stop, the end line must not say so
                if (!closed) {
                    channel.shutdown();
                }
            }
        }
    }

    /**
     * A connection that begins with a message of the device's start, without SET_OWNER: a
     * frontend resuming the session it had with the backend process before this one (see
     * {@link Request#resumesSession}). It gets ownership and the protocol features vblk offers;
     * every check of the messages themselves still applies.
     */
    private void resume(Message m) {
        state.resume();
        connections.info(who + ": resumed session: the first message is " + m.name() + ", not SET_OWNER; taken as the"
                + " session it negotiated with the backend before this one (QEMU 7.2 reconnecting while its device is"
                + " stopped skips GET_FEATURES, SET_PROTOCOL_FEATURES and SET_OWNER), with the protocol features offered");
    }
    /** Set by {@link #shutdown()}: the end of stream the next turn reads is the server's doing (its stop). */
    private volatile boolean stoppedByServer;

    private void dispatch(Message m) {
        try {
            handle(m);
            if (m.needReply() && state.replyAck() && !Request.hasOwnReply(m.request())) {
                channel.replyU64(m.request(), 0);
            }
        } catch (ProtocolError e) {
            if (e.fatal()) {
                throw e;
            }
            refuse(m, e.getMessage());
        } catch (RuntimeException e) {
            // A bug or an environment failure (e.g. mmap refused for lack of memory), not
            // something to guess around: end this connection, keep the process.
            throw ProtocolError.fatal("internal error handling " + m.name() + ": " + e);
        }
    }

    private void refuse(Message m, String reason) {
        int request = m.request();
        // Rate-limited as connects are: a frontend may repeat a refused request in a loop.
        if (request == Request.GET_CONFIG) {
            connections.info(LogLimit.Kind.REQUEST_REFUSED, who + ": " + m.name() + " refused (answered with an empty config): "
                    + reason);
            config.refuse(m);
        } else if (request == Request.GET_INFLIGHT_FD) {
            connections.info(LogLimit.Kind.REQUEST_REFUSED, who + ": " + m.name() + " refused (answered with no buffer): " + reason);
            inflight.refuse(m);
        } else if (!Request.hasOwnReply(request) && m.needReply() && state.replyAck()) {
            connections.info(LogLimit.Kind.REQUEST_REFUSED, who + ": " + m.name() + " refused (answered failure): " + reason);
            channel.replyU64(request, 1);
        } else {
            throw ProtocolError.fatal(m.name() + " refused, and the frontend cannot be told: " + reason);
        }
    }

    private void handle(Message m) {
        switch (m.request()) {
            case Request.GET_FEATURES -> features.getFeatures(m);
            case Request.SET_FEATURES -> features.setFeatures(m);
            case Request.GET_PROTOCOL_FEATURES -> features.getProtocolFeatures(m);
            case Request.SET_PROTOCOL_FEATURES -> features.setProtocolFeatures(m);
            case Request.GET_QUEUE_NUM -> features.getQueueNum(m);
            case Request.SET_OWNER -> features.setOwner(m);
            case Request.RESET_OWNER, Request.RESET_DEVICE -> features.reset(m);
            case Request.SET_MEM_TABLE -> memory.setMemTable(m);
            case Request.GET_MAX_MEM_SLOTS -> memory.getMaxMemSlots(m);
            case Request.ADD_MEM_REG -> memory.addMemReg(m);
            case Request.REM_MEM_REG -> memory.remMemReg(m);
            case Request.SET_VRING_NUM -> vrings.setNum(m);
            case Request.SET_VRING_ADDR -> vrings.setAddr(m);
            case Request.SET_VRING_BASE -> vrings.setBase(m);
            case Request.GET_VRING_BASE -> vrings.getBase(m);
            case Request.SET_VRING_KICK -> vrings.setKick(m);
            case Request.SET_VRING_CALL -> vrings.setCall(m);
            case Request.SET_VRING_ERR -> vrings.setErr(m);
            case Request.SET_VRING_ENABLE -> vrings.setEnable(m);
            case Request.GET_CONFIG -> config.getConfig(m);
            case Request.SET_CONFIG -> config.setConfig(m);
            case Request.GET_INFLIGHT_FD -> inflight.getInflightFd(m);
            case Request.SET_INFLIGHT_FD -> inflight.setInflightFd(m);
            case Request.SET_BACKEND_REQ_FD -> setBackendReqFd(m);
            case Request.SET_LOG_BASE -> logs.setLogBase(m);
            case Request.SET_LOG_FD -> logs.setLogFd(m);
            default -> throw ProtocolError.rejected(m.name() + " is not supported (size " + Integer.toUnsignedString(m.size())
                    + ", " + m.fdCount() + " descriptor(s))");
        }
    }
}
