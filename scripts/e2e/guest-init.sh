#!/bin/sh
# shellcheck shell=dash disable=SC2046,SC2086
# (busybox ash: "local" exists; unquoted expansions split dd arguments on purpose)
# /init of the end-to-end test guest (busybox ash, no libc, no udev). It checks the virtio-blk
# disk /dev/vda served by the vhost-user-blk backend under test, then powers off.
#
# Parameters come on the kernel command line (the host's scripts/e2e/run sets them):
#   e2e.sectors=N            expected capacity in 512-byte sectors
#   e2e.serial=ID            expected serial ("-" skips the check)
#   e2e.queues=N             expected number of blk-mq hardware queues
#   e2e.read=OFF:LEN:SHA256  a region the host filled; its checksum before the guest writes
#   e2e.writes=OFF:LEN:BS,.. regions to fill with random data (dd block size BS); spread over CPUs
#   e2e.discard=OFF:LEN      a region to discard at the end
#   e2e.resize=N             print E2E-RESIZE-READY, then wait for the capacity to become N sectors
#                            (the host resizes the disk online) and read the new last block
#
# Output on the console, one record per line (the host parses these):
#   E2E-INFO key=value ...
#   E2E-WRITE off=OFF len=LEN sha256=SUM     what the guest wrote, and where
#   E2E-RESULT ok | E2E-RESULT fail: REASON  always the last record

. /lib/e2e-guest.sh   # console, /proc, /sys, DEV, SYS, finish, fail, param, mark, load_modules, wait_for_disk

# Field N (1-based) of /sys/block/vda/stat: 12 discard I/Os, 16 flush I/Os (Linux 5.5+).
stat_field() { set -- "$1" $(cat $SYS/stat); shift "$1"; echo "$1"; }

# dd arguments that cover LEN bytes at byte offset OFF of the disk in blocks of up to 64 KiB
# (OFF and LEN are multiples of 512; smaller blocks where 64 KiB does not divide them).
dd_span() {
  local off=$1 len=$2 bs=65536
  while [ $((off % bs)) -ne 0 ] || [ $((len % bs)) -ne 0 ]; do bs=$((bs / 2)); done
  echo "bs=$bs skip=$((off / bs)) count=$((len / bs))"
}

# sha256 of LEN bytes at OFF, read with O_DIRECT.
read_sum() {
  dd if=$DEV $(dd_span "$1" "$2") iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1
}

check_identity() {
  local want have
  want=$(param sectors) || fail "no e2e.sectors on the command line"
  have=$(cat $SYS/size)
  [ "$have" = "$want" ] || fail "capacity $have sectors, expected $want"

  want=$(param serial) || want=-
  have=$(cat $SYS/serial 2>/dev/null)
  echo "E2E-INFO serial=$have"
  [ "$want" = - ] || [ "$have" = "$want" ] || fail "serial '$have', expected '$want'"

  want=$(param queues) || want=1
  have=$(ls $SYS/mq | wc -l)
  [ "$have" = "$want" ] || fail "$have hardware queues in $SYS/mq, expected $want"

  [ "$(cat $SYS/ro)" = 0 ] || fail "disk is read-only"

  # Negotiated virtio features, one character per bit. Bit 9 is VIRTIO_BLK_F_FLUSH.
  local features wc
  features=$(cat $SYS/device/features)
  [ "$(echo "$features" | cut -c10)" = 1 ] || fail "the device offers no flush (VIRTIO_BLK_F_FLUSH)"
  # A device that says its cache is write through (wce=0 in its config, as qemu-storage-daemon
  # does) gets no flushes from Linux. Such a device has VIRTIO_BLK_F_CONFIG_WCE (bit 11): switch
  # it to write back through its config space (a SET_CONFIG to the backend), so that the fsync
  # below sends a real VIRTIO_BLK_T_FLUSH.
  wc=$(cat $SYS/queue/write_cache)
  if [ "$wc" != "write back" ]; then
    [ "$(echo "$features" | cut -c12)" = 1 ] || fail "write_cache is '$wc' and the device cannot be switched (no CONFIG_WCE)"
    echo "write back" > $SYS/cache_type || fail "cannot switch the device's cache to write back"
    [ "$(cat $SYS/queue/write_cache)" = "write back" ] || fail "the device's cache stays '$(cat $SYS/queue/write_cache)' after switching to write back"
  fi
  echo "E2E-INFO sectors=$(cat $SYS/size) queues=$(ls $SYS/mq | wc -l) cpus=$(nproc) write_cache='$wc' discard_max_bytes=$(cat $SYS/queue/discard_max_bytes)"
  echo "E2E-INFO features=$features"
}

# The host filled the disk: what the guest reads must be what the host wrote.
check_host_data() {
  local spec off len want have
  spec=$(param read) || return 0
  off=${spec%%:*}; spec=${spec#*:}; len=${spec%%:*}; want=${spec#*:}
  have=$(read_sum "$off" "$len")
  [ "$have" = "$want" ] || fail "host data at $off+$len reads as $have, host wrote $want"
}

# Writes random data to every region with O_DIRECT, one dd per region, regions spread over the
# CPUs (with several queues each CPU submits on its own queue); then reads every region back
# with O_DIRECT and compares checksums.
write_and_verify() {
  local specs ncpu i spec off len bs pids sum
  specs=$(param writes) || fail "no e2e.writes on the command line"
  specs=$(echo "$specs" | tr , ' ')
  ncpu=$(nproc)
  i=0; pids=
  for spec in $specs; do
    off=${spec%%:*}; spec=${spec#*:}; len=${spec%%:*}; bs=${spec#*:}
    dd if=/dev/urandom of=/tmp/w$i bs=$len count=1 2>/dev/null
    [ "$(stat -c %s /tmp/w$i)" = "$len" ] || fail "could not make $len random bytes"
    sha256sum /tmp/w$i | cut -d' ' -f1 > /tmp/w$i.sum
    taskset $((1 << (i % ncpu))) dd if=/tmp/w$i of=$DEV bs=$bs seek=$((off / bs)) oflag=direct conv=notrunc 2>/tmp/w$i.err &
    pids="$pids $!"
    i=$((i + 1))
  done
  i=0
  for pid in $pids; do
    wait $pid || fail "O_DIRECT write of region $i failed: $(tail -n1 /tmp/w$i.err)"
    i=$((i + 1))
  done

  # Read back in parallel too, each region from another CPU than the one that wrote it.
  i=0; pids=
  for spec in $specs; do
    off=${spec%%:*}; spec=${spec#*:}; len=${spec%%:*}
    taskset $((1 << ((i + 1) % ncpu))) dd if=$DEV $(dd_span "$off" "$len") iflag=direct 2>/dev/null \
      | sha256sum | cut -d' ' -f1 > /tmp/r$i.sum &
    pids="$pids $!"
    i=$((i + 1))
  done
  for pid in $pids; do wait $pid; done

  i=0
  for spec in $specs; do
    off=${spec%%:*}; spec=${spec#*:}; len=${spec%%:*}
    sum=$(cat /tmp/w$i.sum)
    [ "$(cat /tmp/r$i.sum)" = "$sum" ] || fail "region $off+$len reads back as $(cat /tmp/r$i.sum), wrote $sum"
    echo "E2E-WRITE off=$off len=$len sha256=$sum"
    i=$((i + 1))
  done
}

# fsync on the block device sends a flush (the device is write back); count it in the stats.
flush() {
  local before after
  before=$(stat_field 16)
  sync $DEV || fail "fsync of $DEV failed"
  after=$(stat_field 16)
  [ "$after" -gt "$before" ] || fail "fsync sent no flush (flush count $before -> $after)"
}

discard() {
  local spec off len before after
  spec=$(param discard) || return 0
  off=${spec%%:*}; len=${spec#*:}
  [ "$(cat $SYS/queue/discard_max_bytes)" -gt 0 ] || fail "the device offers no discard"
  before=$(stat_field 12)
  blkdiscard -o "$off" -l "$len" $DEV || fail "blkdiscard $off+$len failed"
  after=$(stat_field 12)
  [ "$after" -gt "$before" ] || fail "blkdiscard sent no discard (count $before -> $after)"
  echo "E2E-DISCARD off=$off len=$len"
}

mark init
load_modules
wait_for_disk
mark disk
check_identity
check_host_data
mark read
write_and_verify
mark written
flush
discard
flush
online_resize() {
  local want i
  want=$(param resize) || return 0
  echo "E2E-RESIZE-READY"
  i=0
  while [ "$(cat $SYS/size)" != "$want" ]; do
    i=$((i + 1))
    [ $i -le 600 ] || fail "capacity still $(cat $SYS/size) sectors 60 s after E2E-RESIZE-READY, want $want"
    sleep 0.1
  done
  dd if=$DEV of=/dev/null bs=4096 skip=$((want / 8 - 1)) count=1 iflag=direct 2>/dev/null \
    || fail "cannot read the last block after the resize"
  echo "E2E-INFO resized to $want sectors without a reboot"
}

online_resize
mark finished
finish ok
