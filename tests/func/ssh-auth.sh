#!/bin/bash
# ssh-auth.sh: ssh-agent authentication over 127.0.0.1 and ::1 with every
# URL form (ssh://, dotted keys, json:), the user defaulting to the local
# user; then an identity file with no agent; and no agent, no key: refused.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/sshd.sh"

sshd_setup
sshd_start
agent_start
IMG=$TMP/disk.img
pattern "$IMG" 8
KH=$SSHD_KNOWN_HOSTS
P=$SSHD_PORT
me=$(id -un)

cat > "$TMP/agent.tab" <<EOF
v4    ssh://127.0.0.1:$P$IMG                known-hosts=$KH
v6    ssh://$me@[::1]:$P$IMG                known-hosts=$KH
dot   driver=ssh,user=$me,host=127.0.0.1,port=$P,path=$IMG,known-hosts=$KH
fdot  file.driver=ssh,file.host=::1,file.port=$P,file.path=$IMG known-hosts=$KH
json  json:{"driver":"ssh","server":{"host":"::1","port":"$P"},"path":"$IMG","user":"$me"} known-hosts=$KH
EOF
nd_mount "$TMP/agent.tab" "$TMP/m1"
for e in v4 v6 dot fdot json; do
    [ -e "$TMP/m1/$e" ] || { show_log "$TMP/m1.log"; fail "entry $e missing"; }
    [ "$(stat -c %s "$TMP/m1/$e")" = "$(stat -c %s "$IMG")" ] || fail "$e: wrong size"
    cmp "$TMP/m1/$e" "$IMG" || fail "$e: differs from the remote file"
done
grep -q "Accepted publickey for $me from 127.0.0.1" "$SSHD_LOG" ||
    { show_log "$SSHD_LOG"; fail "no agent login over 127.0.0.1 in the sshd log"; }
grep -q "Accepted publickey for $me from ::1" "$SSHD_LOG" ||
    { show_log "$SSHD_LOG"; fail "no agent login over ::1 in the sshd log"; }
nd_unmount "$TMP/m1"

# Without an agent: the identity file authenticates; nothing else does.
unset SSH_AUTH_SOCK
cat > "$TMP/key.tab" <<EOF
key    ssh://$me@127.0.0.1:$P$IMG  known-hosts=$KH,identity=$SSH_CLIENT_KEY
nokey  ssh://$me@[::1]:$P$IMG      known-hosts=$KH
badkey ssh://$me@127.0.0.1:$P$IMG  known-hosts=$KH,identity=$TMP/no-such-key
EOF
nd_mount "$TMP/key.tab" "$TMP/m2"
cmp "$TMP/m2/key" "$IMG" || fail "identity file: differs from the remote file"
[ -e "$TMP/m2/nokey" ] && fail "entry without agent or key was mounted"
[ -e "$TMP/m2/badkey" ] && fail "entry with a missing identity file was mounted"
grep -q "nokey.*authentication with $me@\[::1\]:$P.* failed" "$TMP/m2.log" ||
    { show_log "$TMP/m2.log"; fail "no authentication failure message for nokey"; }
grep -q "badkey.*identity=$TMP/no-such-key: No such file" "$TMP/m2.log" ||
    { show_log "$TMP/m2.log"; fail "no message for the missing identity file"; }
nd_unmount "$TMP/m2"
echo "ok: agent over 127.0.0.1 and ::1 (5 URL forms), identity file, refusals"
