package io.vblk.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.agrona.UnsafeApi;
import org.junit.jupiter.api.Test;

import io.vblk.hostmem.GuestMemory;
import io.vblk.testkit.SplitQueueDriver;
import io.vblk.vring.DescriptorChain;
import io.vblk.vring.QueueState;
import io.vblk.vring.SplitQueue;

/**
 * rev13a: SEG_MAX limits a request's data descriptors (virtio 1.2 5.2.4), not the host segments
 * they become: a buffer crossing from one guest region into the adjacent one is split in two, and
 * a conforming request with seg_max descriptors must still be served. One descriptor more than
 * seg_max still fails with IOERR.
 */
class SegMaxCountsDescriptorsTest {
    private static final long REGION = 1L << 20;

    @Test
    void aBufferCrossingAdjacentRegionsCountsAsOneDescriptor() {
        try (GuestMemory mem = twoRegions()) {
            SplitQueueDriver d = driver(mem);
            // 2048 bytes in region 0, 2048 in region 1; then a buffer within region 1
            RequestParser.Outcome outcome = parseRead(mem, d, new long[] {REGION - 2048, REGION + 8192}, 2);
            assertEquals(RequestParser.Outcome.SUBMIT, outcome, "2 data descriptors on a seg_max-2 device");
        }
    }

    @Test
    void oneDescriptorPastSegMaxFails() {
        try (GuestMemory mem = twoRegions()) {
            SplitQueueDriver d = driver(mem);
            RequestParser.Outcome outcome = parseRead(mem, d, new long[] {REGION + 8192, REGION + 16384, REGION + 24576}, 2);
            assertEquals(RequestParser.Outcome.IMMEDIATE, outcome, "3 data descriptors on a seg_max-2 device");
        }
    }

    private static GuestMemory twoRegions() {
        return GuestMemory.builder().addMemfd(0, REGION).addMemfd(REGION, REGION).build();
    }

    private static SplitQueueDriver driver(GuestMemory mem) {
        return SplitQueueDriver.builder(mem).size(16).area(0, 256 * 1024).build();
    }

    /** Posts a read of 4 KiB into each of {@code buffers} and parses it on a device offering {@code segMax}. */
    private static RequestParser.Outcome parseRead(GuestMemory mem, SplitQueueDriver d, long[] buffers, int segMax) {
        long hdr = d.allocate(16, 16);
        long status = d.allocate(1, 1);
        UnsafeApi.putInt(d.hostAddress(hdr, 16), BlkRequestDescriptor.T_IN);
        UnsafeApi.putLong(d.hostAddress(hdr, 16) + 8, 0);
        int n = buffers.length + 2;
        long[] gpas = new long[n];
        int[] lengths = new int[n];
        boolean[] writable = new boolean[n];
        gpas[0] = hdr;
        lengths[0] = 16;
        for (int i = 0; i < buffers.length; i++) {
            gpas[i + 1] = buffers[i];
            lengths[i + 1] = 4096;
            writable[i + 1] = true;
        }
        gpas[n - 1] = status;
        lengths[n - 1] = 1;
        writable[n - 1] = true;
        int head = d.addDirect(gpas, lengths, writable, n);
        d.publishAvail();

        SplitQueue q = new SplitQueue(0, 64);
        assertEquals(0, q.restore(mem, new QueueState(16, d.descGpa(), d.availGpa(), d.usedGpa(), 0, 0), false, false));
        DescriptorChain chain = q.newChain();
        assertEquals(1, q.pop(chain));
        assertEquals(head, chain.head());

        BlkConfig config = BlkConfig.builder(64L << 20).queueSize(16).segMax(segMax).build();
        DeviceModel model = new DeviceModel(config);
        model.negotiate(config.offeredFeatures());
        BlkRequest r = new BlkRequest(0, BlkRequest.dataCapacity(config.segMax()));
        r.clear();
        RequestParser.Outcome outcome = new RequestParser(model).parse(chain, r);
        if (outcome == RequestParser.Outcome.SUBMIT) {
            assertEquals(4096L * buffers.length, r.data.totalLength(), "every byte of the buffers, split or not");
        } else {
            assertEquals(BlkRequestDescriptor.S_IOERR, r.immediateStatus);
        }
        return outcome;
    }
}
