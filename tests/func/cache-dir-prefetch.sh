#!/bin/bash
# cache-dir-prefetch.sh: prefetch=all fills the whole image into the cache
# directory in the background, with its progress in the status file;
# once it says done, the image reads byte-exact with nginx stopped. A
# second entry with a smaller cache-dir-size stops at its limit; one with
# prefetch=idle fills too while nobody reads, and over a slow server it
# waits while a reader keeps waiting for the server, then fills.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/nginx.sh"

NGINX_REQ_RATE=5 # /slow/: 5 requests a second, the rest queued
nginx_start
pattern "$NGINX_ROOT/img" 64
pattern "$NGINX_ROOT/small" 16
cp "$NGINX_ROOT/small" "$NGINX_ROOT/small2"
CD=$TMP/cd
cat >"$TMP/p.tab" <<EOT
p $NGINX_URL/img cache-dir=$CD,prefetch=all,reconnect-delay=2,timeout=2
q $NGINX_URL/small cache-dir=$CD,prefetch=all,cache-dir-size=4M
i $NGINX_URL/small2 cache-dir=$CD,prefetch=idle
EOT
ST=$TMP/m/.netdiskfs/status
pf() { # ENTRY KEY
    python3 -c '
import json,sys
for e in json.load(open(sys.argv[1]))["entries"]:
    if e["name"] == sys.argv[2]: print(e["cache_dir"]["prefetch"][sys.argv[3]])' "$ST" "$1" "$2"
}
nd_mount "$TMP/p.tab" "$TMP/m" -v
[ "$(pf p mode)" = all ] || { cat "$ST"; fail "status: prefetch mode"; }
[ "$(pf p total)" = $((64 << 20)) ] || { cat "$ST"; fail "status: prefetch total"; }
t0=$(date +%s%N)
wait_for 60 sh -c "[ \"\$(python3 -c 'import json;print([e[\"cache_dir\"][\"prefetch\"][\"state\"] for e in json.load(open(\"$ST\"))[\"entries\"] if e[\"name\"]==\"p\"][0])')\" = done ]" ||
    { cat "$ST"; show_log "$TMP/m.log"; fail "prefetch=all not done within 60 s"; }
echo "prefetch of 64 MiB: $(( ($(date +%s%N) - t0) / 1000000 )) ms"
[ "$(pf p done)" = $((64 << 20)) ] || { cat "$ST"; fail "status: done bytes $(pf p done)"; }
wait_for 30 sh -c "grep -q . /dev/null; python3 -c 'import json,sys; sys.exit(0 if all(e[\"cache_dir\"][\"prefetch\"][\"state\"] in (\"done\",\"limit reached\") for e in json.load(open(\"$ST\"))[\"entries\"]) else 1)'" ||
    { cat "$ST"; fail "prefetch of q and i did not end"; }
[ "$(pf q state)" = "limit reached" ] || { cat "$ST"; fail "q: prefetch state $(pf q state)"; }
qb=$(python3 -c 'import json,sys; print([e["cache_dir"]["bytes"] for e in json.load(open(sys.argv[1]))["entries"] if e["name"]=="q"][0])' "$ST")
[ "$qb" -le $((4 << 20)) ] && [ "$qb" -ge $((3 << 20)) ] || { cat "$ST"; fail "q holds $qb bytes for a 4M limit"; }
[ "$(pf i state)" = done ] || { cat "$ST"; fail "i: prefetch=idle did not fill"; }

echo "== prefetch=idle gives way to a reader"
pattern "$NGINX_ROOT/slowimg" 16
echo "s $NGINX_URL/slow/slowimg cache-dir=$CD,prefetch=idle,readahead=0" >"$TMP/s.tab"
nd_mount "$TMP/s.tab" "$TMP/ms" -v
SST=$TMP/ms/.netdiskfs/status
sstate() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["entries"][0]["cache_dir"]["prefetch"]["state"])' "$SST"; }
seen=
end=$(( $(date +%s) + 4 ))
for k in $(seq 0 255 | shuf); do
    [ "$(date +%s)" -lt "$end" ] || break
    dd if="$TMP/ms/s" of=/dev/null bs=64k skip=$k count=1 iflag=direct status=none || fail "read of block $k"
    [ "$(sstate)" = "waiting for readers to pause" ] && seen=1
done
[ -n "$seen" ] || { cat "$SST"; fail "prefetch=idle never waited for the reader"; }
wait_for 40 sh -c "[ \"\$(python3 -c 'import json;print(json.load(open(\"$SST\"))[\"entries\"][0][\"cache_dir\"][\"prefetch\"][\"state\"])')\" = done ]" ||
    { cat "$SST"; fail "prefetch=idle did not fill once the reader stopped"; }
nd_unmount "$TMP/ms"

nginx_stop
cmp "$TMP/m/p" "$NGINX_ROOT/img" || fail "after prefetch, server down: wrong bytes"
cmp "$TMP/m/i" "$NGINX_ROOT/small" || fail "after prefetch=idle, server down: wrong bytes"
nd_unmount "$TMP/m"
echo "cache-dir-prefetch: filled in the background, read with the server down"
