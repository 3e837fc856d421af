#!/bin/bash
# mount-reload: SIGHUP re-reads the table. New entries appear, removed ones
# go (one still open stays, marked removed, until closed), changed ones are
# reopened; a dd in progress on an unchanged NBD entry goes on undisturbed
# (same checksum, no reconnect). A broken table is refused as a whole: the
# running set stays and the error is logged. An entry that could not be
# opened is opened on a later SIGHUP with the same line.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/mount.sh"
. "$TOP/tests/lib/nbdkit.sh"

pattern "$TMP/keep.img" 8
for f in a b c n; do pattern "$TMP/$f.img" 1; done
nbdkit_unix keep file "$TMP/keep.img"
SOCK=$(nbdkit_sock keep)
TAB=$TMP/tab
cat >"$TAB" <<EOT
keep  nbd+unix:///?socket=$SOCK
a     $TMP/a.img
b     $TMP/b.img
c     $TMP/c.img
EOT
MNT=$TMP/mnt
nd_mount "$TAB" "$MNT" -v
[ "$(ls "$MNT" | tr '\n' ' ')" = "a b c keep " ] || fail "initial entries: $(ls "$MNT")"
pid=$(cat "$MNT.pid")

# A dd on keep that stops after 1 MiB until the gate opens: it holds its
# file open, with data read before and after the reloads.
mkfifo "$TMP/gate"
( dd if="$MNT/keep" bs=64k status=none |
    { dd bs=64k count=16 iflag=fullblock status=none; read -r _ <"$TMP/gate"; cat; } |
    sha256sum >"$TMP/dd.sum" ) &
dd_job=$!
wait_for 10 sh -c "[ \$(grep -o '\"bytes_read\": [0-9]*' '$MNT/.netdiskfs/status' | head -1 | grep -o '[0-9]*\$') -ge 1048576 ]" ||
    fail "the dd on keep did not start"
kill -0 $dd_job || fail "the dd ended early"
conns=$(status_field "$MNT" keep connections)

# b stays open across the reload that removes it.
exec 7<"$MNT/b"

echo "== reload: a and b removed, c changed to ro, n added"
cat >"$TAB" <<EOT
keep  nbd+unix:///?socket=$SOCK
c     $TMP/c.img   ro
n     file://$TMP/n.img
EOT
kill -HUP "$pid"
wait_for 10 sh -c "[ \"\$(ls '$MNT' | tr '\n' ' ')\" = 'c keep n ' ]" || { show_log "$MNT.log"; fail "after reload: $(ls "$MNT")"; }
kill -0 $dd_job || fail "the dd on keep died during the reload"
cmp "$MNT/n" "$TMP/n.img" || fail "new entry n differs"
[ "$(status_field "$MNT" c read_only)" = true ] || fail "changed entry c is not read-only"
[ "$(stat -c %a "$MNT/c")" = 444 ] || fail "c's mode: $(stat -c %a "$MNT/c")"
if dd if=/dev/zero of="$MNT/c" bs=4k count=1 conv=notrunc status=none 2>/dev/null; then fail "write to c (now ro) succeeded"; fi
cmp "$MNT/c" "$TMP/c.img" || fail "c differs"
[ -e "$MNT/a" ] && fail "removed entry a still resolves"
status_names "$MNT" | grep -qx a && fail "removed entry a is still in the status file"
[ "$(status_field "$MNT" b removed)" = true ] || fail "b (open) is not marked removed: $(status_field "$MNT" b removed)"
[ "$(status_field "$MNT" b open_files)" = 1 ] || fail "b.open_files = $(status_field "$MNT" b open_files)"
"$ND" status "$MNT" | grep -E '^b ' | grep -q removed || fail "status table does not mark b removed"
cmp - "$TMP/b.img" <&7 || fail "the open handle on removed entry b no longer reads b"
exec 7<&-
wait_for 10 eval "! status_names '$MNT' | grep -qx b" || fail "b still listed after its last handle closed"
[ "$(status_field "$MNT" keep reconnects)" = 0 ] || fail "keep reconnected during the reload"
[ "$(status_field "$MNT" keep state)" = connected ] || fail "keep is not connected"
(($(status_field "$MNT" keep connections) >= 1)) || fail "keep lost its connections (had $conns)"

echo "== a broken table on SIGHUP keeps the running set"
cp "$TAB" "$TMP/good.tab"
cat >>"$TAB" <<EOT
extra $TMP/a.img
broken  nbd://
EOT
kill -HUP "$pid"
wait_for 10 grep -q "has errors; keeping the running entries" "$MNT.log" || { show_log "$MNT.log"; fail "no error logged for the broken table"; }
grep -q "$TAB:5:" "$MNT.log" || { show_log "$MNT.log"; fail "the error does not name $TAB:5"; }
[ "$(ls "$MNT" | tr '\n' ' ')" = "c keep n " ] || fail "entries changed after a broken reload: $(ls "$MNT")"
cmp "$MNT/n" "$TMP/n.img" || fail "n unreadable after a broken reload"
cmp "$MNT/c" "$TMP/c.img" || fail "c unreadable after a broken reload"
kill -0 $dd_job || fail "the dd on keep died during the broken reload"

echo "== the dd finishes with the right bytes"
echo go >"$TMP/gate"
wait $dd_job || fail "the dd pipeline failed"
want=$(sha256sum <"$TMP/keep.img")
[ "$(cat "$TMP/dd.sum")" = "$want" ] || fail "the dd across reloads read different bytes"
[ "$(status_field "$MNT" keep reconnects)" = 0 ] || fail "keep reconnected"

echo "== the fixed table reloads again; an entry whose server is down is left out"
cp "$TMP/good.tab" "$TAB"
echo "a2 $TMP/a.img" >>"$TAB"
echo "late nbd+unix:///?socket=$TMP/late.sock" >>"$TAB"
kill -HUP "$pid"
wait_for 10 test -e "$MNT/a2" || fail "a2 did not appear"
cmp "$MNT/a2" "$TMP/a.img" || fail "a2 differs"
wait_for 10 grep -q "entry 'late'" "$MNT.log" || fail "the failure of late is not logged"
[ -e "$MNT/late" ] && fail "late shows although its server is down"

echo "== same table, server up: SIGHUP opens the entry that failed"
pattern "$TMP/late.img" 1
nbdkit_unix late file "$TMP/late.img"
[ "$(nbdkit_sock late)" = "$TMP/late.sock" ] || fail "nbdkit socket path"
kill -HUP "$pid"
wait_for 10 test -e "$MNT/late" || { show_log "$MNT.log"; fail "late did not appear once its server was up"; }
cmp "$MNT/late" "$TMP/late.img" || fail "late differs"
kill -0 "$pid" || fail "the daemon died"
grep -E "reload|error" "$MNT.log"
nd_unmount "$MNT"
echo "reload checks passed"
