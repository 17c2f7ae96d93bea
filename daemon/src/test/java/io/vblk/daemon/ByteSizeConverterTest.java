package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.TypeConversionException;

/** The size parser every vblk command uses, directly and as a picocli converter. */
class ByteSizeConverterTest {
    @Test
    void parsesPlainAndBinarySuffixes() {
        assertEquals(4096, ByteSizeConverter.parse("4096"));
        assertEquals(512 << 10, ByteSizeConverter.parse("512K"));
        assertEquals(1L << 30, ByteSizeConverter.parse("1g"));
        assertEquals(4096, ByteSizeConverter.parse("4KiB"));
        assertEquals(2L << 40, ByteSizeConverter.parse(" 2TB "));
    }

    @Test
    void refusesGarbageNegativesAndOverflow() {
        assertThrows(IllegalArgumentException.class, () -> ByteSizeConverter.parse("12Q"));
        assertThrows(IllegalArgumentException.class, () -> ByteSizeConverter.parse(""));
        assertThrows(IllegalArgumentException.class, () -> ByteSizeConverter.parse("-1"));
        assertThrows(IllegalArgumentException.class, () -> ByteSizeConverter.parse("9223372036854775807K"));
    }

    @Test
    void asAConverterItFailsWithATypeConversionNamingTheValue() {
        assertEquals(512L << 10, new ByteSizeConverter().convert("512k"));
        TypeConversionException e = assertThrows(TypeConversionException.class, () -> new ByteSizeConverter().convert("12Q"));
        assertTrue(e.getMessage().contains("'12Q'"), e.getMessage());
    }

    @Command(name = "t")
    static final class SizeOption {
        @Option(names = "--size", converter = ByteSizeConverter.class)
        long size;
    }

    @Test
    void picocliNamesTheOptionAndTheValue() {
        SizeOption o = new SizeOption();
        new CommandLine(o).parseArgs("--size", "2m");
        assertEquals(2L << 20, o.size);
        CommandLine.ParameterException e = assertThrows(CommandLine.ParameterException.class,
                () -> new CommandLine(new SizeOption()).parseArgs("--size", "lots"));
        assertTrue(e.getMessage().contains("--size") && e.getMessage().contains("'lots'"), e.getMessage());
    }
}
