package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.Test;

import io.vblk.sys.EventFd;

/**
 * rev14b L5: an embedder may give two queues of one I/O thread the same kick eventfd. Epoll holds
 * one registration per descriptor, so stopping one queue (its unwatch) removed the other's watch
 * too, and that queue's kicks no longer woke the thread. The thread's epoll set now counts the
 * queues watching a descriptor and removes it with the last. (vhost-user gives each ring a kick
 * of its own; embedders only.)
 */
class SharedKickFdTest {
    @Test
    void stoppingOneQueueKeepsTheOthersKickWatched() {
        Tuning inline = Tuning.builder().threadingMode(ThreadingMode.SHARED).build();
        try (RoundRig rig = new RoundRig(inline, null, false, 2); EventFd kick = EventFd.create(true)) {
            DeviceQueue q0 = rig.lanes[0].queue;
            DeviceQueue q1 = rig.lanes[1].queue;
            q0.kick = kick;
            q1.kick = kick;
            rig.thread.watchKick(q0);
            rig.thread.watchKick(q1);
            kick.signal();
            rig.thread.awaitEvents(0);
            assertEquals(1, kicks(q0) + kicks(q1), "watched: the kick counted once");
            rig.thread.unwatchKick(q0); // queue 0 stops
            kick.signal();
            rig.thread.awaitEvents(0);
            assertEquals(2, kicks(q0) + kicks(q1), "queue 1 still watches the descriptor");
            rig.thread.unwatchKick(q1); // the last watcher
            kick.signal();
            rig.thread.awaitEvents(0);
            assertEquals(2, kicks(q0) + kicks(q1), "no queue watches it any more");
            q0.kick = null;
            q1.kick = null;
        }
    }

    private static long kicks(DeviceQueue q) {
        return q.counters.get(QueueCounters.KICKS);
    }
}
