# shellcheck shell=bash
# What the host side of every e2e test (run, crash, migrate, netfault) shares; each sources it.

# The state letter of process PID (R, S, T, Z, ...), empty when it no longer exists; no fork, as
# it runs in tight loops. A dead child stays a zombie (Z) until waited for.
proc_state() {
  local line=""
  { read -r line < "/proc/$1/stat"; } 2>/dev/null || true
  line="${line##*) }"
  echo "${line%% *}"
}
alive() { local s; s="$(proc_state "$1")"; [ -n "$s" ] && [ "$s" != Z ]; }

# Stops a process group we started with setsid (leader PID): TERM, up to 10 s, then KILL, which
# also catches what the leader left behind (e.g. a JVM under a wrapper script).
# Sets STOP_STATUS to the leader's exit status ("killed" if it needed the KILL).
stop_group() {
  local pid="$1"
  STOP_STATUS=""
  [ -n "$pid" ] || return 0
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    alive "$pid" || break
    sleep 0.1
  done
  alive "$pid" && STOP_STATUS=killed
  kill -KILL -- "-$pid" 2>/dev/null || true
  local rc=0
  wait "$pid" 2>/dev/null || rc=$?
  [ -n "$STOP_STATUS" ] || STOP_STATUS=$rc
}

# sha256 of COUNT bytes of FILE at byte offset SKIP.
file_sum() {
  dd if="$1" bs=64K skip="$2" count="$3" iflag=skip_bytes,count_bytes status=none | sha256sum | cut -d' ' -f1
}

# Writes to OUT the prepared initramfs BASE plus SCRIPT as /NAME (the kernel runs it with
# rdinit=/NAME instead of /init), using DIR as scratch space.
initrd_with() {
  local base="$1" script="$2" name="$3" dir="$4" out="$5"
  mkdir -p "$dir"
  cp "$script" "$dir/$name"
  chmod 755 "$dir/$name"
  (cd "$dir" && echo "$name" | cpio -o -H newc --quiet --owner=0:0 | gzip -6) > "$dir.cpio.gz"
  cat "$base" "$dir.cpio.gz" > "$out"
}
