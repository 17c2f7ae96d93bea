import java.io.IOException;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteOrder;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Optional;
import java.util.concurrent.TimeUnit;

/**
 * Kills a vhost-user backend the moment it has a request in flight, for scripts/e2e/crash.
 *
 * <pre>
 *   java -cp DIR InflightProbe QEMU_PID BACKEND_PID GO_FILE TIMEOUT_MS
 * </pre>
 *
 * Started ahead of time (a JVM takes a while to start on a busy machine), the probe waits until
 * GO_FILE exists, finds the frontend's inflight buffer (VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD)
 * among QEMU's descriptors (the memfd vblk named vblk-inflight), maps it and spins over queue
 * 0's {@code desc[].inflight} flags; as soon as two are set (or one, if two are not within a
 * quarter of a second) it sends SIGKILL to the backend, waits for it to die, and prints
 * {@code KILLED n} with the flags set in the region the dead backend left, which the next
 * backend must account for. {@code TIMEOUT} (exit status 3) when no request
 * was in flight in time, {@code GUEST-DONE} (6) when QEMU exited first.
 *
 * <p>Why a spinning probe: under TCG the guest is so much slower than the disk that the backend
 * holds a request for well under a millisecond between its pop and its publish, and a shell
 * looking a few times a second almost never sees one. Why no shared code with vblk: the layout is
 * read here as vhost-user.rst gives it (queue region: u16 desc_num at offset 10, 16-byte entries
 * from offset 16 with the inflight flag first), so that a layout bug in vblk does not hide itself.
 */
public final class InflightProbe {
    private static final int DESC_NUM_OFFSET = 10;
    private static final int DESC_OFFSET = 16;
    private static final int DESC_LENGTH = 16;
    private static final String BUFFER_NAME = "/memfd:vblk-inflight";
    /** Requests in flight at once worth waiting a moment for ... */
    private static final int MANY = 2;
    /** ... this long. */
    private static final long SETTLE_MS = 250;
    /** The entry's first 4 bytes: the flag is the low byte (little-endian). Acquire: the backend writes them. */
    private static final VarHandle INT = MethodHandles.byteBufferViewVarHandle(int[].class, ByteOrder.LITTLE_ENDIAN);

    private InflightProbe() {
    }

    public static void main(String[] args) throws IOException, InterruptedException {
        if (args.length != 4) {
            System.err.println("usage: java -cp DIR InflightProbe QEMU_PID BACKEND_PID GO_FILE TIMEOUT_MS");
            System.exit(2);
        }
        Path go = Path.of(args[2]);
        while (!Files.exists(go)) {
            Thread.sleep(1);
        }
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(Long.parseLong(args[3]));
        Path buffer = find(Path.of("/proc", args[0], "fd"));
        if (buffer == null) {
            System.out.println("NOBUFFER");
            System.exit(4);
        }
        MappedByteBuffer region;
        try (FileChannel ch = FileChannel.open(buffer, StandardOpenOption.READ)) {
            region = ch.map(FileChannel.MapMode.READ_ONLY, 0, ch.size());
        }
        region.order(ByteOrder.LITTLE_ENDIAN);
        int descNum = region.getShort(DESC_NUM_OFFSET) & 0xffff;
        if (descNum == 0 || DESC_OFFSET + (long) DESC_LENGTH * descNum > region.capacity()) {
            System.out.println("BAD desc_num " + descNum + " in a buffer of " + region.capacity() + " bytes");
            System.exit(4);
        }
        Optional<ProcessHandle> backend = ProcessHandle.of(Long.parseLong(args[1]));
        Optional<ProcessHandle> qemu = ProcessHandle.of(Long.parseLong(args[0]));
        if (backend.isEmpty()) {
            System.out.println("GONE");
            System.exit(5);
        }
        // Several requests in flight at once make the better crash (the next backend must order
        // them); one will do if that does not happen soon (the guest may be near its end).
        long settleFor = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(SETTLE_MS);
        int n = count(region, descNum);
        while (n < MANY && (n == 0 || System.nanoTime() < settleFor)) {
            if (qemu.isEmpty() || !qemu.get().isAlive()) {
                // The guest finished its I/O and powered off: nothing left to crash.
                System.out.println("GUEST-DONE");
                System.exit(6);
            }
            if (System.nanoTime() > deadline || !backend.get().isAlive()) {
                System.out.println("TIMEOUT");
                System.exit(3);
            }
            Thread.onSpinWait();
            n = count(region, descNum);
        }
        backend.get().destroyForcibly();
        backend.get().onExit().join();
        // The dead backend's region: what its successor must resubmit or find completed.
        System.out.println("KILLED " + count(region, descNum));
    }

    /** QEMU's descriptor of the inflight buffer, or null. */
    private static Path find(Path fds) throws IOException {
        try (DirectoryStream<Path> all = Files.newDirectoryStream(fds)) {
            for (Path fd : all) {
                try {
                    if (Files.readSymbolicLink(fd).toString().startsWith(BUFFER_NAME)) {
                        return fd;
                    }
                } catch (IOException e) {
                    // closed while we looked: not it
                }
            }
        }
        return null;
    }

    private static int count(MappedByteBuffer region, int descNum) {
        int n = 0;
        for (int h = 0; h < descNum; h++) {
            if (((int) INT.getAcquire(region, DESC_OFFSET + DESC_LENGTH * h) & 0xff) == 1) {
                n++;
            }
        }
        return n;
    }
}
