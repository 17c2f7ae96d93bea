package io.vblk.aio;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import io.vblk.sys.Linux;

/**
 * Regression (review rev9b): the image's channels (the thread-pool back end's I/O, the buffered
 * one for what O_DIRECT cannot express) were opened again BY PATH, on first use. When the path
 * names another file by then (renamed and replaced; another VM's image that QEMU has locked),
 * writes went into that file, not the one opened and locked. They reach the opened inode now.
 */
class ImagePathSwapTest {
    @TempDir
    Path dir;

    @Test
    void channelsOpenedAfterThePathWasReplacedReachTheOpenedFile() throws IOException {
        for (boolean direct : new boolean[] {false, true}) {
            Path img = dir.resolve("img-" + direct);
            Files.write(img, new byte[1 << 20]);
            try (Image image = Image.open(img, ImageOptions.defaults().direct(direct))) {
                Path moved = dir.resolve("img-" + direct + ".old");
                Files.move(img, moved);
                byte[] other = new byte[1 << 20];
                Arrays.fill(other, (byte) 0x55);
                Files.write(img, other);

                ByteBuffer page = ByteBuffer.allocateDirect(2 * Linux.PAGE_SIZE).alignedSlice(Linux.PAGE_SIZE);
                page.limit(Linux.PAGE_SIZE);
                while (page.hasRemaining()) {
                    page.put((byte) 0x11);
                }
                write(image.channel(), page.flip(), 0);
                write(image.bufferedChannel(), page.flip(), Linux.PAGE_SIZE);

                assertArrayEquals(other, Files.readAllBytes(img), "written into the file now at the path (direct " + direct + ")");
                byte[] mine = Files.readAllBytes(moved);
                assertEquals(0x11, mine[0], "direct " + direct);
                assertEquals(0x11, mine[2 * Linux.PAGE_SIZE - 1], "direct " + direct);
                assertEquals(0, mine[2 * Linux.PAGE_SIZE], "direct " + direct);
            }
        }
    }

    private static void write(FileChannel ch, ByteBuffer bb, long position) throws IOException {
        long pos = position;
        while (bb.hasRemaining()) {
            pos += ch.write(bb, pos);
        }
        ch.force(false);
    }
}
