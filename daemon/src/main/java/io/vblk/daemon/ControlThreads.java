package io.vblk.daemon;

import java.util.concurrent.ExecutorService;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import io.vblk.vhost.EventLoop;
import io.vblk.vhost.Log;

/**
 * The daemon's control-plane threads, the same whatever the number of exports or RPC clients:
 * one event loop watching every export's listening socket, every vhost-user session and every
 * JSON-RPC client, and two small pools that handle what it finds ready. The pools start threads
 * only when there is work and end them when idle, so an idle daemon holds the loop thread alone.
 *
 * <p>Why two pools: an RPC handler may wait for a vhost-user handler (export.remove waits for the
 * frontend's rings to drain, which runs on a vhost handler), so they never share threads. Why the
 * vhost pool grows (up to {@link #VHOST_HANDLERS}): one session's handler may block while its
 * rings drain (GET_VRING_BASE, SET_MEM_TABLE, teardown), for as long as its back end takes to
 * complete what is in flight, which a stuck back end (an NBD server that stopped answering, a
 * hung FUSE file) never does, and the drain may not be cut short (answering GET_VRING_BASE with
 * requests in flight loses them in a migration). A session is handled one message at a time
 * and a listener accepts one frontend at a time, so each export occupies at most two handlers
 * at once: a pool that starts a thread whenever all are busy gives a stuck export's wait a
 * thread of its own, and every other export's messages still find one (with a fixed four, four
 * stuck exports stalled every other export's control messages). Such a drain is logged after
 * 10 s and counted (BlockDevice.stalledControlCalls), and export.remove gives up on it after its
 * deadline (the device closes undrained, the frontend's GET_VRING_BASE goes unanswered).
 * RPC clients: at most {@link #RPC_HANDLERS} requests run at once, each
 * client's in order; the rest wait their turn (methods that change exports are serialized anyway).
 * That bound is high because a call may wait on a server outside the daemon for as long as the
 * server stalls (an export.add's connect and handshake, an export.remove's drain) and holds its
 * handler meanwhile: with four handlers, four such calls left every other client, daemon.shutdown
 * included, waiting behind them (irev4 StalledCallsAttackTest). The threads exist only while busy.
 */
final class ControlThreads implements AutoCloseable {
    /** At most this many vhost handlers at once: two per export for 512 exports; idle ones end. */
    static final int VHOST_HANDLERS = 1024;
    static final int RPC_HANDLERS = 32;
    /** Threads an elastic pool starts before it looks for an idle one (the RPC pool's old fixed size). */
    static final int CORE_THREADS = 4;
    private static final int IDLE_SECONDS = 30;

    private final EventLoop loop;
    private final ExecutorService vhost;
    private final ExecutorService rpc;

    ControlThreads(Log log) {
        this.loop = EventLoop.start("vblk-control-loop", log);
        this.vhost = elasticPool("vblk-vhost", VHOST_HANDLERS, IDLE_SECONDS);
        this.rpc = elasticPool("vblk-rpc", RPC_HANDLERS, IDLE_SECONDS);
    }

    /**
     * A pool that hands a task to an idle thread when there is one, starts another thread (up to
     * {@code max}) when there is none, and queues only when {@code max} are busy; idle threads
     * end after {@code idleSeconds}. (A plain ThreadPoolExecutor either queues as soon as its
     * core threads exist, or starts a core thread per task until there are {@code max}, idle
     * ones or not.) Sequential calls keep using one thread; calls that block each get their own.
     */
    static ExecutorService elasticPool(String name, int max, int idleSeconds) {
        AtomicInteger n = new AtomicInteger();
        ElasticQueue queue = new ElasticQueue();
        ElasticPool p = new ElasticPool(max, idleSeconds, queue, r -> {
            Thread t = new Thread(r, name + "-" + n.incrementAndGet());
            t.setDaemon(true);
            return t;
        }, (task, pool) -> {
            if (pool.isShutdown()) {
                throw new RejectedExecutionException(name + " is shut down");
            }
            queue.force(task); // all max threads busy: the task waits its turn
        });
        queue.pool = p;
        return p;
    }

    /** Counts the tasks submitted and not finished (the pool's own active count lags a thread's start). */
    private static final class ElasticPool extends ThreadPoolExecutor {
        final AtomicInteger unfinished = new AtomicInteger();

        ElasticPool(int max, int idleSeconds, ElasticQueue queue, java.util.concurrent.ThreadFactory threads,
                java.util.concurrent.RejectedExecutionHandler full) {
            // The first few threads start as tasks come, like a fixed pool of that size: a client
            // that sends its next request the moment it reads an answer (before the answering
            // thread has returned to the pool) then finds one idle, and ordinary traffic keeps the
            // few threads the daemon always had. Beyond them a thread starts only while all are busy.
            super(Math.min(CORE_THREADS, max), max, idleSeconds, TimeUnit.SECONDS, queue, threads, full);
            allowCoreThreadTimeOut(true);
        }

        @Override
        public void execute(Runnable task) {
            unfinished.incrementAndGet();
            try {
                super.execute(task);
            } catch (RuntimeException | Error e) {
                unfinished.decrementAndGet();
                throw e;
            }
        }

        @Override
        protected void afterExecute(Runnable task, Throwable thrown) {
            unfinished.decrementAndGet();
        }
    }

    /** Refuses a task (so that the pool starts a thread) while every thread has a task and there is room for one more. */
    private static final class ElasticQueue extends LinkedBlockingQueue<Runnable> {
        private static final long serialVersionUID = 1L;
        private transient volatile ElasticPool pool;

        @Override
        public boolean offer(Runnable task) {
            ElasticPool p = pool;
            if (p != null && p.getPoolSize() < p.getMaximumPoolSize() && p.unfinished.get() > p.getPoolSize()) {
                return false;
            }
            return super.offer(task);
        }

        void force(Runnable task) {
            super.offer(task);
        }
    }

    EventLoop loop() {
        return loop;
    }

    /** Handles vhost-user listening sockets and sessions. */
    ExecutorService vhostHandlers() {
        return vhost;
    }

    /** Handles JSON-RPC clients. */
    ExecutorService rpcHandlers() {
        return rpc;
    }

    /** After every export and the control socket are closed: ends the loop and the pools. */
    @Override
    public void close() {
        loop.close();
        rpc.shutdown();
        vhost.shutdown();
        try {
            rpc.awaitTermination(5, TimeUnit.SECONDS);
            vhost.awaitTermination(5, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
