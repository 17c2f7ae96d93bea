package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

import picocli.CommandLine;

/**
 * {@code vblk serve --nbd-strict-flush[=BOOL]} becomes the export's {@code nbd_strict_flush}
 * (unset: the JVM property {@code vblk.nbd.strictFlush}, off here); an image that is not an NBD
 * disk refuses it on the command line as in export.add.
 */
class NbdStrictFlushOptionTest {
    private static ExportSpec serve(String... args) {
        ServeCommand serve = new ServeCommand();
        new CommandLine(serve).parseArgs(args);
        return ExportSpec.parse(Params.commandLine(serve.export.toParams()), "disk0");
    }

    @Test
    void theServeOptionReachesTheExport() {
        String nbd = "nbd+unix:///?socket=/run/x.sock";
        assertFalse(serve("--image", nbd, "--socket", "s").nbdStrictFlush, "the default: the JVM property, unset here");
        assertTrue(serve("--image", nbd, "--socket", "s", "--nbd-strict-flush").nbdStrictFlush);
        assertTrue(serve("--image", nbd, "--socket", "s", "--nbd-strict-flush=true").nbdStrictFlush);
        assertFalse(serve("--image", nbd, "--socket", "s", "--nbd-strict-flush=false").nbdStrictFlush);
        assertEquals(true, serve("--image", nbd, "--socket", "s", "--nbd-strict-flush").toParams().get("nbd_strict_flush"));
        assertEquals(false, serve("--image", nbd, "--socket", "s").toConfig().get("nbd_strict_flush"),
                "saved as in effect");
    }

    @Test
    void aFileImageRefusesIt() {
        InvalidParams e = assertThrows(InvalidParams.class, () -> serve("--image", "x.img", "--socket", "s", "--nbd-strict-flush"));
        assertTrue(e.getMessage().contains("--nbd-strict-flush applies to nbd:// images only"), e.getMessage());
        assertFalse(serve("--image", "x.img", "--socket", "s").toConfig().containsKey("nbd_strict_flush"));
    }
}
