#!/bin/bash
# HTTP answers while mounted: a 503 or a 429 (Retry-After: 1) is retried
# with backoff, so a read started while nginx answers them completes with
# the right bytes once it serves the file again; a 503 that lasts past
# reconnect-delay fails the read with EIO within the bound; a 404 fails
# the read with EIO at once, without waiting for reconnect-delay.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/nginx.sh"

nginx_start
pattern "$NGINX_ROOT/disk.img" 8
cat > "$TMP/tab" <<TAB
flaky   $NGINX_URL/flaky/disk.img  reconnect-delay=15,readahead=0,cache=none
short   $NGINX_URL/flaky/disk.img  reconnect-delay=2,readahead=0,cache=none
TAB
nd_mount "$TMP/tab" "$TMP/mnt"
blk() { # ENTRY SKIP OUT: one 64 KiB block, O_DIRECT
    dd if="$TMP/mnt/$1" of="$3" bs=64k count=1 skip="$2" iflag=direct status=none
}
want() { dd if="$NGINX_ROOT/disk.img" bs=64k count=1 skip="$1" status=none; }
blk flaky 0 "$TMP/b0" || fail "first read failed"
cmp "$TMP/b0" <(want 0) || fail "first read differs"

for code in 503 429; do
    touch "$NGINX_DIR/flaky-$code"
    skip=$((code / 10))
    blk flaky $skip "$TMP/b" 2>"$TMP/dd.err" &
    pid=$!
    sleep 1.5
    kill -0 $pid 2>/dev/null || { cat "$TMP/dd.err"; fail "the read did not wait while nginx answered $code"; }
    rm "$NGINX_DIR/flaky-$code"
    wait $pid || { cat "$TMP/dd.err"; show_log "$TMP/mnt.log"; fail "the read failed after the $code stopped"; }
    cmp "$TMP/b" <(want $skip) || fail "the read retried after $code differs"
    n=$(grep -c "GET /flaky/disk.img HTTP/1.1\" $code " "$NGINX_DIR/access.log")
    [ "$n" -ge 2 ] || fail "nginx answered $code only $n time(s): no retry?"
    echo "ok: HTTP $code answered $n times, retried, then the read completed with the right bytes"
done

# A 503 that lasts: EIO within reconnect-delay (2) + 3 s.
touch "$NGINX_DIR/flaky-503"
expect_eio 5000 "$TMP/mnt.log" "a lasting 503" "$TMP/mnt/short" 40
echo "ok: a lasting 503 fails with EIO after $EIO_MS ms"
rm "$NGINX_DIR/flaky-503"

# A 404 is final at once, even with reconnect-delay=15.
touch "$NGINX_DIR/flaky-404"
expect_eio 3000 "$TMP/mnt.log" "a 404 (must not be retried)" "$TMP/mnt/flaky" 50
echo "ok: a 404 fails with EIO after $EIO_MS ms"
rm "$NGINX_DIR/flaky-404"

blk flaky 50 "$TMP/b" || fail "read after the 404 went away failed"
cmp "$TMP/b" <(want 50) || fail "read after the 404 differs"
kill -0 "$(cat "$TMP/mnt.pid")" || fail "the daemon died"
echo "ok: reads work again"
nd_unmount "$TMP/mnt"
