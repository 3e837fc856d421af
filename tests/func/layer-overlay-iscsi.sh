#!/bin/bash
# layer-overlay-iscsi.sh: overlay=PATH over iSCSI LUNs (tgtd) entered with
# `ro`: an ext4 image is loop-mounted, its files changed and new ones made,
# `e2fsck -f` finds it clean; unmounted and mounted again with the same
# overlay, the files are there and fsck is still clean; a LUN the target
# itself write-protects takes writes the same way. The LUNs' backing files
# never change (sha256).
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/tgtd.sh"
. "$TOP/tests/lib/mount.sh"
requires mkfs.ext4
requires e2fsck
requires losetup

P=$(tgt_free_port)
IQN=iqn.2026-01.test.netdiskfs
mkdir -p "$TMP/seed"
seq 1 50000 > "$TMP/seed/old.txt"
head -c 3M /dev/urandom > "$TMP/seed/old.bin"
truncate -s 64M "$TMP/fs.img"
mkfs.ext4 -q -F -d "$TMP/seed" "$TMP/fs.img" || fail "mkfs.ext4"
head -c 8M /dev/urandom > "$TMP/wp.img"
FS_SUM=$(sha256sum < "$TMP/fs.img")
WP_SUM=$(sha256sum < "$TMP/wp.img")

tgtd_start "$P"
tgt_target "$P" 1 "$IQN:disks"
tgt_lun "$P" 1 1 "$TMP/fs.img"
tgt_lun "$P" 1 2 "$TMP/wp.img" readonly
cat > "$TMP/t.tab" <<TAB
fs   iscsi://127.0.0.1:$P/$IQN:disks/1   ro,overlay=$TMP/fs.ovl
wp   iscsi://127.0.0.1:$P/$IQN:disks/2   ro,overlay=$TMP/wp.ovl
TAB

fsck_clean() { # FILE WHAT
    e2fsck -f -n "$1" >"$TMP/fsck.log" 2>&1 || { cat "$TMP/fsck.log"; fail "e2fsck -f: $2"; }
}
unchanged() {
    [ "$(sha256sum < "$TMP/fs.img")" = "$FS_SUM" ] || fail "$1: the ext4 LUN's backing file changed"
    [ "$(sha256sum < "$TMP/wp.img")" = "$WP_SUM" ] || fail "$1: the write-protected LUN's backing file changed"
}

nd_mount "$TMP/t.tab" "$TMP/m"
[ "$(stat -c %a "$TMP/m/fs")" = 644 ] || fail "an overlaid ro iSCSI entry must be writable"
loop_mount "$TMP/m/fs" "$TMP/fs"
cmp "$TMP/fs/old.bin" "$TMP/seed/old.bin" || fail "old.bin reads wrong"
seq 50001 60000 >> "$TMP/fs/old.txt"                                    # grow a file
printf 'changed' | dd of="$TMP/fs/old.bin" bs=1 seek=1000000 conv=notrunc status=none # change one in place
mkdir -p "$TMP/fs/new/deep"
head -c 5M /dev/urandom > "$TMP/new.bin"
cp "$TMP/new.bin" "$TMP/fs/new/deep/new.bin"
ln -s ../old.txt "$TMP/fs/new/link"
cp "$TMP/fs/old.bin" "$TMP/old.bin.expect"
sync
loop_umount "$TMP/fs"
fsck_clean "$TMP/m/fs" "after the changes"
# The write-protected LUN: random pieces.
cp "$TMP/wp.img" "$TMP/wp.expect"
for i in $(seq 1 20); do
    off=$(( (RANDOM * 13) % (8 * 1048576 - 70000) )) len=$(( 1 + RANDOM % 70000 ))
    head -c $len /dev/urandom > "$TMP/piece"
    dd if="$TMP/piece" of="$TMP/m/wp" bs=$len seek=$off oflag=seek_bytes conv=notrunc,fsync status=none || fail "wp: write $i"
    dd if="$TMP/piece" of="$TMP/wp.expect" bs=$len seek=$off oflag=seek_bytes conv=notrunc status=none
done
cmp "$TMP/m/wp" "$TMP/wp.expect" || fail "wp: reads back wrong"
nd_unmount "$TMP/m"
unchanged "after the first mount"

nd_mount "$TMP/t.tab" "$TMP/m"
cmp "$TMP/m/wp" "$TMP/wp.expect" || fail "wp: the overlay did not survive the remount"
fsck_clean "$TMP/m/fs" "after the remount"
loop_mount "$TMP/m/fs" "$TMP/fs"
seq 1 60000 | cmp - "$TMP/fs/old.txt" || fail "old.txt: the appended lines are lost"
cmp "$TMP/fs/old.bin" "$TMP/old.bin.expect" || fail "old.bin: the change is lost"
cmp "$TMP/fs/new/deep/new.bin" "$TMP/new.bin" || fail "new.bin is lost"
[ "$(readlink "$TMP/fs/new/link")" = ../old.txt ] || fail "the symlink is lost"
loop_umount "$TMP/fs"
nd_unmount "$TMP/m"
unchanged "after the remount"
echo "overlay over ro iSCSI LUNs: ext4 changed, fsck clean, remounted with the files there; a write-protected LUN written; backing files unchanged"
