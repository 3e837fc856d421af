#!/bin/bash
# layer-qcow2-reload: reads of a qcow2 entry's data clusters go to the
# cache like reads without layers and are answered from the backend's
# completion, holding the qcow2 layer without a lock. Reloads that change
# the entry swap a new definition in and close the old stack while such
# reads are in flight (a 20 ms delay on every server read): the old layer
# waits for them, every read returns the bytes `qemu-img convert` gives,
# and the daemon lives (under make check-asan: no use after free).
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/mount.sh"
. "$TOP/tests/lib/nbdkit.sh"
requires qemu-img

pattern "$TMP/raw" 16
qemu-img convert -f raw -O qcow2 "$TMP/raw" "$TMP/d.qcow2" || fail "qemu-img convert"
nbdkit_unix d -r --filter=delay file "$TMP/d.qcow2" rdelay=20ms
SOCK=$(nbdkit_sock d)
TAB=$TMP/tab
MNT=$TMP/mnt

table() { echo "d nbd+unix:///?socket=$SOCK format=qcow2,readahead=$1" >"$TAB"; }

# reload READAHEAD: rewrite the table, SIGHUP, wait until it is done.
reload() {
    table "$1"
    hup_reload "$MNT" || { show_log "$MNT.log"; fail "reload to readahead=$1 did not finish"; }
}

table 128K
nd_mount "$TAB" "$MNT" -v

# reader K: O_DIRECT 4 KiB reads at random blocks, each compared with the
# raw image, until the stop file (at most 400 reads).
reader() {
    local i b
    for i in $(seq 1 400); do
        [ -e "$TMP/stop" ] && break
        b=$(( (RANDOM * 32768 + RANDOM) % 4096 ))
        dd if="$MNT/d" bs=4k skip=$b count=1 iflag=direct status=none >"$TMP/got.$1" 2>>"$TMP/err.$1" ||
            { echo "read of block $b failed" >>"$TMP/bad.$1"; continue; }
        dd if="$TMP/raw" bs=4k skip=$b count=1 status=none | cmp -s - "$TMP/got.$1" ||
            echo "block $b differs" >>"$TMP/bad.$1"
    done
}

echo "== 4 readers of random 4 KiB blocks while 20 reloads swap the entry"
pids=()
for k in 1 2 3 4; do reader $k & pids+=($!); done
for i in $(seq 1 10); do reload 256K; reload 128K; done
touch "$TMP/stop"
wait "${pids[@]}"
if cat "$TMP"/bad.* 2>/dev/null | grep -q .; then
    cat "$TMP"/bad.* "$TMP"/err.* 2>/dev/null | head -n 5 >&2
    show_log "$MNT.log"
    fail "reads during the reloads went wrong"
fi
kill -0 "$(cat "$MNT.pid")" 2>/dev/null || { show_log "$MNT.log"; fail "the daemon died"; }
cmp "$MNT/d" "$TMP/raw" || fail "the decoded image differs after the reloads"
check_sanitizers "$MNT.log"
grep -q 'error: ' "$MNT.log" && { show_log "$MNT.log"; fail "errors in the log"; }
echo "ok: reads stayed right across 20 reloads"
