#!/bin/bash
# The NFS server (ganesha) is killed (-9) in the middle of a copy and
# restarted within reconnect-delay: the copy (a read, then an fsync'd
# write) completes byte for byte. Left down: a read fails with EIO within
# reconnect-delay + 3 s, the mount lives, and reads work again once the
# server is back.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/ganesha.sh"

ganesha_start
P=$GANESHA_PORT M=$GANESHA_MNTPORT E=$GANESHA_EXPORT
pattern "$E/disk.img" 32
cp "$E/disk.img" "$TMP/img"
U="nfs://127.0.0.1/export/disk.img?nfsport=$P&mountport=$M"
cat > "$TMP/tab" <<TAB
big   $U  reconnect-delay=20 timeout=3
down  $U  reconnect-delay=4 timeout=2 ro
TAB
nd_mount "$TMP/tab" "$TMP/mnt"

# A paced copy (128 O_DIRECT reads of 256 KiB, 20 ms apart, ~3 s), so the
# kill lands in the middle of it whatever the machine's speed.
paced_dd "$TMP/mnt/big" "$TMP/copy" 128 iflag=direct 2>"$TMP/dd.err" &
ddpid=$!
sleep 0.5
kill -0 $ddpid 2>/dev/null || fail "the copy finished before the server was killed"
ganesha_kill
echo "killed ganesha in the middle of the copy ($(stat -c %s "$TMP/copy") bytes copied)"
sleep 2
ganesha_restart
wait $ddpid || { cat "$TMP/dd.err"; show_log "$TMP/mnt.log"; fail "the copy failed across the server restart"; }
cmp "$TMP/copy" "$TMP/img" || fail "the copy made across the restart differs"
echo "ok: a copy survived kill -9 of ganesha and its restart, byte for byte"

# 8 MiB in 256 KiB O_DIRECT writes, paced the same way, then fsync.
pattern "$TMP/new" 8
cp "$TMP/img" "$TMP/expect"
dd if="$TMP/new" of="$TMP/expect" bs=1M conv=notrunc status=none
paced_dd "$TMP/new" "$TMP/mnt/big" 32 oflag=direct 2>"$TMP/wr.err" &
ddpid=$!
sleep 0.3
kill -0 $ddpid 2>/dev/null || fail "the write finished before the server was killed"
ganesha_kill
sleep 2
ganesha_restart
wait $ddpid || { cat "$TMP/wr.err"; show_log "$TMP/mnt.log"; fail "the write failed across the server restart"; }
cmp "$E/disk.img" "$TMP/expect" || fail "the exported file differs after a write across the restart"
echo "ok: a write (fsync'd) survived kill -9 of ganesha, the exported file agrees"

# Left down: EIO within reconnect-delay (4) + 3 s, twice, the mount lives.
ganesha_kill
expect_eio 7000 "$TMP/mnt.log" "server down" "$TMP/mnt/down" 300
echo "ok: server down: EIO after $EIO_MS ms"
expect_eio 7000 "$TMP/mnt.log" "server still down" "$TMP/mnt/down" 200
mountpoint -q "$TMP/mnt" || fail "the mount went away"
kill -0 "$(cat "$TMP/mnt.pid")" || fail "the daemon died"
ganesha_restart
wait_for 20 dd if="$TMP/mnt/down" of="$TMP/blk" bs=64k count=1 skip=300 iflag=direct status=none ||
    { show_log "$TMP/mnt.log"; fail "no read after the server came back"; }
cmp "$TMP/blk" <(dd if="$TMP/expect" bs=64k count=1 skip=300 status=none) || fail "bytes differ after the restart"
echo "ok: reads work again once the server is back"
nd_unmount "$TMP/mnt"
