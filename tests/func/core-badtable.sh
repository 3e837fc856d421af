#!/bin/bash
# Bad tables: every bad line is reported as FILE:LINE with the key, exit 1,
# no crash and no mount; one bad entry does not take the others down
# unless --strict.
. "$(dirname "$0")/../lib/functions.sh"

pattern "$TMP/a.img" 1
cat > "$TMP/bad.tab" <<EOT
good   $TMP/a.img
# line 2: comment

nourl
x1     $TMP/a.img   readahead=1000
x2     $TMP/a.img   bogus-key=1
x3     gopher://h/x
good   $TMP/a.img
x4     $TMP/a.img   block-size=12k
x5     "unterminated
x6     nbd://h:1/x  export=y
x7     $TMP/a.img   cache=sometimes
EOT
out=$("$ND" --print-config "$TMP/bad.tab" 2>&1); rc=$?
echo "$out"
[ $rc = 1 ] || fail "--print-config exit $rc"
for want in "bad.tab:4: entry 'nourl' has no URL" \
            "bad.tab:5: entry 'x1': readahead=1000: must be a multiple of 512" \
            "bad.tab:6: entry 'x2': unknown option 'bogus-key'" \
            "bad.tab:7: entry 'x3': unknown URL scheme 'gopher'" \
            "bad.tab:8: entry 'good' is already defined at" \
            "bad.tab:9: entry 'x4'" \
            "bad.tab:10: unterminated double quote" \
            "bad.tab:11: entry 'x6': key 'export' is given twice" \
            "bad.tab:12: entry 'x7': cache=sometimes"; do
    echo "$out" | grep -qF "$want" || fail "missing: $want"
done
mkdir -p "$TMP/mnt"
"$ND" "$TMP/bad.tab" "$TMP/mnt" -f >"$TMP/log" 2>&1 && fail "mounted a bad table"
mountpoint -q "$TMP/mnt" && fail "a bad table left a mount"
grep -qF "bad.tab:6: entry 'x2': unknown option 'bogus-key'" "$TMP/log" || fail "mount: error not shown"

# Missing file, unreadable source, usage errors.
"$ND" --print-config "$TMP/none.tab" 2>&1 | grep -q "none.tab: No such file" || fail "missing table"
"$ND" 2>/dev/null; [ $? = 2 ] || fail "no arguments: exit code"

# A world-readable table holding a password is refused; mode 600 is fine.
printf 'h https://u:secret@127.0.0.1:1/x.img\n' > "$TMP/pw.tab"
chmod 644 "$TMP/pw.tab"
out=$("$ND" --print-config "$TMP/pw.tab" 2>&1) && fail "world-readable password accepted"
echo "$out" | grep -q "pw.tab:1: entry 'h' holds a password" || fail "pw: $out"
echo "$out" | grep -q secret && fail "the password was printed"
chmod 600 "$TMP/pw.tab"
out=$("$ND" --print-config "$TMP/pw.tab" 2>&1) || fail "mode 600 refused: $out"
echo "$out" | grep -q "password=\*\*\*" || fail "password not masked: $out"
echo "$out" | grep -q secret && fail "the password was printed"

# One entry that cannot be opened: the others still mount; --strict refuses.
cat > "$TMP/half.tab" <<EOT
ok      $TMP/a.img
missing $TMP/does-not-exist.img
EOT
nd_mount "$TMP/half.tab" "$TMP/mnt"
[ "$(ls "$TMP/mnt")" = ok ] || fail "listing with a failed entry: $(ls "$TMP/mnt")"
grep -q "half.tab:2: entry 'missing'" "$TMP/mnt.log" || fail "failed entry not logged"
nd_unmount "$TMP/mnt"
"$ND" "$TMP/half.tab" "$TMP/mnt" -f --strict >"$TMP/log" 2>&1 && fail "--strict mounted"
mountpoint -q "$TMP/mnt" && fail "--strict left a mount"
echo ok
