#!/bin/bash
# A read-only export (nbdkit -r) becomes a read-only file: reads work,
# writes fail with EROFS; ro=on does the same on a writable export. The
# backing files are unchanged.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/nbdkit.sh"

pattern "$TMP/disk.img" 4
cp "$TMP/disk.img" "$TMP/orig"
nbdkit_unix ro -r file "$TMP/disk.img"
nbdkit_unix rw file "$TMP/disk.img"
cat > "$TMP/tab" <<TAB
export  nbd+unix:///?socket=$(nbdkit_sock ro)
entry   nbd+unix:///?socket=$(nbdkit_sock rw)  ro=on
TAB
nd_mount "$TMP/tab" "$TMP/mnt"
pattern "$TMP/new" 1
for e in export entry; do
    cmp "$TMP/mnt/$e" "$TMP/orig" || fail "$e: reads other bytes"
    if dd if="$TMP/new" of="$TMP/mnt/$e" bs=64k conv=notrunc,fsync status=none 2>"$TMP/$e.err"; then
        fail "$e: a write to a read-only export succeeded"
    fi
    grep -q "Read-only file system" "$TMP/$e.err" || { cat "$TMP/$e.err"; fail "$e: the write did not fail with EROFS"; }
    echo "ok: $e: $(head -n1 "$TMP/$e.err")"
done
cmp "$TMP/disk.img" "$TMP/orig" || fail "the backing file changed"
kill -0 "$(cat "$TMP/mnt.pid")" || fail "the daemon died"
nd_unmount "$TMP/mnt"
