package io.vblk.engine;

import java.util.ArrayList;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;

import io.vblk.hostmem.GuestMemory;

/**
 * Where a guest-memory fault came from, by evidence rather than by where the JVM delivered it
 * (see {@link GuestFaults}, "late faults"): the guest memory tables an I/O thread's queues use
 * now, and the few they used before (a frontend that has gone, a device detached from a shared
 * thread), each asked whether it now maps past the end of its file ({@link
 * GuestMemory#shrinkEvidence()}). Nothing here runs per request: tables are noted when a queue
 * starts, and asked only when a fault is caught. I/O thread only.
 */
final class FaultEvidence {
    /** How many earlier tables are remembered (a ring: the oldest is forgotten). */
    static final int REMEMBERED = 8;

    private final GuestMemory[] earlier = new GuestMemory[REMEMBERED];
    private int nextEarlier;
    /**
     * Tables whose evidence already attributed a fault (a ring: the oldest is forgotten). One
     * shrink costs one late fault per thread, delivered once; the evidence stays visible for as
     * long as the table is remembered, so without this every later fault on the thread, whatever
     * its cause, would be "attributed" to it and spare the queue where it landed (a queue whose
     * own memory keeps faulting without evidence then re-popped for ever). A queue starting on
     * the table again ({@link #note}) makes its evidence fresh again.
     */
    private final GuestMemory[] spent = new GuestMemory[2 * REMEMBERED];
    private int nextSpent;
    /**
     * A fault landed outside a pop loop (inside a reap, a submit, a command) and was attributed
     * elsewhere: a completion of this thread may have been lost with it. While set, a drain that
     * finds requests nothing can complete gives them up and quarantines their queue ({@link
     * FaultRecovery#settleLost}); cleared once every queue of the thread has nothing in flight.
     */
    boolean suspect;

    /** Remembers {@code table}, which a queue of this thread now uses (at queue start). */
    void note(GuestMemory table) {
        if (table == null) {
            return;
        }
        for (int i = 0; i < spent.length; i++) {
            if (spent[i] == table) {
                spent[i] = null; // a queue runs on it again: a new shrink would be new evidence
            }
        }
        for (GuestMemory m : earlier) {
            if (m == table) {
                return;
            }
        }
        earlier[nextEarlier] = table;
        nextEarlier = (nextEarlier + 1) % REMEMBERED;
    }

    /** Hands every remembered table to {@code into} (a member leaving a shared thread). */
    void handOver(FaultEvidence into) {
        for (GuestMemory m : earlier) {
            into.note(m);
        }
        for (GuestMemory m : spent) {
            if (m != null) {
                into.spend(m);
            }
        }
    }

    /** Records that {@code table}'s evidence attributed a fault. */
    void spend(GuestMemory table) {
        if (isSpent(table)) {
            return;
        }
        spent[nextSpent] = table;
        nextSpent = (nextSpent + 1) % spent.length;
    }

    boolean isSpent(GuestMemory table) {
        for (GuestMemory m : spent) {
            if (m == table) {
                return true;
            }
        }
        return false;
    }

    /** Runs {@code action} on every remembered table. */
    void forEachEarlier(Consumer<GuestMemory> action) {
        for (GuestMemory m : earlier) {
            if (m != null) {
                action.accept(m);
            }
        }
    }

    /** What {@link #judge} found. */
    static final class Verdict {
        /** Live queues (RUNNING or STOPPING) whose table shows evidence, with their thread. */
        final List<DeviceQueue> culprits = new ArrayList<>();
        final List<IoThread> culpritThreads = new ArrayList<>();
        /** Evidence found only on tables no live queue uses (gone, stopped or quarantined). */
        String staleEvidence;
        /** The first evidence on a live table. */
        String liveEvidence;
        /** Tables showing evidence, and the thread that spends it (a live culprit's, else the landing one). */
        final List<GuestMemory> evidenceTables = new ArrayList<>();
        final List<IoThread> evidenceOwners = new ArrayList<>();
        /** Whether some table showing evidence has not attributed a fault yet. */
        boolean fresh;

        boolean anyEvidence() {
            return liveEvidence != null || staleEvidence != null;
        }
    }

    /**
     * Asks every table the queues of {@code members} (the I/O threads run by one OS thread) use
     * or used, and {@code retired} (tables of members that left), for evidence. Allocates: for
     * the fault path only.
     */
    static Verdict judge(IoThread[] members, FaultEvidence retired) {
        Verdict v = new Verdict();
        Map<GuestMemory, String> asked = new IdentityHashMap<>();
        Map<GuestMemory, Boolean> live = new IdentityHashMap<>();
        for (IoThread m : members) {
            for (DeviceQueue q : m.queues()) {
                GuestMemory table = q.ring.memory();
                if (table == null) {
                    continue;
                }
                String evidence = asked.computeIfAbsent(table, FaultEvidence::ask);
                boolean isLive = q.state == QueueLifecycle.RUNNING || q.state == QueueLifecycle.STOPPING;
                if (isLive) {
                    live.put(table, Boolean.TRUE);
                }
                if (evidence == null) {
                    continue;
                }
                if (!v.evidenceTables.contains(table)) {
                    v.evidenceTables.add(table);
                    v.evidenceOwners.add(m);
                    v.fresh |= !spentAnywhere(table, members, retired);
                }
                if (isLive) {
                    v.culprits.add(q);
                    v.culpritThreads.add(m);
                    if (v.liveEvidence == null) {
                        v.liveEvidence = evidence;
                    }
                } else if (v.staleEvidence == null) {
                    v.staleEvidence = evidence; // a stopped or quarantined queue's table
                }
            }
        }
        List<GuestMemory> older = new ArrayList<>();
        for (IoThread m : members) {
            m.evidence().forEachEarlier(older::add);
        }
        if (retired != null) {
            retired.forEachEarlier(older::add);
        }
        for (GuestMemory table : older) {
            if (live.containsKey(table)) {
                continue;
            }
            String evidence = asked.computeIfAbsent(table, FaultEvidence::ask);
            if (evidence == null) {
                continue;
            }
            if (v.staleEvidence == null) {
                v.staleEvidence = evidence;
            }
            if (!v.evidenceTables.contains(table)) {
                v.evidenceTables.add(table);
                v.evidenceOwners.add(null); // the landing thread spends it
                v.fresh |= !spentAnywhere(table, members, retired);
            }
        }
        return v;
    }

    private static boolean spentAnywhere(GuestMemory table, IoThread[] members, FaultEvidence retired) {
        for (IoThread m : members) {
            if (m.evidence().isSpent(table)) {
                return true;
            }
        }
        return retired != null && retired.isSpent(table);
    }

    private static String ask(GuestMemory table) {
        try {
            return table.shrinkEvidence();
        } catch (RuntimeException e) {
            return null; // no evidence from a table that cannot be asked
        }
    }
}
