#!/bin/bash
# tgtd is shut down in the middle of a long dd and started again on the
# same LUN file: the session is re-established (a fresh login) and the
# copy completes with the right checksum, reading and writing. Left down, a
# read fails with EIO within reconnect-delay (plus slack), nothing hangs,
# the mount stays up and works again once the target is back.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/tgtd.sh"

P=$(tgt_free_port)
IQN=iqn.2026-01.test.netdiskfs:reconnect
pattern "$TMP/disk.img" 64
pattern "$TMP/wdisk.img" 48
serve() {
    tgtd_start "$P"
    tgt_target "$P" 1 "$IQN"
    tgt_lun "$P" 1 1 "$TMP/disk.img"
    tgt_lun "$P" 1 2 "$TMP/wdisk.img"
}
serve
cat > "$TMP/tab" <<TAB
big    iscsi://127.0.0.1:$P/$IQN/1  reconnect-delay=20,cache=none
wbig   iscsi://127.0.0.1:$P/$IQN/2  reconnect-delay=20
down   iscsi://127.0.0.1:$P/$IQN/1  reconnect-delay=3
TAB
nd_mount "$TMP/tab" "$TMP/mnt"
M=$TMP/mnt

# paced: copy stdin to stdout 1 MiB at a time, at most 20 MiB/s. After
# 8 MiB it says so ($TMP/half) and waits for $TMP/go: the test stops tgtd
# right then, so the dd at the other end of the pipe is certainly in the
# middle of its copy.
paced() {
    local i=0
    while dd bs=1M count=1 iflag=fullblock status=none > "$TMP/chunk" &&
        [ -s "$TMP/chunk" ]; do
        cat "$TMP/chunk"
        i=$((i + 1))
        if [ $i -eq 8 ]; then
            touch "$TMP/half"
            wait_for 30 test -e "$TMP/go"
        fi
        sleep 0.05
    done
}
size() { stat -c %s "$1" 2>/dev/null || echo 0; }
# halfway WHAT: wait until the copy is halfway, let it go on, stop tgtd
halfway() {
    wait_for 30 test -e "$TMP/half" || fail "$1 made no progress in 30 s"
    rm -f "$TMP/half"
    touch "$TMP/go"
    tgtd_stop "$P"
    rm -f "$TMP/go"
}

# Reading.
(set -o pipefail
 dd if="$M/big" bs=64k iflag=direct status=none 2>"$TMP/dd.err" | paced > "$TMP/copy") &
ddpid=$!
halfway "the reading dd"
got=$(size "$TMP/copy")
[ "$got" -lt $((64 << 20)) ] || fail "dd finished before tgtd was stopped (too fast to test)"
echo "stopped tgtd in the middle of dd ($got bytes copied)"
sleep 2
serve
wait $ddpid || { cat "$TMP/dd.err"; show_log "$M.log"; fail "dd failed across the restart"; }
[ "$(sha256sum < "$TMP/copy")" = "$(sha256sum < "$TMP/disk.img")" ] ||
    { cmp "$TMP/copy" "$TMP/disk.img" | head -n 3; show_log "$M.log"; fail "the copy made across the restart has the wrong checksum"; }
grep -qi "connection lost" "$M.log" || { show_log "$M.log"; fail "the log does not mention the lost session"; }
echo "ok: read: dd survived a tgtd restart, sha256 $(sha256sum < "$TMP/copy" | cut -c1-16)"

# Writing: the same across a restart, checked in the backing file.
pattern "$TMP/src" 48
(set -o pipefail
 paced < "$TMP/src" | tee "$TMP/fed" |
     dd of="$M/wbig" bs=64k iflag=fullblock oflag=direct conv=notrunc status=none 2>"$TMP/wdd.err") &
ddpid=$!
halfway "the writing dd"
fed=$(size "$TMP/fed")
[ "$fed" -lt $((48 << 20)) ] || fail "the writing dd finished before tgtd was stopped (too fast to test)"
echo "stopped tgtd in the middle of a writing dd ($fed bytes fed)"
sleep 2
serve
wait $ddpid || { cat "$TMP/wdd.err"; show_log "$M.log"; fail "the writing dd failed across the restart"; }
sync "$M/wbig"
[ "$(sha256sum < "$TMP/wdisk.img")" = "$(sha256sum < "$TMP/src")" ] ||
    fail "the LUN file written across the restart has the wrong checksum"
echo "ok: write: dd survived a tgtd restart, the backing file has the right sha256"

# Left down: EIO within reconnect-delay (3 s) + slack, no hang.
tgtd_stop "$P"
expect_eio 8000 "$M.log" "tgtd down" "$M/down" 700
echo "ok: tgtd down: EIO after $EIO_MS ms"
mountpoint -q "$M" || fail "the mount went away"
ls "$M" > /dev/null || fail "the mount does not answer"

# Back up: the same entry reads again once the background reconnect (its
# backoff is at most 2 s) finds the target.
serve
wait_for 10 dd if="$M/down" of="$TMP/blk" bs=64k count=1 skip=700 iflag=direct status=none ||
    { show_log "$M.log"; fail "read after tgtd came back failed"; }
cmp "$TMP/blk" <(dd if="$TMP/disk.img" bs=64k count=1 skip=700 status=none) || fail "bytes differ after the restart"
echo "ok: reads work again once tgtd is back"
nd_unmount "$M"
