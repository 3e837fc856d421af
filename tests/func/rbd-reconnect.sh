#!/bin/bash
# The only OSD is killed (-9) in the middle of a copy and restarted within
# reconnect-delay: the copy (a read, then a write) completes byte for
# byte. Left down: a read fails with EIO within reconnect-delay + 3 s, the
# mount lives, and reads work again once the OSD is back. librados would
# wait forever: the entry's timeout bounds it. Bluestore, so the OSD comes
# back with its data.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/ceph.sh"
rbd_lsan_suppress

ceph_start bluestore none
pattern "$TMP/img" 32
ceph_rbd import --no-progress "$TMP/img" rbd/img || fail "rbd import failed"
cat > "$TMP/tab" <<TAB
big   rbd:rbd/img:conf=$CEPH_CONF  reconnect-delay=25 timeout=3
down  rbd:rbd/img:conf=$CEPH_CONF  reconnect-delay=4 timeout=2 ro
TAB
nd_mount "$TMP/tab" "$TMP/mnt"

# A paced copy (128 O_DIRECT reads of 256 KiB, 20 ms apart, ~3 s), so the
# kill lands in the middle of it whatever the machine's speed.
paced_dd "$TMP/mnt/big" "$TMP/copy" 128 iflag=direct 2>"$TMP/dd.err" &
ddpid=$!
sleep 0.5
kill -0 $ddpid 2>/dev/null || fail "the copy finished before the OSD was killed"
ceph_osd_kill
echo "killed the OSD in the middle of the copy ($(stat -c %s "$TMP/copy") bytes copied)"
sleep 2
ceph_osd_start
wait $ddpid || { cat "$TMP/dd.err"; show_log "$TMP/mnt.log"; fail "the copy failed across the OSD restart"; }
cmp "$TMP/copy" "$TMP/img" || fail "the copy made across the restart differs"
echo "ok: a copy survived kill -9 of the OSD and its restart, byte for byte"

pattern "$TMP/new" 16
cp "$TMP/img" "$TMP/expect"
dd if="$TMP/new" of="$TMP/expect" bs=1M conv=notrunc status=none
# The same for the write: 64 O_DIRECT writes of 256 KiB, then an fsync.
paced_dd "$TMP/new" "$TMP/mnt/big" 64 oflag=direct 2>"$TMP/wr.err" &
ddpid=$!
sleep 0.5
kill -0 $ddpid 2>/dev/null || fail "the write finished before the OSD was killed"
ceph_osd_kill
sleep 2
ceph_osd_start
wait $ddpid || { cat "$TMP/wr.err"; show_log "$TMP/mnt.log"; fail "the write failed across the OSD restart"; }
ceph_rbd export --no-progress rbd/img "$TMP/export" || fail "rbd export failed"
cmp "$TMP/export" "$TMP/expect" || fail "the image differs after a write across the OSD restart"
echo "ok: a write (fsync'd) survived kill -9 of the OSD, rbd export agrees"

# Left down: EIO within reconnect-delay (4) + 3 s, twice, the mount lives.
ceph_osd_kill
expect_eio 7000 "$TMP/mnt.log" "OSD down" "$TMP/mnt/down" 300
echo "ok: OSD down: EIO after $EIO_MS ms"
expect_eio 7000 "$TMP/mnt.log" "OSD still down" "$TMP/mnt/down" 200
mountpoint -q "$TMP/mnt" || fail "the mount went away"
kill -0 "$(cat "$TMP/mnt.pid")" || fail "the daemon died"
ceph_osd_start
wait_for 30 dd if="$TMP/mnt/down" of="$TMP/blk" bs=64k count=1 skip=300 iflag=direct status=none ||
    { show_log "$TMP/mnt.log"; fail "no read after the OSD came back"; }
cmp "$TMP/blk" <(dd if="$TMP/expect" bs=64k count=1 skip=300 status=none) || fail "bytes differ after the OSD came back"
echo "ok: reads work again once the OSD is back"
nd_unmount "$TMP/mnt"
