package io.vblk.block.nbd;

import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import io.vblk.sys.NativeBuffer;

/**
 * The process {@link NbdReconnectDirectMemoryTest} runs under a small -XX:MaxDirectMemorySize:
 * an NBD disk (qemu-nbd on a Unix socket, args: image, socket) writes 4 KiB; its server is
 * killed and started again; the direct-memory pool is filled (as other disks of a daemon can);
 * a read then finds the connection broken and the disk reconnects while no direct memory is
 * left. Once an attempt failed (or after 10 s) the memory is given back, and the read must be
 * served by a later attempt. Prints "ATTEMPT FAILED WHILE EXHAUSTED" (or "NO FAILED ATTEMPT"),
 * then "READ 4096 MATCHES" or "READ rc".
 */
public final class NbdDirectMemoryHog {
    private NbdDirectMemoryHog() {
    }

    public static void main(String[] args) throws Exception {
        Path img = Path.of(args[0]);
        Path sock = Path.of(args[1]);
        ServerProcess server = ServerProcess.qemuNbdUnix(img, sock, "d", false);
        NbdBackend disk = NbdBackend.open("nbd+unix:///d?socket=" + sock, NbdOptions.defaults().withRetryTimeoutMs(30_000));
        Io io = new Io(disk);
        NativeBuffer b = Io.buffer(4096);
        Io.fill(b, 7);
        System.out.println("first write: " + io.write(0, b));
        Io.poison(b);
        server.kill();
        Files.deleteIfExists(sock);
        server = ServerProcess.qemuNbdUnix(img, sock, "d", false);

        List<ByteBuffer> hog = new ArrayList<>();
        for (int size : new int[] {1 << 20, 64 << 10, 4 << 10, 256, 16}) {
            try {
                while (true) {
                    hog.add(ByteBuffer.allocateDirect(size));
                }
            } catch (OutOfMemoryError full) {
                // next, smaller size
            }
        }
        System.out.println("direct memory full: " + hog.size() + " buffers");

        io.results.clear(); // the write's result
        Io.check(disk.prepareRead(0, Io.vector(b), 1));
        disk.submit();
        long releaseBy = System.nanoTime() + 10_000_000_000L;
        long giveUpAt = System.nanoTime() + 60_000_000_000L;
        while (io.results.isEmpty() && System.nanoTime() - giveUpAt < 0) {
            if (hog != null && (disk.reconnectFailing() || System.nanoTime() - releaseBy > 0)) {
                System.out.println(disk.reconnectFailing() ? "ATTEMPT FAILED WHILE EXHAUSTED" : "NO FAILED ATTEMPT");
                hog = null;
                System.gc();
            }
            disk.completionEvent().read();
            if (disk.poll(io.results::put, 16) == 0) {
                disk.awaitCompletions(50);
            }
        }
        Long rc = io.results.get(1L);
        System.out.println(rc != null && rc == 4096 && Io.matches(b, 7) ? "READ 4096 MATCHES" : "READ " + rc);
        System.out.flush();
        server.kill();
        Runtime.getRuntime().halt(0);
    }
}
