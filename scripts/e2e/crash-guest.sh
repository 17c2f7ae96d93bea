#!/bin/sh
# shellcheck shell=dash disable=SC2086
# (busybox ash: "local" exists; unquoted expansions split dd arguments on purpose)
# /crash-init of the crash-recovery guest (scripts/e2e/crash): the kernel runs it instead of
# /init (rdinit=/crash-init), in the initramfs scripts/e2e/prepare builds plus this file. It
# writes a region of /dev/vda with O_DIRECT while the host kills and restarts the backend, then
# reads the region back and compares, and powers off.
#
# Parameters on the kernel command line:
#   e2e.crash=OFF:LEN:CHUNK:WRITERS   write LEN bytes of random data at byte offset OFF, one O_DIRECT
#                                     dd of CHUNK bytes per chunk, from WRITERS concurrent writers
#                                     (chunk i by writer i % WRITERS), so that several requests are
#                                     in flight whenever the backend dies
#
# Output on the console, one record per line:
#   E2E-INFO key=value ...
#   E2E-PROGRESS n                        n chunks written so far (the host kills on these)
#   E2E-WRITE off=OFF len=LEN sha256=SUM   what the guest wrote, and where
#   E2E-RESULT ok | E2E-RESULT fail: REASON

. /lib/e2e-guest.sh   # console, /proc, /sys, DEV, SYS, finish, fail, param, mark, load_modules, wait_for_disk

# Writer W: chunks W, W + WRITERS, ... of the source, each its own O_DIRECT dd. Every finished
# chunk is a line on the console; any failed write leaves /tmp/failed.
writer() {
  local w=$1 c=$1
  while [ $c -lt $CHUNKS ]; do
    if ! dd if=/tmp/src of=$DEV bs=$CHUNK skip=$c seek=$((OFF / CHUNK + c)) count=1 \
         oflag=direct conv=notrunc,fsync 2>/tmp/err$w; then
      echo "chunk $c: $(tail -n1 /tmp/err$w)" >> /tmp/failed
      return 1
    fi
    echo "E2E-PROGRESS $c"
    c=$((c + WRITERS))
  done
}

spec=$(param crash) || fail "no e2e.crash on the command line"
OFF=${spec%%:*}; spec=${spec#*:}
LEN=${spec%%:*}; spec=${spec#*:}
CHUNK=${spec%%:*}; WRITERS=${spec#*:}
CHUNKS=$((LEN / CHUNK))
[ $((OFF % CHUNK)) -eq 0 ] && [ $((LEN % CHUNK)) -eq 0 ] || fail "OFF and LEN must be multiples of CHUNK"

mark init
load_modules
wait_for_disk
mark disk
dd if=/dev/urandom of=/tmp/src bs=$CHUNK count=$CHUNKS 2>/dev/null
[ "$(stat -c %s /tmp/src)" = "$LEN" ] || fail "could not make $LEN random bytes"
sum=$(sha256sum /tmp/src | cut -d' ' -f1)
mark "source ready"
echo "E2E-INFO writing $CHUNKS chunks of $CHUNK bytes from $WRITERS writers"

pids=
w=0
while [ $w -lt $WRITERS ]; do
  writer $w &
  pids="$pids $!"
  w=$((w + 1))
done
for pid in $pids; do
  wait $pid
done
[ -e /tmp/failed ] && fail "O_DIRECT write failed: $(head -n1 /tmp/failed)"
mark written

have=$(dd if=$DEV bs=$CHUNK skip=$((OFF / CHUNK)) count=$CHUNKS iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
[ "$have" = "$sum" ] || fail "region $OFF+$LEN reads back as $have, wrote $sum"
# An error the writers did not see (a retried request, a reset) still shows in the kernel log.
if dmesg | grep -q -i -e 'I/O error' -e 'blk_update_request' -e 'virtio_blk.*error'; then
  fail "the kernel logged a block I/O error"
fi
echo "E2E-WRITE off=$OFF len=$LEN sha256=$sum"
mark verified
finish ok
