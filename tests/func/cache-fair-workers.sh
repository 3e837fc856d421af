#!/bin/bash
# One slow entry does not stall the others: while a sequential reader of
# an NBD entry with 1 s reads (nbdkit's delay filter) keeps its readahead
# busy, a 16 MiB read of a local file entry in the same mount stays fast.
# Then the slow server dies with reads in flight: unmount and daemon exit
# stay within a few seconds of reconnect-delay.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/nbdkit.sh"

pattern "$TMP/slow.img" 64
pattern "$TMP/fast.img" 16
nbdkit_unix s --filter=delay file "$TMP/slow.img" rdelay=1
cat > "$TMP/tab" <<TAB
slow nbd+unix:///?socket=$(nbdkit_sock s) readahead=16M,cache-size=256M,reconnect-delay=2,timeout=2,connections=8
fast $TMP/fast.img
TAB
nd_mount "$TMP/tab" "$TMP/mnt"

timeout 60 dd if="$TMP/mnt/slow" of=/dev/null bs=1M iflag=direct status=none 2>/dev/null &
R1=$!
timeout 60 dd if="$TMP/mnt/slow" of=/dev/null bs=1M skip=32 iflag=direct status=none 2>/dev/null &
R2=$!
sleep 4
start=$(date +%s%N)
cmp "$TMP/mnt/fast" "$TMP/fast.img" || fail "the fast entry reads other bytes"
ms=$(( ($(date +%s%N) - start) / 1000000 ))
echo "16 MiB of the fast entry beside a slow one: $ms ms"
[ "$ms" -le 3000 ] || { show_log "$TMP/mnt.log"; fail "the fast entry's 16 MiB took $ms ms behind the slow entry (bound 3000)"; }

# The slow server dies with reads in flight: the readers end within the
# request bound, and after unmount the daemon exits within a few seconds.
nbdkit_kill s
start=$(date +%s%N)
wait $R1 $R2 2>/dev/null
ms=$(( ($(date +%s%N) - start) / 1000000 ))
echo "readers ended $ms ms after the server died"
[ "$ms" -le 15000 ] || fail "readers took $ms ms to end (bound 15000)"
pid=$(cat "$TMP/mnt.pid")
start=$(date +%s%N)
fusermount3 -u "$TMP/mnt" || fail "unmount failed"
wait_for 30 sh -c "! kill -0 $pid" || fail "daemon still alive 30 s after unmount"
ms=$(( ($(date +%s%N) - start) / 1000000 ))
echo "daemon exit after unmount with the server dead: $ms ms"
[ "$ms" -le 10000 ] || fail "the daemon took $ms ms to exit (bound 10000: reconnect-delay 2 + timeout 2 + slack)"
echo "ok: a slow entry does not stall another; exit bounded"
