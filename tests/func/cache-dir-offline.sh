#!/bin/bash
# cache-dir-offline.sh: mounting while the server is down. A 64 MiB image
# over HTTP read whole and a second image read in part, unmounted, nginx
# stopped, mounted again: both entries mount from the cache directory
# (size from its metadata); the whole first image reads back byte-exact;
# the second image's uncached blocks fail with EIO within reconnect-delay
# (and at once after); nginx back: the reconnect finds it and every read
# works, the tier kept (same object). Mounted from the cache again and the
# object replaced meanwhile: the new validator drops the tier, the new
# bytes are served.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/nginx.sh"

nginx_start
pattern "$NGINX_ROOT/img" 64
pattern "$NGINX_ROOT/img2" 16
CD=$TMP/cd
cat >"$TMP/h.tab" <<EOT
a $NGINX_URL/img cache-dir=$CD,reconnect-delay=2,timeout=1
b $NGINX_URL/img2 cache-dir=$CD,reconnect-delay=2,timeout=1
EOT
ST=$TMP/m/.netdiskfs/status
field() { # ENTRY PYTHON-EXPR-ON-e
    python3 -c '
import json,sys
for e in json.load(open(sys.argv[1]))["entries"]:
    if e["name"] == sys.argv[2]: print(eval(sys.argv[3]))' "$ST" "$1" "$2"
}

nd_mount "$TMP/h.tab" "$TMP/m" -v
cmp "$TMP/m/a" "$NGINX_ROOT/img" || fail "first read of a: wrong bytes"
dd if="$TMP/m/b" of="$TMP/b-head" bs=1M count=4 iflag=direct status=none || fail "read of b's head"
nd_unmount "$TMP/m"

nginx_stop
t0=$(date +%s%N)
nd_mount "$TMP/h.tab" "$TMP/m" -v
echo "mount with the server down: $(( ($(date +%s%N) - t0) / 1000000 )) ms"
[ "$(stat -c %s "$TMP/m/a")" = $((64 << 20)) ] || { show_log "$TMP/m.log"; fail "a is not there with its size while the server is down"; }
[ "$(stat -c %s "$TMP/m/b")" = $((16 << 20)) ] || fail "b is not there with its size"
t0=$(date +%s%N)
cmp "$TMP/m/a" "$NGINX_ROOT/img" || fail "a from the cache with the server down: wrong bytes"
echo "64 MiB from the tier with the server down: $(( ($(date +%s%N) - t0) / 1000000 )) ms"
dd if="$TMP/m/b" of="$TMP/b-again" bs=1M count=4 iflag=direct status=none || fail "b's cached head with the server down"
cmp "$TMP/b-again" "$TMP/b-head" || fail "b's cached head differs"
# reconnect-delay 2 s (+ timeout 1 s): generous bound for a busy machine.
expect_eio 8000 "$TMP/m.log" "an uncached block of b with the server down" "$TMP/m/b" 200
echo "uncached block: EIO after $EIO_MS ms"
expect_eio 2000 "$TMP/m.log" "a second uncached block (entry failed: at once)" "$TMP/m/b" 201
[ "$(field a 'e["cache_dir"]["state"]')" = on ] || { cat "$ST"; fail "status: the tier of a is not on"; }
[ "$(field a 'e["hits_by_tier"]["disk"] >= 1024 and e["hits_by_tier"]["remote"] == 0')" = True ] ||
    { cat "$ST"; fail "status: a's 1024 blocks should be disk hits, none remote"; }
[ "$(field a 'e["cache_dir"]["bytes"] == e["cache_dir"]["limit"] == e["size"]')" = True ] ||
    { cat "$ST"; fail "status: a's tier bytes/limit"; }
[ "$(field b 'e["state"] in ("reconnecting", "failed") and e["mounted_from_cache_dir"]')" = True ] ||
    { cat "$ST"; fail "status: b is not reconnecting/failed, mounted from the cache, with the server down"; }
grep -q "from the cache directory" "$TMP/m.log" || { show_log "$TMP/m.log"; fail "the log does not say the entry mounted from the cache"; }

nginx_start
wait_for 20 dd if="$TMP/m/b" of=/dev/null bs=64k skip=200 count=1 iflag=direct status=none ||
    { show_log "$TMP/m.log"; fail "b's uncached block still fails 20 s after nginx came back"; }
cmp "$TMP/m/b" "$NGINX_ROOT/img2" || fail "b after the server came back: wrong bytes"
[ "$(field b 'e["state"]')" = connected ] || fail "b is not connected"
[ "$(field a 'e["cache_dir"]["state"]')" = on ] || { cat "$ST"; fail "the tier of a went off for the same object"; }
nd_unmount "$TMP/m"

# Mounted from the cache with the server down, the object replaced
# meanwhile: once the server is back its validator differs, the entry is
# opened afresh, the tier of b dropped, and b reads the new bytes.
nginx_stop
nd_mount "$TMP/h.tab" "$TMP/m" -v
pattern "$TMP/img2.new" 16
cp "$TMP/img2.new" "$NGINX_ROOT/img2.tmp"
touch -d '2030-01-01 00:00:00' "$NGINX_ROOT/img2.tmp"
mv "$NGINX_ROOT/img2.tmp" "$NGINX_ROOT/img2"
cmp <(head -c 4M "$TMP/m/b") "$TMP/b-head" || fail "b's cached head (old object, server down)"
nginx_start
wait_for 20 sh -c "cmp -s '$TMP/m/b' '$TMP/img2.new'" ||
    { show_log "$TMP/m.log"; cat "$ST"; fail "b does not read the new object after the server came back"; }
grep -q "object on the server changed" "$TMP/m.log" || { show_log "$TMP/m.log"; fail "the log does not say b's object changed"; }
field b 'e["cache_dir"]["dropped"]' | grep -q validator || { cat "$ST"; fail "the status does not say b's tier was dropped"; }
cmp "$TMP/m/a" "$NGINX_ROOT/img" || fail "a after b was opened afresh"
nd_unmount "$TMP/m"
echo "cache-dir-offline: mounted from the cache with the server down, EIO in bound, back after"
