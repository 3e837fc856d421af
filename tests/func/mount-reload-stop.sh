#!/bin/bash
# mount-reload-stop: unmount while a reload is writing back a removed
# writeback entry. The reload thread is joined before the daemon frees its
# entries and exits, so that write-back completes: the block reaches the
# server and the daemon exits cleanly.
#
# The block is left dirty by a write-back that failed at close (nbdkit's
# error filter while $TMP/fail exists); every successful write then takes
# 2 s (delay filter), so the reload's write-back is still running when the
# unmount comes.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/mount.sh"
. "$TOP/tests/lib/nbdkit.sh"

pattern "$TMP/wb.img" 1
pattern "$TMP/k.img" 1
nbdkit_unix wb --filter=error --filter=delay file "$TMP/wb.img" \
    error-pwrite-rate=1 error-pwrite=EIO error-file="$TMP/fail" delay-write=2
TAB=$TMP/tab
MNT=$TMP/mnt
echo "k $TMP/k.img" >"$TAB"
echo "wb nbd+unix:///?socket=$(nbdkit_sock wb) cache=writeback,reconnect-delay=2" >>"$TAB"
nd_mount "$TAB" "$MNT" -v
pid=$(cat "$MNT.pid")

echo "== a block left dirty by a failed write-back at close"
head -c 65536 /dev/urandom >"$TMP/blk"
touch "$TMP/fail"
dd if="$TMP/blk" of="$MNT/wb" bs=64k seek=3 conv=notrunc status=none ||
    fail "the write (kept dirty) failed"
(($(status_field "$MNT" wb dirty_bytes) > 0)) || fail "no dirty bytes after the failed write-back"
rm -f "$TMP/fail"

echo "== remove the entry; unmount while its write-back runs"
echo "k $TMP/k.img" >"$TAB"
kill -HUP "$pid"
wait_for 10 grep -q "reload: entry 'wb' removed" "$MNT.log" || { show_log "$MNT.log"; fail "wb not removed"; }
fusermount3 -u "$MNT" || fail "unmount failed"
wait_for 20 sh -c "! kill -0 $pid" || fail "daemon $pid still alive 20 s after unmount"
check_sanitizers "$MNT.log"
dd if="$TMP/wb.img" bs=64k skip=3 count=1 status=none | cmp -s - "$TMP/blk" ||
    { show_log "$MNT.log"; fail "the removed entry's dirty block did not reach the server"; }
grep -q "final flush failed" "$MNT.log" && { show_log "$MNT.log"; fail "a final flush failed"; }
echo "reload stop checks passed"
