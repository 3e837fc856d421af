#!/bin/bash
# Every RBD form QEMU takes reads and writes the image byte for byte
# against `rbd export` on a one-node Ceph cluster (auth none, memstore):
# rbd:pool/image with :key=value options (conf, id, mon_host with \;,
# auth_supported, a pass-through Ceph option), a pool namespace, json:
# with server[] and auth-client-required[], dotted keys, and a snapshot
# entry that keeps the snapshot's bytes while the image changes.
# --print-config gives the same options for the same image, and qemu-img
# agrees on the size and the bytes.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/ceph.sh"
requires qemu-img

ceph_start memstore none
pattern "$TMP/img" 12
pattern "$TMP/img2" 5
ceph_rbd import --no-progress "$TMP/img" rbd/img || fail "rbd import failed"
ceph_rbd snap create --no-progress rbd/img@s1 || fail "rbd snap create failed"
ceph_rbd namespace create rbd/ns1 || fail "rbd namespace create failed"
ceph_rbd import --no-progress "$TMP/img2" rbd/ns1/img2 || fail "rbd import (namespace) failed"

C=$CEPH_CONF
cat > "$TMP/tab" <<TAB
legacy   rbd:rbd/img:conf=$C:id=admin:mon_host=127.0.0.1\\:6789:auth_supported=none:rbd_cache=false
json     json:{"driver":"rbd","pool":"rbd","image":"img","conf":"$C","user":"admin","server":[{"host":"127.0.0.1","port":"6789"}],"auth-client-required":["none"],"keyvalue-pairs":"rbd_cache=false"}
dotted   driver=rbd,pool=rbd,image=img,conf=$C,user=admin,server.0.host=127.0.0.1,server.0.port=6789,auth-client-required=none,keyvalue-pairs=rbd_cache=false
twomons  rbd:rbd/img:conf=$C:mon_host=127.0.0.1\\:6789\\;127.0.0.1\\:3300
ns       rbd:rbd/ns1/img2:conf=$C
nsjson   json:{"driver":"rbd","pool":"rbd","namespace":"ns1","image":"img2","conf":"$C"}
snap     rbd:rbd/img@s1:conf=$C
snapjson json:{"driver":"rbd","pool":"rbd","image":"img","snapshot":"s1","conf":"$C"}
TAB

"$ND" --print-config "$TMP/tab" > "$TMP/config" 2>&1 || { cat "$TMP/config"; fail "--print-config failed"; }
section() { awk -v s="[$1]" '$0 == s {on = 1; next} /^\[/ || /^$/ {on = 0} on' "$TMP/config"; }
same() {
    local e
    [ -n "$(section "$1")" ] || { cat "$TMP/config"; fail "no [$1] in --print-config"; }
    for e in "$@"; do
        [ "$(section "$e")" = "$(section "$1")" ] ||
            { diff <(section "$1") <(section "$e"); fail "$1 and $e parse differently"; }
    done
    echo "ok: same options: $*"
}
same legacy json dotted
same ns nsjson
same snap snapjson
section legacy | grep -qx "server.0.host=127.0.0.1" || fail "mon_host did not become server.0.host"
section twomons | grep -qx "server.1.port=3300" || { section twomons; fail "mon_host a\\;b did not become two servers"; }
section snap | grep -qx "ro=on" || fail "a snapshot entry is not read-only in --print-config"

nd_mount "$TMP/tab" "$TMP/mnt"
[ "$(stat -c %s "$TMP/mnt/legacy")" = $((12 << 20)) ] || fail "wrong size: $(stat -c %s "$TMP/mnt/legacy")"
size=$(qemu-img info --output=json "rbd:rbd/img:conf=$C" | sed -n 's/.*"virtual-size": *\([0-9]*\).*/\1/p')
[ "$size" = "$(stat -c %s "$TMP/mnt/json")" ] || fail "qemu-img says $size bytes, the mount $(stat -c %s "$TMP/mnt/json")"
echo "ok: qemu-img info and the mount agree on $size bytes"

# Writes through one entry (O_DIRECT, unaligned tail, fsync) land in the
# image; the snapshot keeps its bytes.
pattern "$TMP/new" 3
cp "$TMP/img" "$TMP/expect"
dd if="$TMP/new" of="$TMP/expect" bs=1M seek=5 conv=notrunc status=none
printf 'netdiskfs' | dd of="$TMP/expect" bs=1 seek=123457 conv=notrunc status=none
dd if="$TMP/new" of="$TMP/mnt/legacy" bs=1M seek=5 oflag=direct conv=notrunc,fsync status=none || fail "write failed"
printf 'netdiskfs' | dd of="$TMP/mnt/legacy" bs=1 seek=123457 conv=notrunc,fsync status=none || fail "small write failed"
ceph_rbd export --no-progress rbd/img "$TMP/export" || fail "rbd export failed"
cmp "$TMP/export" "$TMP/expect" || fail "rbd export differs from what was written"
echo "ok: writes reach the image (rbd export agrees)"
for e in json dotted twomons; do
    cmp "$TMP/mnt/$e" "$TMP/expect" || fail "$e reads other bytes than rbd export"
done
qemu-img compare -q -f raw -F raw "rbd:rbd/img:conf=$C" "$TMP/mnt/dotted" || fail "qemu-img compare: the image and the mount differ"
echo "ok: json:, dotted keys and a two-monitor list read the image; qemu-img compare agrees"

cmp "$TMP/mnt/snap" "$TMP/img" || fail "the snapshot entry does not show the snapshot's bytes"
cmp "$TMP/mnt/snapjson" "$TMP/img" || fail "the json snapshot entry does not show the snapshot's bytes"
if printf x | dd of="$TMP/mnt/snap" conv=notrunc status=none 2>/dev/null; then
    fail "a write to the snapshot entry succeeded"
fi
echo "ok: the snapshot entry shows the snapshot's bytes while the image changed, and refuses writes"

pattern "$TMP/new2" 1
cp "$TMP/img2" "$TMP/expect2"
dd if="$TMP/new2" of="$TMP/expect2" bs=1M seek=2 conv=notrunc status=none
dd if="$TMP/new2" of="$TMP/mnt/ns" bs=1M seek=2 conv=notrunc,fsync status=none || fail "namespace write failed"
ceph_rbd export --no-progress rbd/ns1/img2 "$TMP/export2" || fail "rbd export (namespace) failed"
cmp "$TMP/export2" "$TMP/expect2" || fail "the namespace image differs from what was written"
cmp "$TMP/mnt/nsjson" "$TMP/expect2" || fail "nsjson reads other bytes"
echo "ok: pool namespace: reads and writes byte for byte"

# Discard and write zeroes reach librbd (fallocate punch/zero).
fallocate -p -o $((1 << 20)) -l $((1 << 20)) "$TMP/mnt/legacy" 2>/dev/null &&
    dd if=/dev/zero of="$TMP/expect" bs=1M seek=1 count=1 conv=notrunc status=none &&
    sync "$TMP/mnt/legacy" && ceph_rbd export --no-progress rbd/img "$TMP/export3" &&
    { cmp "$TMP/export3" "$TMP/expect" || fail "punch hole: the image differs"; echo "ok: punch hole reaches the image"; }
nd_unmount "$TMP/mnt"
