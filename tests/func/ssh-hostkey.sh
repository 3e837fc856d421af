#!/bin/bash
# ssh-hostkey.sh: host key checking. known_hosts with the key: mounted;
# unknown key and changed key: refused with the server's SHA256
# fingerprint in the message; sha256/sha1/md5 pins (hex, colons, OpenSSH's
# base64) accepted, a wrong pin refused; host-key-check=none and the
# legacy ?host_key_check=no connect with a warning. Nothing is ever
# written to a known_hosts file.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/sshd.sh"
requires openssl

sshd_setup
sshd_start
agent_start
IMG=$TMP/disk.img
pattern "$IMG" 2
P=$SSHD_PORT
KH=$SSHD_KNOWN_HOSTS
U=ssh://127.0.0.1:$P$IMG

: > "$TMP/empty_kh"
ssh-keygen -q -t ed25519 -N '' -f "$TMP/other" || fail "ssh-keygen failed"
sshd_write_known_hosts "$TMP/other.pub" "$TMP/changed_kh"
cp "$TMP/changed_kh" "$TMP/changed_kh.orig"

fp=$(ssh-keygen -l -E sha256 -f "$SSHD_HOSTKEY.pub" | awk '{print $2}')  # SHA256:base64
sha256=$(sshd_fingerprint sha256)
sha1=$(sshd_fingerprint sha1)
md5=$(sshd_fingerprint md5)
colons=$(echo "$sha256" | sed 's/../&:/g; s/:$//' | tr a-f A-F)
wrong=$(awk '{print $2}' "$TMP/other.pub" | base64 -d | openssl dgst -sha256 -r | awk '{print $1}')
[ ${#sha256} = 64 ] && [ ${#sha1} = 40 ] && [ ${#md5} = 32 ] || fail "fingerprints: $sha256 $sha1 $md5"

cat > "$TMP/hk.tab" <<EOF
known     $U  known-hosts=$KH
unknown   $U  known-hosts=$TMP/empty_kh
changed   $U  known-hosts=$TMP/changed_kh
pin256    $U  host-key-check=sha256:$sha256,known-hosts=$TMP/empty_kh
pincolon  $U  host-key-check=sha256:$colons,known-hosts=$TMP/empty_kh
pinb64    $U  host-key-check=$fp,known-hosts=$TMP/empty_kh
pinsha1   $U  host-key-check=sha1:$sha1,known-hosts=$TMP/empty_kh
pinmd5    $U  host-key-check=md5:$md5,known-hosts=$TMP/empty_kh
wrongpin  $U  host-key-check=sha256:$wrong,known-hosts=$KH
none      $U  host-key-check=none,known-hosts=$TMP/changed_kh
legacyno  $U?host_key_check=no  known-hosts=$TMP/empty_kh
legacypin ssh://[::1]:$P$IMG?host_key_check=sha256:$sha256 known-hosts=$TMP/empty_kh
EOF
start=$(date +%s)
nd_mount "$TMP/hk.tab" "$TMP/m"
log=$TMP/m.log
for e in known pin256 pincolon pinb64 pinsha1 pinmd5 none legacyno legacypin; do
    [ -e "$TMP/m/$e" ] || { show_log "$log"; fail "$e was refused"; }
    cmp "$TMP/m/$e" "$IMG" || fail "$e: differs from the remote file"
done
for e in unknown changed wrongpin; do
    [ -e "$TMP/m/$e" ] && { show_log "$log"; fail "$e was mounted"; }
done
grep -q "'unknown'.*host key of .*127.0.0.1:$P.* is unknown .*$fp.*refusing to connect" "$log" ||
    { show_log "$log"; fail "no refusal with the fingerprint for the unknown key"; }
grep -q "'changed'.*HOST KEY OF .*127.0.0.1:$P.* HAS CHANGED.*$fp.*refusing to connect" "$log" ||
    { show_log "$log"; fail "no refusal with the fingerprint for the changed key"; }
grep -q "'wrongpin'.*does not match host-key-check=sha256.*$fp.*refusing to connect" "$log" ||
    { show_log "$log"; fail "no refusal for the wrong pin"; }
grep -q "'none'.*host-key-check=none: NOT verifying the host key.*$fp" "$log" ||
    { show_log "$log"; fail "no warning for host-key-check=none"; }
grep -q "'legacyno'.*host-key-check=none: NOT verifying" "$log" ||
    { show_log "$log"; fail "no warning for ?host_key_check=no"; }
[ -s "$TMP/empty_kh" ] && fail "something was written to a known_hosts file"
cmp -s "$TMP/changed_kh" "$TMP/changed_kh.orig" || fail "changed_kh was modified"
nd_unmount "$TMP/m"

# --strict: a refused key makes the whole mount fail, at once.
echo "unknown $U known-hosts=$TMP/empty_kh" > "$TMP/strict.tab"
mkdir -p "$TMP/m2"
if timeout 30 "$ND" "$TMP/strict.tab" "$TMP/m2" -f --strict > "$TMP/strict.log" 2>&1; then
    fusermount3 -u "$TMP/m2" 2>/dev/null
    fail "--strict mounted an entry with an unknown host key"
fi
grep -q "is unknown.*$fp" "$TMP/strict.log" || { show_log "$TMP/strict.log"; fail "--strict: no message"; }
mountpoint -q "$TMP/m2" && fail "--strict left a mount"
echo "ok: known_hosts, unknown/changed refused, sha256/sha1/md5 pins, wrong pin refused, none warns ($(( $(date +%s) - start )) s)"
