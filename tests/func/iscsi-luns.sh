#!/bin/bash
# Several LUNs of one target and a second target in one table, against
# tgtd: two disks read and written byte-exact (checked through the mount
# and in the backing files), a read-only LUN (EROFS on write), a LUN with
# 4096-byte blocks taking unaligned writes of odd sizes, a cdrom LUN
# (2048-byte blocks, 10-byte commands) read back byte-exact and read-only,
# a LUN write-protected on the target while mounted (EROFS from the sense
# data), fsync, and a punched hole on a thin-provisioned LUN.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/tgtd.sh"

P=$(tgt_free_port)
IQN=iqn.2026-01.test.netdiskfs
pattern "$TMP/d1.img" 8
pattern "$TMP/d2.img" 4
pattern "$TMP/ro.img" 2
pattern "$TMP/4k.img" 4
pattern "$TMP/cd.iso" 3
pattern "$TMP/other.img" 1
pattern "$TMP/thin.img" 4
for f in d1 d2 ro 4k other thin; do cp "$TMP/$f.img" "$TMP/$f.orig"; done

tgtd_start "$P"
tgt_target "$P" 1 "$IQN:disks"
tgt_lun "$P" 1 1 "$TMP/d1.img"
tgt_lun "$P" 1 2 "$TMP/d2.img"
tgt_lun "$P" 1 3 "$TMP/ro.img" readonly
tgt_lun "$P" 1 4 "$TMP/4k.img" --blocksize 4096
tgt_lun "$P" 1 5 "$TMP/cd.iso" --device-type cd
tgt_lun "$P" 1 6 "$TMP/thin.img" thin
tgt_target "$P" 2 "$IQN:other"
tgt_lun "$P" 2 1 "$TMP/other.img"

cat > "$TMP/tab" <<TAB
d1     iscsi://127.0.0.1:$P/$IQN:disks/1
d2     iscsi://127.0.0.1:$P/$IQN:disks/2  connections=2
ro     iscsi://127.0.0.1:$P/$IQN:disks/3
blk4k  iscsi://127.0.0.1:$P/$IQN:disks/4
cd     iscsi://127.0.0.1:$P/$IQN:disks/5
thin   iscsi://127.0.0.1:$P/$IQN:disks/6
other  iscsi://127.0.0.1:$P/$IQN:other/1
TAB
nd_mount "$TMP/tab" "$TMP/mnt"
M=$TMP/mnt

same() { # same A B WHAT
    cmp "$1" "$2" || { show_log "$M.log"; fail "$3"; }
}

# Sizes and initial contents.
for e in d1:d1.img d2:d2.img ro:ro.img blk4k:4k.img cd:cd.iso other:other.img thin:thin.img; do
    name=${e%%:*} file=$TMP/${e#*:}
    [ "$(stat -c %s "$M/$name")" = "$(stat -c %s "$file")" ] ||
        fail "$name: size $(stat -c %s "$M/$name"), backing file $(stat -c %s "$file")"
    same "$M/$name" "$file" "$name reads differently from its backing file"
done
echo "ok: 7 LUNs of 2 targets read back byte-exact"

# Two LUNs of one target written at once.
pattern "$TMP/w1" 3
pattern "$TMP/w2" 2
dd if="$TMP/w1" of="$M/d1" bs=1M seek=2 conv=notrunc,fsync status=none &
dd if="$TMP/w2" of="$M/d2" bs=64k seek=16 conv=notrunc,fsync status=none
wait $! || fail "write to d1 failed"
dd if="$TMP/w1" of="$TMP/d1.orig" bs=1M seek=2 conv=notrunc status=none
dd if="$TMP/w2" of="$TMP/d2.orig" bs=64k seek=16 conv=notrunc status=none
same "$TMP/d1.img" "$TMP/d1.orig" "d1: the backing file does not hold what was written"
same "$TMP/d2.img" "$TMP/d2.orig" "d2: the backing file does not hold what was written"
same "$M/d1" "$TMP/d1.orig" "d1 reads back differently"
same "$M/d2" "$TMP/d2.orig" "d2 reads back differently"
echo "ok: two LUNs of one target written, backing files match"

# Read-only LUN: EROFS, and nothing changed.
if dd if="$TMP/w2" of="$M/ro" bs=4k count=1 conv=notrunc status=none 2>"$TMP/ro.err"; then
    fail "a write to the read-only LUN succeeded"
fi
grep -q "Read-only file system" "$TMP/ro.err" || { cat "$TMP/ro.err"; fail "the write to the read-only LUN did not fail with EROFS"; }
same "$TMP/ro.img" "$TMP/ro.orig" "the read-only LUN's backing file changed"
echo "ok: read-only LUN: $(tail -n1 "$TMP/ro.err")"

# Write-protected on the target after the mount: the target's DATA
# PROTECT sense reaches the writer as EROFS, and nothing changes.
tgt "$P" --mode logicalunit --op update --tid 1 --lun 2 --params readonly=1 ||
    fail "tgtadm: cannot make LUN 2 read-only"
if dd if="$TMP/w1" of="$M/d2" bs=64k count=1 oflag=direct conv=notrunc status=none 2>"$TMP/wp.err"; then
    fail "a write to a LUN write-protected on the target succeeded"
fi
grep -q "Read-only file system" "$TMP/wp.err" || { cat "$TMP/wp.err"; show_log "$M.log"; fail "the write to the write-protected LUN did not fail with EROFS"; }
same "$TMP/d2.img" "$TMP/d2.orig" "d2 changed while write-protected"
tgt "$P" --mode logicalunit --op update --tid 1 --lun 2 --params readonly=0
echo "ok: LUN write-protected on the target: $(tail -n1 "$TMP/wp.err")"

# 4096-byte blocks: unaligned writes of odd sizes land byte-exact.
for w in 1:0 513:4095 4097:8191 12345:777777 1:4194303 100000:2000001; do
    len=${w%%:*} off=${w#*:}
    head -c "$len" /dev/urandom > "$TMP/piece"
    dd if="$TMP/piece" of="$M/blk4k" bs="$len" seek="$off" oflag=seek_bytes conv=notrunc status=none ||
        fail "unaligned write of $len bytes at $off failed"
    dd if="$TMP/piece" of="$TMP/4k.orig" bs="$len" seek="$off" oflag=seek_bytes conv=notrunc status=none
done
sync "$M/blk4k"
same "$TMP/4k.img" "$TMP/4k.orig" "4096-byte LUN: the backing file differs after unaligned writes"
same "$M/blk4k" "$TMP/4k.orig" "4096-byte LUN reads back differently after unaligned writes"
echo "ok: 4096-byte-block LUN: 6 unaligned writes byte-exact"

# cdrom: read-only, read back byte-exact (done above), also from the middle.
same <(dd if="$M/cd" bs=1000 skip=1234 count=7 status=none) \
     <(dd if="$TMP/cd.iso" bs=1000 skip=1234 count=7 status=none) "cdrom: a read from the middle differs"
if dd if=/dev/zero of="$M/cd" bs=2048 count=1 conv=notrunc status=none 2>"$TMP/cd.err"; then
    fail "a write to the cdrom succeeded"
fi
grep -q "Read-only file system" "$TMP/cd.err" || { cat "$TMP/cd.err"; fail "the write to the cdrom did not fail with EROFS"; }
echo "ok: cdrom LUN: byte-exact, read-only"

# Punch a hole in the thin-provisioned LUN: zeroes through the mount and
# in the backing file, the rest untouched.
fallocate --punch-hole --keep-size --offset 1048576 --length 1048576 "$M/thin" ||
    { show_log "$M.log"; fail "punching a hole in the thin LUN failed"; }
dd if=/dev/zero of="$TMP/thin.orig" bs=1M seek=1 count=1 conv=notrunc status=none
same "$TMP/thin.img" "$TMP/thin.orig" "thin LUN: the backing file does not show the hole"
same "$M/thin" "$TMP/thin.orig" "thin LUN reads back differently after the hole"
echo "ok: punched hole on the thin LUN reads as zeroes"

same "$M/other" "$TMP/other.orig" "the second target's LUN changed"
nd_unmount "$M"
