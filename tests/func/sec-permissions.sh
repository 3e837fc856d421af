#!/bin/bash
# sec-permissions: on an allow_other mount made by root, another local user
# (uid 65534 through setpriv) meets the modes the files show: a root 0644
# entry cannot be written (EACCES), a 0600 entry cannot be read, the status
# file is 0600 to the mount owner. uid=, gid=, mode=, umask= set an entry's
# owner and mode (also as defaults with -o); -o no_default_permissions
# still refuses what the modes refuse (netdiskfs checks at open).
. "$(dirname "$0")/../lib/functions.sh"
requires setpriv

AS_NOBODY=(setpriv --reuid=65534 --regid=65534 --clear-groups)
pattern "$TMP/a.img" 1
for f in b c d e r; do cp "$TMP/a.img" "$TMP/$f.img"; done
cp "$TMP/a.img" "$TMP/orig.img"
cat >"$TMP/tab" <<EOT
a      file://$TMP/a.img
priv   file://$TMP/b.img   mode=0600
mine   file://$TMP/c.img   uid=65534,mode=600
grp    file://$TMP/d.img   gid=65534,mode=0660
um     file://$TMP/e.img   umask=077
ro     file://$TMP/r.img   ro
EOT
MNT=$TMP/mnt
nd_mount "$TMP/tab" "$MNT" -o allow_other
mntopts() { awk -v d="$MNT" '$2 == d { print $4 }' /proc/self/mounts; }
mntopts | grep -q default_permissions || fail "default_permissions not implied: $(mntopts)"

modes() { stat -c '%a %u %g' "$MNT/$1"; }
want() { [ "$(modes "$1")" = "$2" ] || fail "$1: mode/owner $(modes "$1"), expected $2"; }
want a "644 0 0"
want priv "600 0 0"
want mine "600 65534 0"
want grp "660 0 65534"
want um "600 0 0"
want ro "444 0 0"
want .netdiskfs/status "600 0 0"
echo "ok: modes and owners as the table says"

echo "== uid 65534 writes a root 0644 entry"
if "${AS_NOBODY[@]}" dd if=/dev/zero of="$MNT/a" bs=4k count=1 conv=notrunc status=none 2>"$TMP/err"; then
    fail "uid 65534 wrote into a root 0644 entry"
fi
cat "$TMP/err"
grep -q "Permission denied" "$TMP/err" || fail "expected EACCES: $(cat "$TMP/err")"
cmp "$TMP/a.img" "$TMP/orig.img" || fail "the backing file of a changed"
"${AS_NOBODY[@]}" cmp "$MNT/a" "$TMP/orig.img" || fail "uid 65534 cannot read the 0644 entry"
echo "ok: EACCES on write, the 0644 entry reads"

echo "== uid 65534 reads 0600 entries and the status file"
for f in priv um .netdiskfs/status; do
    if "${AS_NOBODY[@]}" cat "$MNT/$f" >/dev/null 2>"$TMP/err"; then fail "uid 65534 read $f"; fi
    grep -q "Permission denied" "$TMP/err" || fail "$f: expected EACCES: $(cat "$TMP/err")"
done
if "${AS_NOBODY[@]}" "$ND" status "$MNT" >"$TMP/out" 2>&1; then fail "netdiskfs status works for uid 65534"; fi
grep -q "Permission denied" "$TMP/out" || fail "netdiskfs status as uid 65534: $(cat "$TMP/out")"
"$ND" status "$MNT" | grep -Eq '^priv +file +connected' || fail "netdiskfs status as root"
echo "ok: 0600 entries and the status file refuse uid 65534; root reads the status"

echo "== what uid 65534 owns or shares by group it may write"
pattern "$TMP/w" 1
for f in mine:c grp:d; do
    "${AS_NOBODY[@]}" dd if="$TMP/w" of="$MNT/${f%%:*}" bs=64k conv=notrunc,fsync status=none ||
        fail "uid 65534 cannot write ${f%%:*}"
    cmp "$TMP/w" "$TMP/${f#*:}.img" || fail "${f%%:*}: the write did not reach the backing file"
done
if "${AS_NOBODY[@]}" dd if="$TMP/w" of="$MNT/ro" bs=64k count=1 conv=notrunc status=none 2>/dev/null; then
    fail "uid 65534 wrote the read-only entry"
fi
chmod 666 "$MNT/a" 2>/dev/null && fail "chmod of an entry succeeded"
echo "ok: owner and group writes reach the server; chmod refused"
nd_unmount "$MNT"

echo "== defaults with -o, and no_default_permissions"
nd_mount "$TMP/tab" "$MNT" -o allow_other,no_default_permissions,umask=027,gid=65534
mntopts | grep -q default_permissions && fail "no_default_permissions ignored: $(mntopts)"
want a "640 0 65534"
want priv "600 0 65534"
want grp "660 0 65534"
"${AS_NOBODY[@]}" cmp "$MNT/a" "$TMP/orig.img" || fail "group 65534 cannot read a 0640 entry"
if "${AS_NOBODY[@]}" dd if=/dev/zero of="$MNT/a" bs=4k count=1 conv=notrunc status=none 2>"$TMP/err"; then
    fail "no_default_permissions: uid 65534 wrote a 0640 entry"
fi
grep -q "Permission denied" "$TMP/err" || fail "no_default_permissions: expected EACCES: $(cat "$TMP/err")"
if "${AS_NOBODY[@]}" cat "$MNT/priv" >/dev/null 2>&1; then fail "no_default_permissions: uid 65534 read a 0600 entry"; fi
cmp "$TMP/a.img" "$TMP/orig.img" || fail "the backing file of a changed"
echo "ok: -o umask=,gid= apply to every entry; netdiskfs checks modes itself without default_permissions"
nd_unmount "$MNT"

echo "== bad values are clear errors"
for bad in "mode=0999" "uid=abc" "umask=1000" "gid=-1"; do
    echo "x file://$TMP/a.img $bad" >"$TMP/bad.tab"
    out=$("$ND" --print-config "$TMP/bad.tab" 2>&1) && fail "$bad accepted"
    echo "$out"
    echo "$out" | grep -q "bad.tab:1: entry 'x': ${bad%%=*}=" || fail "$bad: unclear error: $out"
done
echo "sec-permissions passed"
