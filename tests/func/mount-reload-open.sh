#!/bin/bash
# mount-reload-open: a reload that changes an entry (here its readahead)
# swaps the new definition in under the same name. While SIGHUPs change it
# in a loop, a dd loop opening the name never gets ENOENT. Files open on
# the old definition go on with the new one (one cache): what they write
# and fsync is what new opens read and what the server holds, also after
# they close; with cache=writeback their dirty blocks are written back
# before the swap, and what they write after it is read by new opens. A
# new definition that cannot be opened leaves the running one serving; a
# dead server does not keep an entry from moving to another one.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/mount.sh"
. "$TOP/tests/lib/nbdkit.sh"
requires python3

pattern "$TMP/d.img" 4
nbdkit_unix d file "$TMP/d.img"
SOCK=$(nbdkit_sock d)
TAB=$TMP/tab
MNT=$TMP/mnt

# table MODE READAHEAD: the one-entry table.
table() { echo "d nbd+unix:///?socket=$SOCK cache=$1,readahead=$2" >"$TAB"; }

# reload MODE READAHEAD: rewrite the table, SIGHUP, wait until it is done.
reload() {
    table "$1" "$2"
    hup_reload "$MNT" || { show_log "$MNT.log"; fail "reload to $1/$2 did not finish"; }
}

# pwrite_fd FD BLOCK FILE: write 64 KiB of FILE at 64 KiB block BLOCK
# through the already open descriptor FD (no new open), then fsync it when
# a fourth argument says so.
pwrite_fd() {
    python3 -c 'import os, sys
fd, blk = int(sys.argv[1]), int(sys.argv[2])
data = open(sys.argv[3], "rb").read()
assert os.pwrite(fd, data, blk * 65536) == len(data)
if len(sys.argv) > 4: os.fsync(fd)' "$@"
}

# block FILE N: 64 KiB block N of FILE, read by a new open (page cache).
block() { dd if="$1" bs=64k skip="$2" count=1 status=none; }

# same WHAT FILE N WANT: block N of FILE equals the 64 KiB file WANT.
same() { block "$2" "$3" | cmp -s - "$4" || fail "$1: block $3 of $2 differs"; }

table writethrough 128K
nd_mount "$TAB" "$MNT" -v

echo "== 50 reloads changing readahead while a dd loop opens the name"
: >"$TMP/dd.err"
(
    for i in $(seq 1 4000); do
        [ -e "$TMP/stop" ] && break
        dd if="$MNT/d" of=/dev/null bs=64k count=1 status=none 2>>"$TMP/dd.err" ||
            echo "pass $i failed" >>"$TMP/dd.fail"
        echo $i >"$TMP/dd.passes"
    done
) &
ddloop=$!
for i in $(seq 1 50); do
    reload writethrough $(( i % 2 ? 256 : 128 ))K
done
touch "$TMP/stop"
wait $ddloop
passes=$(cat "$TMP/dd.passes")
echo "dd passes: $passes, failed: $(cat "$TMP/dd.fail" 2>/dev/null | wc -l)"
[ -s "$TMP/dd.fail" ] && fail "$(wc -l <"$TMP/dd.fail") of $passes dd passes failed across reloads: $(sort -u "$TMP/dd.err" | head -3)"
((passes >= 50)) || fail "only $passes dd passes ran"
[ "$(status_field "$MNT" d reconnects)" = 0 ] || fail "d reconnected"

echo "== writethrough: a write and fsync through a handle opened before the reload"
head -c 65536 /dev/urandom >"$TMP/w1"
exec 7<>"$MNT/d"
block "$MNT/d" 0 >/dev/null # cached by the entry now open
reload writethrough 256K
block "$TMP/d.img" 0 >"$TMP/b0"
same "after the reload" "$MNT/d" 0 "$TMP/b0"
pwrite_fd 7 0 "$TMP/w1" fsync
same "the server, after fsync through the old handle" "$TMP/d.img" 0 "$TMP/w1"
same "a new open, after fsync through the old handle" "$MNT/d" 0 "$TMP/w1"
exec 7<&-
same "a new open, after the old handle closed" "$MNT/d" 0 "$TMP/w1"

echo "== writeback: dirty blocks of the old entry and writes after the swap"
reload writeback 128K
head -c 65536 /dev/urandom >"$TMP/w2"
head -c 65536 /dev/urandom >"$TMP/w3"
exec 7<>"$MNT/d"
block "$MNT/d" 2 >/dev/null
pwrite_fd 7 1 "$TMP/w2" # dirty, not fsynced
reload writeback 256K
same "a new open, dirty block of the old handle" "$MNT/d" 1 "$TMP/w2"
same "the server, after the swap wrote back" "$TMP/d.img" 1 "$TMP/w2"
pwrite_fd 7 2 "$TMP/w3" # through the old handle, after the swap
same "a new open, write through the old handle after the swap" "$MNT/d" 2 "$TMP/w3"
pwrite_fd 7 2 "$TMP/w3" fsync
same "the server, after fsync" "$TMP/d.img" 2 "$TMP/w3"
exec 7<&-
cmp "$MNT/d" "$TMP/d.img" || fail "the whole disk differs from the server's file"

echo "== a new definition that cannot be opened leaves the running one"
echo "d nbd+unix:///?socket=$TMP/nothing.sock cache=writeback" >"$TAB"
hup_reload "$MNT" || fail "the reload did not finish"
grep -q "entry 'd': .*its running definition stays" "$MNT.log" || { show_log "$MNT.log"; fail "no error logged for d's new definition"; }
cmp "$MNT/d" "$TMP/d.img" || fail "d no longer serves the server's bytes"
reload writeback 128K # the same line again: opened this time
echo "== the server is gone; the table moves the entry to another one"
cp "$TMP/d.img" "$TMP/d2.img"
nbdkit_unix d2 file "$TMP/d2.img"
reload writethrough 128K
nbdkit_kill d
swaps=$(grep -c "entry 'd': .*(changed: swapped in)" "$MNT.log")
echo "d nbd+unix:///?socket=$(nbdkit_sock d2) reconnect-delay=1" >"$TAB"
hup_reload "$MNT" 20 || fail "the reload did not finish"
[ "$(grep -c "entry 'd': .*(changed: swapped in)" "$MNT.log")" -gt "$swaps" ] ||
    { show_log "$MNT.log"; fail "d was not moved to the new server"; }
cmp "$MNT/d" "$TMP/d2.img" || fail "d does not serve the new server's bytes"
kill -0 "$(cat "$MNT.pid")" || fail "the daemon died"
nd_unmount "$MNT"
echo "reload of open entries passed"
