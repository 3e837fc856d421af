#!/bin/bash
# Read-only entries refuse writes with EROFS: per entry, per table default,
# for a file the daemon cannot write, and for the whole mount with -o ro.
. "$(dirname "$0")/../lib/functions.sh"

pattern "$TMP/a.img" 4
pattern "$TMP/b.img" 4
pattern "$TMP/c.img" 4
chmod 444 "$TMP/c.img"
cat > "$TMP/t.tab" <<EOT
a  $TMP/a.img  ro
b  json:{"driver":"file","filename":"$TMP/b.img","read-only":true}
c  $TMP/c.img
EOT
nd_mount "$TMP/t.tab" "$TMP/mnt"
M=$TMP/mnt
for e in a b; do
    [ "$(stat -c %a "$M/$e")" = 444 ] || fail "$e mode $(stat -c %a "$M/$e")"
    out=$(dd if=/dev/zero of="$M/$e" bs=4k count=1 conv=notrunc 2>&1) && fail "write to $e succeeded"
    echo "$out" | grep -q "Read-only file system" || fail "$e: $out"
    cmp "$M/$e" "$TMP/$e.img" || fail "$e changed"
done
# chmod 444 only bites non-root: as root the open succeeds read-write.
cmp "$M/c" "$TMP/c.img" || fail "c differs"
nd_unmount "$M"

# -o ro makes every entry read-only, even one that says ro=off.
printf 'a %s ro=off\n' "$TMP/a.img" > "$TMP/t2.tab"
nd_mount "$TMP/t2.tab" "$TMP/mnt2" -o ro
out=$(dd if=/dev/zero of="$TMP/mnt2/a" bs=4k count=1 conv=notrunc 2>&1) && fail "-o ro: write succeeded"
echo "$out" | grep -q "Read-only file system" || fail "-o ro: $out"
nd_unmount "$TMP/mnt2"
echo ok
