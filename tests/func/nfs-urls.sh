#!/bin/bash
# Every NFS form reads and writes the server's exported file byte for byte
# (nfs-ganesha on 127.0.0.1, no portmapper): nfs:// with version=3,
# nfsport= and mountport=, the port in the URL, json: and dotted keys with
# user/group, the libnfs tuning keys, and NFSv4 read-only. A writable v4
# entry is refused with a message that says why. --print-config gives the
# same options for the same file.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/ganesha.sh"

ganesha_start
P=$GANESHA_PORT M=$GANESHA_MNTPORT E=$GANESHA_EXPORT
pattern "$E/disk.img" 8
cp "$E/disk.img" "$TMP/orig"

cat > "$TMP/tab" <<TAB
v3      nfs://127.0.0.1/export/disk.img?version=3&nfsport=$P&mountport=$M&uid=0&gid=0
json    json:{"driver":"nfs","server":{"type":"inet","host":"127.0.0.1"},"path":"/export/disk.img","user":0,"group":0,"version":"3","nfsport":"$P","mountport":"$M"}
dotted  driver=nfs,server.host=127.0.0.1,path=export/disk.img,user=0,group=0,nfsport=$P,mountport=$M
inport  nfs://127.0.0.1:$P/export/disk.img?mountport=$M
tuned   nfs://127.0.0.1/export/disk.img?nfsport=$P&mountport=$M&tcp-syn-count=2&readahead-size=131072&page-cache-size=64&debug=0  ro
v4      nfs://127.0.0.1/export/disk.img?version=4&nfsport=$P  ro
v4rw    nfs://127.0.0.1/export/disk.img?version=4&nfsport=$P
TAB

"$ND" --print-config "$TMP/tab" > "$TMP/config" 2>&1 || { cat "$TMP/config"; fail "--print-config failed"; }
section() { awk -v s="[$1]" '$0 == s {on = 1; next} /^\[/ || /^$/ {on = 0} on' "$TMP/config"; }
for e in json dotted; do
    [ "$(section $e)" = "$(section v3)" ] || { diff <(section v3) <(section $e); fail "v3 and $e parse differently"; }
done
section inport | grep -qx "server.port=$P" || { section inport; fail "the URL's port is not server.port"; }
section v4 | grep -qx "version=4" || fail "version=4 is lost"
echo "ok: nfs://, json: and dotted keys give the same options"

nd_mount "$TMP/tab" "$TMP/mnt"
[ -e "$TMP/mnt/v4rw" ] && fail "a writable NFSv4 entry was mounted"
grep -q "v4rw.*version=4 is read-only" "$TMP/mnt.log" || { show_log "$TMP/mnt.log"; fail "no clear message for the writable v4 entry"; }
echo "ok: a writable v4 entry is refused: $(grep -o 'version=4 is read-only[^)]*)' "$TMP/mnt.log" | head -n1)"
[ "$(stat -c %s "$TMP/mnt/v3")" = "$(stat -c %s "$E/disk.img")" ] || fail "the size differs from the exported file's"

pattern "$TMP/new" 3
cp "$TMP/orig" "$TMP/expect"
dd if="$TMP/new" of="$TMP/expect" bs=1M seek=2 conv=notrunc status=none
printf 'netdiskfs' | dd of="$TMP/expect" bs=1 seek=777777 conv=notrunc status=none
dd if="$TMP/new" of="$TMP/mnt/v3" bs=1M seek=2 oflag=direct conv=notrunc,fsync status=none || fail "write failed"
printf 'netdiskfs' | dd of="$TMP/mnt/v3" bs=1 seek=777777 conv=notrunc,fsync status=none || fail "small write failed"
cmp "$E/disk.img" "$TMP/expect" || fail "the exported file differs from what was written"
echo "ok: NFSv3 writes (O_DIRECT and unaligned, fsync) reach the exported file"
for e in json dotted inport tuned v4; do
    cmp "$TMP/mnt/$e" "$TMP/expect" || { show_log "$TMP/mnt.log"; fail "$e reads other bytes than the exported file"; }
done
echo "ok: json:, dotted, port in the URL, tuning keys and NFSv4 read the exported file byte for byte"
if printf x | dd of="$TMP/mnt/v4" conv=notrunc status=none 2>/dev/null; then
    fail "a write to the read-only v4 entry succeeded"
fi
nd_unmount "$TMP/mnt"
