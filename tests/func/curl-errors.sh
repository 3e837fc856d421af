#!/bin/bash
# Clear errors at mount, each naming the entry: a 404 URL, a server that
# does not do byte ranges (nginx max_ranges 0), a server that answers 503
# and nothing listening. The good entry of the same table still mounts and
# reads; with --strict the 404 is fatal.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/nginx.sh"

nginx_start
pattern "$NGINX_ROOT/disk.img" 2
U=$NGINX_URL
dead=$(free_port)

cat > "$TMP/tab" <<TAB
good       $U/disk.img
missing    $U/no/such/disk.img
noranges   $U/noranges/disk.img
busy       $U/busy/disk.img
refused    http://127.0.0.1:$dead/disk.img
TAB
nd_mount "$TMP/tab" "$TMP/mnt"
cmp "$TMP/mnt/good" "$NGINX_ROOT/disk.img" || fail "the good entry differs"
echo "ok: good entry reads"

expect() { # ENTRY REGEX: the entry is absent and its error says REGEX
    [ -e "$TMP/mnt/$1" ] && fail "entry $1 was mounted"
    local line
    line=$(grep "entry '$1'" "$TMP/mnt.log" | head -n 1)
    echo "$line" | grep -Eq "$2" || { show_log "$TMP/mnt.log"; fail "entry $1: no error matching '$2'"; }
    echo "ok: $1: $line"
}
expect missing "HTTP 404 Not Found"
expect noranges "does not support byte ranges"
expect busy "HTTP 503"
expect refused "Couldn't connect|Connection refused|Failed to connect"
# The password-free URL is shown in full; no entry shows another's name.
grep "entry 'missing'" "$TMP/mnt.log" | grep -q "$U/no/such/disk.img" || fail "the 404 error does not name the URL"
nd_unmount "$TMP/mnt"

# --strict: the daemon exits with the 404 named.
echo "missing $U/no/such/disk.img" > "$TMP/tab2"
mkdir -p "$TMP/mnt2"
if timeout 60 "$ND" "$TMP/tab2" "$TMP/mnt2" -f --strict >"$TMP/strict.log" 2>&1; then
    fail "--strict mounted a 404"
fi
grep "entry 'missing'" "$TMP/strict.log" | grep -q "HTTP 404" || { cat "$TMP/strict.log"; fail "--strict: no 404 error"; }
echo "ok: --strict refuses the 404: $(grep 404 "$TMP/strict.log" | head -n 1)"
