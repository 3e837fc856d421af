#!/bin/bash
# cache-dir.sh: the persistent cache tier. A 64 MiB image over HTTP read
# half through a mount with cache-dir=, unmounted, nginx stopped, mounted
# again: the half read before reads back byte-exact from the cache
# directory with the server down, the other half fails with EIO within
# the bound; kill -9 of the daemon while it fills the cache, a block
# corrupted by hand and a truncated map: the next mount serves only the
# server's bytes; a cache directory on a tiny tmpfs: reads stay right and
# the log says the tier is off; a writable NBD entry: written data is what
# a remount reads; `netdiskfs cache ls|verify|drop` see it all.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/nbdkit.sh"
. "$TOP/tests/lib/nginx.sh"

nginx_start
pattern "$NGINX_ROOT/img" 64
CD=$TMP/cd
mkdir -p "$CD"
echo "h $NGINX_URL/img cache-dir=$CD,reconnect-delay=2,timeout=1" > "$TMP/h.tab"

nd_mount "$TMP/h.tab" "$TMP/m"
# 128 blocks of 64 KiB in a shuffled order: random reads, no readahead.
for k in $(seq 0 127 | shuf); do
    dd if="$TMP/m/h" of="$TMP/half" bs=64k skip=$k seek=$k count=1 iflag=direct conv=notrunc status=none || fail "read of block $k"
done
cmp "$TMP/half" <(head -c 8M "$NGINX_ROOT/img") || fail "first reads: wrong bytes"
status_bytes=$(python3 -c '
import json,sys; e=json.load(open(sys.argv[1]))["entries"][0]; print(e["cache_dir"]["bytes"])' "$TMP/m/.netdiskfs/status")
[ "$status_bytes" -ge $((8 << 20)) ] || fail "status: cache_dir bytes $status_bytes"
nd_unmount "$TMP/m"
"$ND" cache ls "$CD" > "$TMP/ls" || fail "cache ls"
cached=$(sed -n 's/.*cached=\([0-9]*\).*/\1/p' "$TMP/ls")
[ "${cached:-0}" -ge $((8 << 20)) ] || { cat "$TMP/ls"; fail "cache ls: $cached bytes"; }

# A new mount (an empty memory cache), then the server goes away.
nd_mount "$TMP/h.tab" "$TMP/m"
nginx_stop
dd if="$TMP/m/h" of="$TMP/again" bs=64k count=128 iflag=direct status=none || fail "the cached blocks with the server down"
cmp "$TMP/again" "$TMP/half" || fail "the cached blocks differ with the server down"
expect_eio 8000 "$TMP/m.log" "an uncached block with the server down" "$TMP/m/h" 600
nd_unmount "$TMP/m"

# kill -9 while the tier fills, a corrupted block, a truncated map.
nginx_start
for round in 1 2 3; do
    ( exec "$ND" "$TMP/h.tab" "$TMP/m" -f --pidfile "$TMP/k.pid" >"$TMP/k.log" 2>&1 ) &
    wait_for 20 test -s "$TMP/k.pid" || fail "mount for kill -9"
    dd if="$TMP/m/h" of=/dev/null bs=1M skip=32 iflag=direct status=none &
    sleep 0.$((RANDOM % 6 + 2))
    kill -9 "$(cat "$TMP/k.pid")"
    wait 2>/dev/null
    fusermount3 -u -z "$TMP/m" 2>/dev/null
    rm -f "$TMP/k.pid"
done
d=$(ls -d "$CD"/*/ | head -n1)
printf 'XXXXXXXX' | dd of="$d/data" bs=1 seek=$((3 * 65536 + 100)) conv=notrunc status=none
truncate -s $(( $(stat -c %s "$d/map") / 2 )) "$d/map"
nd_mount "$TMP/h.tab" "$TMP/m"
cmp "$TMP/m/h" "$NGINX_ROOT/img" || fail "after kill -9, corruption and a truncated map: wrong bytes"
nd_unmount "$TMP/m"
"$ND" cache verify "$CD" >/dev/null; [ $? -le 1 ] || fail "cache verify"

# A tiny file system for the cache: right bytes, the tier turns off.
mkdir -p "$TMP/tiny"
mount -t tmpfs -o size=1m tmpfs "$TMP/tiny" || fail "tmpfs"
cleanup_fn "umount $TMP/tiny"
echo "t $NGINX_URL/img cache-dir=$TMP/tiny,cache-dir-size=64M" > "$TMP/t.tab"
nd_mount "$TMP/t.tab" "$TMP/mt" -v
cmp "$TMP/mt/t" "$NGINX_ROOT/img" || fail "tiny cache dir: wrong bytes"
grep -q "disk tier off" "$TMP/mt.log" || { cat "$TMP/mt.log"; fail "the log does not say the tier is off"; }
nd_unmount "$TMP/mt"

# A writable NBD entry: what it writes is what the next mount reads.
pattern "$TMP/disk.img" 8
nbdkit_unix n file "$TMP/disk.img"
echo "n nbd+unix:///?socket=$(nbdkit_sock n) cache-dir=$CD" > "$TMP/n.tab"
nd_mount "$TMP/n.tab" "$TMP/mn"
cat "$TMP/mn/n" > /dev/null
head -c 300000 /dev/urandom > "$TMP/piece"
dd if="$TMP/piece" of="$TMP/mn/n" bs=300000 seek=7 conv=notrunc,fsync status=none || fail "write"
nd_unmount "$TMP/mn"
nd_mount "$TMP/n.tab" "$TMP/mn"
cmp "$TMP/mn/n" "$TMP/disk.img" || fail "after a remount the written data is not what reads back"
nd_unmount "$TMP/mn"
"$ND" cache drop "$CD" >/dev/null || fail "cache drop"
[ -z "$(ls "$CD")" ] || fail "cache drop left something"
echo "cache-dir: outage, kill -9, corruption, full tmpfs, writes all right"
