#!/bin/bash
# HTTPS against nginx with a certificate made here: verification is on by
# default and refuses it with a clear certificate error; sslverify=off
# reads; cainfo= and capath= naming the test certificate read with
# verification on; a json: form with file.sslverify works too.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/nginx.sh"

nginx_start
pattern "$NGINX_ROOT/disk.img" 8
mkdir "$TMP/capath"
cp "$NGINX_CA" "$TMP/capath/test-ca.pem"
openssl rehash "$TMP/capath" 2>/dev/null || c_rehash "$TMP/capath" >/dev/null 2>&1 ||
    fail "cannot hash the capath directory"
T=$NGINX_TLS_URL

cat > "$TMP/tab" <<TAB
verify     $T/disk.img
noverify   $T/disk.img  sslverify=off
cainfo     $T/disk.img  cainfo=$NGINX_CA
capath     $T/disk.img  capath=$TMP/capath
ip         https://127.0.0.1:$NGINX_TLS_PORT/disk.img  cainfo=$NGINX_CA
jsonoff    json:{"file.driver":"https","file.url":"$T/disk.img","file.sslverify":"off"}
TAB
nd_mount "$TMP/tab" "$TMP/mnt"

[ -e "$TMP/mnt/verify" ] && fail "an unverifiable server was mounted with sslverify on"
grep "entry 'verify'" "$TMP/mnt.log" | grep -qi "certificate" ||
    { show_log "$TMP/mnt.log"; fail "no clear certificate error for entry 'verify'"; }
echo "ok: sslverify=on refuses: $(grep "entry 'verify'" "$TMP/mnt.log" | head -n 1)"

for e in noverify cainfo capath ip jsonoff; do
    cmp "$TMP/mnt/$e" "$NGINX_ROOT/disk.img" || { show_log "$TMP/mnt.log"; fail "$e differs from the served file"; }
    echo "ok: $e"
done
sum=$(sha256sum < "$TMP/mnt/cainfo")
[ "$sum" = "$(sha256sum < "$NGINX_ROOT/disk.img")" ] || fail "sha256 differs"
echo "ok: sha256 ${sum:0:16} matches over https"
nd_unmount "$TMP/mnt"

# A wrong CA also fails clearly, at mount, with --strict.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$TMP/other.key" -out "$TMP/other.pem" -days 1 -subj /CN=other >/dev/null 2>&1
echo "wrongca $T/disk.img cainfo=$TMP/other.pem" > "$TMP/tab2"
if timeout 60 "$ND" "$TMP/tab2" "$TMP/mnt" -f --strict >"$TMP/strict.log" 2>&1; then
    fail "--strict mounted a server signed by another CA"
fi
grep -qi "certificate" "$TMP/strict.log" || { cat "$TMP/strict.log"; fail "no certificate error with the wrong CA"; }
echo "ok: wrong CA refused: $(grep -i certificate "$TMP/strict.log" | head -n 1)"
