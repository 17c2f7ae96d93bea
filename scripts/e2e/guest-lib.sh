# shellcheck shell=dash disable=SC2046,SC2086
# What every e2e guest script shares (busybox ash). scripts/e2e/prepare puts this file into the
# initramfs as /lib/e2e-guest.sh; guest-init.sh, crash-guest.sh and migrate-guest.sh source it
# first. Sourcing it sets up the guest's console, /proc and /sys, and DEV and SYS.

export PATH=/bin
mount -t devtmpfs dev /dev 2>/dev/null
# The console may not be open yet if the initramfs had no /dev/console node.
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sys /sys

DEV=/dev/vda
SYS=/sys/block/vda

# Reports RESULT as the last console record and powers off.
finish() {
  echo "E2E-RESULT $*"
  sync
  poweroff -f
  sleep 10   # poweroff -f does not return; if it did, panic=-1 and -no-reboot end QEMU
  exit 1
}
fail() {
  # Kernel messages (I/O errors, virtio complaints) explain most failures.
  dmesg | tail -n 15 | sed 's/^/E2E-DMESG /'
  finish "fail: $*"
}

# Reads key from /proc/cmdline: e2e.KEY=VALUE (values have no spaces).
param() {
  local kv
  for kv in $(cat /proc/cmdline); do
    case "$kv" in "e2e.$1="*) echo "${kv#e2e."$1"=}"; return 0 ;; esac
  done
  return 1
}

# A timestamped progress note on the console.
mark() { echo "E2E-INFO t=$(cut -d' ' -f1 /proc/uptime) $1"; }

load_modules() {
  local m
  for m in $(cat /lib/modules/order); do
    # Built in or absent in this kernel: nothing to load.
    [ -f /lib/modules/$m.ko ] || continue
    insmod /lib/modules/$m.ko || fail "insmod $m failed"
  done
}

wait_for_disk() {
  local i=0
  # Under TCG probing can take a moment after insmod returns; up to 60 s (a hang guard: TCG on
  # a loaded 2-core host is slow, and the host's own timeout bounds the whole run anyway).
  while [ ! -b $DEV ] || [ ! -e $SYS/size ]; do
    i=$((i + 1))
    [ $i -le 600 ] || fail "no $DEV after 60 s"
    sleep 0.1
  done
}
