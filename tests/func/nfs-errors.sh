#!/bin/bash
# A write the NFS server refuses (the exported file made immutable: ganesha
# answers NFS3ERR_PERM) reaches the application as EPERM, EACCES or EIO,
# never as an errno that means something else (libnfs reports a failed
# RPC as -EFAULT, "Bad address"), and quickly: a refusal is final, not a
# lost connection. The mount lives, and writes work again once the file
# is writable, byte-exact on the server.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/ganesha.sh"
requires chattr

ganesha_start
E=$GANESHA_EXPORT
pattern "$E/disk.img" 16
U="nfs://127.0.0.1/export/disk.img?nfsport=$GANESHA_PORT&mountport=$GANESHA_MNTPORT"
cat > "$TMP/tab" <<TAB
w  $U  reconnect-delay=4 timeout=2
TAB
nd_mount "$TMP/tab" "$TMP/mnt"
cleanup_fn chattr -i "$E/disk.img"
pattern "$TMP/new" 4

# refused BS COUNT: an fsync'd O_DIRECT write of BS x COUNT fails with
# EPERM, EACCES or EIO within reconnect-delay + timeout + 3 s.
refused() {
    local start=$(date +%s%N) ms
    timeout 60 dd if="$TMP/new" of="$TMP/mnt/w" bs="$1" count="$2" \
        oflag=direct conv=notrunc,fsync status=none 2>"$TMP/wr.err" &&
        fail "a write of $2 x $1 to an immutable file succeeded"
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    # Every error dd saw (the write's, the fsync's) is one of those.
    [ -s "$TMP/wr.err" ] &&
        ! grep -vqE "Operation not permitted|Permission denied|Input/output error" "$TMP/wr.err" ||
        { cat "$TMP/wr.err"; show_log "$TMP/mnt.log"; fail "a refused write of $2 x $1 failed with the wrong error"; }
    [ "$ms" -le 9000 ] || fail "a refused write of $2 x $1 took $ms ms to fail"
    echo "ok: a refused write of $2 x $1: $(sed 's/.*: //' "$TMP/wr.err" | sort -u | paste -sd,) after $ms ms"
}

chattr +i "$E/disk.img"
refused 64k 1
refused 4M 1
mountpoint -q "$TMP/mnt" || fail "the mount went away"
chattr -i "$E/disk.img"
dd if="$TMP/new" of="$TMP/mnt/w" bs=1M oflag=direct conv=notrunc,fsync status=none ||
    { show_log "$TMP/mnt.log"; fail "no write once the file was writable again"; }
cmp -n $((4 << 20)) "$TMP/new" "$E/disk.img" || fail "the server's file differs after the write"
echo "ok: writes work again once the file is writable, byte-exact"
nd_unmount "$TMP/mnt"
