#!/bin/bash
# Writes while the only OSD is down: each fails with EIO within
# reconnect-delay + timeout + 3 s, also the one in flight when the OSD
# comes back (librbd then waits for the image's exclusive lock, held by
# the lost client, far longer than librados's op timeout): the backend's
# own deadline bounds it. The mount lives, writes work again once the OSD
# is back, and `rbd export` shows them. Bluestore, so the OSD keeps its data.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/ceph.sh"
rbd_lsan_suppress

DELAY=4 TIMEOUT=2
BOUND_MS=$(( (DELAY + TIMEOUT + 3) * 1000 ))
ceph_start bluestore none
pattern "$TMP/img" 16
ceph_rbd import --no-progress "$TMP/img" rbd/img || fail "rbd import failed"
cat > "$TMP/tab" <<TAB
w  rbd:rbd/img:conf=$CEPH_CONF  reconnect-delay=$DELAY timeout=$TIMEOUT
TAB
nd_mount "$TMP/tab" "$TMP/mnt"
pattern "$TMP/new" 1
cp "$TMP/img" "$TMP/expect"

# write_at BLOCK [FLAGS]: one O_DIRECT 64 KiB write of $TMP/new's block
# (one request: the bound is per request), FLAGS for dd's conv= (fsync: a
# flush request follows); sets W_MS to its duration, returns dd's status
# (stderr in $TMP/wr.err).
write_at() {
    local start=$(date +%s%N) r=0
    timeout 120 dd if="$TMP/new" of="$TMP/mnt/w" bs=64k count=1 skip="$1" seek="$1" \
        oflag=direct conv=notrunc${2:+,$2} status=none 2>"$TMP/wr.err" || r=$?
    W_MS=$(( ($(date +%s%N) - start) / 1000000 ))
    return $r
}
# expect_write_eio BLOCK WHAT: the write fails with EIO within the bound.
expect_write_eio() {
    write_at "$1" && fail "$2: the write succeeded with the OSD down"
    grep -q "Input/output error" "$TMP/wr.err" ||
        { cat "$TMP/wr.err"; show_log "$TMP/mnt.log"; fail "$2: the write did not fail with EIO"; }
    [ "$W_MS" -le "$BOUND_MS" ] ||
        { show_log "$TMP/mnt.log"; fail "$2: the write took $W_MS ms to fail (bound: $BOUND_MS ms)"; }
    echo "ok: $2: EIO after $W_MS ms"
}

write_at 0 fsync || fail "the first write failed"
dd if="$TMP/new" of="$TMP/expect" bs=64k count=1 conv=notrunc status=none
ceph_osd_kill
expect_write_eio 1 "OSD down"
expect_write_eio 2 "OSD still down"
mountpoint -q "$TMP/mnt" || fail "the mount went away"
kill -0 "$(cat "$TMP/mnt.pid")" || fail "the daemon died"

# A write in flight while the OSD comes back: it may succeed or fail, but
# within the bound.
( write_at 3; echo "$? $W_MS" >"$TMP/bg" ) &
wpid=$!
sleep 1
ceph_osd_start
wait $wpid
read -r st ms <"$TMP/bg"
echo "the write in flight while the OSD came back: status $st after $ms ms"
[ "$ms" -le "$BOUND_MS" ] ||
    { show_log "$TMP/mnt.log"; fail "the write in flight while the OSD came back took $ms ms (bound: $BOUND_MS ms)"; }

# Writes work again once the OSD is back: each within the bound, one of
# them succeeds within 60 s.
ok=0 end=$(( $(date +%s) + 60 ))
while [ "$(date +%s)" -lt $end ]; do
    if write_at 4; then ok=1; break; fi
    [ "$W_MS" -le "$BOUND_MS" ] ||
        { show_log "$TMP/mnt.log"; fail "a write after the OSD came back took $W_MS ms to fail (bound: $BOUND_MS ms)"; }
    echo "a write after the OSD came back failed after $W_MS ms"
    sleep 1
done
[ $ok = 1 ] || { show_log "$TMP/mnt.log"; fail "no write succeeded within 60 s of the OSD's return"; }
[ "$W_MS" -le "$BOUND_MS" ] ||
    { show_log "$TMP/mnt.log"; fail "the write after the OSD came back took $W_MS ms (bound: $BOUND_MS ms)"; }
echo "ok: a write works again after the OSD came back ($W_MS ms)"
# The failed writes may or may not have reached the image: write them
# again, so the image's bytes are known.
for b in 1 2 3; do
    write_at $b fsync || { cat "$TMP/wr.err"; fail "write of block $b failed after the OSD came back"; }
done
dd if="$TMP/new" of="$TMP/expect" bs=64k count=5 conv=notrunc status=none
nd_unmount "$TMP/mnt"
ceph_rbd export --no-progress rbd/img "$TMP/export" || fail "rbd export failed"
cmp "$TMP/export" "$TMP/expect" || fail "the image differs from the writes acknowledged"
echo "ok: rbd export shows the writes"
