package io.vblk.daemon;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;

/** A control-socket client for the control server's tests: raw bytes and lines, blocking. */
final class ControlSocket {
    private ControlSocket() {
    }

    /** A blocking connection to the server listening at {@code path}. */
    static SocketChannel connect(Path path) throws IOException {
        SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX);
        ch.connect(UnixDomainSocketAddress.of(path));
        return ch;
    }

    /** Sends all of {@code bytes}. */
    static void send(SocketChannel ch, byte[] bytes) throws IOException {
        ByteBuffer b = ByteBuffer.wrap(bytes);
        while (b.hasRemaining()) {
            ch.write(b);
        }
    }

    /** Sends {@code line} and its newline. */
    static void sendLine(SocketChannel ch, String line) throws IOException {
        send(ch, (line + "\n").getBytes(StandardCharsets.US_ASCII));
    }

    /** One response line, or null at end of stream. */
    static String readLine(SocketChannel ch) throws IOException {
        StringBuilder sb = new StringBuilder();
        ByteBuffer one = ByteBuffer.allocate(1);
        while (true) {
            one.clear();
            if (ch.read(one) < 0) {
                return sb.length() == 0 ? null : sb.toString();
            }
            char c = (char) one.get(0);
            if (c == '\n') {
                return sb.toString();
            }
            sb.append(c);
        }
    }
}
