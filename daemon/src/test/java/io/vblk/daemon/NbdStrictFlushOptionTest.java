package io.vblk.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Map;

import org.junit.jupiter.api.Test;

import io.vblk.block.nbd.NbdOptions;

import picocli.CommandLine;

/**
 * {@code vblk serve --nbd-strict-flush[=BOOL]} becomes the export's {@code nbd_strict_flush}
 * (unset: inherits the JVM property {@code vblk.nbd.strictFlush}, off here, and is saved unset); an image that is not an NBD
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
        assertNull(serve("--image", nbd, "--socket", "s").nbdStrictFlush, "unset: inherits the JVM property");
        assertFalse(serve("--image", nbd, "--socket", "s").nbdStrictFlushInEffect(), "the JVM property, unset here");
        assertTrue(serve("--image", nbd, "--socket", "s", "--nbd-strict-flush").nbdStrictFlush);
        assertTrue(serve("--image", nbd, "--socket", "s", "--nbd-strict-flush=true").nbdStrictFlush);
        assertFalse(serve("--image", nbd, "--socket", "s", "--nbd-strict-flush=false").nbdStrictFlush);
        assertEquals(true, serve("--image", nbd, "--socket", "s", "--nbd-strict-flush").toParams().get("nbd_strict_flush"));
        assertFalse(serve("--image", nbd, "--socket", "s").toConfig().containsKey("nbd_strict_flush"),
                "unset, not saved: it keeps following the JVM property");
        assertEquals(false, serve("--image", nbd, "--socket", "s", "--nbd-strict-flush=false").toConfig()
                .get("nbd_strict_flush"), "set, saved");
        assertEquals(false, serve("--image", nbd, "--socket", "s").toParams().get("nbd_strict_flush"),
                "export.list shows the value in effect");
    }

    /**
     * An export that did not set nbd_strict_flush, saved (--persist, config.save) and loaded again,
     * still inherits -Dvblk.nbd.strictFlush: saving it wrote the default of the day into the
     * export (false here), so a later restart with the property true left the export off. One that
     * set it keeps its own value whatever the property.
     */
    @Test
    void anUnsetExportInheritsTheDefaultAfterASave() {
        String nbd = "nbd+unix:///?socket=/run/x.sock";
        Map<String, Object> inherit = serve("--image", nbd, "--socket", "s").toConfig();
        Map<String, Object> own = serve("--image", nbd, "--socket", "s", "--nbd-strict-flush=false").toConfig();
        String before = System.getProperty(NbdOptions.STRICT_FLUSH_PROPERTY);
        System.setProperty(NbdOptions.STRICT_FLUSH_PROPERTY, "true");
        try {
            ExportSpec loaded = ExportSpec.parse(Params.json(inherit), null);
            assertNull(loaded.nbdStrictFlush);
            assertTrue(loaded.nbdStrictFlushInEffect(), "the property restarted with, not the one saved under");
            assertEquals(true, loaded.toParams().get("nbd_strict_flush"));
            assertFalse(loaded.toConfig().containsKey("nbd_strict_flush"), "saved again: still unset");
            ExportSpec set = ExportSpec.parse(Params.json(own), null);
            assertFalse(set.nbdStrictFlushInEffect(), "its own value");
            assertEquals(false, set.toConfig().get("nbd_strict_flush"));
        } finally {
            if (before == null) {
                System.clearProperty(NbdOptions.STRICT_FLUSH_PROPERTY);
            } else {
                System.setProperty(NbdOptions.STRICT_FLUSH_PROPERTY, before);
            }
        }
    }

    @Test
    void aFileImageRefusesIt() {
        InvalidParams e = assertThrows(InvalidParams.class, () -> serve("--image", "x.img", "--socket", "s", "--nbd-strict-flush"));
        assertTrue(e.getMessage().contains("--nbd-strict-flush applies to nbd:// images only"), e.getMessage());
        assertFalse(serve("--image", "x.img", "--socket", "s").toConfig().containsKey("nbd_strict_flush"));
    }
}
