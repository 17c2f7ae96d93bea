package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Random;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.Memfd;
import io.vblk.sys.Native;
import io.vblk.testkit.BlkQueue;
import io.vblk.testkit.QemuFlow;
import io.vblk.testkit.TestGuest;
import io.vblk.testkit.VhostUserFrontend;

/**
 * The frontend fuzzer ({@link FrontendFuzzer}) against a real {@code vblk serve} process on a
 * real image file: after every fuzzed connection the daemon must still be alive and serve a
 * well-behaved frontend that writes a block and reads it back.
 *
 * <p>Seeded: a failure names the seed and the connection and lists that connection's messages.
 * {@code -Dvblk.fuzz.connections=N} runs longer (default 1000), {@code -Dvblk.fuzz.seed=S} picks
 * another seed, {@code -Dvblk.fuzz.connection=C} replays connection C alone.
 */
class FrontendFuzzTest {
    private static final int DEFAULT_CONNECTIONS = 1000;

    @TempDir
    Path dir;

    @Test
    void fuzzedFrontendsNeverStopTheDaemonFromServingTheNext() throws Exception {
        long seed = Long.getLong("vblk.fuzz.seed", 0xF0E7L);
        long connections = Long.getLong("vblk.fuzz.connections", DEFAULT_CONNECTIONS);
        long only = Long.getLong("vblk.fuzz.connection", -1);
        Path image = dir.resolve("disk.img");
        Files.write(image, new byte[(int) ServerRig.IMAGE_BYTES]);
        Path scratch = Files.write(dir.resolve("scratch.bin"), new byte[8192]);
        Path sock = dir.resolve("fuzz.sock");
        long started = System.nanoTime();
        long goodIos = 0;
        try (ServeProcess serve = ServeProcess.start(dir, sock, "--image", image.toString(), "--socket", sock.toString());
             TestGuest guest = new TestGuest()) {
            FrontendFuzzer fuzzer = new FrontendFuzzer(sock, guest, scratch);
            try (VhostUserFrontend probe = VhostUserFrontend.connect(sock)) {
                fuzzer.offeredFeatures = probe.getFeatures();
            }
            BlkQueue good = guest.queue(0, 64, true, 15);
            for (long c = only >= 0 ? only : 0; c < (only >= 0 ? only + 1 : connections); c++) {
                long connectionSeed = FrontendFuzzer.connectionSeed(seed, c);
                Random r = new Random(connectionSeed);
                List<FrontendFuzzer.Msg> sequence = fuzzer.generate(r);
                String where = "seed " + seed + ", connection " + c + " (replay: -Dvblk.fuzz.seed=" + seed
                        + " -Dvblk.fuzz.connection=" + c + "), messages:\n" + FrontendFuzzer.describe(sequence);
                try {
                    fuzzer.run(sequence, r);
                    fuzzer.drainRingEventfds();
                    assertTrue(serve.alive(), "vblk serve died");
                    int logBefore = serve.stderr().length();
                    try {
                        QemuFlow.goodFrontendRoundTrip(VhostUserFrontend.connect(sock), guest, good, c);
                    } catch (AssertionError | IllegalStateException e) { // a refusal of its start too
                        if (!lateFaultLanded(serve.stderr().substring(logBefore))) {
                            throw e;
                        }
                        // engine GuestFaults' documented cost: the fuzzed frontend's late memory
                        // fault (its memfd truncated) was delivered while the I/O thread served the
                        // good frontend; the daemon must serve the next one.
                        QemuFlow.goodFrontendRoundTrip(VhostUserFrontend.connect(sock), guest, good, c);
                    }
                    goodIos += 2;
                } catch (AssertionError | RuntimeException e) {
                    throw new AssertionError(where + "daemon log tail:\n" + tail(serve.stderr(), 20), e);
                }
            }
            double seconds = (System.nanoTime() - started) / 1e9;
            // Each good frontend starts its ring once; the rest were started by fuzzed connections.
            long fuzzedStarts = serve.logLines("queue 0 started").size() - goodIos / 2;
            String report = String.format("frontend fuzz: %s; %d rings started by fuzzed connections; %d good-frontend round"
                    + " trips; %.1f s", fuzzer.summary(), fuzzedStarts, goodIos, seconds);
            System.out.println(report);
            List<String> internal = serve.logLines("internal error");
            System.out.println("internal errors logged: " + internal.size());
            internal.stream().limit(10).forEach(System.out::println);
            System.out.println("faults attributed by evidence: " + serve.logLines("attributed by evidence").size()
                    + "; faults without evidence (quarantined where they landed): " + serve.logLines("with no evidence").size());
            serve.logLines("guest memory fault on I/O thread").stream().limit(10).forEach(System.out::println);
            assertEquals(List.of(), serve.logLines("\tat "), "no stack trace in the daemon's log");
            assertEquals(0, serve.stop(), "a clean shutdown after the fuzzing");
        }
    }

    /**
     * Regression (found while building the fuzzer's SHRINKING_MEMFD case): a frontend shrinks its
     * memory file to nothing after the backend mapped it (QEMU seals its memfds against that; a
     * hostile frontend need not), then starts a ring there and kicks. The backend's accesses fault
     * (SIGBUS, which the JVM raises as an InternalError, asynchronously in compiled code). Before
     * the fix the fault before the start left the control thread waiting forever for the I/O
     * thread's answer, and the fault after it killed the I/O thread: either way no frontend was
     * ever served again. Now the start is refused, or the queue quarantined, and the next frontend
     * does I/O, and is never quarantined: the fault Java 17 may deliver late, while the next
     * frontend is served, is attributed by evidence to the shrunk frontend's memory.
     */
    @Test
    void aMemoryFileShrunkUnderTheMappingDoesNotStopTheDaemon() throws Exception {
        Path image = dir.resolve("disk.img");
        Files.write(image, new byte[(int) ServerRig.IMAGE_BYTES]);
        Path sock = dir.resolve("shrink.sock");
        try (ServeProcess serve = ServeProcess.start(dir, sock, "--image", image.toString(), "--socket", sock.toString());
             TestGuest guest = new TestGuest()) {
            for (boolean beforeStart : new boolean[] {true, false}) {
                int shrinking = Memfd.create("shrinking", 2 * TestGuest.REGION_BYTES);
                BlkQueue q = guest.queue(0, 64, true, 4);
                try (VhostUserFrontend f = VhostUserFrontend.connect(sock)) {
                    long offered = f.getFeatures();
                    f.setProtocolFeatures(VhostUserFrontend.PF_CONFIG | VhostUserFrontend.PF_REPLY_ACK);
                    f.setOwner();
                    f.setVringFd(VhostUserFrontend.SET_VRING_CALL, 0, q.call);
                    f.setFeatures(offered);
                    assertEquals(0, f.acked(VhostUserFrontend.SET_MEM_TABLE, VhostUserFrontend.memTable(guest.regions()), shrinking,
                            shrinking));
                    if (beforeStart) {
                        Native.libc().ftruncate(shrinking, 0);
                    }
                    f.acked(VhostUserFrontend.SET_VRING_NUM, VhostUserFrontend.state(0, 64));
                    f.acked(VhostUserFrontend.SET_VRING_BASE, VhostUserFrontend.state(0, 0));
                    f.acked(VhostUserFrontend.SET_VRING_ADDR, VhostUserFrontend.addr(0, q.descUser(), q.usedUser(), q.availUser()));
                    f.acked(VhostUserFrontend.SET_VRING_KICK, VhostUserFrontend.u64(0), q.kick.fd());
                    f.acked(VhostUserFrontend.SET_VRING_ENABLE, VhostUserFrontend.state(0, 1));
                    if (!beforeStart) {
                        Native.libc().ftruncate(shrinking, 0);
                    }
                    q.add(BlkQueue.T_IN, 0, q.dataGpa, 4096, true);
                    q.kick.signal();
                    Thread.sleep(100);
                } catch (AssertionError | IllegalStateException e) {
                    throw new AssertionError("daemon " + (serve.alive() ? "alive" : "dead") + ", log:\n" + tail(serve.stderr(), 40), e);
                } finally {
                    Native.libc().close(shrinking);
                }
                assertTrue(serve.alive(), "vblk serve died: " + tail(serve.stderr(), 30));
                try {
                    QemuFlow.goodFrontendRoundTrip(VhostUserFrontend.connect(sock), guest, guest.queue(0, 64, true, 15),
                            beforeStart ? 1 : 2);
                } catch (AssertionError | IllegalStateException e) {
                    // No tolerance left: a late fault of the shrunk frontend that Java 17 delivers
                    // while the next frontend is served is attributed by evidence (GuestFaults, "late
                    // faults") and quarantines nothing of the next.
                    throw new AssertionError("shrunk " + (beforeStart ? "before" : "after") + " the ring started; daemon log:\n"
                            + tail(serve.stderr(), 40), e);
                }
            }
            System.out.println(serve.stderr());
            assertEquals(0, serve.stop());
        }
    }

    private static String tail(String text, int lines) {
        String[] all = text.split("\n");
        StringBuilder sb = new StringBuilder();
        for (int i = Math.max(0, all.length - lines); i < all.length; i++) {
            sb.append(all[i]).append('\n');
        }
        return sb.toString();
    }

    /** Whether the log since the good frontend connected shows a late guest-memory fault landing on it. */
    private static boolean lateFaultLanded(String log) {
        return log.contains("guest memory fault") || log.contains("a fault occurred in a recent unsafe memory access")
                || log.contains("quarantined where the fault landed");
    }
}
