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
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Drives one live migration between two QEMUs through QMP, for scripts/e2e/migrate.
 *
 * <pre>
 *   java -cp DIR Migrate SOURCE_QMP DESTINATION_QMP MIGRATION_SOCKET TIMEOUT_MS
 * </pre>
 *
 * Connects to both monitors (waiting for the destination's socket to appear), lifts the source's
 * bandwidth cap, sends {@code migrate} to {@code unix:MIGRATION_SOCKET} (where the destination
 * waits with {@code -incoming}), polls {@code query-migrate} until it completes, waits until the
 * destination runs, and makes the source quit. Prints one line:
 * {@code MIGRATED total_ms=T downtime_ms=D setup_ms=S transferred_mb=M wall_ms=W} (exit 0; the figures
 * from query-migrate, W as measured here, and query-migrate's JSON on stderr), or
 * {@code FAILED reason} (exit 1). A QMP client in Java because CI has a JDK and no Python.
 */
public final class Migrate {
    private static final Pattern STATUS = Pattern.compile("\"status\": *\"([a-z-]+)\"");

    private final BufferedReader in;
    private final OutputStream out;

    private Migrate(SocketChannel channel) {
        this.in = new BufferedReader(new InputStreamReader(Channels.newInputStream(channel), StandardCharsets.UTF_8));
        this.out = Channels.newOutputStream(channel);
    }

    static Migrate connect(Path socket, long deadlineNs) throws IOException, InterruptedException {
        while (true) {
            try {
                SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX);
                try {
                    ch.connect(UnixDomainSocketAddress.of(socket));
                } catch (IOException e) {
                    ch.close();
                    throw e;
                }
                Migrate m = new Migrate(ch);
                m.in.readLine(); // greeting
                m.execute("{\"execute\":\"qmp_capabilities\"}");
                return m;
            } catch (IOException e) {
                if (System.nanoTime() > deadlineNs) {
                    throw new IOException("cannot connect to QMP at " + socket + ": " + e.getMessage(), e);
                }
                Thread.sleep(50);
            }
        }
    }

    /** Sends a command and returns its reply line (events in between are skipped). */
    String execute(String json) throws IOException {
        out.write((json + "\n").getBytes(StandardCharsets.UTF_8));
        out.flush();
        while (true) {
            String line = in.readLine();
            if (line == null) {
                throw new IOException("QMP connection closed after " + json);
            }
            if (line.contains("\"return\"") || line.contains("\"error\"")) {
                if (line.contains("\"error\"")) {
                    throw new IOException("QMP error for " + json + ": " + line);
                }
                return line;
            }
        }
    }

    private static long number(String json, String key) {
        Matcher m = Pattern.compile("\"" + key + "\": *(\\d+)").matcher(json);
        return m.find() ? Long.parseLong(m.group(1)) : -1;
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 4) {
            System.out.println("FAILED usage: Migrate SOURCE_QMP DESTINATION_QMP MIGRATION_SOCKET TIMEOUT_MS");
            System.exit(2);
        }
        long deadline = System.nanoTime() + Long.parseLong(args[3]) * 1_000_000L;
        try {
            Migrate source = connect(Path.of(args[0]), deadline);
            Migrate destination = connect(Path.of(args[1]), deadline);
            source.execute("{\"execute\":\"migrate-set-parameters\",\"arguments\":{\"max-bandwidth\":4294967296}}");
            long startNs = System.nanoTime();
            source.execute("{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"unix:" + args[2] + "\"}}");
            String info;
            String status;
            while (true) {
                info = source.execute("{\"execute\":\"query-migrate\"}");
                Matcher m = STATUS.matcher(info);
                status = m.find() ? m.group(1) : "?";
                if (status.equals("completed") || status.equals("failed") || status.equals("cancelled")) {
                    break;
                }
                if (System.nanoTime() > deadline) {
                    System.out.println("FAILED migration still " + status + " at the deadline: " + info);
                    System.exit(1);
                }
                Thread.sleep(20);
            }
            long wallMs = (System.nanoTime() - startNs) / 1_000_000L;
            if (!status.equals("completed")) {
                System.out.println("FAILED migration " + status + ": " + info);
                System.exit(1);
            }
            while (!destination.execute("{\"execute\":\"query-status\"}").contains("\"running\": true")) {
                if (System.nanoTime() > deadline) {
                    System.out.println("FAILED the destination did not run after the migration");
                    System.exit(1);
                }
                Thread.sleep(20);
            }
            try {
                source.execute("{\"execute\":\"quit\"}");
            } catch (IOException e) {
                // QEMU may close the monitor before its reply: it quits either way.
            }
            System.err.println(info);
            System.out.printf("MIGRATED total_ms=%d downtime_ms=%d setup_ms=%d transferred_mb=%d wall_ms=%d%n",
                    number(info, "total-time"), number(info, "downtime"), number(info, "setup-time"),
                    Math.max(0, number(info, "transferred")) >> 20, wallMs);
        } catch (IOException e) {
            System.out.println("FAILED " + e.getMessage());
            System.exit(1);
        }
    }
}
