#!/bin/bash
# cache-dir-queue.sh: the disk tier's writer queue (32 MiB). A cold
# sequential read of a 96 MiB image over HTTP with cache-dir= returns the
# server's bytes; every block is either kept in the directory or counted
# as left out (cache_dir.queue.dropped_bytes), and the unmount writes
# what was still queued (the directory then holds at least the image
# minus what was left out); `netdiskfs cache verify` passes; a second
# mount serves the whole image right, from the directory and the server,
# and keeps what the first left out. When the directory then holds the
# whole image, a third mount reads it back with the server stopped.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/nginx.sh"

MIB=96
SIZE=$((MIB << 20))
nginx_start
pattern "$NGINX_ROOT/img" $MIB
CD=$TMP/cd
echo "h $NGINX_URL/img cache-dir=$CD,cache-dir-size=200M" >"$TMP/h.tab"

# status FIELD...: numbers from the entry's cache_dir (queue.X for the queue).
status() {
    python3 -c '
import json, sys
c = json.load(open(sys.argv[1]))["entries"][0]["cache_dir"]
for f in sys.argv[2:]:
    v = c
    for k in f.split("."):
        v = v[k]
    print(v)' "$TMP/m/.netdiskfs/status" "$@"
}

# read_all WHAT: the whole image through the mount, as dd bs=1M reads it,
# compared with the server's file.
read_all() {
    dd if="$TMP/m/h" of="$TMP/got" bs=1M status=none || fail "$1: read"
    cmp "$TMP/got" "$NGINX_ROOT/img" || fail "$1: wrong bytes"
    rm -f "$TMP/got"
}

# verify WHAT: netdiskfs cache verify finds no bad block; sets CACHED.
verify() {
    "$ND" cache verify "$CD" >"$TMP/verify" 2>&1 || { cat "$TMP/verify"; fail "$1: cache verify"; }
    grep -q " 0 bad" "$TMP/verify" || { cat "$TMP/verify"; fail "$1: cache verify found bad blocks"; }
    "$ND" cache ls "$CD" >"$TMP/ls" || fail "$1: cache ls"
    CACHED=$(sed -n 's/.* cached=\([0-9]*\).*/\1/p' "$TMP/ls")
}

nd_mount "$TMP/h.tab" "$TMP/m"
read_all "cold read"
read -r dropped dropped_blocks limit < <(status queue.dropped_bytes queue.dropped_blocks queue.limit | xargs)
[ "$limit" -eq $((32 << 20)) ] || fail "queue limit $limit"
[ $((dropped > 0)) = $((dropped_blocks > 0)) ] || fail "dropped $dropped bytes in $dropped_blocks blocks"
echo "cold read: $dropped bytes ($dropped_blocks blocks) left out of the tier"
nd_unmount "$TMP/m" # at once: the unmount writes what is queued
verify "after the cold read"
[ $((CACHED + dropped)) -ge $SIZE ] ||
    fail "after the unmount the directory holds $CACHED bytes, $dropped left out: blocks were lost (image $SIZE)"
[ "$CACHED" -le $SIZE ] || fail "the directory holds $CACHED bytes"

nd_mount "$TMP/h.tab" "$TMP/m"
read_all "second mount"
hits=$(status hits)
[ "$CACHED" -eq 0 ] || [ "$hits" -gt 0 ] || fail "second mount: no block read from the directory"
dropped2=$(status queue.dropped_bytes)
nd_unmount "$TMP/m"
first=$CACHED
verify "after the second mount"
[ "$CACHED" -ge "$first" ] || fail "the second mount left $CACHED bytes, fewer than the first's $first"
[ $((CACHED + dropped2)) -ge $SIZE ] ||
    fail "after the second mount the directory holds $CACHED bytes, $dropped2 left out (image $SIZE)"
echo "second mount: $dropped2 bytes left out; the directory holds $CACHED of $SIZE bytes"

if [ "$CACHED" -eq $SIZE ]; then
    nd_mount "$TMP/h.tab" "$TMP/m"
    nginx_stop
    read_all "the whole image from the directory, the server stopped"
    nd_unmount "$TMP/m"
fi
echo "cache-dir-queue: ok"
