package io.vblk.block.rbd;

import jnr.ffi.LibraryLoader;

import io.vblk.sys.Native;

/**
 * The parts of librados' and librbd's C APIs ({@code rados/librados.h}, {@code rbd/librbd.h},
 * Ceph 16 "Pacific") the RBD driver calls, bound by jnr-ffi. Handles ({@code rados_t},
 * {@code rados_ioctx_t}, {@code rbd_image_t}, {@code rbd_completion_t}) and out-parameters are
 * raw addresses, so the I/O calls marshal and allocate nothing. Calls return 0 or a count, or
 * {@code -errno}, as librbd does.
 *
 * <p>{@code rbd_aio_write_zeroes} has six parameters: jnr-ffi's fast stubs corrupt the sixth on
 * x86-64 (issue 181), which {@link Native} disables before any library is loaded.
 */
final class Librbd {
    /** librados: the cluster connection and pool context. */
    public interface Rados {
        int rados_create(long clusterOut, String id);

        int rados_conf_read_file(long cluster, String path);

        int rados_conf_set(long cluster, String option, String value);

        /** Copies option {@code option}'s value, NUL-terminated, into {@code buf} ({@code -ENAMETOOLONG} when it does not fit). */
        int rados_conf_get(long cluster, String option, long buf, long len);

        int rados_connect(long cluster);

        void rados_shutdown(long cluster);

        int rados_ioctx_create(long cluster, String pool, long ioctxOut);

        void rados_ioctx_set_namespace(long ioctx, String namespace);

        void rados_ioctx_destroy(long ioctx);
    }

    /** librbd: images and asynchronous I/O. */
    public interface Rbd {
        int rbd_open(long ioctx, String name, long imageOut, String snapName);

        int rbd_open_read_only(long ioctx, String name, long imageOut, String snapName);

        int rbd_close(long image);

        int rbd_get_size(long image, long sizeOut);

        /** Grows or shrinks the image (synchronous; a shrink drops the data past the new end). */
        int rbd_resize(long image, long size);

        int rbd_set_image_notification(long image, int fd, int type);

        int rbd_aio_create_completion(long callbackArg, long callback, long completionOut);

        int rbd_aio_readv(long image, long iov, int iovcnt, long offset, long completion);

        int rbd_aio_writev(long image, long iov, int iovcnt, long offset, long completion);

        int rbd_aio_flush(long image, long completion);

        /** Flushes librbd's writeback cache to the OSDs (synchronous): a clean close's last word. */
        int rbd_flush(long image);

        int rbd_aio_discard(long image, long offset, long length, long completion);

        int rbd_aio_write_zeroes(long image, long offset, long length, long completion, int zeroFlags, int opFlags);

        long rbd_aio_get_return_value(long completion);

        long rbd_aio_get_arg(long completion);

        void rbd_aio_release(long completion);

        int rbd_poll_io_events(long image, long completionsOut, int max);
    }

    /** {@code EVENT_TYPE_EVENTFD} of librbd.h: the notification descriptor is an eventfd. */
    static final int EVENT_TYPE_EVENTFD = 2;
    /** {@code RBD_WRITE_ZEROES_FLAG_THICK_PROVISION}: zeroed blocks stay allocated. */
    static final int WRITE_ZEROES_FLAG_THICK_PROVISION = 1;

    private static volatile Librbd loaded;

    final Rados rados;
    final Rbd rbd;

    private Librbd(Rados rados, Rbd rbd) {
        this.rados = rados;
        this.rbd = rbd;
    }

    /**
     * Loads librados.so.2 and librbd.so.1 once.
     *
     * @throws IllegalStateException when they are not installed (Debian: librbd1)
     */
    static Librbd get() {
        Librbd l = loaded;
        if (l != null) {
            return l;
        }
        synchronized (Librbd.class) {
            if (loaded == null) {
                Native.libc(); // disables jnr-ffi's fast stubs first (see the class comment)
                try {
                    Rados rados = LibraryLoader.create(Rados.class).failImmediately().load("librados.so.2");
                    Rbd rbd = LibraryLoader.create(Rbd.class).failImmediately().load("librbd.so.1");
                    loaded = new Librbd(rados, rbd);
                } catch (LinkageError | RuntimeException e) {
                    throw new IllegalStateException("librbd is not available (install librbd1): " + e.getMessage(), e);
                }
            }
            return loaded;
        }
    }

    /** Whether librbd can be loaded here. */
    static boolean available() {
        try {
            get();
            return true;
        } catch (IllegalStateException e) {
            return false;
        }
    }
}
