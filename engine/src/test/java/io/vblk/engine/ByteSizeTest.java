package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;

class ByteSizeTest {
    @Test
    void parsesPlainAndBinarySuffixes() {
        assertEquals(4096, ByteSize.parse("4096"));
        assertEquals(512 << 10, ByteSize.parse("512K"));
        assertEquals(1L << 30, ByteSize.parse("1g"));
        assertEquals(4096, ByteSize.parse("4KiB"));
        assertEquals(2L << 40, ByteSize.parse(" 2TB "));
    }

    @Test
    void refusesGarbageNegativesAndOverflow() {
        assertThrows(IllegalArgumentException.class, () -> ByteSize.parse("12Q"));
        assertThrows(IllegalArgumentException.class, () -> ByteSize.parse(""));
        assertThrows(IllegalArgumentException.class, () -> ByteSize.parse("-1"));
        assertThrows(IllegalArgumentException.class, () -> ByteSize.parse("9223372036854775807K"));
    }
}
