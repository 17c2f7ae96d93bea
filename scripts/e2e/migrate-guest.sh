#!/bin/sh
# shellcheck shell=dash disable=SC2086
# (busybox ash: "local" exists; unquoted expansions split dd arguments on purpose)
# /migrate-init of the live-migration guest (scripts/e2e/migrate): the kernel runs it instead of
# /init (rdinit=/migrate-init), in the initramfs scripts/e2e/prepare builds plus this file. While
# the host migrates the VM back and forth, it keeps writing blocks of a region of /dev/vda and
# reading the whole region back, until the host puts STOP into the control sector; then it
# verifies once more and powers off.
#
# Why this catches a backend that does not log its writes into guest memory: /dev/vda stays
# open (its last close would drop the page cache), so the region is read through the page cache,
# whose pages the DEVICE filled; with init_on_alloc=0 on the kernel command line (Debian zeroes
# new pages otherwise) a page the backend wrote on the source but did not log arrives on the
# destination with whatever it held before, and the next buffered read of it mismatches. Each
# round also writes one block with O_DIRECT (which drops it from the page cache, so the device
# fills it again) and reads it with O_DIRECT (the device writes dd's buffer).
#
# Parameters on the kernel command line:
#   e2e.migrate=OFF:BLOCKS:BLOCK:CTRL   the region: BLOCKS blocks of BLOCK bytes at byte offset OFF;
#                                       CTRL: byte offset of the control block (4 KiB) the host writes
#
# Output on the console, one record per line:
#   E2E-INFO ...
#   E2E-PROGRESS n                        round n verified (the host migrates on these)
#   E2E-WRITE off=OFF len=LEN sha256=SUM   what the region holds at the end
#   E2E-RESULT ok | E2E-RESULT fail: REASON

. /lib/e2e-guest.sh   # console, /proc, /sys, DEV, SYS, finish, fail, param, mark, load_modules, wait_for_disk
mount -t tmpfs tmp /tmp

# Which block differs between the region as read and the expected copy, for the failure report.
first_bad_block() {
  local b=0
  while [ $b -lt $BLOCKS ]; do
    if ! dd if=$1 bs=$BLOCK skip=$b count=1 2>/dev/null | cmp -s - /tmp/blk$b; then
      echo $b; return 0
    fi
    b=$((b + 1))
  done
  echo none
}

# The whole region through the page cache (most of it filled by the device in earlier rounds,
# before some migration) against the copy the guest keeps in RAM.
# Piped, not stored: writing a copy into tmpfs every round would recycle freshly CPU-written
# pages into the page cache, and QEMU re-sends CPU-written pages anyway, hiding a missing log.
verify_buffered() {
  local have
  have=$(dd if=$DEV bs=$BLOCK skip=$((OFF / BLOCK)) count=$BLOCKS 2>/dev/null | sha256sum | cut -d' ' -f1)
  if [ "$have" != "$(sha256sum /tmp/region | cut -d' ' -f1)" ]; then
    dd if=$DEV bs=$BLOCK skip=$((OFF / BLOCK)) count=$BLOCKS 2>/dev/null > /tmp/read
    fail "round $1: buffered read of the region mismatches (first bad block $(first_bad_block /tmp/read))"
  fi
}

spec=$(param migrate) || fail "no e2e.migrate on the command line"
OFF=${spec%%:*}; spec=${spec#*:}
BLOCKS=${spec%%:*}; spec=${spec#*:}
BLOCK=${spec%%:*}; CTRL=${spec#*:}
LEN=$((BLOCKS * BLOCK))

load_modules
wait_for_disk
# Held open for the whole run: the page cache of /dev/vda survives between the reads.
exec 3<$DEV
echo "E2E-INFO init_on_alloc=$(cat /sys/module/page_alloc/parameters/init_on_alloc 2>/dev/null || echo '?') region $OFF+$LEN"

# The guest's copy of the region starts as what the disk holds.
dd if=$DEV bs=$BLOCK skip=$((OFF / BLOCK)) count=$BLOCKS iflag=direct 2>/dev/null > /tmp/region \
  || fail "first read of the region failed"
b=0
while [ $b -lt $BLOCKS ]; do
  dd if=/tmp/region bs=$BLOCK skip=$b count=1 2>/dev/null > /tmp/blk$b
  b=$((b + 1))
done

round=0
while :; do
  round=$((round + 1))
  b=$((round % BLOCKS))
  dd if=/dev/urandom of=/tmp/blk$b bs=$BLOCK count=1 2>/dev/null
  dd if=/tmp/blk$b of=$DEV bs=$BLOCK seek=$((OFF / BLOCK + b)) count=1 oflag=direct conv=notrunc 2>/tmp/err \
    || fail "round $round: O_DIRECT write of block $b failed: $(tail -n1 /tmp/err)"
  dd if=/tmp/blk$b of=/tmp/region bs=$BLOCK seek=$b count=1 conv=notrunc 2>/dev/null
  dd if=$DEV bs=$BLOCK skip=$((OFF / BLOCK + b)) count=1 iflag=direct 2>/dev/null | cmp -s - /tmp/blk$b \
    || fail "round $round: O_DIRECT read of block $b mismatches"
  # Every third round the region's page cache is dropped first, so the device fills all of it
  # again: into pages the guest's CPU has not written (the freed cache pages themselves, mostly),
  # which QEMU re-sends only if the backend logs its writes. The rounds in between read it from
  # the cache: the first of them on the destination finds any page the backend did not log.
  if [ $((round % 3)) = 0 ]; then
    blockdev --flushbufs $DEV || fail "round $round: blockdev --flushbufs failed"
  fi
  verify_buffered $round
  echo "E2E-PROGRESS $round"
  # O_DIRECT wants the disk's logical block size (vblk announces the file system's, 4 KiB).
  dd if=$DEV bs=4096 skip=$((CTRL / 4096)) count=1 iflag=direct 2>/tmp/err > /tmp/ctrl \
    || fail "round $round: reading the control block failed: $(tail -n1 /tmp/err)"
  grep -q STOP /tmp/ctrl && break
done

verify_buffered final
have=$(dd if=$DEV bs=$BLOCK skip=$((OFF / BLOCK)) count=$BLOCKS iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
sum=$(sha256sum /tmp/region | cut -d' ' -f1)
[ "$have" = "$sum" ] || fail "final O_DIRECT read of the region mismatches"
if dmesg | grep -q -i -e 'I/O error' -e 'blk_update_request' -e 'virtio_blk.*error'; then
  fail "the kernel logged a block I/O error"
fi
echo "E2E-WRITE off=$OFF len=$LEN sha256=$sum"
echo "E2E-INFO rounds=$round"
exec 3<&-
finish ok
