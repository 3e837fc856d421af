#!/bin/bash
# mount-status: .netdiskfs/status tells the truth: sizes and backends, bytes
# and requests growing with reads, cache hits on re-reads; after the NBD
# server is stopped the entry goes reconnecting/failed with last_error
# set while a local entry stays connected; after a restart it is back.
# `netdiskfs status MNT` prints the same as a table.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/mount.sh"
. "$TOP/tests/lib/nbdkit.sh"

pattern "$TMP/disk.img" 16
pattern "$TMP/local.img" 2
nbdkit_unix srv file "$TMP/disk.img"
SOCK=$(nbdkit_sock srv)
TAB=$TMP/tab
cat >"$TAB" <<EOT
n      nbd+unix:///?socket=$SOCK   cache-size=8M,readahead=64K,reconnect-delay=2,timeout=2
local  file://$TMP/local.img
EOT
MNT=$TMP/mnt
nd_mount "$TAB" "$MNT" -v
ST=$MNT/.netdiskfs/status
if echo x >"$ST" 2>/dev/null; then fail "the status file is writable"; fi

[ "$(ls "$MNT")" = "$(printf 'local\nn')" ] || fail "plain ls shows: $(ls "$MNT")"
[ -d "$MNT/.netdiskfs" ] && [ -f "$ST" ] || fail ".netdiskfs/status missing"
[ "$(stat -c %a "$ST")" = 444 ] || fail "status file mode $(stat -c %a "$ST")"
$PY -m json.tool "$ST" >/dev/null || fail "the status file is not JSON"
[ "$(status_pid "$MNT")" = "$(cat "$MNT.pid")" ] || fail "pid in status differs from the pidfile"
[ "$(status_names "$MNT" | tr '\n' ' ')" = "n local " ] || fail "entries: $(status_names "$MNT")"

check() { # NAME KEY EXPECTED
    local v
    v=$(status_field "$MNT" "$1" "$2")
    [ "$v" = "$3" ] || { cat "$ST" >&2; fail "$1.$2 = $v, expected $3"; }
}
check n backend nbd
check n size $((16 << 20))
check n read_only false
check n state connected
check n last_error null
check n url "nbd+unix:///?socket=$SOCK"
check local backend file
check local size $((2 << 20))
[ "$(stat -c %s "$MNT/n")" = $((16 << 20)) ] || fail "st_size of n"

echo "== reads show in the counters"
r0=$(status_field "$MNT" n bytes_read)
q0=$(status_field "$MNT" n requests_read)
dd if="$MNT/n" of="$TMP/head" bs=64k count=16 status=none || fail "read of n failed"
cmp "$TMP/head" <(head -c 1M "$TMP/disk.img") || fail "n's first MiB differs"
r1=$(status_field "$MNT" n bytes_read)
q1=$(status_field "$MNT" n requests_read)
echo "bytes_read $r0 -> $r1, requests_read $q0 -> $q1"
((r1 - r0 >= 1 << 20)) || fail "bytes_read grew by $((r1 - r0)) after reading 1 MiB"
((r1 - r0 <= 8 << 20)) || fail "bytes_read grew by $((r1 - r0)): more than the cache could hold"
((q1 > q0)) || fail "requests_read did not grow"
((r1 <= 16 << 20)) || fail "bytes_read $r1 beyond the disk"
m1=$(status_field "$MNT" n cache_misses)
((m1 > 0)) || fail "no cache miss counted"
[ "$(status_field "$MNT" local bytes_read)" = 0 ] || fail "local was not read but has bytes_read"

echo "== a re-read (O_DIRECT, past the page cache) is a cache hit"
h1=$(status_field "$MNT" n cache_hits)
dd if="$MNT/n" of=/dev/null bs=64k count=4 iflag=direct status=none || fail "re-read failed"
h2=$(status_field "$MNT" n cache_hits)
echo "cache_hits $h1 -> $h2"
((h2 > h1)) || fail "cache_hits did not grow on a re-read"
tiers=$(status_field "$MNT" n hits_by_tier)
$PY -c 'import json,sys; t=json.loads(sys.argv[1]); sys.exit(0 if t["memory"] == int(sys.argv[2]) and t["disk"] == 0 and t["remote"] >= 16 else 1)' "$tiers" "$h2" ||
    fail "hits_by_tier $tiers: memory should be cache_hits ($h2), disk 0 (no cache-dir), remote at least the 16 blocks read"
[ "$(status_field "$MNT" n cache_dir)" = null ] || fail "cache_dir shown without cache-dir="
cat "$TMP/local.img" >/dev/null
cmp "$MNT/local" "$TMP/local.img" || fail "local differs"
[ "$(status_field "$MNT" local bytes_read)" = $((2 << 20)) ] || fail "local.bytes_read = $(status_field "$MNT" local bytes_read), expected 2 MiB"

echo "== netdiskfs status MNT"
"$ND" status "$MNT" | tee "$TMP/table" || fail "netdiskfs status failed"
grep -Eq '^n +nbd +connected +16\.0M +no ' "$TMP/table" || fail "status table line for n"
grep -Eq '^local +file +connected +2\.0M ' "$TMP/table" || fail "status table line for local"

echo "== kill the server: the entry goes reconnecting, then failed"
nbdkit_kill srv
start=$(date +%s)
if dd if="$MNT/n" of=/dev/null bs=64k skip=200 count=1 iflag=direct status=none 2>"$TMP/dd.err"; then
    fail "a read of an uncached block succeeded with the server stopped"
fi
took=$(( $(date +%s) - start ))
cat "$TMP/dd.err"
echo "read failed after ${took}s"
((took <= 15)) || fail "the read took ${took}s to fail (reconnect-delay=2)"
grep -q "Input/output error" "$TMP/dd.err" || fail "expected EIO"
state=$(status_field "$MNT" n state)
err=$(status_field "$MNT" n last_error)
echo "state=$state last_error=$err"
case $state in reconnecting | failed) ;; *) cat "$ST"; fail "state is $state with the server down" ;; esac
[ "$err" != null ] && [ -n "$err" ] || fail "last_error is not set"
(($(status_field "$MNT" n errors) >= 1)) || fail "errors not counted"
[ "$(status_field "$MNT" n connections)" = 0 ] || fail "connections open with the server down"
"$ND" status "$MNT" | grep -E '^n ' | grep -Eq 'reconnecting|failed' || fail "status table does not show the state"
# The other entry is not disturbed.
[ "$(status_field "$MNT" local state)" = connected ] || fail "local is not connected"
cmp "$MNT/local" "$TMP/local.img" || fail "local unreadable while n is down"
# Cached blocks are still served.
cmp <(dd if="$MNT/n" bs=64k count=4 iflag=direct status=none) <(head -c 256K "$TMP/disk.img") ||
    fail "cached blocks of n were not served with the server down"

echo "== restart the server: reads work again (once the background reconnect finds it), state connected"
nbdkit_restart srv
wait_for 10 dd if="$MNT/n" of="$TMP/tail" bs=64k skip=200 count=1 iflag=direct status=none || fail "read after restart failed"
cmp "$TMP/tail" <(dd if="$TMP/disk.img" bs=64k skip=200 count=1 status=none) || fail "data after restart differs"
check n state connected
(($(status_field "$MNT" n connections) >= 1)) || fail "no connection after restart"
nd_unmount "$MNT"
echo "status file checks passed"
