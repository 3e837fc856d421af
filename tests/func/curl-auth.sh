#!/bin/bash
# Credentials: nginx's basic auth with the password in the URL, in
# password-file= and in json:; a wrong or missing password is a clear 401
# at mount. A cookie gate (403 without session=abc123) reads with cookie=
# (alone or in a ';' list) and cookie-file=. With -d, libcurl's own log is
# in ours but no password, Authorization or Cookie value ever is.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/nginx.sh"

nginx_start
pattern "$NGINX_ROOT/disk.img" 4
U=$NGINX_URL
P=$NGINX_PASS
printf '%s\n' "$P" > "$TMP/pw"
printf '%s\n' "$NGINX_COOKIE" > "$TMP/cookie"
chmod 600 "$TMP/pw" "$TMP/cookie"
H=127.0.0.1:$NGINX_PORT

cat > "$TMP/tab" <<TAB
urlauth    http://$NGINX_USER:$P@$H/auth/disk.img
pwfile     http://$NGINX_USER@$H/auth/disk.img  password-file=$TMP/pw
keys       $U/auth/disk.img  username=$NGINX_USER,password-file=$TMP/pw
jsonauth   json:{"file.driver":"http","file.url":"$U/auth/disk.img","file.username":"$NGINX_USER","file.password-file":"$TMP/pw"}
tlsauth    https://$NGINX_USER:$P@localhost:$NGINX_TLS_PORT/auth/disk.img  cainfo=$NGINX_CA
wrongpw    http://$NGINX_USER:not-the-password@$H/auth/disk.img
nopw       $U/auth/disk.img
cookie     $U/cookie/disk.img  cookie=$NGINX_COOKIE
cookies    $U/cookie/disk.img  "cookie=lang=en;$NGINX_COOKIE;theme=dark"
cookiefile $U/cookie/disk.img  cookie-file=$TMP/cookie
nocookie   $U/cookie/disk.img
TAB
chmod 600 "$TMP/tab"
nd_mount "$TMP/tab" "$TMP/mnt" -d

for e in urlauth pwfile keys jsonauth tlsauth cookie cookies cookiefile; do
    cmp "$TMP/mnt/$e" "$NGINX_ROOT/disk.img" || { show_log "$TMP/mnt.log"; fail "$e differs from the served file"; }
    echo "ok: $e"
done
for e in wrongpw nopw; do
    [ -e "$TMP/mnt/$e" ] && fail "$e was mounted without the right password"
    grep "entry '$e'" "$TMP/mnt.log" | grep -q "HTTP 401" ||
        { show_log "$TMP/mnt.log"; fail "no clear 401 error for $e"; }
done
echo "ok: wrong/missing password: $(grep "entry 'wrongpw'" "$TMP/mnt.log" | grep 401 | head -n 1)"
[ -e "$TMP/mnt/nocookie" ] && fail "nocookie was mounted past the cookie gate"
grep "entry 'nocookie'" "$TMP/mnt.log" | grep -q "HTTP 403" ||
    { show_log "$TMP/mnt.log"; fail "no clear 403 error without the cookie"; }
echo "ok: no cookie: $(grep "entry 'nocookie'" "$TMP/mnt.log" | grep 403 | head -n 1)"

# The debug log holds libcurl's exchange, without any secret.
grep -q "Authorization: \*\*\*" "$TMP/mnt.log" || { show_log "$TMP/mnt.log"; fail "libcurl's request headers are not in the debug log"; }
grep -q "Cookie: \*\*\*" "$TMP/mnt.log" || fail "the Cookie header is not shown (redacted) in the debug log"
b64=$(printf '%s:%s' "$NGINX_USER" "$P" | base64)
for secret in "$P" "$b64" abc123; do
    if grep -F -- "$secret" "$TMP/mnt.log" "$TMP/mnt/.netdiskfs/status"; then
        fail "a secret is in the log or the status file"
    fi
done
echo "ok: no password, Authorization or cookie value in the log"
nd_unmount "$TMP/mnt"

# One URL on the command line: the password is gone from the process's
# command line once it runs.
nd_mount "http://$NGINX_USER:$P@$H/auth/disk.img" "$TMP/one"
f=$(ls "$TMP/one" | grep -v '^\.' | head -n 1)
cmp "$TMP/one/$f" "$NGINX_ROOT/disk.img" || fail "the one-URL mount differs"
if tr '\0' ' ' < "/proc/$(cat "$TMP/one.pid")/cmdline" | grep -F -- "$P"; then
    fail "the password is visible in /proc/PID/cmdline"
fi
echo "ok: one-URL mount reads, password not in /proc/PID/cmdline"
nd_unmount "$TMP/one"
