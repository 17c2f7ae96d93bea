package io.vblk.vhost;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * export.add of a disk on a hostile NBD server: one that answers NBD_OPT_GO with replies that
 * never end. An open the server could hold for ever would hold that export's id and socket for
 * ever (and, when the daemon still opened disks under its export lock, its whole control plane:
 * every later export.add, export.remove, daemon.shutdown; SlowNbdExportAddTest covers the lock
 * now). The add must fail within the connect timeout and the daemon must go on answering. The server is a hand-written Java TCP server (no real server
 * misbehaves on purpose); the daemon runs as the command line starts it.
 */
class HostileNbdExportAttackTest {
    private static final long NBDMAGIC = 0x4e42444d41474943L;
    private static final long IHAVEOPT = 0x49484156454F5054L;
    private static final long OPTION_REPLY_MAGIC = 0x3e889045565a9L;

    @TempDir
    Path dir;

    @Test
    @SuppressWarnings("unchecked")
    void anExportOnAServerThatNeverFinishesNegotiatingFailsInTimeAndTheDaemonGoesOn() throws Exception {
        ExecutorService pool = Executors.newCachedThreadPool(r -> {
            Thread t = new Thread(r, "hostile-nbd");
            t.setDaemon(true);
            return t;
        });
        byte[] flood = new byte[20 * 4096];
        ByteBuffer b = ByteBuffer.wrap(flood);
        while (b.hasRemaining()) {
            b.putLong(OPTION_REPLY_MAGIC).putInt(7).putInt(3).putInt(0); // REP_INFO to NBD_OPT_GO, no data
        }
        try (ServerSocket listener = new ServerSocket(0, 4, InetAddress.getLoopbackAddress());
             DaemonRig d = new DaemonRig(dir.resolve("control.sock"))) {
            pool.submit(() -> {
                while (true) {
                    Socket s = listener.accept();
                    pool.submit(() -> {
                        try (s) {
                            DataInputStream in = new DataInputStream(s.getInputStream());
                            DataOutputStream out = new DataOutputStream(s.getOutputStream());
                            out.writeLong(NBDMAGIC);
                            out.writeLong(IHAVEOPT);
                            out.writeShort(3); // fixed newstyle, no zeroes
                            out.flush();
                            in.readInt();
                            for (int option = 0; ; option++) {
                                in.readLong();
                                int code = in.readInt();
                                in.skipNBytes(in.readInt());
                                if (code == 7) { // NBD_OPT_GO: replies without end
                                    while (true) {
                                        out.write(flood);
                                    }
                                }
                                out.writeLong(OPTION_REPLY_MAGIC);
                                out.writeInt(code);
                                out.writeInt(1); // ACK
                                out.writeInt(0);
                                out.flush();
                            }
                        } catch (IOException e) {
                            return null; // the daemon hung up
                        }
                    });
                }
            });
            String image = "nbd://127.0.0.1:" + listener.getLocalPort() + "/x";
            Future<Map<String, Object>> add = pool.submit(() -> d.call("export.add", DaemonRig.json(Map.of("id", "h",
                    "image", image, "socket", dir.resolve("h.sock").toString()))));
            Map<String, Object> response;
            try {
                response = add.get(90, TimeUnit.SECONDS);
            } catch (TimeoutException e) {
                throw new AssertionError("export.add of a hostile NBD server has not returned after 90 s: the open is"
                        + " not bounded in time");
            }
            Map<String, Object> error = DaemonRig.error(response);
            assertTrue(error.get("message").toString().contains("in time"), error.toString());
            // The failed add gave everything back: the daemon still changes its exports.
            assertEquals(List.of(), d.result("export.list", null));
            d.result("export.add", DaemonRig.json(Map.of("id", "n", "image", "null:1M",
                    "socket", dir.resolve("n.sock").toString())));
            assertEquals(1, ((List<Map<String, Object>>) d.result("export.list", null)).size());
        } finally {
            pool.shutdownNow();
        }
    }
}
