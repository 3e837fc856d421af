#!/bin/bash
# cache-write-race.sh: reads never fail because of a concurrent write to
# another page of the same block: while one process writes page 0 of
# blocks 0 and 1 (64 KiB each) again and again (writethrough), another
# reads page 1 of those blocks with O_DIRECT; the server answers reads
# slowly, so every load overlaps writes to its block. Every read must
# succeed with the right bytes.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/nbdkit.sh"

pattern "$TMP/disk.img" 4
cp "$TMP/disk.img" "$TMP/orig.img"
nbdkit_unix d --filter=delay file "$TMP/disk.img" rdelay=40ms
echo "d nbd+unix:///?socket=$(nbdkit_sock d)" > "$TMP/t.tab"
nd_mount "$TMP/t.tab" "$TMP/m"

head -c 4096 /dev/urandom > "$TMP/page0"
(
    for i in $(seq 1 3000); do
        [ -e "$TMP/stop" ] && break
        dd if="$TMP/page0" of="$TMP/m/d" bs=4096 seek=$(( (i % 2) * 16 )) count=1 conv=notrunc oflag=direct status=none || exit 1
    done
) &
writer=$!
fails=0
for i in $(seq 1 40); do
    k=$(( i % 2 ))
    if ! dd if="$TMP/m/d" of="$TMP/page1" bs=4096 skip=$(( k * 16 + 1 )) count=1 iflag=direct status=none 2>"$TMP/err"; then
        fails=$((fails + 1))
        continue
    fi
    cmp -s "$TMP/page1" <(dd if="$TMP/orig.img" bs=4096 skip=$(( k * 16 + 1 )) count=1 status=none) ||
        fail "read of page 1 of block $k returned wrong bytes"
done
touch "$TMP/stop"
wait $writer || fail "the writer failed"
[ $fails = 0 ] || { cat "$TMP/err"; fail "$fails of 40 reads of page 1 failed while page 0 was written"; }
for k in 0 1; do
    cmp -n 4096 "$TMP/page0" <(dd if="$TMP/disk.img" bs=4096 skip=$((k * 16)) count=1 status=none) ||
        fail "page 0 of block $k did not reach the server"
done
nd_unmount "$TMP/m"
echo "40 reads of page 1 while page 0 was written: all right"
