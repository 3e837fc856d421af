#!/bin/bash
# status-readahead: the status file's read amplification fields agree with
# what nbdkit's log filter saw the daemon read: bytes_fetched is the sum of
# the server's reads; a sequential read uses what the readahead fetched
# (used ~= fetched, amplification ~1); random 4 KiB reads fetch little
# more than they asked and start no readahead; a stream cut short leaves
# readahead bytes that eviction counts as wasted.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/mount.sh"
. "$TOP/tests/lib/nbdkit.sh"
requires fio

pattern "$TMP/disk.img" 64
LOG=$TMP/d.nbdlog
nbdkit_unix srv --filter=log file "$TMP/disk.img" logfile="$LOG"
TAB=$TMP/tab
echo "d nbd+unix:///?socket=$(nbdkit_sock srv) cache-size=16M" >"$TAB"
MNT=$TMP/mnt
nd_mount "$TAB" "$MNT"
D=$MNT/d

# Bytes the server was asked to read (nbdkit's log: one line per request).
server_read() {
    grep -ao ' Read id=[0-9]* offset=0x[0-9a-f]* count=0x[0-9a-f]*' "$LOG" |
        $PY -c 'import sys; print(sum(int(l.split("count=")[1], 16) for l in sys.stdin))'
}
# amp: the entry's amplification fields as "asked fetched ra_fetched
# ra_used ra_wasted".
amp() {
    $PY - "$MNT/.netdiskfs/status" <<'EOF'
import json, sys
e = json.load(open(sys.argv[1]))["entries"][0]
r = e["readahead"]
print(e["bytes_asked"], e["bytes_fetched"], r["fetched"], r["used"], r["wasted"])
EOF
}
# Consistency at any time: used + wasted <= fetched, fetched = server's.
consistent() {
    local a f rf ru rw s
    read -r a f rf ru rw < <(amp)
    s=$(server_read)
    echo "$1: asked $a fetched $f (server $s) readahead fetched $rf used $ru wasted $rw"
    [ "$f" = "$s" ] || fail "$1: bytes_fetched $f but the server read $s bytes"
    ((ru + rw <= rf)) || fail "$1: readahead used $ru + wasted $rw > fetched $rf"
}

echo "== sequential: the readahead's bytes are read"
dd if="$D" of="$TMP/seq" bs=1M count=12 iflag=direct status=none || fail "sequential read failed"
cmp "$TMP/seq" <(head -c 12M "$TMP/disk.img") || fail "sequential read differs"
consistent sequential
read -r a f rf ru rw < <(amp)
((a == 12 << 20)) || fail "bytes_asked $a after a 12 MiB O_DIRECT read"
((rf >= 4 << 20)) || fail "readahead fetched only $rf bytes of a 12 MiB sequential read"
# What was fetched ahead and not read yet is the window beyond 12 MiB.
((ru >= rf - (8 << 20) && ru * 10 >= rf * 5)) || fail "readahead used $ru of $rf"
((f * 10 <= a * 18)) || fail "a sequential read fetched $f bytes for $a asked"
dd if="$D" of=/dev/null bs=1M skip=12 count=20 iflag=direct status=none || fail "read on failed"
read -r a f rf ru rw < <(amp)
((ru * 100 >= rf * 70)) || fail "sequential: readahead used $ru of $rf fetched"

echo "== random 4 KiB reads: little fetched, no readahead"
fio --name=r --filename="$D" --rw=randread --bs=4k --direct=1 --ioengine=psync \
    --offset=32m --size=32m --io_size=2m --randrepeat=1 --randseed=7 \
    --output="$TMP/fio.out" >/dev/null 2>&1 || { cat "$TMP/fio.out"; fail "fio randread failed"; }
consistent random
read -r a2 f2 rf2 ru2 rw2 < <(amp)
da=$((a2 - a)) df=$((f2 - f)) drf=$((rf2 - rf))
echo "random: asked $da fetched $df readahead $drf"
((da == 2 << 20)) || fail "random: bytes_asked grew by $da for 2 MiB of reads"
((df * 10 <= da * 13)) || fail "random 4 KiB reads fetched $df bytes for $da asked"
((drf * 10 <= da)) || fail "random 4 KiB reads started $drf bytes of readahead"

echo "== a stream cut short: eviction counts what it left unread"
dd if="$D" of=/dev/null bs=64k count=64 skip=256 iflag=direct status=none || fail "short stream failed"
read -r _ _ rf3 ru3 rw3 < <(amp)
pending=$((rf3 - ru3 - rw3))
echo "after the short stream: readahead fetched $rf3 used $ru3 wasted $rw3 (pending $pending)"
((pending > 0)) || fail "a short stream left nothing read ahead"
# 16 MiB of cache: reading 24 MiB elsewhere evicts every earlier block.
dd if="$D" of=/dev/null bs=1M count=24 skip=40 iflag=direct status=none || fail "evicting read failed"
consistent eviction
read -r _ _ rf4 ru4 rw4 < <(amp)
((rw4 - rw3 >= pending / 2)) || fail "eviction counted $((rw4 - rw3)) wasted of $pending unread"

echo "== netdiskfs status shows the amplification"
"$ND" status "$MNT" | tee "$TMP/table" || fail "netdiskfs status failed"
grep -Eq '^NAME .* AMP ' "$TMP/table" || fail "no AMP column"
grep -Eq '^d +nbd .* [0-9]+\.[0-9]{2} ' "$TMP/table" || fail "no amplification for d"
nd_unmount "$MNT"
echo PASS
