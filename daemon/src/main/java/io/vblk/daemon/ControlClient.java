package io.vblk.daemon;

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
import java.util.LinkedHashMap;
import java.util.Map;

/** A JSON-RPC client of the control socket, for {@code vblk ctl}, {@code vblk stat} and tests. */
final class ControlClient implements AutoCloseable {
    private final SocketChannel channel;
    private final BufferedReader in;
    private final OutputStream out;
    private long nextId = 1;

    private ControlClient(SocketChannel channel) {
        this.channel = channel;
        this.in = new BufferedReader(new InputStreamReader(Channels.newInputStream(channel), StandardCharsets.UTF_8));
        this.out = Channels.newOutputStream(channel);
    }

    /** Connects to the daemon at {@code path}. */
    static ControlClient connect(Path path) throws IOException {
        SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX);
        try {
            ch.connect(UnixDomainSocketAddress.of(path));
        } catch (IOException e) {
            ch.close();
            throw e;
        }
        return new ControlClient(ch);
    }

    /**
     * A hint for a connect refused on a socket file that exists: nothing listens on it (a daemon
     * that died, leaving its socket file), else "".
     */
    static String staleHint(Path path, IOException e) {
        boolean refused = e instanceof java.net.ConnectException || String.valueOf(e.getMessage()).contains("Connection refused");
        return refused && java.nio.file.Files.exists(path, java.nio.file.LinkOption.NOFOLLOW_LINKS)
                ? " (no daemon is listening; stale socket file?)" : "";
    }

    /** Sends one raw line and returns the response line (null when the daemon closed). */
    String exchange(String line) throws IOException {
        out.write((line + "\n").getBytes(StandardCharsets.UTF_8));
        out.flush();
        return in.readLine();
    }

    /** Calls {@code method}; returns the decoded response object (with "result" or "error"). */
    @SuppressWarnings("unchecked")
    Map<String, Object> call(String method, Map<String, Object> params) throws IOException {
        Map<String, Object> request = new LinkedHashMap<>();
        request.put("jsonrpc", "2.0");
        request.put("method", method);
        if (params != null) {
            request.put("params", params);
        }
        request.put("id", nextId++);
        String response = exchange(JsonRpc.JSON_OUT.asString(request));
        if (response == null) {
            throw new IOException("the daemon closed the connection");
        }
        return (Map<String, Object>) JsonRpc.JSON_IN.anyFrom(response);
    }

    /**
     * Calls {@code method} and returns its result.
     *
     * @throws RpcError when the daemon answers with an error
     */
    Object result(String method, Map<String, Object> params) throws IOException {
        Map<String, Object> response = call(method, params);
        Object error = response.get("error");
        if (error instanceof Map<?, ?> e) {
            throw new RpcError(((Number) e.get("code")).intValue(), String.valueOf(e.get("message")));
        }
        return response.get("result");
    }

    @Override
    public void close() throws IOException {
        channel.close();
    }
}
