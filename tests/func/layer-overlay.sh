#!/bin/bash
# layer-overlay.sh: overlay=PATH makes a read-only remote writable with
# the writes in a local file that survives remounts: an ext4 image over
# HTTP is loop-mounted, changed and fsck'd, remounted with the same
# overlay (the files are there) while the server's file never changes;
# the same over a read-only NBD export; an overlay over another base is
# refused naming both; `netdiskfs overlay info|diff|export|commit` agree
# with what the mount showed, and a commit interrupted by kill -9 resumes.
# The status file reports each overlay (path, bytes held, writes, base
# reachable); with the base's server down the overlay's blocks still read
# and write, and the status says the base is unreachable.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/nbdkit.sh"
. "$TOP/tests/lib/nginx.sh"
. "$TOP/tests/lib/mount.sh"
requires mkfs.ext4
requires e2fsck
requires losetup

nginx_start
truncate -s 64M "$NGINX_ROOT/ext4.img"
mkfs.ext4 -q -F "$NGINX_ROOT/ext4.img" || fail "mkfs.ext4"
SUM=$(sha256sum < "$NGINX_ROOT/ext4.img")
head -c 16M /dev/urandom > "$TMP/base.img"
cp "$TMP/base.img" "$TMP/base.orig"
head -c 4M /dev/urandom > "$TMP/ro.img"
cp "$TMP/ro.img" "$TMP/ro.orig"
nbdkit_tcp ro 127.0.0.1 -r file "$TMP/ro.img"
nbdkit_tcp rw 127.0.0.1 file "$TMP/base.img"
RW="nbd://127.0.0.1:$(nbdkit_port rw)"
mkdir -p "$TMP/ovl"
cat > "$TMP/t.tab" <<TAB
fs    $NGINX_URL/ext4.img                       overlay=$TMP/ovl/fs.ovl
blk   $RW                                       overlay=$TMP/ovl/blk.ovl
rob   nbd://127.0.0.1:$(nbdkit_port ro)         overlay=$TMP/ovl/rob.ovl,cache=none,reconnect-delay=1,timeout=2
TAB


# ovl NAME KEY: one field of entry NAME's overlay in the status file.
ovl() { status_field "$TMP/m" "$1" overlay | $PY -c "import json,sys; v=json.load(sys.stdin)[sys.argv[1]]; print(json.dumps(v) if not isinstance(v, str) else v)" "$2"; }
expect_ovl() { # NAME KEY VALUE
    local v; v=$(ovl "$1" "$2")
    [ "$v" = "$3" ] || { cat "$TMP/m/.netdiskfs/status" >&2; fail "status: $1.overlay.$2 = $v, expected $3"; }
}

rob_state_is() { [ "$(status_field "$TMP/m" rob state)" = "$1" ]; }
rob_state_not() { ! rob_state_is "$1"; }

# The status of the overlays (the mount is up, rob's 100000 bytes at
# 300000 written: blocks 73..97); then rob's server is stopped.
check_overlay_status() {
    expect_ovl rob path "$TMP/ovl/rob.ovl"
    # The overlaid file is writable though the disk under it is not.
    [ "$(status_field "$TMP/m" rob read_only)" = false ] || fail "status: rob.read_only is not false"
    [ "$(status_field "$TMP/m" rob disk_read_only)" = true ] || fail "status: rob.disk_read_only is not true"
    expect_ovl rob bytes $((25 * 4096))
    expect_ovl rob zero_bytes 0
    expect_ovl rob base_reachable true
    expect_ovl rob base_errors 0
    [ "$(ovl fs writes)" -gt 0 ] && [ "$(ovl fs bytes)" -gt 1000000 ] || fail "status: fs.overlay shows no writes"
    fallocate -p -o 1M -l 64K "$TMP/m/rob" || fail "punch a hole in rob"
    expect_ovl rob zero_bytes 65536
    [ "$(ovl rob writes)" -ge 2 ] || fail "status: rob.overlay.writes = $(ovl rob writes), expected >= 2"
    nbdkit_kill ro
    expect_eio 8000 "$TMP/m.log" "rob, base down, unwritten block" "$TMP/m/rob" 50
    wait_for 10 rob_state_not connected || fail "rob still connected"
    expect_ovl rob base_reachable false
    [ "$(ovl rob base_errors)" -ge 1 ] || fail "status: no base error counted"
    # What the overlay holds still reads and writes (whole and part blocks).
    cmp -n 100000 -i 0:300000 "$TMP/piece" "$TMP/m/rob" || fail "rob, base down: the overlay's blocks read back wrong"
    dd if=/dev/zero of="$TMP/m/rob" bs=4096 seek=80 count=2 conv=notrunc,fsync status=none || fail "rob, base down: a write of held blocks failed"
    printf 'x' | dd of="$TMP/m/rob" bs=1 seek=$((1048576 + 100)) conv=notrunc,fsync status=none || fail "rob, base down: a write into a zeroed block failed"
    nbdkit_restart ro
    wait_for 20 rob_state_is connected || fail "rob: not connected again"
    expect_ovl rob base_reachable true
    cmp -n 4M "$TMP/m/rob" "$TMP/ro.orig" >/dev/null 2>&1 && fail "rob: the overlay was lost"
    cmp -n 65536 -i 3145728:3145728 "$TMP/m/rob" "$TMP/ro.orig" || fail "rob: the base reads wrong once back"
}

nd_mount "$TMP/t.tab" "$TMP/m"
[ "$(stat -c %a "$TMP/m/fs")" = 644 ] || fail "an overlaid HTTP entry must be writable"
loop_mount "$TMP/m/fs" "$TMP/fs"
seq 1 100000 > "$TMP/fs/numbers"
mkdir "$TMP/fs/dir" && cp "$TMP/base.orig" "$TMP/fs/dir/blob"
sync
loop_umount "$TMP/fs"
e2fsck -f -n "$TMP/m/fs" >"$TMP/fsck.log" 2>&1 || { cat "$TMP/fsck.log"; fail "e2fsck after changes"; }
# The read-only NBD disk: random writes.
cp "$TMP/base.orig" "$TMP/blk.expect"
for i in $(seq 1 30); do
    off=$(( (RANDOM * 17) % (16 * 1048576 - 9000) )) len=$(( 1 + RANDOM % 9000 ))
    head -c $len /dev/urandom > "$TMP/piece"
    dd if="$TMP/piece" of="$TMP/m/blk" bs=$len seek=$off oflag=seek_bytes conv=notrunc status=none || fail "write $i"
    dd if="$TMP/piece" of="$TMP/blk.expect" bs=$len seek=$off oflag=seek_bytes conv=notrunc status=none
done
cmp "$TMP/m/blk" "$TMP/blk.expect" || fail "blk: reads back wrong"
# The read-only export becomes writable too.
head -c 100000 /dev/urandom > "$TMP/piece"
dd if="$TMP/piece" of="$TMP/m/rob" bs=100000 seek=3 conv=notrunc,fsync status=none || fail "write to rob"
cmp -n 100000 -i 0:300000 "$TMP/piece" "$TMP/m/rob" || fail "rob: reads back wrong"
check_overlay_status
nd_unmount "$TMP/m"
cmp "$TMP/ro.img" "$TMP/ro.orig" || fail "the read-only export changed"

[ "$(sha256sum < "$NGINX_ROOT/ext4.img")" = "$SUM" ] || fail "the server's image changed"
cmp "$TMP/base.img" "$TMP/base.orig" || fail "the NBD export changed"
nd_mount "$TMP/t.tab" "$TMP/m"
cmp "$TMP/m/blk" "$TMP/blk.expect" || fail "blk: the overlay did not survive the remount"
loop_mount "$TMP/m/fs" "$TMP/fs"
seq 1 100000 | cmp - "$TMP/fs/numbers" || fail "numbers lost after the remount"
cmp "$TMP/fs/dir/blob" "$TMP/base.orig" || fail "blob lost after the remount"
loop_umount "$TMP/fs"
cp "$TMP/m/blk" "$TMP/blk.shown"
nd_unmount "$TMP/m"

# Tools: info, diff, export.
"$ND" overlay info "$TMP/ovl/blk.ovl" > "$TMP/info" || fail "overlay info"
grep -q "^written: [1-9]" "$TMP/info" || { cat "$TMP/info"; fail "overlay info: nothing written?"; }
"$ND" overlay diff "$TMP/ovl/blk.ovl" "$TMP/blk.diff" || fail "overlay diff"
head -n1 "$TMP/blk.diff" | grep -q "^netdiskfs-overlay-diff 1 16777216$" || fail "diff header"
"$ND" overlay export "$TMP/ovl/blk.ovl" "$RW" "$TMP/blk.export" || fail "overlay export"
cmp "$TMP/blk.export" "$TMP/blk.shown" || fail "export differs from what the mount showed"

# Refusal: the same overlay over another disk.
head -c 8M /dev/urandom > "$NGINX_ROOT/other.img"
echo "x $NGINX_URL/other.img overlay=$TMP/ovl/blk.ovl" > "$TMP/bad.tab"
mkdir -p "$TMP/bad"
"$ND" --strict "$TMP/bad.tab" "$TMP/bad" -f >"$TMP/bad.log" 2>&1 &
wait_for 20 sh -c "! kill -0 $!" || fail "a mount over another base did not stop"
grep -q "blk.ovl was made over" "$TMP/bad.log" || { cat "$TMP/bad.log"; fail "no clear refusal naming both"; }

# Commit onto the writable export, interrupted by kill -9, then resumed.
"$ND" overlay commit "$TMP/ovl/blk.ovl" "$RW" >"$TMP/commit.log" 2>&1 &
sleep 0.$((RANDOM % 5)); kill -9 $! 2>/dev/null; wait $! 2>/dev/null
"$ND" overlay commit "$TMP/ovl/blk.ovl" "$RW" >>"$TMP/commit.log" 2>&1 || { cat "$TMP/commit.log"; fail "commit"; }
cmp "$TMP/base.img" "$TMP/blk.expect" || fail "after commit the export is not base + overlay"
"$ND" overlay info "$TMP/ovl/blk.ovl" | grep -q "^written: 0 bytes" || fail "the overlay is not empty after commit"
echo "overlay over http and read-only nbd: ext4 changed, remounted, fsck'd; tools agree; commit resumed"
