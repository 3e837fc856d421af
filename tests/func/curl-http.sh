#!/bin/bash
# HTTP through every URL form reads the bytes nginx serves: http://,
# http://[::1], a 302 redirect, a query string, json:{...} (flat and
# nested), driver=/url= and file.driver=/file.url= keys, readahead=,
# proxy= (nginx as a forward proxy). The files are mode 0444 and every
# write fails with EROFS.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/nginx.sh"

nginx_start
pattern "$NGINX_ROOT/disk.img" 12
# An odd size: the last block is short.
head -c 1234567 /dev/urandom > "$NGINX_ROOT/odd.img"
U=$NGINX_URL

cat > "$TMP/tab" <<TAB
plain      $U/disk.img
ipv6       $NGINX_URL6/disk.img
moved      $U/moved/disk.img
query      $U/disk.img?token=abc&x=1
odd        $U/odd.img  readahead=64k
jsonflat   json:{"file.driver":"http","file.url":"$U/disk.img","file.readahead":"64k"}
jsonnest   json:{"file":{"driver":"http","url":"$U/disk.img","timeout":10}}
explicit   driver=http,url=$U/disk.img,readahead=128K
dotted     file.driver=http,file.url=$U/disk.img,file.sslverify=off
viaproxy   $U/disk.img  proxy=$NGINX_PROXY_URL
TAB
chmod 600 "$TMP/tab" # ?token= is a credential: a table shared with others is refused

"$ND" --print-config "$TMP/tab" > "$TMP/config" 2>&1 || { cat "$TMP/config"; fail "--print-config failed"; }
grep -q "^readahead=64k" "$TMP/config" || { cat "$TMP/config"; fail "readahead from json: is not in the option set"; }

nd_mount "$TMP/tab" "$TMP/mnt"
for e in plain ipv6 moved query jsonflat jsonnest explicit dotted viaproxy; do
    cmp "$TMP/mnt/$e" "$NGINX_ROOT/disk.img" || { show_log "$TMP/mnt.log"; fail "$e differs from the served file"; }
    echo "ok: $e"
done
cmp "$TMP/mnt/odd" "$NGINX_ROOT/odd.img" || fail "odd differs from the served file"
[ "$(stat -c %s "$TMP/mnt/odd")" = 1234567 ] || fail "odd has the wrong size"
echo "ok: odd (1234567 bytes)"
sum=$(sha256sum < "$TMP/mnt/plain")
[ "$sum" = "$(sha256sum < "$NGINX_ROOT/disk.img")" ] || fail "sha256 differs"
echo "ok: sha256 ${sum:0:16} matches"

# The query string went to the server as part of the path.
grep -q 'GET /disk.img?token=abc&x=1 ' "$NGINX_DIR/access.log" ||
    fail "nginx never saw the query string"
grep -q 'GET /moved/disk.img ' "$NGINX_DIR/access.log" || fail "the redirect was never asked for"
# Ranged requests, never a whole-file GET.
if grep ' /disk.img' "$NGINX_DIR/access.log" | grep '" 200 ' | grep -v '^\S* - - \S* \S* "HEAD '; then
    fail "a request fetched the whole file (200 instead of 206)"
fi
grep -q '" 206 ' "$NGINX_DIR/access.log" || fail "no ranged request (206) in nginx's log"
grep -q '"GET http://127.0.0.1:[0-9]*/disk.img HTTP/1.1" 206 ' "$NGINX_DIR/proxy.log" ||
    { cat "$NGINX_DIR/proxy.log"; fail "proxy= did not send ranged requests through the proxy"; }
echo "ok: query string, redirect, byte ranges and proxy= seen by nginx"

# Read-only: mode 0444 and EROFS on every kind of write.
mode=$(stat -c %a "$TMP/mnt/plain")
[ "$mode" = 444 ] || fail "mode is $mode, not 444"
if dd if=/dev/zero of="$TMP/mnt/plain" bs=4k count=1 conv=notrunc status=none 2>"$TMP/w.err"; then
    fail "a write succeeded"
fi
grep -q "Read-only file system" "$TMP/w.err" || { cat "$TMP/w.err"; fail "the write did not fail with EROFS"; }
python3 - "$TMP/mnt/plain" <<'PY' || fail "open for writing did not fail with EROFS"
import errno, os, sys
for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_TRUNC):
    try:
        os.close(os.open(sys.argv[1], flags))
    except OSError as e:
        if e.errno != errno.EROFS:
            sys.exit("errno %d" % e.errno)
    else:
        sys.exit("opened for writing")
PY
if truncate -s 0 "$TMP/mnt/plain" 2>/dev/null; then fail "truncate succeeded"; fi
cmp "$TMP/mnt/plain" "$NGINX_ROOT/disk.img" || fail "the file changed"
echo "ok: mode 444, writes fail with EROFS"

kill -0 "$(cat "$TMP/mnt.pid")" || fail "the daemon died"
nd_unmount "$TMP/mnt"
