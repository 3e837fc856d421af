#!/bin/bash
# The server dies in the middle of a large dd (a read, then a write) and
# comes back within reconnect-delay: the dd completes with the right bytes. Left down, a
# read fails with EIO within reconnect-delay + 2 s, nothing hangs, and
# the mount works again once the server is back.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/nbdkit.sh"

pattern "$TMP/disk.img" 40
# 160 Mbit/s with a small burst: the 40 MiB copy takes about 2 s, long
# enough to be killed in the middle of it.
nbdkit_unix r --filter=rate file "$TMP/disk.img" rate=160M burstiness=0.2
S=$(nbdkit_sock r)
cat > "$TMP/tab" <<TAB
big   nbd+unix:///?socket=$S  reconnect-delay=10
down  nbd+unix:///?socket=$S  reconnect-delay=3
TAB
nd_mount "$TMP/tab" "$TMP/mnt"

dd if="$TMP/mnt/big" of="$TMP/copy" bs=1M iflag=direct status=none 2>"$TMP/dd.err" &
ddpid=$!
sleep 0.6
kill -0 $ddpid 2>/dev/null || fail "dd finished before the server was killed (too fast to test)"
nbdkit_kill r
echo "killed nbdkit in the middle of dd ($(stat -c %s "$TMP/copy") bytes copied)"
sleep 1.5
nbdkit_restart r
wait $ddpid || { cat "$TMP/dd.err"; show_log "$TMP/mnt.log"; fail "dd failed across the restart"; }
cmp "$TMP/copy" "$TMP/disk.img" || fail "the copy made across the restart differs"
grep -qi "connection lost\|reconnect" "$TMP/mnt.log" || { show_log "$TMP/mnt.log"; fail "the log does not mention the lost connection"; }
echo "ok: dd survived the restart, checksum $(sha256sum < "$TMP/copy" | cut -c1-16)"

# The same for a large write: every byte acknowledged reaches the file.
pattern "$TMP/new" 24
cp "$TMP/disk.img" "$TMP/expect"
dd if="$TMP/new" of="$TMP/expect" bs=1M conv=notrunc status=none
dd if="$TMP/new" of="$TMP/mnt/big" bs=1M oflag=direct conv=notrunc,fsync status=none 2>"$TMP/wr.err" &
ddpid=$!
sleep 0.5
kill -0 $ddpid 2>/dev/null || fail "the write finished before the server was killed (too fast to test)"
nbdkit_kill r
sleep 1
nbdkit_restart r
wait $ddpid || { cat "$TMP/wr.err"; show_log "$TMP/mnt.log"; fail "write dd failed across the restart"; }
cmp "$TMP/disk.img" "$TMP/expect" || fail "the backing file differs after a write across the restart"
echo "ok: write dd survived the restart, backing file right"

# Left down: EIO within reconnect-delay (3) + 2 s.
nbdkit_kill r
start=$(date +%s%N)
if timeout 30 dd if="$TMP/mnt/down" of=/dev/null bs=64k count=1 skip=300 iflag=direct status=none 2>"$TMP/down.err"; then
    fail "a read with the server down succeeded"
fi
ms=$(( ($(date +%s%N) - start) / 1000000 ))
grep -q "Input/output error" "$TMP/down.err" || { cat "$TMP/down.err"; fail "the read did not fail with EIO"; }
[ $ms -le 5000 ] || fail "the read took $ms ms to fail (bound: 5000 ms)"
echo "ok: server down: EIO after $ms ms"
mountpoint -q "$TMP/mnt" || fail "the mount went away"
kill -0 "$(cat "$TMP/mnt.pid")" || fail "the daemon died"

# Back up: the same entry reads again once the background reconnect (its
# backoff is at most 2 s) finds the server.
nbdkit_restart r
wait_for 10 dd if="$TMP/mnt/down" of="$TMP/blk" bs=64k count=1 skip=300 iflag=direct status=none ||
    { show_log "$TMP/mnt.log"; fail "read after the server came back failed"; }
cmp "$TMP/blk" <(dd if="$TMP/disk.img" bs=64k count=1 skip=300 status=none) || fail "bytes differ after the restart"
echo "ok: reads work again after the restart"
nd_unmount "$TMP/mnt"
