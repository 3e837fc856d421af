#!/bin/bash
# sec-secrets: secrets planted in every form a table, the command line or
# the environment takes them (URL userinfo with a quote and a blank,
# iSCSI's user%PW@, json "password", dotted password=, iscsi ?password=,
# HTTP ?token=, cookie=, proxy userinfo, --iscsi password=, json: in argv,
# a malformed ssh:/user:PW@, LIBISCSI_CHAP_PASSWORD) never appear in
# anything readable: the status file, `netdiskfs status`, the debug log,
# /proc/PID/cmdline and environ, /proc/mounts (fsname=), --print-config,
# and the errors of each entry, every one made to fail (a wrong password,
# a 404, a refused port).
# A table readable by its group and a password file readable by others
# are refused with a clear error; uid 65534 cannot read the status file.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/nginx.sh"

nginx_start
pattern "$NGINX_ROOT/disk.img" 1
mkdir -p "$NGINX_ROOT/auth" "$NGINX_ROOT/cookie"
cp "$NGINX_ROOT/disk.img" "$NGINX_ROOT/auth/"
cp "$NGINX_ROOT/disk.img" "$NGINX_ROOT/cookie/"
U=$NGINX_URL
DEAD=$(free_port) # nothing listens: iSCSI and the proxy are refused
IQN=iqn.2026-01.test.netdiskfs

# The cores the grep looks for; each entry wraps its own in other bytes.
SECRETS=(S1-iscsi-quote S2-http-userinfo S3-json-pw S4-dotted-pw S5-iscsi-query
    S6-http-token S7-cookie S8-proxy-pw S9-iscsi-opt S10-json-argv
    S11-ssh-malformed S12-env-chap S13-key-secret)
# Basic auth puts user:password in base64 on the wire (and in a debug log).
for p in S2-http-userinfo S3-json-pw S4-dotted-pw S9-iscsi-opt S10-json-argv; do
    SECRETS+=("$(printf 'alice:%s' "$p" | base64)")
done

# no_secret WHAT FILE...: none of the secrets is in any FILE.
no_secret() {
    local what=$1 s; shift
    for s in "${SECRETS[@]}"; do
        if grep -aF -- "$s" "$@" >"$TMP/hit" 2>/dev/null; then
            cat "$TMP/hit" >&2
            fail "$what shows the secret $s"
        fi
    done
    echo "ok: no secret in $what"
}

cat >"$TMP/tab" <<EOT
good      $U/disk.img
quote     "iscsi://alice%it's S1-iscsi-quote@127.0.0.1:$DEAD/$IQN:t/1"
userinfo  http://alice:S2-http-userinfo@127.0.0.1:${U##*:}/auth/disk.img
json      json:{"file":{"driver":"http","url":"$U/auth/disk.img","username":"alice","password":"S3-json-pw\"x"}}
dotted    driver=http,url=$U/auth/disk.img,username=alice,password=a,,S4-dotted-pw
query     iscsi://127.0.0.1:$DEAD/$IQN:t/1?user=alice&password=S5-iscsi-query
token     $U/missing.img?a=1&token=S6-http-token
cookie    $U/cookie/disk.img   "cookie=lang=en;session=S7-cookie"
proxy     $U/disk.img   proxy=http://pu:S8-proxy-pw@127.0.0.1:$DEAD,timeout=5
optpw     iscsi://127.0.0.1:$DEAD/$IQN:t/2   user=alice
env       iscsi://127.0.0.1:$DEAD/$IQN:t/3
EOT
chmod 600 "$TMP/tab"

echo "== --print-config"
"$ND" --print-config --iscsi password=S9-iscsi-opt "$TMP/tab" >"$TMP/config" 2>&1 ||
    { cat "$TMP/config"; fail "--print-config failed"; }
grep -q "^password=\*\*\*" "$TMP/config" || fail "no masked password in --print-config"
grep -q "^proxy=http://pu:\*\*\*@" "$TMP/config" || { cat "$TMP/config"; fail "proxy userinfo not masked"; }
no_secret "--print-config" "$TMP/config"

echo "== mount: every entry but 'good' fails"
MNT=$TMP/mnt
LIBISCSI_CHAP_PASSWORD=S12-env-chap nd_mount "$TMP/tab" "$MNT" -d -o allow_other --iscsi password=S9-iscsi-opt \
    -o fsname=http://pu:S8-proxy-pw@h/x
PID=$(cat "$MNT.pid")
cmp "$MNT/good" "$NGINX_ROOT/disk.img" || fail "good differs"
[ "$(ls "$MNT")" = good ] || fail "entries that should have failed: $(ls "$MNT")"
for e in quote userinfo json dotted query token cookie proxy optpw env; do
    grep -q "entry '$e'" "$MNT.log" || { show_log "$MNT.log"; fail "no error logged for $e"; }
done
grep "entry 'token'" "$MNT.log" | grep -q "token=\*\*\*" ||
    { show_log "$MNT.log"; fail "the 404 of 'token' does not show its redacted URL"; }
echo "ok: $(grep -m1 "entry 'token'" "$MNT.log")"
echo "ok: $(grep -m1 "entry 'quote'" "$MNT.log")"

"$ND" status "$MNT" >"$TMP/status.txt" || fail "netdiskfs status failed for root"
cp "$MNT/.netdiskfs/status" "$TMP/status.json"
grep -q '"password": "\*\*\*"' "$TMP/status.json" || fail "no masked option in the status file"
tr '\0' '\n' <"/proc/$PID/cmdline" >"$TMP/cmdline"
tr '\0' '\n' <"/proc/$PID/environ" >"$TMP/environ"
grep -q "password=\*" "$TMP/cmdline" || { cat "$TMP/cmdline"; fail "--iscsi password= not scrubbed as expected"; }
grep -q LIBISCSI_CHAP_PASSWORD "$TMP/environ" && fail "LIBISCSI_CHAP_PASSWORD is still in the environment"
no_secret "the status file" "$TMP/status.json"
no_secret "netdiskfs status" "$TMP/status.txt"
no_secret "/proc/PID/cmdline" "$TMP/cmdline"
no_secret "/proc/PID/environ" "$TMP/environ"
grep -F "$MNT" /proc/self/mounts >"$TMP/mounts"
no_secret "/proc/mounts" "$TMP/mounts"

echo "== uid 65534"
AS_NOBODY=(setpriv --reuid=65534 --regid=65534 --clear-groups)
"${AS_NOBODY[@]}" cat "$MNT/.netdiskfs/status" >"$TMP/nobody" 2>&1 && fail "uid 65534 read the status file"
"${AS_NOBODY[@]}" "$ND" status "$MNT" >>"$TMP/nobody" 2>&1 && fail "netdiskfs status worked for uid 65534"
"${AS_NOBODY[@]}" ls -la "$MNT" "$MNT/.netdiskfs" >>"$TMP/nobody" 2>&1
grep -q "Permission denied" "$TMP/nobody" || fail "uid 65534: $(cat "$TMP/nobody")"
no_secret "what uid 65534 sees" "$TMP/nobody"
nd_unmount "$MNT"
no_secret "the debug log" "$MNT.log"

echo "== json: in argv"
J="json:{\"file.driver\":\"http\",\"file.url\":\"$U/disk.img\",\"file.username\":\"alice\",\"file.password\":\"S10-json-argv\"}"
nd_mount "$J" "$TMP/one" -d
tr '\0' '\n' <"/proc/$(cat "$TMP/one.pid")/cmdline" >"$TMP/cmdline1"
cat "$TMP/one/.netdiskfs/status" >"$TMP/status1"
cmp "$TMP/one/disk" "$NGINX_ROOT/disk.img" || fail "the json: mount differs"
no_secret "/proc/PID/cmdline (json: argv)" "$TMP/cmdline1"
no_secret "the status file (json: argv)" "$TMP/status1"
nd_unmount "$TMP/one"
no_secret "the debug log (json: argv)" "$TMP/one.log"

echo "== malformed and unknown entries: the errors"
cat >"$TMP/bad.tab" <<EOT
ssh1   ssh:/alice:S11-ssh-malformed@127.0.0.1/x.img
ssh2   "ssh://alice:S11-ssh-malformed@127.0.0.1/x.img"
ks     $U/disk.img   key-secret=S13-key-secret
nbd1   nbd://alice:S11-ssh-malformed@127.0.0.1:$DEAD/x
js     json:{"driver":"http","url":"$U/x","password":"S3-json-pw
http://alice:S2-http-userinfo@127.0.0.1/no-name.img
http://alice:S2-http-userinfo@127.0.0.1/no-name.img   ro
EOT
chmod 600 "$TMP/bad.tab"
"$ND" --print-config "$TMP/bad.tab" >"$TMP/bad.out" 2>&1 && fail "a bad table was accepted"
"$ND" "$TMP/bad.tab" "$TMP/mnt" -f >>"$TMP/bad.out" 2>&1 && fail "a bad table was mounted"
cat "$TMP/bad.out"
grep -q "bad.tab:1: entry 'ssh1'" "$TMP/bad.out" || fail "no error for the malformed URL"
no_secret "the errors of malformed entries" "$TMP/bad.out"

echo "== a table readable by its group, a password file readable by others"
chmod 640 "$TMP/tab"
out=$("$ND" --print-config "$TMP/tab" 2>&1) && fail "a 0640 table holding secrets was accepted"
echo "$out" | grep -m1 "holds a password"
echo "$out" | grep -q "tab:2: entry 'quote' holds a password or other credential (password) but $TMP/tab is readable by its group or others" ||
    fail "unclear error for a 0640 table: $out"
printf '%s\n' "$NGINX_PASS" >"$TMP/pw"
chmod 644 "$TMP/pw"
echo "pwf  $U/auth/disk.img  username=alice,password-file=$TMP/pw" >"$TMP/pwf.tab"
out=$("$ND" --print-config "$TMP/pwf.tab" 2>&1) && fail "a 0644 password file was accepted"
echo "$out"
echo "$out" | grep -q "pwf.tab:1: entry 'pwf': password-file=$TMP/pw is readable by others" ||
    fail "unclear error for a 0644 password file: $out"
mkdir -p "$TMP/m2"
"$ND" "$U/auth/disk.img" "$TMP/m2" -f -o username=alice,password-file="$TMP/pw" >"$TMP/m2.log" 2>&1 &&
    fail "mounted with a 0644 password file"
grep -q "password-file=$TMP/pw is readable by others" "$TMP/m2.log" || fail "mount: $(cat "$TMP/m2.log")"
chmod 600 "$TMP/pw"
nd_mount "$TMP/pwf.tab" "$TMP/m3"
cmp "$TMP/m3/pwf" "$NGINX_ROOT/auth/disk.img" || fail "the 0600 password file does not work"
nd_unmount "$TMP/m3"
echo "sec-secrets passed"
