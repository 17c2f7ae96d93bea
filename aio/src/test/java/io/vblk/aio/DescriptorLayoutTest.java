package io.vblk.aio;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.Test;

/**
 * The layouts against offsetof/sizeof as printed by a C program compiled against this machine's
 * linux/aio_abi.h, linux/io_uring.h and linux/stat.h (Linux 6.x UAPI, x86-64).
 */
class DescriptorLayoutTest {
    @Test
    void iocbAndIoEvent() {
        assertEquals(0, LinuxAioDescriptor.IOCB_DATA_OFFSET);
        assertEquals(8, LinuxAioDescriptor.IOCB_KEY_OFFSET);
        assertEquals(12, LinuxAioDescriptor.IOCB_RW_FLAGS_OFFSET);
        assertEquals(16, LinuxAioDescriptor.IOCB_OPCODE_OFFSET);
        assertEquals(18, LinuxAioDescriptor.IOCB_REQPRIO_OFFSET);
        assertEquals(20, LinuxAioDescriptor.IOCB_FILDES_OFFSET);
        assertEquals(24, LinuxAioDescriptor.IOCB_BUF_OFFSET);
        assertEquals(32, LinuxAioDescriptor.IOCB_NBYTES_OFFSET);
        assertEquals(40, LinuxAioDescriptor.IOCB_OFFSET_OFFSET);
        assertEquals(48, LinuxAioDescriptor.IOCB_RESERVED2_OFFSET);
        assertEquals(56, LinuxAioDescriptor.IOCB_FLAGS_OFFSET);
        assertEquals(60, LinuxAioDescriptor.IOCB_RESFD_OFFSET);
        assertEquals(64, LinuxAioDescriptor.IOCB_LENGTH);
        assertEquals(3, LinuxAioDescriptor.IOCB_CMD_FDSYNC);
        assertEquals(7, LinuxAioDescriptor.IOCB_CMD_PREADV);
        assertEquals(8, LinuxAioDescriptor.IOCB_CMD_PWRITEV);
        assertEquals(0, LinuxAioDescriptor.EVENT_DATA_OFFSET);
        assertEquals(8, LinuxAioDescriptor.EVENT_OBJ_OFFSET);
        assertEquals(16, LinuxAioDescriptor.EVENT_RES_OFFSET);
        assertEquals(24, LinuxAioDescriptor.EVENT_RES2_OFFSET);
        assertEquals(32, LinuxAioDescriptor.EVENT_LENGTH);
        assertEquals(32, LinuxAioDescriptor.RING_HEADER_LENGTH);
    }

    @Test
    void ioUringParamsSqeAndCqe() {
        assertEquals(0, IoUringDescriptor.PARAMS_SQ_ENTRIES_OFFSET);
        assertEquals(4, IoUringDescriptor.PARAMS_CQ_ENTRIES_OFFSET);
        assertEquals(8, IoUringDescriptor.PARAMS_FLAGS_OFFSET);
        assertEquals(20, IoUringDescriptor.PARAMS_FEATURES_OFFSET);
        assertEquals(40, IoUringDescriptor.PARAMS_SQ_OFF_OFFSET);
        assertEquals(80, IoUringDescriptor.PARAMS_CQ_OFF_OFFSET);
        assertEquals(120, IoUringDescriptor.PARAMS_LENGTH);
        assertEquals(24, IoUringDescriptor.SQ_OFF_ARRAY);
        assertEquals(20, IoUringDescriptor.CQ_OFF_CQES);
        assertEquals(0, IoUringDescriptor.SQE_OPCODE_OFFSET);
        assertEquals(1, IoUringDescriptor.SQE_FLAGS_OFFSET);
        assertEquals(2, IoUringDescriptor.SQE_IOPRIO_OFFSET);
        assertEquals(4, IoUringDescriptor.SQE_FD_OFFSET);
        assertEquals(8, IoUringDescriptor.SQE_OFF_OFFSET);
        assertEquals(16, IoUringDescriptor.SQE_ADDR_OFFSET);
        assertEquals(24, IoUringDescriptor.SQE_LEN_OFFSET);
        assertEquals(28, IoUringDescriptor.SQE_OP_FLAGS_OFFSET);
        assertEquals(32, IoUringDescriptor.SQE_USER_DATA_OFFSET);
        assertEquals(40, IoUringDescriptor.SQE_BUF_INDEX_OFFSET);
        assertEquals(42, IoUringDescriptor.SQE_PERSONALITY_OFFSET);
        assertEquals(44, IoUringDescriptor.SQE_SPLICE_FD_IN_OFFSET);
        assertEquals(48, IoUringDescriptor.SQE_ADDR3_OFFSET);
        assertEquals(64, IoUringDescriptor.SQE_LENGTH);
        assertEquals(0, IoUringDescriptor.CQE_USER_DATA_OFFSET);
        assertEquals(8, IoUringDescriptor.CQE_RES_OFFSET);
        assertEquals(12, IoUringDescriptor.CQE_FLAGS_OFFSET);
        assertEquals(16, IoUringDescriptor.CQE_LENGTH);
        assertEquals(1, IoUringDescriptor.OP_READV);
        assertEquals(2, IoUringDescriptor.OP_WRITEV);
        assertEquals(3, IoUringDescriptor.OP_FSYNC);
        assertEquals(17, IoUringDescriptor.OP_FALLOCATE);
    }

    @Test
    void statxAndIovec() {
        assertEquals(152, StatxDescriptor.DIO_MEM_ALIGN_OFFSET);
        assertEquals(156, StatxDescriptor.DIO_OFFSET_ALIGN_OFFSET);
        assertEquals(256, StatxDescriptor.LENGTH);
        assertEquals(16, IovecDescriptor.LENGTH);
    }
}
