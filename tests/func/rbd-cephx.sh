#!/bin/bash
# cephx: a client of its own (client.nd, not in the cluster's keyring)
# reaches the image with keyring=FILE (rbd: form) and with the bare key in
# key-secret-file=FILE (json: and dotted forms): bytes compared with
# rbd export. The key never shows in --print-config or the debug log;
# key-secret= in the table is refused; a wrong key fails the entry at once
# with a clear message and leaves the others mounted.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/ceph.sh"

ceph_start memstore cephx
ceph_cli auth get-or-create client.nd mon 'profile rbd' osd 'profile rbd pool=rbd' \
    -o "$TMP/nd.keyring" || fail "cannot create client.nd"
ceph_cli auth get-key client.nd > "$TMP/nd.key" || fail "cannot read client.nd's key"
chmod 600 "$TMP/nd.keyring" "$TMP/nd.key"
KEY=$(cat "$TMP/nd.key")
[ ${#KEY} -gt 20 ] || fail "no key in $TMP/nd.key"
# A well-formed key of another client: refused by the monitor.
ceph-authtool --gen-print-key > "$TMP/wrong.key"
chmod 600 "$TMP/wrong.key"
pattern "$TMP/img" 6
ceph_rbd import --no-progress "$TMP/img" rbd/img || fail "rbd import failed"

C=$CEPH_CONF
cat > "$TMP/tab" <<TAB
keyring  rbd:rbd/img:conf=$C:id=nd:keyring=$TMP/nd.keyring:auth_supported=cephx
keyfile  rbd:rbd/img:conf=$C:id=nd:key-secret-file=$TMP/nd.key
secret   json:{"driver":"rbd","pool":"rbd","image":"img","conf":"$C","user":"nd","auth-client-required":["cephx"],"key-secret-file":"$TMP/nd.key"}
dotted   driver=rbd,pool=rbd,image=img,conf=$C,user=nd,auth-client-required=cephx,key-secret-file=$TMP/nd.key
wrong    driver=rbd,pool=rbd,image=img,conf=$C,user=nd,key-secret-file=$TMP/wrong.key
TAB
chmod 600 "$TMP/tab"

"$ND" --print-config "$TMP/tab" > "$TMP/config" 2>&1 || { cat "$TMP/config"; fail "--print-config failed"; }
grep -qF "$KEY" "$TMP/config" && fail "--print-config shows the key"
grep -qx "key-secret-file=$TMP/nd.key" "$TMP/config" || { cat "$TMP/config"; fail "--print-config lacks key-secret-file"; }
if "$ND" --print-config "driver=rbd,pool=rbd,image=img,key-secret=$KEY" > "$TMP/inline" 2>&1; then
    fail "key-secret= in the table was accepted"
fi
grep -q "key-secret-file" "$TMP/inline" || { cat "$TMP/inline"; fail "the refusal does not name key-secret-file"; }
grep -qF "$KEY" "$TMP/inline" && fail "the refusal shows the key"
echo "ok: --print-config shows key-secret-file, never the key; key-secret= is refused"

start=$(date +%s)
nd_mount "$TMP/tab" "$TMP/mnt" --debug
[ $(( $(date +%s) - start )) -le 20 ] || fail "the mount took more than 20 s (the wrong key should fail at once)"
[ -e "$TMP/mnt/wrong" ] && fail "the entry with a wrong key is there"
grep -q "wrong.*rbd" "$TMP/mnt.log" || { show_log "$TMP/mnt.log"; fail "no message for the wrong key"; }
grep -i "wrong" "$TMP/mnt.log" | head -n 3
echo "ok: a wrong key fails its entry at once, the others mount"

pattern "$TMP/new" 2
cp "$TMP/img" "$TMP/expect"
dd if="$TMP/new" of="$TMP/expect" bs=1M seek=1 conv=notrunc status=none
dd if="$TMP/new" of="$TMP/mnt/keyring" bs=1M seek=1 oflag=direct conv=notrunc,fsync status=none ||
    { show_log "$TMP/mnt.log"; fail "write with keyring= failed"; }
ceph_rbd export --no-progress rbd/img "$TMP/export" || fail "rbd export failed"
cmp "$TMP/export" "$TMP/expect" || fail "rbd export differs from what was written with keyring="
cmp "$TMP/mnt/secret" "$TMP/expect" || fail "key-secret-file (json) reads other bytes"
cmp "$TMP/mnt/dotted" "$TMP/expect" || fail "key-secret-file (dotted) reads other bytes"
cmp "$TMP/mnt/keyfile" "$TMP/expect" || fail "key-secret-file (rbd: form) reads other bytes"
echo "ok: cephx with keyring= and key-secret-file=: bytes match rbd export"
nd_unmount "$TMP/mnt"
grep -qF "$KEY" "$TMP/mnt.log" && fail "the debug log holds the key"
echo "ok: the key is not in the debug log"
