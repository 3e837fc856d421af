#!/bin/bash
# disk-failed: reconnect-delay as QEMU means it. The NBD server dies: the
# first read fails with EIO within reconnect-delay + timeout; once
# reconnect-delay has run out the entry is failed and the next reads fail
# at once (no new wait per request, no thread held in D state) while
# netdiskfs keeps reconnecting in the background; the status file says
# "failed since <time>, reconnecting". The server comes back: the entry
# serves the right bytes again without any request having to wait for it.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/mount.sh"
. "$TOP/tests/lib/nbdkit.sh"

pattern "$TMP/disk.img" 8
nbdkit_unix srv file "$TMP/disk.img"
S=$(nbdkit_sock srv)
echo "d nbd+unix:///?socket=$S  reconnect-delay=2,timeout=1,readahead=0" > "$TMP/tab"
nd_mount "$TMP/tab" "$TMP/mnt"

dd if="$TMP/mnt/d" of=/dev/null bs=64k count=1 iflag=direct status=none || fail "first read failed"
nbdkit_kill srv
# reconnect-delay 2 + timeout 1, plus slack for a loaded machine.
expect_eio 5000 "$TMP/mnt.log" "first read with the server down" "$TMP/mnt/d" 10
echo "ok: first read: EIO after $EIO_MS ms"
sleep 1
for skip in 20 30 40; do
    expect_eio 500 "$TMP/mnt.log" "read at block $skip while failed" "$TMP/mnt/d" $skip
    echo "ok: read at block $skip while failed: EIO after $EIO_MS ms"
done

state=$(status_field "$TMP/mnt" d state_text)
echo "status: $state"
[[ $state == "failed since "*", reconnecting" ]] || { cat "$TMP/mnt/.netdiskfs/status"; fail "status state is '$state'"; }
"$ND" status "$TMP/mnt" | grep -q "failed since .*, reconnecting" || fail "the status table does not show the failed state"

# Back: the background reconnect finds it (backoff at most 2 s).
nbdkit_restart srv
wait_for 10 dd if="$TMP/mnt/d" of="$TMP/blk" bs=64k count=1 skip=50 iflag=direct status=none ||
    { show_log "$TMP/mnt.log"; fail "the entry did not serve again within 10 s of the restart"; }
cmp "$TMP/blk" <(dd if="$TMP/disk.img" bs=64k count=1 skip=50 status=none) || fail "bytes differ after the restart"
[ "$(status_field "$TMP/mnt" d state)" = connected ] || fail "state is not connected after the restart"
grep -q "failed" "$TMP/mnt.log" || { show_log "$TMP/mnt.log"; fail "the log does not say the entry failed"; }
echo "ok: serving again after the restart"
nd_unmount "$TMP/mnt"
