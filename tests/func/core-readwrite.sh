#!/bin/bash
# Several file-backed entries: byte-exact reads and writes through dd, cp
# and cmp; O_DIRECT reads; random-offset writes; writes past the end.
. "$(dirname "$0")/../lib/functions.sh"
requires fusermount3

pattern "$TMP/a.img" 64
pattern "$TMP/b.img" 8
head -c 3000000 /dev/urandom > "$TMP/odd.img"     # not a block multiple
cat > "$TMP/t.tab" <<EOT
# three entries
a      $TMP/a.img
b      file://$TMP/b.img   block-size=4K,readahead=1M
odd    "$TMP/odd.img"       cache=none
EOT
nd_mount "$TMP/t.tab" "$TMP/mnt"
M=$TMP/mnt

[ "$(ls "$M")" = "$(printf 'a\nb\nodd')" ] || fail "listing: $(ls "$M")"
[ "$(stat -c %s "$M/a")" = $((64 << 20)) ] || fail "size of a"
[ "$(stat -c %s "$M/odd")" = 3000000 ] || fail "size of odd"
[ "$(stat -c %a "$M/a")" = 644 ] || fail "mode of a"

cmp "$M/a" "$TMP/a.img" || fail "a differs"
cmp "$M/b" "$TMP/b.img" || fail "b differs"
cmp "$M/odd" "$TMP/odd.img" || fail "odd differs"

# O_DIRECT reads, small and large.
dd if="$M/a" of="$TMP/direct4k" bs=4k iflag=direct status=none || fail "O_DIRECT 4k"
cmp "$TMP/direct4k" "$TMP/a.img" || fail "O_DIRECT 4k data"
dd if="$M/b" of="$TMP/direct1m" bs=1M iflag=direct status=none || fail "O_DIRECT 1M"
cmp "$TMP/direct1m" "$TMP/b.img" || fail "O_DIRECT 1M data"

# Random-offset writes of odd sizes, through the mount, then compare the
# mount and the backing file.
for i in $(seq 1 40); do
    off=$(( (RANDOM * 32768 + RANDOM) % (63 << 20) ))
    len=$(( RANDOM % 200000 + 1 ))
    head -c $len /dev/urandom > "$TMP/chunk"
    dd if="$TMP/chunk" of="$M/a" bs=1 seek=$off conv=notrunc,fsync status=none 2>/dev/null ||
        dd if="$TMP/chunk" of="$M/a" oflag=seek_bytes seek=$off conv=notrunc status=none ||
        fail "write $len at $off"
    cmp <(dd if="$M/a" iflag=skip_bytes,count_bytes skip=$off count=$len status=none) "$TMP/chunk" ||
        fail "read-back through the mount at $off"
done 2>/dev/null
cmp "$M/a" "$TMP/a.img" || fail "mount and backing file differ after writes"

# O_DIRECT write, then a cached read sees it.
head -c 1M /dev/urandom > "$TMP/d1"
dd if="$TMP/d1" of="$M/b" bs=1M seek=3 oflag=direct conv=notrunc status=none || fail "O_DIRECT write"
cmp <(dd if="$M/b" bs=1M skip=3 count=1 status=none) "$TMP/d1" || fail "O_DIRECT write read-back"
cmp "$M/b" "$TMP/b.img" || fail "b differs after O_DIRECT write"

# cp over an entry (O_TRUNC is accepted; the size never changes).
pattern "$TMP/new8" 8
cp "$TMP/new8" "$M/b" || fail "cp into the mount"
cmp "$TMP/b.img" "$TMP/new8" || fail "cp did not reach the backing file"
[ "$(stat -c %s "$M/b")" = $((8 << 20)) ] || fail "size changed by cp"

# The disk never grows: a write at the end is ENOSPC.
out=$(dd if=/dev/zero of="$M/odd" bs=1 count=10 seek=3000000 conv=notrunc 2>&1) && fail "write past the end succeeded"
echo "$out" | grep -q "No space left" || fail "write past the end: $out"
# ...and one that crosses the end is short.
dd if=/dev/zero of="$M/odd" bs=1000 count=2 oflag=seek_bytes seek=2999000 conv=notrunc status=none 2>/dev/null
[ "$(stat -c %s "$TMP/odd.img")" = 3000000 ] || fail "backing file grew"
cmp "$M/odd" "$TMP/odd.img" || fail "odd differs"

nd_unmount "$M"
echo ok
