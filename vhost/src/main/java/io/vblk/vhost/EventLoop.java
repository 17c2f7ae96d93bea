package io.vblk.vhost;

import java.util.Map;
import java.util.Objects;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Executor;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

import io.vblk.sys.EventFd;
import io.vblk.sys.Epoll;
import io.vblk.sys.Linux;

/**
 * One epoll(7) thread watching any number of control-plane sockets (vhost-user listening sockets
 * and sessions, JSON-RPC clients) and handing each ready one to the {@link Executor} it was
 * registered with. So a daemon with 64 exports needs no thread per export: its control messages
 * are read and handled by a fixed set of threads whatever the number of sockets.
 *
 * <p>Registrations are one-shot (EPOLLONESHOT): once a descriptor is reported, its handler runs
 * and nothing else is reported for it until the handler calls {@link Registration#rearm()}. So
 * one descriptor's handler never runs twice at once, and a handler that re-arms after each
 * message gives every other ready descriptor its turn in between (a flooding peer is served one
 * message at a time, in turn with the rest). Handlers must never block on their peer (read and
 * write non-blocking, keep partial messages); they may block on the local system (a drain), which
 * holds one thread of their executor only.
 *
 * <p>The loop thread itself only waits and dispatches: it never reads a socket, never runs a
 * handler (unless the executor is the caller's, as in a one-server {@link VhostUserServer#serve()})
 * and never blocks on anything but epoll_wait.
 */
public final class EventLoop implements AutoCloseable {
    private static final int MAX_EVENTS = 64;
    private static final long WAKEUP = 0;
    private static final int ARMED = Linux.EPOLLIN | Linux.EPOLLRDHUP | Linux.EPOLLONESHOT;
    private static final int WRITABLE = Linux.EPOLLOUT | Linux.EPOLLONESHOT;

    private final String name;
    private final Log log;
    private final Epoll epoll = new Epoll(MAX_EVENTS);
    private final EventFd wakeup = EventFd.create(true);
    private final Map<Long, Registration> registrations = new ConcurrentHashMap<>();
    private final AtomicLong ids = new AtomicLong(WAKEUP);
    private volatile boolean closed;
    private volatile Thread thread;

    private EventLoop(String name, Log log) {
        this.name = name;
        this.log = log;
        epoll.add(wakeup.fd(), Linux.EPOLLIN | Linux.EPOLLET, WAKEUP);
    }

    /** A loop on a daemon thread of its own named {@code name}. */
    public static EventLoop start(String name, Log log) {
        EventLoop loop = new EventLoop(name, log);
        Thread t = new Thread(loop::run, name);
        t.setDaemon(true);
        loop.thread = t;
        t.start();
        return loop;
    }

    /** A loop to be run on the caller's thread with {@link #run()} until {@link #close()}. */
    static EventLoop onCaller(String name, Log log) {
        return new EventLoop(name, log);
    }

    /**
     * A bounded pool for handlers that may block: at most {@code threads} threads, started when
     * work comes and ended after {@code idleSeconds} without any, so an idle daemon holds none.
     * Work beyond {@code threads} waits in order.
     */
    public static ExecutorService pool(String name, int threads, int idleSeconds) {
        AtomicInteger n = new AtomicInteger();
        ThreadPoolExecutor p = new ThreadPoolExecutor(threads, threads, idleSeconds, TimeUnit.SECONDS,
                new LinkedBlockingQueue<>(), r -> {
                    Thread t = new Thread(r, name + "-" + n.incrementAndGet());
                    t.setDaemon(true);
                    return t;
                });
        p.allowCoreThreadTimeOut(true);
        return p;
    }

    /**
     * Watches {@code fd} (readable, end of stream or error) and, once it is ready, runs
     * {@code onReady} on {@code executor}. Armed at once; after each run, the handler re-arms or
     * cancels. The caller keeps {@code fd} open until after {@link Registration#cancel()}.
     *
     * @throws IllegalStateException once the loop is closed
     */
    public Registration register(int fd, Executor executor, Runnable onReady) {
        Registration r = new Registration(ids.incrementAndGet(), fd, Objects.requireNonNull(executor),
                Objects.requireNonNull(onReady));
        registrations.put(r.id, r);
        try {
            synchronized (epoll) {
                if (closed) {
                    throw new IllegalStateException(name + " is closed");
                }
                epoll.add(fd, ARMED, r.id);
            }
        } catch (RuntimeException e) {
            registrations.remove(r.id);
            throw e;
        }
        return r;
    }

    /** Waits and dispatches until {@link #close()}; on the loop's own thread or the caller's. */
    void run() {
        while (!closed) {
            int n = epoll.await(-1);
            if (n < 0) {
                log.info(name + ": epoll_wait failed: errno " + -n);
                return;
            }
            for (int i = 0; i < n && !closed; i++) {
                long id = epoll.data(i);
                if (id == WAKEUP) {
                    continue;
                }
                Registration r = registrations.get(id);
                if (r != null) {
                    r.dispatch();
                }
            }
        }
    }

    /**
     * Stops the loop (handlers already handed to executors still run). The registrations' owners
     * cancel them and close their descriptors; the loop's own are closed once its thread is gone.
     */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        wakeup.signal();
        Thread t = thread;
        if (t != null && t != Thread.currentThread()) {
            try {
                t.join(5_000);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            release();
        }
        // On a caller's thread, run() returns after this batch and the caller calls release().
    }

    /** After {@link #run()} returned on a caller's thread: frees the epoll instance and its wakeup. */
    void release() {
        synchronized (epoll) {
            epoll.close();
            wakeup.close();
        }
    }

    /** One watched descriptor and its handler. */
    public final class Registration {
        private final long id;
        private final int fd;
        private final Executor executor;
        private final Runnable onReady;
        private volatile boolean cancelled;

        private Registration(long id, int fd, Executor executor, Runnable onReady) {
            this.id = id;
            this.fd = fd;
            this.executor = executor;
            this.onReady = onReady;
        }

        private void dispatch() {
            if (cancelled) {
                return;
            }
            try {
                executor.execute(this::runHandler);
            } catch (RejectedExecutionException e) {
                log.info(name + ": handler refused (executor shut down); descriptor " + fd + " left unwatched");
            }
        }

        private void runHandler() {
            if (cancelled) {
                return;
            }
            try {
                onReady.run();
            } catch (Throwable e) {
                // A handler's own bug must not end the loop or the pool thread; its owner logs
                // details. An Error too (its owner tore down what it could): handlers may run on
                // the loop's own thread (serve() without control threads), and an Error escaping
                // here would end the loop, and with it every connection it watches.
                log.info(name + ": handler for descriptor " + fd + " failed: " + e);
            }
        }

        /** Watches the descriptor again: its handler runs once more when it is ready (at once if it is). */
        public void rearm() {
            synchronized (epoll) { // Epoll's control buffer is one per instance
                if (!cancelled && !closed) {
                    epoll.modify(fd, ARMED, id);
                }
            }
        }

        /**
         * Watches the descriptor for room to write (or an error), and unless {@code readable}
         * is false for something to read too: the handler runs once more then. For a peer whose
         * answers back up: waiting for it never holds an executor thread.
         */
        public void rearmWritable(boolean readable) {
            synchronized (epoll) {
                if (!cancelled && !closed) {
                    epoll.modify(fd, readable ? WRITABLE | ARMED : WRITABLE, id);
                }
            }
        }

        /** Stops watching; call before closing the descriptor. Idempotent. */
        public void cancel() {
            if (cancelled) {
                return;
            }
            synchronized (epoll) {
                cancelled = true;
                registrations.remove(id);
                if (!closed) {
                    epoll.remove(fd);
                }
            }
        }
    }
}
