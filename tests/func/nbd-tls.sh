#!/bin/bash
# TLS: nbds:// and nbds+unix:// with a PSK file, the tls-* options, X.509
# with tls-certificates= (peer verified); a wrong key, an unknown CA and
# an entry without TLS against a TLS-only server fail with clear messages.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/nbdkit.sh"
requires psktool
requires certtool

pattern "$TMP/disk.img" 4
psktool -u alice -p "$TMP/keys.psk" >/dev/null || fail "psktool failed"
psktool -u alice -p "$TMP/wrong.psk" >/dev/null || fail "psktool failed"

# X.509: a CA, a server certificate for 127.0.0.1, and a second CA that
# signed nothing (the client trusting it must refuse the server).
pki() {
    local dir=$1
    mkdir -p "$dir"
    certtool --generate-privkey --outfile "$dir/ca-key.pem" 2>/dev/null
    printf 'cn = netdiskfs test CA\nca\ncert_signing_key\nexpiration_days = 30\n' > "$dir/ca.info"
    certtool --generate-self-signed --load-privkey "$dir/ca-key.pem" \
        --template "$dir/ca.info" --outfile "$dir/ca-cert.pem" 2>/dev/null
}
pki "$TMP/pki"
pki "$TMP/otherca"
certtool --generate-privkey --outfile "$TMP/pki/server-key.pem" 2>/dev/null
printf 'organization = netdiskfs test\ncn = localhost\ndns_name = localhost\nip_address = 127.0.0.1\nip_address = ::1\ntls_www_server\nencryption_key\nsigning_key\nexpiration_days = 30\n' > "$TMP/pki/server.info"
certtool --generate-certificate --load-privkey "$TMP/pki/server-key.pem" \
    --load-ca-certificate "$TMP/pki/ca-cert.pem" --load-ca-privkey "$TMP/pki/ca-key.pem" \
    --template "$TMP/pki/server.info" --outfile "$TMP/pki/server-cert.pem" 2>/dev/null ||
    fail "certtool could not sign the server certificate"
mkdir "$TMP/client-pki" "$TMP/client-other"
cp "$TMP/pki/ca-cert.pem" "$TMP/client-pki/"
cp "$TMP/otherca/ca-cert.pem" "$TMP/client-other/"

nbdkit_tcp psk 127.0.0.1 --tls=require --tls-psk="$TMP/keys.psk" --filter=log file "$TMP/disk.img" logfile="$TMP/psk.log"
nbdkit_unix pskunix --tls=require --tls-psk="$TMP/keys.psk" file "$TMP/disk.img"
nbdkit_tcp x509 127.0.0.1 --tls=require --tls-certificates="$TMP/pki" file "$TMP/disk.img"
P=$(nbdkit_port psk) PX=$(nbdkit_port x509) S=$(nbdkit_sock pskunix)

cat > "$TMP/tab" <<TAB
psk      nbds://alice@127.0.0.1:$P/?tls-psk-file=$TMP/keys.psk
pskopts  nbd://127.0.0.1:$P/  tls=require,tls-psk-file=$TMP/keys.psk,tls-username=alice
pskunix  nbds+unix:///?socket=$S&tls-psk-file=$TMP/keys.psk  tls-username=alice
x509     nbds://127.0.0.1:$PX/  tls-certificates=$TMP/client-pki
x509any  nbds://127.0.0.1:$PX/  tls-certificates=$TMP/client-other,tls-verify-peer=off
TAB
nd_mount "$TMP/tab" "$TMP/mnt"
for e in psk pskopts pskunix x509 x509any; do
    cmp "$TMP/mnt/$e" "$TMP/disk.img" || { show_log "$TMP/mnt.log"; fail "$e differs"; }
    echo "ok: $e"
done
grep -q "tls=1" "$TMP/psk.log" || { show_log "$TMP/psk.log"; fail "the server did not see a TLS connection"; }
nd_unmount "$TMP/mnt"

# Each failure on its own, --strict, so the mount itself must fail and
# say why.
bad() {
    local name=$1 want=$2
    rm -rf "$TMP/mnt-$name"
    mkdir -p "$TMP/mnt-$name"
    grep "^$name " "$TMP/badtab" > "$TMP/tab-$name"
    if timeout 20 "$ND" "$TMP/tab-$name" "$TMP/mnt-$name" -f --strict >"$TMP/$name.out" 2>&1; then
        fusermount3 -u "$TMP/mnt-$name" 2>/dev/null
        cat "$TMP/$name.out"
        fail "$name: the mount succeeded"
    fi
    mountpoint -q "$TMP/mnt-$name" && { fusermount3 -u "$TMP/mnt-$name"; fail "$name: mounted"; }
    check_sanitizers "$TMP/$name.out"
    grep -q "$want" "$TMP/$name.out" || { cat "$TMP/$name.out"; fail "$name: no message matching '$want'"; }
    echo "ok: $name: $(grep -m1 "$want" "$TMP/$name.out")"
}
cat > "$TMP/badtab" <<TAB
wrongkey nbds://alice@127.0.0.1:$P/?tls-psk-file=$TMP/wrong.psk
nouser   nbds://bob@127.0.0.1:$P/?tls-psk-file=$TMP/keys.psk
notls    nbd://127.0.0.1:$P/
badca    nbds://127.0.0.1:$PX/  tls-certificates=$TMP/client-other
TAB
bad wrongkey "TLS handshake failed"
bad nouser "bob was not found"
bad notls "the server requires TLS"
bad badca "TLS handshake failed"
