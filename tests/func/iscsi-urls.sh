#!/bin/bash
# iSCSI URL forms and their options, against tgtd on 127.0.0.1 and ::1:
# iscsi://HOST:PORT, the default port in --print-config, an IPv6 portal
# ([::1]), json: and dotted keys, header-digest, and the initiator name
# (default iqn.2008-11.org.linux-kvm:<entry>, per entry, from -o and from
# --iscsi) as tgtd sees it.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/tgtd.sh"

P=$(tgt_free_port)
IQN=iqn.2026-01.test.netdiskfs:urls
pattern "$TMP/disk.img" 2
tgtd_start "$P" "127.0.0.1:$P" "[::1]:$P"
tgt_target "$P" 1 "$IQN"
tgt_lun "$P" 1 1 "$TMP/disk.img"

# Canonical option sets.
cat > "$TMP/tab-print" <<TAB
plain  iscsi://192.0.2.1/iqn.2001-04.com.example/1
v6     iscsi://[::1]/iqn.2001-04.com.example/2
TAB
"$ND" --print-config "$TMP/tab-print" > "$TMP/config" 2>&1 || { cat "$TMP/config"; fail "--print-config failed"; }
grep -q "portal=192.0.2.1:3260" "$TMP/config" || { cat "$TMP/config"; fail "no default port 3260 in the canonical set"; }
grep -q "portal=\[::1\]:3260" "$TMP/config" || { cat "$TMP/config"; fail "the IPv6 portal is not [::1]:3260"; }
grep -q "target=iqn.2001-04.com.example" "$TMP/config" && grep -q "lun=2" "$TMP/config" ||
    { cat "$TMP/config"; fail "target/lun missing from the canonical set"; }
echo "ok: --print-config: default port, IPv6 portal, target, lun"

cat > "$TMP/tab" <<TAB
v4       iscsi://127.0.0.1:$P/$IQN/1
v6       iscsi://[::1]:$P/$IQN/1
json     json:{"driver":"iscsi","transport":"tcp","portal":"127.0.0.1:$P","target":"$IQN","lun":"1"}
dotted   file.driver=iscsi,file.transport=tcp,file.portal=[::1]:$P,file.target=$IQN,file.lun=1
digest   iscsi://127.0.0.1:$P/$IQN/1  header-digest=crc32c
nodigest iscsi://127.0.0.1:$P/$IQN/1  header-digest=none
named    iscsi://127.0.0.1:$P/$IQN/1  initiator-name=iqn.2026-01.test:per-entry
TAB
nd_mount "$TMP/tab" "$TMP/mnt"
for e in v4 v6 json dotted digest nodigest named; do
    cmp "$TMP/mnt/$e" "$TMP/disk.img" || { show_log "$TMP/mnt.log"; fail "$e differs from the backing file"; }
done
echo "ok: iscsi:// over IPv4 and IPv6, json:, dotted keys, header digests read byte-exact"

# The initiator names tgtd sees.
tgt "$P" --mode target --op show > "$TMP/show"
for want in iqn.2008-11.org.linux-kvm:v4 iqn.2008-11.org.linux-kvm:v6 iqn.2026-01.test:per-entry; do
    grep -q "Initiator: $want\( \|$\)" "$TMP/show" || { cat "$TMP/show"; fail "tgtd saw no initiator $want"; }
done
grep -q "IP Address: ::1" "$TMP/show" || { cat "$TMP/show"; fail "tgtd saw no IPv6 session"; }
echo "ok: default initiator names iqn.2008-11.org.linux-kvm:<entry>, a per-entry one, an IPv6 session"
nd_unmount "$TMP/mnt"

# Command-line spellings: -o initiator-name= and --iscsi initiator-name=.
echo "e iscsi://127.0.0.1:$P/$IQN/1" > "$TMP/tab1"
nd_mount "$TMP/tab1" "$TMP/mnt2" --iscsi initiator-name=iqn.2026-01.test:from-iscsi-flag
tgt "$P" --mode target --op show | grep -q "Initiator: iqn.2026-01.test:from-iscsi-flag" ||
    fail "--iscsi initiator-name= did not reach the target"
cmp "$TMP/mnt2/e" "$TMP/disk.img" || fail "read with --iscsi initiator-name differs"
nd_unmount "$TMP/mnt2"
nd_mount "$TMP/tab1" "$TMP/mnt3" -o initiator-name=iqn.2026-01.test:from-o
tgt "$P" --mode target --op show | grep -q "Initiator: iqn.2026-01.test:from-o" ||
    fail "-o initiator-name= did not reach the target"
nd_unmount "$TMP/mnt3"
echo "ok: initiator-name from --iscsi and -o"
