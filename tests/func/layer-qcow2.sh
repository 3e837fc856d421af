#!/bin/bash
# layer-qcow2.sh: format=qcow2 shows the guest's disk, decoded, over NBD,
# HTTP and SFTP: images made by qemu-img (v2, v3 with zero clusters, zstd
# compressed, 512-byte clusters, a snapshot) read back equal to
# `qemu-img convert -O raw`; backing chains with relative names resolve
# across http -> http -> file and nbd -> nbd; writes through the mount
# (random dd, fsync) leave an image that `qemu-img check` finds clean and
# `qemu-img compare` finds equal to the expected bytes.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/nbdkit.sh"
. "$TOP/tests/lib/nginx.sh"
. "$TOP/tests/lib/sshd.sh"
requires qemu-img
requires qemu-io

SRV=$TMP/srv
mkdir -p "$SRV"
q() { qemu-img "$@" >/dev/null || fail "qemu-img $*"; }
qio() { qemu-io -f qcow2 "$@" >/dev/null || fail "qemu-io $*"; }
W=(-c 'write -P 0x11 0 64k' -c 'write -P 0x22 1000k 300k' -c 'write -P 0x33 7M 1M')
q create -f qcow2 -o compat=0.10 "$SRV/v2.qcow2" 8M; qio "${W[@]}" "$SRV/v2.qcow2"
q create -f qcow2 "$SRV/v3.qcow2" 8M; qio "${W[@]}" -c 'write -z 1M 64k' "$SRV/v3.qcow2"
q create -f qcow2 -o cluster_size=512 "$SRV/c512.qcow2" 8M; qio "${W[@]}" "$SRV/c512.qcow2"
(seq 1 400000; head -c 1M /dev/urandom) | head -c 6M > "$TMP/text.raw"
q convert -c -O qcow2 -o compression_type=zstd -f raw "$TMP/text.raw" "$SRV/zstd.qcow2"
q create -f qcow2 "$SRV/snap.qcow2" 4M; qio -c 'write -P 0x41 0 1M' "$SRV/snap.qcow2"
q snapshot -c s1 "$SRV/snap.qcow2"; qio -c 'write -P 0x42 512k 1M' "$SRV/snap.qcow2"
# Chains: base.raw is a local file (absolute name); mid and top relative.
head -c 4M /dev/urandom > "$TMP/base.raw"
q create -f qcow2 -b "$TMP/base.raw" -F raw "$SRV/mid.qcow2"
qio -c 'write -P 0x21 1M 100k' "$SRV/mid.qcow2"
q create -f qcow2 -b mid.qcow2 -F qcow2 "$SRV/top.qcow2" 6M
qio -c 'write -P 0x31 1050k 10k' -c 'write -P 0x32 5M 4k' "$SRV/top.qcow2"
q create -f qcow2 "$SRV/w.qcow2" 16M
# An NBD export has a fixed size: room for new clusters is free space at
# the end of the image file (its refcounts are 0 there).
truncate -s 24M "$SRV/w.qcow2"
for f in "$SRV"/*.qcow2; do q convert -O raw "$f" "$f.raw"; done
q convert -l snapshot.name=s1 -O raw "$SRV/snap.qcow2" "$TMP/snap-s1.raw"

nbdkit_tcp n 127.0.0.1 file dir="$SRV"
nginx_start
cp "$SRV"/*.qcow2 "$NGINX_ROOT"/
sshd_setup
sshd_start
agent_start

N="nbd://127.0.0.1:$(nbdkit_port n)"
cat > "$TMP/t.tab" <<TAB
n-v2     $N/v2.qcow2           format=qcow2
n-v3     $N/v3.qcow2           format=qcow2
n-c512   $N/c512.qcow2         format=qcow2
n-top    $N/top.qcow2          format=qcow2,ro
n-snap   $N/snap.qcow2         format=qcow2,snapshot=s1
n-w      $N/w.qcow2            format=qcow2
h-zstd   json:{"driver":"qcow2","file":{"driver":"http","url":"$NGINX_URL/zstd.qcow2"}}
h-top    driver=qcow2,file.driver=http,file.url=$NGINX_URL/top.qcow2
s-v3     ssh://127.0.0.1:$SSHD_PORT$SRV/v3.qcow2  format=qcow2,ro,known-hosts=$SSHD_KNOWN_HOSTS
n-alone  $N/top.qcow2          format=qcow2,ro,backing=off
TAB
nd_mount "$TMP/t.tab" "$TMP/m"
for x in n-v2:v2 n-v3:v3 n-c512:c512 n-top:top h-zstd:zstd h-top:top s-v3:v3; do
    cmp "$TMP/m/${x%%:*}" "$SRV/${x#*:}.qcow2.raw" || fail "${x%%:*}: not the decoded disk"
done
cmp "$TMP/m/n-snap" "$TMP/snap-s1.raw" || fail "snapshot s1: wrong bytes"
[ "$(stat -c %s "$TMP/m/n-top")" = $((6 * 1048576)) ] || fail "n-top: not the virtual size"
# backing=off: unallocated clusters read as zeroes.
q convert -O raw "json:{\"driver\":\"qcow2\",\"backing\":null,\"file\":{\"driver\":\"file\",\"filename\":\"$SRV/top.qcow2\"}}" "$TMP/alone.raw"
cmp "$TMP/m/n-alone" "$TMP/alone.raw" || fail "backing=off: wrong bytes"
[ "$(stat -c %a "$TMP/m/n-top")" = 444 ] || fail "n-top: a read-only entry must be 0444"

# Writes: random pieces with dd, fsync, then qemu-img is the judge.
cp "$SRV/w.qcow2.raw" "$TMP/w.expect"
for i in $(seq 1 40); do
    off=$(( (RANDOM * 37) % (16 * 1048576 - 70000) ))
    len=$(( 1 + RANDOM % 70000 ))
    head -c $len /dev/urandom > "$TMP/piece"
    dd if="$TMP/piece" of="$TMP/m/n-w" bs=$len seek=$off oflag=seek_bytes conv=notrunc,fsync status=none || fail "write $i"
    dd if="$TMP/piece" of="$TMP/w.expect" bs=$len seek=$off oflag=seek_bytes conv=notrunc status=none
done
cmp "$TMP/m/n-w" "$TMP/w.expect" || fail "n-w: reads back wrong"
nd_unmount "$TMP/m"
qemu-img check -q "$SRV/w.qcow2"; rc=$?
[ $rc = 0 ] || [ $rc = 3 ] || fail "qemu-img check: corruption (exit $rc)"
qemu-img compare -q -f qcow2 -F raw "$SRV/w.qcow2" "$TMP/w.expect" || fail "qemu-img compare: the image differs"
echo "qcow2 decoded over nbd, http, sftp; chains, snapshot, writes checked"
