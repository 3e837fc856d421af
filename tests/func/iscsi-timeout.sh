#!/bin/bash
# timeout=N (as QEMU's): tgtd is frozen (SIGSTOP) in the middle of a dd, so
# its socket stays open but nothing answers. The stalled command is
# detected after N seconds, the session is dropped and logged in again
# once tgtd thaws: the copy completes with the right checksum. Frozen for
# good: EIO within timeout + reconnect-delay (plus slack), no hang.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/tgtd.sh"

P=$(tgt_free_port)
IQN=iqn.2026-01.test.netdiskfs:timeout
pattern "$TMP/disk.img" 64
tgtd_start "$P"
tgt_target "$P" 1 "$IQN"
tgt_lun "$P" 1 1 "$TMP/disk.img"
TPID=$(cat "$TMP/tgtd.$P.pid")
cleanup_fn "kill -CONT $TPID 2>/dev/null"
cat > "$TMP/tab" <<TAB
stall  iscsi://127.0.0.1:$P/$IQN/1  timeout=2,reconnect-delay=30,cache=none
dead   iscsi://127.0.0.1:$P/$IQN/1  timeout=2,reconnect-delay=3,cache=none
TAB
nd_mount "$TMP/tab" "$TMP/mnt"
M=$TMP/mnt

dd if="$M/stall" of="$TMP/copy" bs=16k iflag=direct status=none 2>"$TMP/dd.err" &
ddpid=$!
wait_for 20 sh -c "[ \$(stat -c %s '$TMP/copy' 2>/dev/null || echo 0) -ge $((4 << 20)) ]" ||
    fail "dd copied nothing in 20 s"
kill -0 $ddpid 2>/dev/null || fail "dd finished before tgtd was frozen (too fast to test)"
kill -STOP "$TPID"
echo "froze tgtd in the middle of dd ($(stat -c %s "$TMP/copy") bytes copied)"
wait_for 15 grep -q "timed out" "$M.log" || { show_log "$M.log"; fail "no timeout reported within 15 s of the freeze"; }
kill -CONT "$TPID"
wait $ddpid || { cat "$TMP/dd.err"; show_log "$M.log"; fail "dd failed across the freeze"; }
[ "$(sha256sum < "$TMP/copy")" = "$(sha256sum < "$TMP/disk.img")" ] || fail "the copy made across the freeze has the wrong checksum"
echo "ok: stalled command detected: $(grep -m1 "timed out" "$M.log")"
echo "ok: dd completed after the session was re-established, right sha256"

# Frozen for good: EIO within timeout (2) + reconnect-delay (3) + 5 s.
kill -STOP "$TPID"
expect_eio 10000 "$M.log" "frozen target" "$M/dead" 500
echo "ok: frozen target: EIO after $EIO_MS ms"
mountpoint -q "$M" || fail "the mount went away"
kill -CONT "$TPID"
dd if="$M/dead" of="$TMP/blk" bs=64k count=1 skip=500 iflag=direct status=none ||
    { show_log "$M.log"; fail "read after tgtd thawed failed"; }
cmp "$TMP/blk" <(dd if="$TMP/disk.img" bs=64k count=1 skip=500 status=none) || fail "bytes differ after the thaw"
echo "ok: reads work again after the thaw"
nd_unmount "$M"
