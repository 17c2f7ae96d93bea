package io.vblk.block.nbd;

import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.RandomAccessFile;
import java.lang.management.ManagementFactory;
import java.nio.file.Path;
import java.util.Random;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.aio.CompletionSink;
import io.vblk.aio.IoVector;
import io.vblk.sys.NativeBuffer;

/**
 * The NBD data path allocates nothing per request in steady state, measured with the I/O
 * thread's allocation counter over many 4 KiB reads and writes at depth 1 and 16 against
 * qemu-nbd, plain and over TLS. Over TLS the JDK's {@code SSLEngine} allocates per record (its
 * result object, and per record of its cipher); the bound there is per record, and the driver's
 * own share is nothing, as the plain run shows.
 */
@SuppressWarnings("try") // the servers are resources the try blocks only keep alive
class NbdNoAllocationTest {
    private static final long MiB = 1 << 20;

    @TempDir
    Path dir;

    private long completed;
    private long failures;
    private final CompletionSink sink = (tag, result) -> {
        completed++;
        if (result < 0) {
            failures++;
        }
    };

    @BeforeAll
    static void serversPresent() {
        assumeTrue(ServerProcess.available("qemu-nbd"), "qemu-nbd is not installed (.ci/run installs it)");
    }

    private Path image() throws Exception {
        Path file = dir.resolve("disk.img");
        try (RandomAccessFile f = new RandomAccessFile(file.toFile(), "rw")) {
            f.setLength(64 * MiB);
        }
        return file;
    }

    @Test
    void plainSteadyStateAllocatesNothingPerRequest() throws Exception {
        Path sock = dir.resolve("nbd.sock");
        try (ServerProcess server = ServerProcess.qemuNbdUnix(image(), sock, "d", false);
             NbdBackend disk = NbdBackend.open("nbd+unix:///d?socket=" + sock, NbdOptions.defaults().withDepth(16))) {
            for (int depth : new int[] {1, 16}) {
                long bytes = measure(disk, depth, 20_000);
                assertTrue(bytes < 20_000, "depth " + depth + ": " + bytes + " bytes allocated over 20,000 requests");
            }
        }
    }

    @Test
    void tlsSteadyStateAllocatesOnlyWhatTheJdkEngineDoesPerRecord() throws Exception {
        assumeTrue(TestCertificates.available(), "openssl is not installed");
        TestCertificates certs = TestCertificates.create(dir.resolve("pki"));
        Path sock = dir.resolve("tls.sock");
        try (ServerProcess server = NbdTlsTest.qemuNbdTls(image(), sock, 0, certs.serverDir("server"), false);
             NbdBackend disk = NbdBackend.open("nbds+unix:///d?socket=" + sock,
                     NbdOptions.defaults().withDepth(16).withTls(NbdTls.certificates(certs.clientDir("ca", false))))) {
            for (int depth : new int[] {1, 16}) {
                long bytes = measure(disk, depth, 20_000);
                // At most one record each way per request at depth 1 (fewer when batched): the
                // JDK's engine allocates a few hundred bytes per record; the bound catches a
                // buffer or a copy per request (4 KiB and more).
                System.out.printf("nbd tls depth %d: %.1f bytes allocated per request%n", depth, bytes / 20_000.0);
                assertTrue(bytes < 20_000L * 6144, "depth " + depth + ": " + bytes + " bytes over 20,000 requests");
            }
        }
    }

    @Test
    void requestsSplitInPartsAllocateNothingPerRequest() throws Exception {
        // 16 KiB requests on a server whose maximum block size is 4 KiB (nbdkit's
        // blocksize-policy filter): each goes in 4 parts, laid out in the slot it already holds.
        assumeTrue(ServerProcess.available("nbdkit"), "nbdkit is not installed (.ci/run installs it)");
        Path sock = dir.resolve("small.sock");
        try (ServerProcess server = ServerProcess.nbdkit(sock, java.util.List.of("blocksize-policy"), "64M",
                java.util.List.of("blocksize-minimum=512", "blocksize-preferred=4096", "blocksize-maximum=4096",
                        "blocksize-error-policy=error"));
             NbdBackend disk = NbdBackend.open("nbd+unix:///?socket=" + sock, NbdOptions.defaults().withDepth(16))) {
            assertEquals(4096, disk.maxPayloadBytes());
            for (int depth : new int[] {1, 16}) {
                long bytes = measure(disk, depth, 5_000, 16384);
                assertTrue(bytes < 20_000, "depth " + depth + ": " + bytes + " bytes allocated over 5,000 split requests");
            }
        }
    }

    private long measure(NbdBackend disk, int depth, int requests) {
        return measure(disk, depth, requests, 4096);
    }

    /** Runs warm-up then {@code requests} random reads and writes of {@code size} bytes at {@code depth}; returns the bytes allocated. */
    private long measure(NbdBackend disk, int depth, int requests, int size) {
        var mx = (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();
        long tid = Thread.currentThread().getId();
        NativeBuffer[] bufs = new NativeBuffer[depth];
        IoVector[] vecs = new IoVector[depth];
        for (int i = 0; i < depth; i++) {
            bufs[i] = Io.buffer(size);
            vecs[i] = Io.vector(bufs[i]);
        }
        Random rnd = new Random(depth);
        run(disk, vecs, rnd, requests); // warm-up: JIT, TLS session tickets
        long before = mx.getThreadAllocatedBytes(tid);
        run(disk, vecs, rnd, requests);
        long allocated = mx.getThreadAllocatedBytes(tid) - before;
        assertEquals(0, failures);
        return allocated;
    }

    private void run(NbdBackend d, IoVector[] vecs, Random rnd, int requests) {
        int depth = vecs.length;
        long target = completed + requests;
        int issued = 0;
        int inFlight = 0;
        int next = 0;
        while (completed < target) {
            while (inFlight < depth && issued < requests) {
                long off = 4096L * rnd.nextInt((int) ((64 * MiB - vecs[0].totalLength()) / 4096 + 1));
                IoVector v = vecs[next];
                next = (next + 1) % depth;
                int rc = (issued & 1) == 0 ? d.prepareWrite(off, v, issued) : d.prepareRead(off, v, issued);
                if (rc != 0) {
                    fail("request refused with " + rc);
                }
                issued++;
                inFlight++;
            }
            d.submit();
            long before = completed;
            d.poll(sink, depth);
            inFlight -= (int) (completed - before);
            if (completed == before && d.pendingSubmit() == 0) {
                d.acknowledgeCompletions();
                d.awaitCompletions(5);
            }
        }
    }
}
