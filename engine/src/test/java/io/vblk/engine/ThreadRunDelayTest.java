package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;

import org.junit.jupiter.api.Test;

import io.vblk.sys.NativeBuffer;

/** The run delay read from the kernel for the calling thread, and the parser of its line. */
class ThreadRunDelayTest {
    @Test
    void readsTheCallingThreadsRunDelayFromTheKernel() {
        ThreadRunDelay delay = new ThreadRunDelay();
        long first = delay.nanos();
        assertTrue(first >= 0, "this kernel has /proc/thread-self/schedstat: " + first);
        long end = System.nanoTime() + 20_000_000;
        while (System.nanoTime() < end) {
            Thread.onSpinWait(); // runnable for 20 ms: the delay can only grow
        }
        assertTrue(delay.nanos() >= first);
    }

    @Test
    void parsesTheSecondFieldOnly() {
        assertEquals(15402568, parse("6263912 15402568 4\n"));
        assertEquals(0, parse("1 0 0\n"));
        assertEquals(-1, parse("6263912\n"), "no second field");
        assertEquals(-1, parse("abc def ghi"), "not a number");
        assertEquals(-1, parse("1 99999999999999999999999 1"), "overflow");
    }

    private static long parse(String text) {
        NativeBuffer b = new NativeBuffer(64);
        byte[] bytes = text.getBytes(StandardCharsets.US_ASCII);
        b.buffer().putBytes(8, bytes);
        return ThreadRunDelay.secondField(b, 8, bytes.length);
    }
}
