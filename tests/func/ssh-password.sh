#!/bin/bash
# ssh-password.sh: password-file authentication against an sshd that only
# takes passwords, as a throwaway local user (removed at exit); a wrong
# password is refused. The user cannot write the image (root's, 0644): the
# file is read-only through the mount and the remote file stays intact.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/sshd.sh"

sshd_setup
PW=pw-$RANDOM-$RANDOM
sshd_add_user "$PW"
sshd_start "PasswordAuthentication yes" "AuthenticationMethods password"
unset SSH_AUTH_SOCK
IMG=$TMP/disk.img
pattern "$IMG" 4
chmod 644 "$IMG"
sum=$(sha256sum < "$IMG")
printf '%s\n' "$PW" > "$TMP/pw"
printf 'not-%s\n' "$PW" > "$TMP/badpw"
chmod 600 "$TMP/pw" "$TMP/badpw"
KH=$SSHD_KNOWN_HOSTS
U=$SSHD_USER
cat > "$TMP/pw.tab" <<EOF
pw      ssh://$U@127.0.0.1:$SSHD_PORT$IMG  known-hosts=$KH,password-file=$TMP/pw
pw6     driver=ssh,user=$U,host=::1,port=$SSHD_PORT,path=$IMG,known-hosts=$KH,password-file=$TMP/pw
badpw   ssh://$U@127.0.0.1:$SSHD_PORT$IMG  known-hosts=$KH,password-file=$TMP/badpw
EOF
nd_mount "$TMP/pw.tab" "$TMP/m" -v
for e in pw pw6; do
    [ -e "$TMP/m/$e" ] || { show_log "$TMP/m.log"; show_log "$SSHD_LOG"; fail "$e not mounted"; }
    cmp "$TMP/m/$e" "$IMG" || fail "$e: differs from the remote file"
done
grep -q "Accepted password for $U from 127.0.0.1" "$SSHD_LOG" ||
    { show_log "$SSHD_LOG"; fail "no password login in the sshd log"; }
grep -q "Accepted password for $U from ::1" "$SSHD_LOG" ||
    { show_log "$SSHD_LOG"; fail "no password login over ::1 in the sshd log"; }
[ -e "$TMP/m/badpw" ] && fail "wrong password was accepted"
grep -q "badpw.*authentication with $U@127.0.0.1:$SSHD_PORT.* failed (server offers: password; tried: password)" "$TMP/m.log" ||
    { show_log "$TMP/m.log"; fail "no refusal message for the wrong password"; }
grep -q "$PW" "$TMP/m.log" && fail "the password appears in the log"

# Read-only: the remote file is not writable by this user.
grep -q "pw.*not writable: read-only" "$TMP/m.log" ||
    { show_log "$TMP/m.log"; fail "no read-only notice"; }
case $(stat -c %A "$TMP/m/pw") in
    -r--*) ;;
    *) fail "read-only entry shows mode $(stat -c %A "$TMP/m/pw")" ;;
esac
if dd if=/dev/zero of="$TMP/m/pw" bs=4k count=1 conv=notrunc 2>"$TMP/dd.err"; then
    fail "a write to the read-only entry succeeded"
fi
[ "$(sha256sum < "$IMG")" = "$sum" ] || fail "the remote file changed"
nd_unmount "$TMP/m"
echo "ok: password-file over 127.0.0.1 and ::1, wrong password refused, read-only remote file"
