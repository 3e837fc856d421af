#!/bin/bash
# fsync and close reach the backend's flush; fallocate punch-hole and
# zero-range read back zeroes through the mount and in the backing file;
# writeback mode holds writes until fsync and flushes them at unmount.
. "$(dirname "$0")/../lib/functions.sh"
requires fallocate

pattern "$TMP/a.img" 16
pattern "$TMP/w.img" 16
cp "$TMP/w.img" "$TMP/w.orig"
cat > "$TMP/t.tab" <<EOT
a  $TMP/a.img
w  $TMP/w.img  cache=writeback
EOT
nd_mount "$TMP/t.tab" "$TMP/mnt"
M=$TMP/mnt
flushes() { sed -n '/"name": "'"$1"'"/,/}/p' "$M/.netdiskfs/status" | grep -o '"flushes": [0-9]*' | grep -o '[0-9]*$'; }
before=$(grep -o '"flushes": [0-9]*' "$M/.netdiskfs/status" | head -1 | grep -o '[0-9]*$')
dd if=/dev/urandom of="$M/a" bs=64k count=1 conv=notrunc,fsync status=none || fail "dd fsync"
after=$(grep -o '"flushes": [0-9]*' "$M/.netdiskfs/status" | head -1 | grep -o '[0-9]*$')
[ "$after" -gt "$before" ] || fail "fsync did not reach the backend's flush ($before -> $after)"

# Punch a hole and zero a range; both read back as zeroes, everywhere.
fallocate -p -o 1048576 -l 2097152 "$M/a" || fail "punch hole"
fallocate -z -o 5000000 -l 100000 "$M/a" || fail "zero range"
cmp <(dd if="$M/a" bs=1M skip=1 count=2 status=none) <(head -c 2097152 /dev/zero) || fail "hole not zero through the mount"
cmp <(dd if="$TMP/a.img" bs=1M skip=1 count=2 status=none) <(head -c 2097152 /dev/zero) || fail "hole not zero in the backing file"
cmp <(dd if="$M/a" iflag=skip_bytes,count_bytes skip=5000000 count=100000 status=none) <(head -c 100000 /dev/zero) || fail "zero range"
cmp "$M/a" "$TMP/a.img" || fail "mount and file differ after fallocate"
# Allocation past the end is refused.
fallocate -o $((16 << 20)) -l 4096 "$M/a" 2>/dev/null && fail "fallocate grew the disk"

# Writeback: the backing file is unchanged until fsync.
head -c 300000 /dev/urandom > "$TMP/chunk"
exec 7<>"$M/w"
dd if="$TMP/chunk" bs=300000 seek=1 conv=notrunc status=none >&7 || fail "writeback write"
cmp "$TMP/w.img" "$TMP/w.orig" >/dev/null || fail "writeback wrote before fsync"
cmp <(dd if="$M/w" iflag=skip_bytes,count_bytes skip=300000 count=300000 status=none) "$TMP/chunk" || fail "writeback read-back"
sync "$M/w" || fail "fsync"
cmp <(dd if="$TMP/w.img" iflag=skip_bytes,count_bytes skip=300000 count=300000 status=none) "$TMP/chunk" || fail "fsync did not write back"
exec 7>&-
# A later write is flushed at unmount at the latest.
head -c 70000 /dev/urandom > "$TMP/chunk2"
dd if="$TMP/chunk2" of="$M/w" bs=70000 seek=100 conv=notrunc status=none || fail "second write"
nd_unmount "$M"
cmp <(dd if="$TMP/w.img" iflag=skip_bytes,count_bytes skip=7000000 count=70000 status=none) "$TMP/chunk2" || fail "unmount did not write back"
echo ok
