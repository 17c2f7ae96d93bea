package io.vblk.daemon;

import java.util.concurrent.ExecutorService;
import java.util.concurrent.TimeUnit;

import io.vblk.vhost.EventLoop;
import io.vblk.vhost.Log;

/**
 * The daemon's control-plane threads, the same whatever the number of exports or RPC clients:
 * one event loop watching every export's listening socket, every vhost-user session and every
 * JSON-RPC client, and two small pools that handle what it finds ready. The pools start threads
 * only when there is work and end them when idle, so an idle daemon holds the loop thread alone.
 *
 * <p>Why two pools: an RPC handler may wait for a vhost-user handler (export.remove waits for the
 * frontend's rings to drain, which runs on a vhost handler), so they never share threads. Why
 * {@link #VHOST_HANDLERS} vhost handlers: one session's handler may block while its rings drain
 * (GET_VRING_BASE, SET_MEM_TABLE, teardown) and a session is handled one message at a time,
 * so one slow or hostile frontend holds at most one of them and the others keep serving every
 * other export's messages. RPC clients: at most {@link #RPC_HANDLERS} requests run at once, each
 * client's in order; the rest wait their turn (methods that change exports are serialized anyway).
 */
final class ControlThreads implements AutoCloseable {
    static final int VHOST_HANDLERS = 4;
    static final int RPC_HANDLERS = 4;
    private static final int IDLE_SECONDS = 30;

    private final EventLoop loop;
    private final ExecutorService vhost;
    private final ExecutorService rpc;

    ControlThreads(Log log) {
        this.loop = EventLoop.start("vblk-control-loop", log);
        this.vhost = EventLoop.pool("vblk-vhost", VHOST_HANDLERS, IDLE_SECONDS);
        this.rpc = EventLoop.pool("vblk-rpc", RPC_HANDLERS, IDLE_SECONDS);
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
