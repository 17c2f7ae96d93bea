import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.Channels;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;

/**
 * Runs QMP commands one after the other, for scripts/e2e/run (a client in Java because CI has a
 * JDK and no Python; run with the source launcher).
 *
 * <pre>
 *   java Qmp.java QMP_SOCKET TIMEOUT_MS COMMAND...     e.g. COMMAND = query-status, cont
 * </pre>
 *
 * Waits up to TIMEOUT_MS for the socket (QEMU answers only once its machine is set up, devices
 * realized), then prints each command's reply on one line. Exit 1 on an error reply or timeout.
 */
public final class Qmp {
    public static void main(String[] args) throws Exception {
        Path socket = Path.of(args[0]);
        long deadline = System.nanoTime() + Long.parseLong(args[1]) * 1_000_000L;
        SocketChannel ch;
        while (true) {
            ch = SocketChannel.open(StandardProtocolFamily.UNIX);
            try {
                ch.connect(UnixDomainSocketAddress.of(socket));
                break;
            } catch (IOException e) {
                ch.close();
                if (System.nanoTime() > deadline) {
                    System.out.println("FAILED cannot connect to " + socket + ": " + e.getMessage());
                    System.exit(1);
                }
                Thread.sleep(50);
            }
        }
        BufferedReader in = new BufferedReader(new InputStreamReader(Channels.newInputStream(ch), StandardCharsets.UTF_8));
        OutputStream out = Channels.newOutputStream(ch);
        in.readLine(); // greeting
        execute(in, out, "qmp_capabilities");
        for (int i = 2; i < args.length; i++) {
            System.out.println(args[i] + ": " + execute(in, out, args[i]));
        }
        ch.close();
    }

    /** Sends {@code command} and returns its reply, skipping events; exits on an error reply. */
    private static String execute(BufferedReader in, OutputStream out, String command) throws IOException {
        out.write(("{\"execute\":\"" + command + "\"}\n").getBytes(StandardCharsets.UTF_8));
        out.flush();
        while (true) {
            String line = in.readLine();
            if (line == null) {
                System.out.println("FAILED QEMU closed QMP during " + command);
                System.exit(1);
            }
            if (line.contains("\"event\"")) {
                continue;
            }
            if (line.contains("\"error\"")) {
                System.out.println("FAILED " + command + ": " + line);
                System.exit(1);
            }
            return line;
        }
    }
}
