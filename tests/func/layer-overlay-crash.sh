#!/bin/bash
# layer-overlay-crash.sh: kill -9 of the daemon in the middle of
# `fio --rw=randwrite --verify=crc32c --fsync=16` on an overlaid file (an
# HTTP entry and a read-only NBD export, in turns), at a different moment
# each round; the dead mount is unmounted, the same overlay mounted again,
# and every write fio had synced verifies (tests/lib/fio-crash.sh says why
# the check is sound). The servers' files never change.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/mount.sh"
. "$TOP/tests/lib/nbdkit.sh"
. "$TOP/tests/lib/nginx.sh"
. "$TOP/tests/lib/fio-crash.sh"

SIZE=$((32 << 20))
ROUNDS=${ROUNDS:-4}
nginx_start
head -c $SIZE /dev/urandom > "$NGINX_ROOT/base.img"
cp "$NGINX_ROOT/base.img" "$TMP/ro.img"
SUM=$(sha256sum < "$NGINX_ROOT/base.img")
nbdkit_tcp ro 127.0.0.1 -r file "$TMP/ro.img"

for round in $(seq 1 "$ROUNDS"); do
    name=$([ $((round % 2)) = 1 ] && echo h || echo n)
    ovl=$TMP/r$round.ovl
    cat > "$TMP/t.tab" <<TAB
h   $NGINX_URL/base.img                  overlay=$ovl
n   nbd://127.0.0.1:$(nbdkit_port ro)    overlay=$ovl
TAB
    # Only the entry under test is in the table: both name one overlay.
    grep "^$name " "$TMP/t.tab" > "$TMP/r.tab"
    nd_mount "$TMP/r.tab" "$TMP/m"
    fio_crash_start "$TMP/fio$round" "$TMP/m/$name" $SIZE
    # A different moment each round: after 200 to 3500 writes.
    at=$((200 + (RANDOM * 7 + round * 1531) % 3300))
    fio_crash_kill "$TMP/m" "$name" overlay.writes $at
    grep -q "error" "$TMP/fio$round/write.log" || echo "note: round $round: fio saw no error (it had ended)"
    nd_mount "$TMP/r.tab" "$TMP/m"
    synced=$(fio_crash_synced "$TMP/fio$round") || exit 1
    fio_crash_verify "$TMP/fio$round" "$TMP/m/$name" $SIZE "$synced"
    nd_unmount "$TMP/m"
    "$ND" overlay info "$ovl" | grep -q "^written: [1-9]" || fail "round $round: the overlay holds nothing"
    echo "round $round ($name): kill -9 once the status showed >= $at writes; $synced synced writes verify"
done
[ "$(sha256sum < "$NGINX_ROOT/base.img")" = "$SUM" ] || fail "the HTTP server's file changed"
[ "$(sha256sum < "$TMP/ro.img")" = "$SUM" ] || fail "the NBD export's file changed"
echo "overlay: kill -9 during fio randwrite, $ROUNDS rounds: every synced write verifies; servers unchanged"
