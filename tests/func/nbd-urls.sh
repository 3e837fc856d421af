#!/bin/bash
# Every NBD URL form mounts and reads the bytes of the server's backing
# file: nbd://, nbd+tcp://, IPv6, nbd+unix://, legacy nbd:HOST:PORT and
# nbd:unix:PATH (with :exportname=), json:{...}, dotted keys, named exports.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/nbdkit.sh"

pattern "$TMP/disk.img" 6
mkdir "$TMP/exports"
pattern "$TMP/exports/a" 2
pattern "$TMP/exports/b" 3

nbdkit_tcp t4 127.0.0.1 file "$TMP/disk.img"
nbdkit_tcp t6 ::1 file "$TMP/disk.img"
nbdkit_unix u file "$TMP/disk.img"
# One export per file of the directory; unknown names are refused.
nbdkit_tcp n4 127.0.0.1 file dir="$TMP/exports"
nbdkit_unix nu file dir="$TMP/exports"
P4=$(nbdkit_port t4) P6=$(nbdkit_port t6) PN=$(nbdkit_port n4)
S=$(nbdkit_sock u) SN=$(nbdkit_sock nu)

cat > "$TMP/tab" <<TAB
tcp        nbd://127.0.0.1:$P4/
tcpplus    nbd+tcp://127.0.0.1:$P4
ipv6       nbd://[::1]:$P6/
unix       nbd+unix:///?socket=$S
legacy     nbd:127.0.0.1:$P4
legacy6    nbd:[::1]:$P6
legacyunix nbd:unix:$S
legacyexp  nbd:127.0.0.1:$PN:exportname=b
legacyuexp nbd:unix:$SN:exportname=a
named      nbd://127.0.0.1:$PN/a
namedunix  nbd+unix:///b?socket=$SN
json       json:{"driver":"nbd","server":{"type":"inet","host":"127.0.0.1","port":"$P4"}}
jsonunix   json:{"driver":"nbd","server":{"type":"unix","path":"$SN"},"export":"a"}
jsonflat   json:{"driver":"nbd","server.type":"inet","server.host":"::1","server.port":"$P6"}
dotted     driver=nbd,server.type=unix,server.path=$SN,export=b
dottedfile file.driver=nbd,file.server.type=inet,file.server.host=127.0.0.1,file.server.port=$PN,file.export=a
TAB

# The canonical option sets agree across forms.
"$ND" --print-config "$TMP/tab" > "$TMP/config" 2>&1 || { head -n 20 "$TMP/config"; fail "--print-config failed"; }
section() { awk -v s="[$1]" '$0 == s {on = 1; next} /^\[/ || /^$/ {on = 0} on' "$TMP/config"; }
same() {
    local first=$1 e
    [ -n "$(section "$first")" ] || { cat "$TMP/config"; fail "no [$first] in --print-config"; }
    for e in "$@"; do
        [ "$(section "$e")" = "$(section "$first")" ] ||
            { diff <(section "$first") <(section "$e"); fail "$first and $e parse differently"; }
    done
    echo "ok: same options: $*"
}
same tcp tcpplus legacy json
same ipv6 legacy6 jsonflat
same unix legacyunix
same named dottedfile
same namedunix dotted
same legacyuexp jsonunix
echo "d nbd://127.0.0.1/" > "$TMP/tab-default"
"$ND" --print-config "$TMP/tab-default" 2>&1 | grep -q "server.port=10809" ||
    fail "nbd:// without a port does not default to 10809"

nd_mount "$TMP/tab" "$TMP/mnt"
check() {
    cmp "$TMP/mnt/$1" "$2" || { show_log "$TMP/mnt.log"; fail "$1 differs from $2"; }
    echo "ok: $1"
}
for e in tcp tcpplus ipv6 unix legacy legacy6 legacyunix json; do
    check $e "$TMP/disk.img"
done
for e in legacyuexp named jsonunix dottedfile; do
    check $e "$TMP/exports/a"
done
for e in legacyexp namedunix dotted; do
    check $e "$TMP/exports/b"
done
check jsonflat "$TMP/disk.img"

# Sizes come from the server.
[ "$(stat -c %s "$TMP/mnt/namedunix")" = $((3 * 1048576)) ] ||
    fail "size of namedunix is not 3 MiB"
nd_unmount "$TMP/mnt"
