#!/bin/bash
# Under -d libnbd's own debug output reaches the daemon's log; without
# it, none does.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/nbdkit.sh"

pattern "$TMP/disk.img" 1
nbdkit_unix d file "$TMP/disk.img"
echo "d nbd+unix:///?socket=$(nbdkit_sock d)" > "$TMP/tab"
nd_mount "$TMP/tab" "$TMP/mnt" -d
cmp "$TMP/mnt/d" "$TMP/disk.img" || fail "bytes differ"
grep -q "libnbd: .*nbd_aio_pread" "$TMP/mnt.log" || { show_log "$TMP/mnt.log"; fail "no libnbd debug output under -d"; }
echo "ok: -d: $(grep -c "libnbd" "$TMP/mnt.log") libnbd debug lines"
nd_unmount "$TMP/mnt"
nd_mount "$TMP/tab" "$TMP/mnt2"
cmp "$TMP/mnt2/d" "$TMP/disk.img" || fail "bytes differ"
if grep -q "libnbd" "$TMP/mnt2.log"; then show_log "$TMP/mnt2.log"; fail "libnbd debug output without -d"; fi
echo "ok: no libnbd output without -d"
nd_unmount "$TMP/mnt2"
