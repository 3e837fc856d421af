#!/bin/bash
# connections=N opens N connections when the server advertises multi-conn
# (ss shows them), and only one (requests pipelined on it) when it does
# not; the bytes are right either way.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/nbdkit.sh"
requires ss

pattern "$TMP/disk.img" 16
# The delay keeps requests in flight long enough to overlap.
nbdkit_tcp mc 127.0.0.1 --filter=delay file "$TMP/disk.img" rdelay=20ms
nbdkit_tcp one 127.0.0.1 --filter=multi-conn --filter=delay file "$TMP/disk.img" \
    rdelay=20ms multi-conn-mode=disable
PM=$(nbdkit_port mc) PO=$(nbdkit_port one)
cat > "$TMP/tab" <<TAB
mc   nbd://127.0.0.1:$PM/  connections=4
one  nbd://127.0.0.1:$PO/  connections=4
TAB
nd_mount "$TMP/tab" "$TMP/mnt"

conns() { ss -Htn state established "( dport = :$1 )" | wc -l; }
load() {
    local pids=() i
    for i in $(seq 0 7); do
        dd if="$TMP/mnt/$1" of="$TMP/part.$1.$i" bs=64k count=4 skip=$((i * 32)) iflag=direct status=none &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || fail "parallel read of $1 failed"; done
    for i in $(seq 0 7); do
        cmp "$TMP/part.$1.$i" <(dd if="$TMP/disk.img" bs=64k count=4 skip=$((i * 32)) status=none) ||
            fail "$1: part $i differs"
    done
}
load mc
load mc
n=$(conns "$PM")
[ "$n" -eq 4 ] || { ss -tn; show_log "$TMP/mnt.log"; fail "multi-conn server: $n connections open, want 4"; }
echo "ok: multi-conn server: $n connections"
load one
load one
n=$(conns "$PO")
[ "$n" -eq 1 ] || { ss -tn; fail "server without multi-conn: $n connections open, want 1"; }
echo "ok: server without multi-conn: $n connection"
cmp "$TMP/mnt/mc" "$TMP/disk.img" || fail "mc differs"
cmp "$TMP/mnt/one" "$TMP/disk.img" || fail "one differs"
nd_unmount "$TMP/mnt"
