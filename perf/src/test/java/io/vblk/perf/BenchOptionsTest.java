package io.vblk.perf;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import picocli.CommandLine;

import io.vblk.aio.BackendKind;
import io.vblk.engine.WaitStrategy;
import io.vblk.perf.load.RwMode;

/**
 * {@code vblk bench}'s command line on picocli: defaults as documented, every bench invocation
 * of README.md and scripts/ parses, and a bad value is one line on stderr with exit status 2,
 * before anything is measured.
 */
class BenchOptionsTest {
    /** Parses and checks {@code args} as {@code vblk bench} would, without running anything. */
    private static BenchOptions parse(String... args) {
        BenchCommand command = new BenchCommand(System.out, System.err);
        BenchCommand.commandLine(command).parseArgs(args);
        command.options.check();
        return command.options;
    }

    private record Outcome(int status, String out, String err) {
    }

    private static Outcome run(String... args) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        int status = BenchMain.run(args, new PrintStream(out, true, StandardCharsets.UTF_8), new PrintStream(err, true, StandardCharsets.UTF_8));
        return new Outcome(status, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
    }

    @Test
    void defaultsAreTheShortProfile() {
        BenchOptions o = parse();
        assertEquals(List.of(RwMode.RANDREAD), o.rw);
        assertEquals(List.of(4096), o.blockSizes);
        assertEquals(List.of(32, 128), o.depths);
        assertEquals(1, o.queues);
        assertEquals(5_000_000_000L, o.runtimeNs);
        assertEquals(1_000_000_000L, o.warmupNs);
        assertEquals("embedded", o.mode);
        assertEquals(List.of(BackendKind.IO_URING), o.backends);
        assertEquals(List.of(WaitStrategy.ADAPTIVE), o.waits);
        assertEquals(List.of("dataplane", "fio", "vhost", "wait"), o.only);
        assertEquals(2, o.rounds);
        assertEquals(2, o.bestOf);
        assertEquals(0, o.qsdPollMaxNs);
        assertTrue(o.eventIdx);
        assertFalse(o.guestPolls);
        assertFalse(o.blockingEventFds, "non-blocking eventfds, as QEMU and Cloud Hypervisor give them");
        assertFalse(o.compare);
        assertNull(o.image);
        assertEquals(-1, o.nullImageBytes);
    }

    @Test
    void everyReadmeAndScriptInvocationParses() {
        parse("--image", "nbd+unix:///disk?socket=/tmp/nbd.sock");
        parse("--compare", "--json", "/tmp/vb/compare.json", "--markdown", "/tmp/vb/compare.md", "--svg", "/tmp/vb/compare.svg");
        parse("--format", "qcow2", "--image", "/tmp/x.qcow2");
        parse("--mode", "vhost-user", "--daemon", "vblk", "--image", "/b/base.raw", "--rw", "randread", "--runtime", "5");
        parse("--mode", "vhost-user", "--daemon", "qsd", "--image", "/b/full.qcow2", "--format", "qcow2", "--rw", "randread", "--runtime", "5");
        parse("--mode", "vhost-user", "--daemon", "vblk", "--image", "/b/fresh.qcow2", "--format", "qcow2", "--allow-writes", "--rw",
                "randwrite", "--runtime", "3");
        // scripts/bench-network
        BenchOptions net = parse("--mode", "vhost-user", "--socket", "/tmp/w/vhost.sock", "--backend-pid", "1234", "--rw",
                "randread,randwrite", "--iodepth", "1,64", "--allow-writes", "--runtime", "5", "--warmup", "1", "--quiet", "--json", "/tmp/j.json");
        assertEquals(List.of(RwMode.RANDREAD, RwMode.RANDWRITE), net.rw);
        assertEquals(List.of(1, 64), net.depths);
        assertEquals(1234, net.backendPid);
        // scripts/bench-qcow2
        parse("--mode", "vhost-user", "--rw", "randread", "--bs", "4k", "--iodepth", "128", "--runtime", "5", "--warmup", "1", "--quiet",
                "--daemon", "qsd", "--image", "/b/full.qcow2", "--format", "qcow2");
        BenchOptions wr = parse("--mode", "vhost-user", "--rw", "randwrite", "--bs", "4k", "--iodepth", "128", "--runtime", "3", "--warmup",
                "0.5", "--quiet", "--allow-writes", "--daemon", "vblk", "--image", "/b/fresh.qcow2", "--format", "qcow2");
        assertEquals(500_000_000L, wr.warmupNs);
        // the contention rows, as this round measured them
        BenchOptions c = parse("--compare", "--only", "contention", "--best-of", "3", "--serve-cmd", "java -jar vblk.jar serve");
        assertEquals(List.of("contention"), c.only);
        assertEquals(3, c.bestOf);
        assertEquals(List.of("dataplane", "fio", "vhost", "wait", "contention"), parse("--compare", "--contention").only);
        assertEquals("java -jar b.jar serve", parse("--compare", "--contention", "--serve-cmd-b", "java -jar b.jar serve").serveCommandB);
        assertTrue(parse("--compare", "--only", "contention", "--blocking-eventfds").blockingEventFds);
        // one cell, again and again
        assertEquals(List.of("qd1-block:2", "qd128-poll:0"),
                parse("--compare", "--only", "contention", "--contention-cell", "qd1-block:2,qd128-poll:0").contentionCells);
        assertEquals(List.of(), c.contentionCells, "every cell by default");
        // one row of the vhost group, again and again
        assertEquals(List.of("null-qd128-block"), parse("--compare", "--only", "vhost", "--vhost-cell", "null-qd128-block").vhostCells);
        assertEquals(List.of(), c.vhostCells, "every vhost cell by default");
        assertEquals("pass", c.guestPublish, "the guest publishes once per pass by default");
        assertEquals("each", parse("--compare", "--only", "vhost", "--guest-publish", "each").guestPublish);
    }

    @Test
    void valuesConvertAsDocumented() {
        BenchOptions o = parse("--bs", "4k,64KiB,4k", "--runtime", "500ms", "--warmup", "2.5s", "--size", "1g", "--image", "null:2G",
                "--guest", "poll", "--no-event-idx", "--wait", "busy-spin,blocking", "--frontend", "poll");
        assertEquals(List.of(4096, 65536), o.blockSizes, "duplicates are dropped");
        assertEquals(500_000_000L, o.runtimeNs);
        assertEquals(2_500_000_000L, o.warmupNs);
        assertEquals(1L << 30, o.sizeBytes);
        assertEquals(2L << 30, o.nullImageBytes);
        assertTrue(o.guestPolls);
        assertFalse(o.eventIdx);
        assertEquals(List.of(WaitStrategy.BUSY_SPIN, WaitStrategy.BLOCKING), o.waits);
        assertEquals(Path.of("/b"), parse("--image", "/a", "--image", "/b").image, "a later --image replaces an earlier one");
    }

    @ParameterizedTest
    @ValueSource(strings = {"--iodepth 0|--iodepth must be 1 to 4096, got 0", "--rw foo|unknown --rw 'foo'",
        "--bs 12Q|'12Q'", "--bs 1000|--bs must be a multiple of 512", "--runtime xyz|'xyz'", "--runtime 0|--runtime must be",
        "--compare --iodepth 1|--iodepth cannot be combined with --compare", "--bogus|Unknown option: '--bogus'",
        "--wait nope|unknown wait strategy 'nope'", "--mode x|--mode must be embedded, vhost-user or baseline, got 'x'",
        "--contention|give --compare too", "--image null:12Q|'12Q'", "--image null:1000|multiple of 4096",
        "--guest sometimes|--guest must be block or poll", "--queues|Missing required parameter for option '--queues'",
        "--size 10|--size must be at least 4096", "--best-of 0|--best-of must be 1 to 100", "--only everything|--only must be",
        "--socket /s|--socket needs --mode vhost-user", "--rw randwrite --image /x|add --allow-writes",
        "--queues lots|'lots'", "--compare --backend null|one file back end", "--rate 0|--rate must be 1 to",
        "--serve-cmd-b x|--serve-cmd-b is for the contention rows",
        "--compare --only contention --contention-cell qd1-block:3|expected ROW:BUSY",
        "--contention-cell qd1-block:2|--contention-cell is for the contention rows",
        "--compare --only vhost --vhost-cell null-qd64-block|expected (file or null)-(qd128 or qd1)-(block or poll)",
        "--vhost-cell null-qd128-block|--vhost-cell is for the vhost rows",
        "--compare --only fio --vhost-cell null-qd128-block|--vhost-cell is for the vhost rows",
        "--guest-publish sometimes|--guest-publish sometimes: expected each or pass"})
    void aBadValueIsOneLineAndStatus2(String caseText) {
        String[] parts = caseText.split("\\|");
        Outcome r = run(parts[0].split(" "));
        assertEquals(2, r.status(), r.err());
        assertTrue(r.err().startsWith("vblk bench: ") && r.err().contains(parts[1]), r.err());
        assertTrue(r.err().endsWith("(see vblk bench --help)" + System.lineSeparator()), r.err());
        assertEquals(1, r.err().lines().count(), r.err());
        assertEquals("", r.out(), "nothing runs");
    }

    @Test
    void helpAndVersionExitZero() {
        Outcome help = run("--help");
        assertEquals(0, help.status());
        for (String option : List.of("--rw", "--iodepth", "--compare", "--contention", "--best-of", "--qsd-poll-max-ns", "--json")) {
            assertTrue(help.out().contains(option), option + " in " + help.out());
        }
        Outcome version = run("--version");
        assertEquals(0, version.status());
        assertTrue(version.out().startsWith("vblk "), version.out());
    }

    @Test
    void vblkListsBenchAsASubcommandWhenPerfIsOnTheClassPath() {
        CommandLine vblk = io.vblk.daemon.Main.commandLine(System.out, System.err, false);
        assertTrue(vblk.getSubcommands().containsKey("bench"), vblk.getSubcommands().keySet().toString());
        assertTrue(vblk.getSubcommands().containsKey("serve"));
    }
}
