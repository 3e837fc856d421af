#!/bin/bash
# FTP and FTPS against vsftpd with a password user: ftp:// with the
# password in the URL, in password-file= and in json:; ftps:// with
# explicit TLS (AUTH TLS, the usual kind) verified by cainfo= or with
# sslverify=off; implicit TLS (ftps-mode=implicit); sslverify on refuses
# the self-signed certificate; a wrong password and a missing file are
# clear errors. A sequential read is one streamed RETR, not a login per
# read. Reads match the served file byte for byte; writes fail (EROFS).
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/vsftpd.sh"

vsftpd_start plain
PLAIN=$FTP_URL PLAIN_N=$FTP_N
vsftpd_start explicit
EXPL=$FTP_URL
vsftpd_start implicit
IMPL=$FTP_URL
pattern "$FTP_ROOT/disk.img" 24
head -c 777777 /dev/urandom > "$FTP_ROOT/odd.img"
K="username=$FTP_USER,password-file=$FTP_PASSFILE"
H=${PLAIN#ftp://}

cat > "$TMP/tab" <<TAB
urlpw      ftp://$FTP_USER:$FTP_PASS@$H/disk.img
pwfile     $PLAIN/disk.img  $K
odd        $PLAIN/odd.img  $K
json       json:{"file.driver":"ftp","file.url":"$PLAIN/disk.img","file.username":"$FTP_USER","file.password-file":"$FTP_PASSFILE"}
cookie     $PLAIN/disk.img  $K,cookie=ignored=1
explicit   $EXPL/disk.img  $K,cainfo=$FTP_CERT
explnover  $EXPL/disk.img  $K,sslverify=off
implicit   $IMPL/disk.img  $K,ftps-mode=implicit,sslverify=off
verify     $EXPL/disk.img  $K
wrongpw    ftp://$FTP_USER:wrong@$H/disk.img
missing    $PLAIN/missing.img  $K
TAB
chmod 600 "$TMP/tab"
nd_mount "$TMP/tab" "$TMP/mnt"

# Sequential: one streamed RETR for the whole file.
before=$(grep -c "OK LOGIN" "$FTP_DIR/vsftpd-$PLAIN_N.xfer" 2>/dev/null || echo 0)
cmp "$TMP/mnt/pwfile" "$FTP_ROOT/disk.img" || { show_log "$TMP/mnt.log"; fail "pwfile differs"; }
logins=$(( $(grep -c "OK LOGIN" "$FTP_DIR/vsftpd-$PLAIN_N.xfer") - before ))
[ $logins -le 3 ] || fail "reading 24 MiB in order took $logins FTP logins (a RETR per read?)"
echo "ok: pwfile: 24 MiB in order over $logins login(s)"

for e in urlpw json cookie explicit explnover implicit; do
    cmp "$TMP/mnt/$e" "$FTP_ROOT/disk.img" || { show_log "$TMP/mnt.log"; fail "$e differs from the served file"; }
    echo "ok: $e"
done
cmp "$TMP/mnt/odd" "$FTP_ROOT/odd.img" || fail "odd differs"
[ "$(stat -c %s "$TMP/mnt/odd")" = 777777 ] || fail "odd has the wrong size"
echo "ok: odd (777777 bytes)"
a=$(sha256sum < "$TMP/mnt/explicit") b=$(sha256sum < "$FTP_ROOT/disk.img")
[ "$a" = "$b" ] || fail "sha256 over FTPS differs"
echo "ok: sha256 over explicit FTPS ${a:0:16}"

# A few reads at random offsets over FTPS (each seek is a new RETR).
for i in 1 2 3 4 5 6; do
    off=$(( (RANDOM * 32768 + RANDOM) % (24 * 1048576 - 70000) ))
    cmp <(dd if="$TMP/mnt/explnover" bs=1 skip=$off count=65537 iflag=skip_bytes,count_bytes status=none) \
        <(dd if="$FTP_ROOT/disk.img" bs=1 skip=$off count=65537 iflag=skip_bytes,count_bytes status=none) ||
        fail "65537 bytes at $off differ over FTPS"
done
echo "ok: random FTPS reads match"

expect() { # ENTRY REGEX
    [ -e "$TMP/mnt/$1" ] && fail "entry $1 was mounted"
    local line
    line=$(grep "entry '$1'" "$TMP/mnt.log" | head -n 1)
    echo "$line" | grep -Eqi "$2" || { show_log "$TMP/mnt.log"; fail "entry $1: no error matching '$2'"; }
    echo "ok: $1: $line"
}
expect verify "certificate"
expect wrongpw "denied|530"
expect missing "not exist|550"
if grep -F -- "$FTP_PASS" "$TMP/mnt.log"; then fail "the FTP password is in the log"; fi

if dd if=/dev/zero of="$TMP/mnt/pwfile" bs=4k count=1 conv=notrunc status=none 2>"$TMP/w.err"; then
    fail "a write succeeded"
fi
grep -q "Read-only file system" "$TMP/w.err" || { cat "$TMP/w.err"; fail "the write did not fail with EROFS"; }
[ "$(stat -c %a "$TMP/mnt/pwfile")" = 444 ] || fail "the mode is not 444"
echo "ok: mode 444, EROFS on write"
nd_unmount "$TMP/mnt"
