package io.vblk.daemon;

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.attribute.GroupPrincipal;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Executor;

import org.agrona.concurrent.UnsafeBuffer;

import io.vblk.sys.Errno;
import io.vblk.sys.NativeBuffer;
import io.vblk.sys.NativeException;
import io.vblk.sys.UnixSocket;
import io.vblk.vhost.EventLoop;
import io.vblk.vhost.Log;
import io.vblk.vhost.PeerFilter;
import io.vblk.vhost.SocketFile;

/**
 * The daemon's control socket: a Unix socket (mode 0600 unless told otherwise, and the same
 * peer-uid filter as the data sockets) carrying JSON-RPC 2.0, one request per line and one
 * response per line. No thread per client: the daemon's event loop watches the listening socket
 * and every client ({@link ControlThreads}), and a bounded pool reads what has come and answers
 * each whole line, one client turn at a time (each client's requests in order). A client that
 * sends half a line and stops holds no thread; nor does one that reads no responses: an answer
 * that does not fit its socket buffer is kept (one per client), what it sends meanwhile is kept
 * unanswered, and it is answered on once its socket has room; past {@link #MAX_UNANSWERED_BYTES}
 * kept it is closed. A request that must wait for the daemon's start ({@link LineHandler#deferred})
 * holds no thread either: its client is not read until the start ends and resumes it, so however
 * many wait, config.status finds a thread. One that floods is served in turn with the rest. At most {@link #MAX_CLIENTS} at once: a further one takes the place of the client idle
 * longest, or, when every client is in a turn, gets one error line and is closed. A
 * line longer than {@link #MAX_LINE_BYTES} ends its connection with an error; a client's partial
 * line never holds more than that ({@link LineBuffer}). Together: each client's first
 * {@link #OWN_LINE_BYTES} are its own, and beyond that a line grows from one pool of
 * {@link #SHARED_LINE_BYTES} for all clients ({@link LinePool}); a client whose line would need
 * more than the pool has left gets an error and is closed. So all partial lines hold at most
 * {@code MAX_CLIENTS * OWN_LINE_BYTES + SHARED_LINE_BYTES} (32 MiB) of heap, not 256 MiB, and
 * clients that hog the pool never stop another client's ordinary (short) requests.
 *
 * <p>A turn that throws, an {@link Error} included (an OutOfMemoryError while a request builds
 * its answer, a StackOverflowError), still closes its client; see {@link #endTurn}.
 */
final class ControlServer implements AutoCloseable {
    /** What answers one request line: the response line, or null for none. */
    interface LineHandler {
        /** The response (without newline) to one request line, or null when none is due. */
        String handle(String line);

        /**
         * Whether {@code line} must not be answered yet (a call that waits for the daemon's
         * start): then {@code resume} runs once it may be, and the line is kept meanwhile with no
         * thread held. False (the default) answers it now.
         */
        default boolean deferred(String line, Runnable resume) {
            return false;
        }
    }

    static final int MAX_CLIENTS = 256;
    static final int MAX_LINE_BYTES = 1 << 20;
    /** The part of a client's partial line that needs nothing from the shared pool (every request vblk ctl sends fits). */
    static final int OWN_LINE_BYTES = 64 << 10;
    /** The pool all clients' longer lines grow from. */
    static final int SHARED_LINE_BYTES = 16 << 20;
    /**
     * What a client whose answer waits for room in its socket may send meanwhile (kept, answered
     * once it reads); a client that sends more reads none of its answers, and is closed.
     */
    static final int MAX_UNANSWERED_BYTES = 64 << 10;
    private static final int BACKLOG = 128;
    private static final int READ_BYTES = 64 << 10;

    private final SocketFile socketFile;
    private final PeerFilter peers;
    private final LineHandler rpc;
    private final Log log;
    private final EventLoop loop;
    private final Executor handlers;
    private final Set<Client> clients = ConcurrentHashMap.newKeySet();
    private final LinePool linePool = new LinePool(SHARED_LINE_BYTES);
    private final EventLoop.Registration listening;
    private volatile boolean closing;
    /**
     * Test hook (ControlEvictionRaceTest): runs after the acceptor picked the client to evict and
     * before it closes it, where that client's turn may start. Does nothing in the daemon.
     */
    volatile Runnable beforeEvict = () -> { };

    /**
     * Listens on {@code path}, served by {@code threads}.
     *
     * @throws IllegalArgumentException when the path is unusable (see {@link SocketFile#check})
     * @throws java.io.UncheckedIOException when the socket cannot be created
     */
    ControlServer(Path path, int mode, String group, int[] allowUids, LineHandler rpc, Log log, ControlThreads threads) {
        this.rpc = rpc;
        this.log = log;
        this.loop = threads.loop();
        this.handlers = threads.rpcHandlers();
        this.peers = allowUids == null ? PeerFilter.defaults() : PeerFilter.of(allowUids);
        GroupPrincipal principal = group == null ? null : SocketFile.group(group);
        boolean stale = Export.staleSocket(path);
        this.socketFile = SocketFile.listen(path, BACKLOG, mode, principal);
        if (stale) {
            log.info("control: replaced the stale socket file " + path + " (nothing was listening on it)");
        }
        try {
            socketFile.socket().setNonBlocking();
            this.listening = loop.register(socketFile.socket().fd(), handlers, this::acceptTurn);
        } catch (RuntimeException e) {
            socketFile.closeAndRemove();
            throw e;
        }
    }

    /**
     * Refuses a control socket path another process listens on (a daemon already running there):
     * {@link RpcError#IN_USE}, status 1 as for an export's socket in use, since it may pass once
     * that process has exited (a restart that overlaps the old daemon's drain).
     */
    static void refuseLive(Path path) {
        try {
            SocketFile.refuseLive(path);
        } catch (IllegalArgumentException e) {
            throw new RpcError(RpcError.IN_USE, "--control: " + e.getMessage(), e);
        }
    }

    Path path() {
        return socketFile.path();
    }

    /** Accepts every client waiting, then watches for more (even when a step throws). */
    private void acceptTurn() {
        try {
            acceptAll();
        } finally {
            // Rearmed whatever happened: without it the socket would accept no client again.
            if (!closing) {
                listening.rearm();
            }
        }
    }

    private void acceptAll() {
        while (!closing) {
            UnixSocket socket;
            try {
                socket = socketFile.socket().acceptNonBlocking();
            } catch (NativeException e) {
                if (!closing) {
                    log.info("control: accept failed: " + e.getMessage());
                    pause(); // out of descriptors or similar: do not spin while it lasts
                }
                break;
            }
            if (socket == null) {
                break;
            }
            String refusal = peers.refusal(socket);
            if (refusal != null || closing) {
                if (refusal != null) {
                    log.info("control: " + refusal);
                }
                socket.close();
                continue;
            }
            if (clients.size() >= MAX_CLIENTS && !evictLongestIdle()) {
                write(socket, JsonRpc.error(null, RpcError.INTERNAL_ERROR, "too many control clients (at most "
                        + MAX_CLIENTS + "), all busy; try again later"));
                socket.close();
                continue;
            }
            Client c = new Client(socket);
            clients.add(c);
            try {
                c.start();
            } catch (Throwable e) {
                log.info("control: cannot serve a client: " + e);
                endTurn(c);
            }
        }
    }

    /**
     * Makes room for a new client when all places are taken: closes the client whose last turn
     * ended longest ago (none in a turn now). Without it, {@link #MAX_CLIENTS} connections that
     * never send a byte kept every other client out (irev4 ControlTotalBoundTest). False when
     * every client is in a turn.
     */
    private boolean evictLongestIdle() {
        Set<Client> busy = new java.util.HashSet<>();
        while (true) {
            Client oldest = null;
            for (Client c : clients) {
                if (!c.inTurn && !busy.contains(c) && (oldest == null || c.lastActive < oldest.lastActive)) {
                    oldest = c;
                }
            }
            if (oldest == null) {
                return false;
            }
            beforeEvict.run();
            // Never wait for the client: a turn that started since inTurn was read (an
            // export.add stalled on an NBD handshake) would hold the acceptor until it ends, and
            // no client would be accepted meanwhile (irev5). Such a client is passed over.
            if (oldest.closeUnlessInTurn()) {
                logEviction();
                return true;
            }
            busy.add(oldest);
        }
    }

    /** Eviction lines logged per minute: a client connecting in a loop would write one per connect. */
    static final int EVICTION_LINES = 10;
    private static final long EVICTION_WINDOW_NS = java.util.concurrent.TimeUnit.MINUTES.toNanos(1);
    private long evictionWindowStart = System.nanoTime() - EVICTION_WINDOW_NS;
    private int evictionsLogged;
    private long evictionsSuppressed;

    /**
     * Logs an eviction, at most {@link #EVICTION_LINES} a minute as a frontend's connects are;
     * the rest are counted and told by the first line after the minute, or at close.
     */
    private synchronized void logEviction() {
        long now = System.nanoTime();
        if (now - evictionWindowStart >= EVICTION_WINDOW_NS) {
            logEvictionsSuppressed();
            evictionWindowStart = now;
            evictionsLogged = 0;
        }
        if (evictionsLogged < EVICTION_LINES) {
            evictionsLogged++;
            log.info("control: " + MAX_CLIENTS + " clients connected: closed the one idle longest for a new one");
        } else {
            evictionsSuppressed++;
        }
    }

    private synchronized void logEvictionsSuppressed() {
        if (evictionsSuppressed > 0) {
            log.info("control: " + evictionsSuppressed + " more clients closed as the one idle longest (at most "
                    + EVICTION_LINES + " such lines a minute are logged)");
            evictionsSuppressed = 0;
        }
    }

    /**
     * Closes {@code c} after its turn threw (the caller logged what). Policy: the client
     * is closed whatever was thrown, an Error included (its socket, registration and partial line
     * would otherwise leak, and its turns would never run again), and the server goes on. The
     * Error is not rethrown: the JVM's own OOM options (-XX:+ExitOnOutOfMemoryError,
     * HeapDumpOnOutOfMemoryError) act when it is thrown, not when it is caught, a rethrow would
     * only end a pool thread, and closing the client frees what its turn held.
     */
    private static void endTurn(Client c) {
        c.close();
    }

    private static void pause() {
        try {
            Thread.sleep(100);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    /**
     * What a turn reads into, one pair per handler thread rather than per client: a turn runs on
     * one thread and keeps nothing in them after it ends (the partial line is copied out), so 256
     * idle clients do not hold 256 * 128 KiB. A pool thread that ends lets its pair go.
     */
    private static final class ReadBuffers {
        final NativeBuffer in = new NativeBuffer(READ_BYTES);
        final byte[] chunk = new byte[READ_BYTES];
    }

    private static final ThreadLocal<ReadBuffers> READ_BUFFERS = ThreadLocal.withInitial(ReadBuffers::new);

    /** One client connection: its partial line between turns. */
    private final class Client {
        private final UnixSocket socket;
        private final int[] fds = new int[UnixSocket.MAX_FDS];
        private final int[] fdCount = new int[1];
        private final LineBuffer line = new LineBuffer(MAX_LINE_BYTES, OWN_LINE_BYTES, linePool);
        /**
         * Held by a turn and by close: one at a time. A lock rather than the monitor so that the
         * acceptor can try it without waiting ({@link #closeUnlessInTurn}).
         */
        private final java.util.concurrent.locks.ReentrantLock lock = new java.util.concurrent.locks.ReentrantLock();
        private EventLoop.Registration registration;
        private boolean closed;
        /** When its last turn ended (or it connected), in System.nanoTime; for {@link #evictLongestIdle}. */
        volatile long lastActive = System.nanoTime();
        /** Whether a turn runs now. */
        volatile boolean inTurn;
        /** Guards the descriptor against a shutdown after close (its number may be reused); never held long. */
        private final Object fdLock = new Object();
        private boolean fdClosed;
        /** An answer its socket had no room for, sent from {@link #unsentAt} when it becomes writable; or null. */
        private byte[] unsent;
        private int unsentAt;
        /** What it sent after the line whose answer is {@link #unsent}, answered after that one; or null. */
        private byte[] unread;
        /** It closed its sending side (end of stream read) while answers were still due. */
        private boolean inputEnded;
        /**
         * {@link #line} holds a whole request that waits for the daemon's start (bytes after it in
         * {@link #unread}): the client is neither read nor answered, and holds no thread, until
         * the start ends and {@link #resume} runs its next turn.
         */
        private boolean pendingLine;
        private final Runnable resume = () -> handlers.execute(this::turn);

        Client(UnixSocket socket) {
            this.socket = socket;
        }

        void start() {
            lock.lock();
            try {
                registration = loop.register(socket.fd(), handlers, this::turn);
            } finally {
                lock.unlock();
            }
        }

        /** Reads what has come, answers each whole line, and watches for more. */
        private void turn() {
            lock.lock();
            try {
                turnLocked();
            } finally {
                lock.unlock();
            }
        }

        private void turnLocked() {
            if (closed) {
                return;
            }
            inTurn = true;
            try {
                int next = closing ? CLOSE : serve();
                if (next == CLOSE) {
                    close();
                    return;
                }
                if (next == WAIT_START) {
                    return; // not watched until resume() runs the next turn
                }
                if (next == WAIT_WRITABLE) {
                    registration.rearmWritable(!inputEnded);
                } else {
                    registration.rearm();
                }
            } catch (Throwable e) {
                log.info("control: client turn failed, closing it: " + e);
                endTurn(this);
            } finally {
                lastActive = System.nanoTime();
                inTurn = false;
            }
        }

        /**
         * Sends what was kept for it, answers what it sent before, then reads what has come;
         * returns what to wait for next. Never waits for the client.
         */
        private int serve() {
            if (unsent != null) {
                if (!flush()) {
                    return CLOSE;
                }
                if (unsent != null) {
                    return keepReading();
                }
            }
            if (pendingLine) {
                int next = answerPending();
                if (next != WAIT_READABLE) {
                    return next;
                }
            }
            if (unread != null) {
                byte[] rest = unread;
                unread = null;
                int next = answerLines(rest, rest.length);
                if (next != WAIT_READABLE) {
                    return next;
                }
            }
            return inputEnded ? CLOSE : readAndAnswer();
        }

        /**
         * While its answer waits for room in its socket: keeps what it sends meanwhile (to be
         * answered in order), up to {@link #MAX_UNANSWERED_BYTES}; a client past that reads
         * none of its answers and is closed.
         */
        private int keepReading() {
            if (inputEnded) {
                return WAIT_WRITABLE;
            }
            ReadBuffers b = READ_BUFFERS.get();
            long n = socket.receive(b.in.address(), READ_BYTES, fds, fdCount);
            for (int i = 0; i < fdCount[0]; i++) {
                io.vblk.sys.Native.libc().close(fds[i]);
            }
            if (n == -Errno.EINTR || n == -Errno.EAGAIN) {
                return WAIT_WRITABLE;
            }
            if (n <= 0) {
                inputEnded = true; // it may still read what is due: wait for room only
                return WAIT_WRITABLE;
            }
            int kept = unread == null ? 0 : unread.length;
            if (kept + n > MAX_UNANSWERED_BYTES) {
                log.info("control: a client sent " + (kept + n) + " bytes of requests while reading none of its answers: closed");
                return CLOSE;
            }
            byte[] more = unread == null ? new byte[(int) n] : java.util.Arrays.copyOf(unread, kept + (int) n);
            b.in.buffer().getBytes(0, more, kept, (int) n);
            unread = more;
            return WAIT_WRITABLE;
        }

        /** Sends {@link #unsent} as far as the socket takes it now; false when the client has gone. */
        private boolean flush() {
            int n = sendSome(socket, unsent, unsentAt);
            if (n < 0) {
                return false;
            }
            unsentAt += n;
            if (unsentAt == unsent.length) {
                unsent = null;
            }
            return true;
        }

        private int readAndAnswer() {
            ReadBuffers b = READ_BUFFERS.get();
            NativeBuffer in = b.in;
            byte[] chunk = b.chunk;
            long n = socket.receive(in.address(), READ_BYTES, fds, fdCount);
            for (int i = 0; i < fdCount[0]; i++) {
                io.vblk.sys.Native.libc().close(fds[i]); // a control client has no business sending descriptors
            }
            if (n == -Errno.EINTR || n == -Errno.EAGAIN) {
                return WAIT_READABLE;
            }
            if (n == 0 && !pendingLine && line.length() > 0) {
                // A last request without its newline before the client ended its sending side (a
                // script's printf | socat): answered as if the newline had come, then closed.
                chunk[0] = '\n';
                int next = answerLines(chunk, 1);
                return next == WAIT_READABLE ? CLOSE : next;
            }
            if (n <= 0) {
                return CLOSE;
            }
            in.buffer().getBytes(0, chunk, 0, (int) n);
            return answerLines(chunk, (int) n);
        }

        /**
         * Answers each whole line of {@code bytes[0, n)} and keeps a partial one. When an answer
         * does not fit the socket, it is kept with the bytes after its line, and the client waits
         * until it is writable.
         */
        private int answerLines(byte[] bytes, int n) {
            int start = 0;
            for (int i = 0; i < n; i++) {
                if (bytes[i] == '\n') {
                    if (!line.append(bytes, start, i - start)) {
                        return tooLong() ? WAIT_READABLE : CLOSE;
                    }
                    String text = line.text();
                    if (waitsForStart(text)) {
                        pendingLine = true;
                        unread = i + 1 < n ? java.util.Arrays.copyOfRange(bytes, i + 1, n) : null;
                        return WAIT_START;
                    }
                    String response = answer(text);
                    line.reset();
                    start = i + 1;
                    if (response != null) {
                        unsent = (response + "\n").getBytes(StandardCharsets.UTF_8);
                        unsentAt = 0;
                        if (!flush()) {
                            return CLOSE;
                        }
                        if (unsent != null) {
                            unread = start < n ? java.util.Arrays.copyOfRange(bytes, start, n) : null;
                            return WAIT_WRITABLE;
                        }
                    }
                }
            }
            return line.append(bytes, start, n - start) || tooLong() ? WAIT_READABLE : CLOSE;
        }

        /** Whether the whole line {@code text} waits for the start (then {@link #resume} is due later). */
        private boolean waitsForStart(String text) {
            String t = text.strip();
            return !t.isEmpty() && rpc.deferred(t, resume);
        }

        /** Answers the line kept for the start ({@link #pendingLine}); what to wait for next. */
        private int answerPending() {
            String text = line.text();
            if (waitsForStart(text)) {
                return WAIT_START;
            }
            pendingLine = false;
            String response = answer(text);
            line.reset();
            if (response != null) {
                unsent = (response + "\n").getBytes(StandardCharsets.UTF_8);
                unsentAt = 0;
                if (!flush()) {
                    return CLOSE;
                }
                if (unsent != null) {
                    return WAIT_WRITABLE; // what it sent after the line stays in unread, answered after
                }
            }
            return WAIT_READABLE;
        }

        private boolean tooLong() {
            if (line.refusedForPool()) {
                write(socket, JsonRpc.error(null, RpcError.INTERNAL_ERROR, "the control clients' long request lines use "
                        + "all the memory they may (" + SHARED_LINE_BYTES + " bytes together); closing the connection"));
                return false;
            }
            write(socket, JsonRpc.error(null, RpcError.INVALID_REQUEST, "request line longer than "
                    + MAX_LINE_BYTES + " bytes; closing the connection"));
            return false;
        }

        /** The capacity of the partial-line buffer, for tests. */
        int lineCapacity() {
            lock.lock();
            try {
                return line.capacity();
            } finally {
                lock.unlock();
            }
        }

        /**
         * Closes the client unless a turn holds it now (then it is left alone); never waits.
         * True when it is closed (by this call or before).
         */
        boolean closeUnlessInTurn() {
            if (!lock.tryLock()) {
                return false;
            }
            try {
                closeLocked();
                return true;
            } finally {
                lock.unlock();
            }
        }

        void close() {
            lock.lock();
            try {
                closeLocked();
            } finally {
                lock.unlock();
            }
        }

        private void closeLocked() {
            if (closed) {
                return;
            }
            closed = true;
            if (registration != null) {
                registration.cancel();
            }
            clients.remove(this);
            line.release();
            synchronized (fdLock) {
                fdClosed = true;
                socket.close();
            }
        }

        /** Wakes a turn in progress (its next read or write fails); any thread. */
        void shutdown() {
            synchronized (fdLock) {
                if (!fdClosed) {
                    socket.shutdown();
                }
            }
        }
    }

    /** What a turn waits for next: the client is closed, has something to read, has room to write. */
    private static final int CLOSE = 0;
    private static final int WAIT_READABLE = 1;
    private static final int WAIT_WRITABLE = 2;
    /** Its request waits for the daemon's start: nothing is watched until the start resumes it. */
    private static final int WAIT_START = 3;

    /** The response to one request line, or null for none (an empty line, a notification). */
    private String answer(String line) {
        String text = line.strip();
        return text.isEmpty() ? null : rpc.handle(text);
    }

    /**
     * Sends {@code bytes} from {@code from} as far as the (non-blocking) socket takes it now,
     * never waiting; the bytes sent, or -1 when the client has gone.
     */
    private static int sendSome(UnixSocket client, byte[] bytes, int from) {
        NativeBuffer out = new NativeBuffer(bytes.length - from);
        out.buffer().putBytes(0, bytes, from, bytes.length - from);
        int sent = 0;
        while (from + sent < bytes.length) {
            long n = client.send(out.address() + sent, bytes.length - from - sent, null, 0);
            if (n == -Errno.EINTR) {
                continue;
            }
            if (n == -Errno.EAGAIN) {
                break;
            }
            if (n <= 0) {
                return -1;
            }
            sent += (int) n;
        }
        return sent;
    }

    /** Sends a last line to a client about to be closed, as far as its socket takes it now (never waits). */
    private static void write(UnixSocket client, String response) {
        sendSome(client, (response + "\n").getBytes(StandardCharsets.UTF_8), 0);
    }

    /** The largest partial-line buffer of the clients connected now, for tests. */
    int largestLineCapacity() {
        int largest = 0;
        for (Client c : clients) {
            largest = Math.max(largest, c.lineCapacity());
        }
        return largest;
    }

    /** The bytes all clients' partial-line buffers hold now, for tests. */
    long totalLineCapacity() {
        long total = 0;
        for (Client c : clients) {
            total += c.lineCapacity();
        }
        return total;
    }

    /** The bytes of the shared pool that clients' lines hold now, for tests. */
    long sharedLineBytesInUse() {
        return linePool.inUse();
    }

    /** The clients connected now. */
    int clientCount() {
        return clients.size();
    }

    /**
     * The bytes all clients' partial lines may hold beyond their own allowance. Taken when a
     * buffer grows past its allowance, given back when it shrinks or its client closes.
     */
    static final class LinePool {
        private final long size;
        private final java.util.concurrent.atomic.AtomicLong used = new java.util.concurrent.atomic.AtomicLong();

        LinePool(long size) {
            this.size = size;
        }

        /** Takes {@code n} bytes; false (nothing taken) when fewer are left. */
        boolean take(long n) {
            while (true) {
                long u = used.get();
                if (n > size - u) {
                    return false;
                }
                if (used.compareAndSet(u, u + n)) {
                    return true;
                }
            }
        }

        void give(long n) {
            used.addAndGet(-n);
        }

        long inUse() {
            return used.get();
        }
    }

    /**
     * One client's partial line: grows by doubling up to {@code limit} and never past it (a plain
     * ByteArrayOutputStream would double a 1 MiB line to 2 MiB); an append that would pass the
     * limit is refused and leaves the buffer as it was. Capacity beyond {@code own} bytes is taken
     * from {@code pool}: an append that needs more than the pool has left is refused too
     * ({@link #refusedForPool} tells which). A reset after a long line gives the memory back.
     */
    static final class LineBuffer {
        private static final int INITIAL_BYTES = 256;
        private final int limit;
        private final int own;
        private final LinePool pool;
        private byte[] bytes = new byte[0];
        private int length;
        private boolean refusedForPool;

        /** A buffer that takes nothing from a pool (tests). */
        LineBuffer(int limit) {
            this(limit, limit, new LinePool(0));
        }

        LineBuffer(int limit, int own, LinePool pool) {
            this.limit = limit;
            this.own = own;
            this.pool = pool;
        }

        /** Appends {@code n} bytes; false (nothing appended) when the line would pass the limit or the pool. */
        boolean append(byte[] from, int offset, int n) {
            if (n > limit - length) {
                return false;
            }
            int need = length + n;
            if (need > bytes.length) {
                int grown = (int) Math.min(limit, Math.max(need, Math.max(INITIAL_BYTES, 2L * bytes.length)));
                long charge = pooled(grown) - pooled(bytes.length);
                if (charge > 0 && !pool.take(charge)) {
                    // Doubling may ask more than needed: try for exactly what this append needs.
                    grown = need;
                    charge = pooled(grown) - pooled(bytes.length);
                    if (charge > 0 && !pool.take(charge)) {
                        refusedForPool = true;
                        return false;
                    }
                }
                bytes = java.util.Arrays.copyOf(bytes, grown);
            }
            System.arraycopy(from, offset, bytes, length, n);
            length = need;
            return true;
        }

        /** The part of {@code capacity} charged to the pool. */
        private long pooled(int capacity) {
            return Math.max(0, capacity - own);
        }

        /** Whether the last refused append was refused for the shared pool, not the limit. */
        boolean refusedForPool() {
            return refusedForPool;
        }

        String text() {
            return new String(bytes, 0, length, StandardCharsets.UTF_8);
        }

        /** Empties the line; a buffer grown into the pool gives that memory back. */
        void reset() {
            length = 0;
            refusedForPool = false;
            if (bytes.length > own) {
                pool.give(pooled(bytes.length));
                bytes = new byte[0];
            }
        }

        /** Drops the memory (a closed client may stay referenced for a while). */
        void release() {
            length = 0;
            pool.give(pooled(bytes.length));
            bytes = new byte[0];
        }

        int length() {
            return length;
        }

        int capacity() {
            return bytes.length;
        }
    }

    /** Stops accepting, ends every client's connection and removes the socket file. */
    @Override
    public void close() {
        closing = true;
        listening.cancel();
        logEvictionsSuppressed();
        for (Client c : clients) {
            c.shutdown(); // a turn in progress ends at its next read or write
            c.close();
        }
        socketFile.closeAndRemove();
    }
}
