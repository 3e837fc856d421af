#!/bin/bash
# layer-qcow2-crash.sh: kill -9 of the daemon during a write load on a
# writable qcow2 image (format=qcow2 over an NBD export of nbdkit's file
# plugin; v2 and v3, 4 KiB, 64 KiB and 2 MiB clusters, a writethrough or
# writeback cache, with and without a backing file):
# `fio --rw=randwrite --verify=crc32c --fsync=16` through the mount, the
# daemon killed at a different moment each round. Then `qemu-img check`
# of the server's file finds no corruption (leaked clusters allowed), and
# every write fio had synced verifies, read from `qemu-img convert -O raw`
# of the image (qemu is the decoder) and through the mount again
# (tests/lib/fio-crash.sh says why the check is sound).
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/mount.sh"
. "$TOP/tests/lib/nbdkit.sh"
. "$TOP/tests/lib/fio-crash.sh"
requires qemu-img

SIZE=$((16 << 20))
ROUNDS=${ROUNDS:-8}
SRV=$TMP/srv
mkdir -p "$SRV"
nbdkit_tcp n 127.0.0.1 file dir="$SRV"
N="nbd://127.0.0.1:$(nbdkit_port n)"
head -c $SIZE /dev/urandom > "$SRV/base.raw"
cp "$SRV/base.raw" "$TMP/base.orig"

check_image() { # IMAGE WHAT
    qemu-img check "$1" >"$TMP/check.log" 2>&1
    local rc=$?
    [ $rc = 0 ] || [ $rc = 3 ] || { cat "$TMP/check.log"; fail "qemu-img check $2: corruption (exit $rc)"; }
    CHECK_LEAKS=$(sed -n 's/^\([0-9]*\) leaked clusters were found.*/\1/p' "$TMP/check.log")
}

for round in $(seq 1 "$ROUNDS"); do
    img=$SRV/r$round.qcow2
    # A different image each round: version, cluster size, cache mode.
    read -r compat cs cache backing <<<"$(echo "1.1 65536 writethrough
0.10 65536 writeback
1.1 4096 writeback
0.10 4096 writethrough
1.1 2M writethrough
1.1 65536 writeback
1.1 65536 writethrough base.raw
0.10 4096 writeback base.raw" | sed -n "$(( (round - 1) % 8 + 1 ))p")"
    # With a backing file (its relative name on the same NBD server), a
    # 4 KiB write copies the rest of its cluster from it first.
    qemu-img create -q -f qcow2 -o compat=$compat,cluster_size=$cs \
        ${backing:+-b "$backing" -F raw} "$img" $SIZE || fail "qemu-img create"
    # An NBD export has a fixed size: free space at the end of the file
    # (refcount 0) is where new clusters go.
    truncate -s $((SIZE + (12 << 20))) "$img"
    echo "w  $N/r$round.qcow2  format=qcow2,cache=$cache" > "$TMP/t.tab"
    nd_mount "$TMP/t.tab" "$TMP/m"
    fio_crash_start "$TMP/fio$round" "$TMP/m/w" $SIZE
    at=$((100 + (RANDOM * 7 + round * 977) % 1900))
    fio_crash_kill "$TMP/m" w requests_written $at
    check_image "$img" "after kill -9 (round $round)"
    synced=$(fio_crash_synced "$TMP/fio$round") || exit 1
    qemu-img convert -f qcow2 -O raw "$img" "$TMP/r.raw" || fail "qemu-img convert (round $round)"
    fio_crash_verify "$TMP/fio$round" "$TMP/r.raw" $SIZE "$synced"
    rm -f "$TMP/r.raw"
    nd_mount "$TMP/t.tab" "$TMP/m"
    fio_crash_verify "$TMP/fio$round" "$TMP/m/w" $SIZE "$synced"
    nd_unmount "$TMP/m"
    check_image "$img" "after the remount (round $round)"
    echo "round $round (compat=$compat, cluster $cs, cache=$cache${backing:+, backing $backing}): kill -9 once the status showed >= $at requests; $synced synced writes verify; leaked clusters: ${CHECK_LEAKS:-0}"
    rm -f "$img"
done
cmp "$SRV/base.raw" "$TMP/base.orig" || fail "the backing file changed"
echo "qcow2: kill -9 during fio randwrite, $ROUNDS rounds: qemu-img check finds no corruption, every synced write verifies"
