package io.vblk.vring;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.reflect.Method;
import java.net.URL;
import java.net.URLClassLoader;

import org.junit.jupiter.api.Test;

/**
 * Regression (found by the frontend fuzzer, issue 10): a guest-memory fault (SIGBUS) that Java 17
 * delivers late lands at a safepoint of whatever the thread runs next; when that was the static
 * initialiser of {@link QueueError}, first used by a quarantine right after a truncated memfd
 * faulted, the class failed to initialise for the life of the JVM and every later quarantine
 * threw NoClassDefFoundError ("Could not initialize class io.vblk.vring.QueueError"). The error
 * path's classes are now initialised with {@link SplitQueue}, before any guest memory is read.
 *
 * <p>Checked in a class loader of its own (so other tests cannot have initialised the classes
 * first): initialising SplitQueue leaves QueueError initialised.
 */
class ErrorPathClassInitTest {
    @Test
    void initialisingSplitQueueInitialisesTheErrorPathClasses() throws Exception {
        URL classes = SplitQueue.class.getProtectionDomain().getCodeSource().getLocation();
        try (URLClassLoader fresh = new ChildFirst(classes, getClass().getClassLoader())) {
            Class<?> errors = Class.forName(QueueError.class.getName(), false, fresh);
            assertTrue(needsInit(errors), "a fresh loader starts with QueueError uninitialised");
            Class.forName(SplitQueue.class.getName(), true, fresh);
            assertFalse(needsInit(errors), "QueueError is initialised with SplitQueue, never first on the error path");
        }
    }

    /** jdk.internal.misc.Unsafe.shouldBeInitialized, exported to tests by the build's JVM flags. */
    private static boolean needsInit(Class<?> c) throws Exception {
        Class<?> unsafeClass = Class.forName("jdk.internal.misc.Unsafe");
        Object unsafe = unsafeClass.getMethod("getUnsafe").invoke(null);
        Method should = unsafeClass.getMethod("shouldBeInitialized", Class.class);
        return (boolean) should.invoke(unsafe, c);
    }

    /** Loads io.vblk.vring classes itself, everything else from the parent. */
    private static final class ChildFirst extends URLClassLoader {
        ChildFirst(URL classes, ClassLoader parent) {
            super(new URL[] {classes}, parent);
        }

        @Override
        protected Class<?> loadClass(String name, boolean resolve) throws ClassNotFoundException {
            synchronized (getClassLoadingLock(name)) {
                if (name.startsWith("io.vblk.vring.")) {
                    Class<?> c = findLoadedClass(name);
                    if (c == null) {
                        c = findClass(name);
                    }
                    if (resolve) {
                        resolveClass(c);
                    }
                    return c;
                }
                return super.loadClass(name, resolve);
            }
        }
    }
}
