#!/bin/bash
# CHAP against tgtd: credentials from the URL (user%password@), from
# user= + password-file=, from LIBISCSI_CHAP_USERNAME/PASSWORD, and mutual
# CHAP (target-user= + target-password-file=). A wrong password (or a
# target that does not prove itself) fails with a clear error naming the
# entry and never showing a password, while the other entries of the same
# mount keep working; libiscsi's own debug log shows no password either.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/tgtd.sh"

P=$(tgt_free_port)
IQN=iqn.2026-01.test.netdiskfs
pattern "$TMP/open.img" 1
pattern "$TMP/chap.img" 2
pattern "$TMP/mutual.img" 1
tgtd_start "$P"
tgt_target "$P" 1 "$IQN:open"
tgt_lun "$P" 1 1 "$TMP/open.img"
tgt_target "$P" 2 "$IQN:chap"
tgt_lun "$P" 2 1 "$TMP/chap.img"
tgt_chap "$P" 2 alice Alice-Secret-1
tgt_target "$P" 3 "$IQN:mutual"
tgt_lun "$P" 3 1 "$TMP/mutual.img"
tgt_chap "$P" 3 bob Bob-Secret-22
tgt_chap "$P" 3 tgtuser Target-Secret-333 outgoing

printf 'Alice-Secret-1\n' > "$TMP/alice.pw"
printf 'Bob-Secret-22\n' > "$TMP/bob.pw"
printf 'Target-Secret-333\n' > "$TMP/target.pw"
printf 'Target-Guess-4444\n' > "$TMP/target-wrong.pw"
chmod 600 "$TMP"/*.pw

cat > "$TMP/tab" <<TAB
open     iscsi://127.0.0.1:$P/$IQN:open/1
url      iscsi://alice%Alice-Secret-1@127.0.0.1:$P/$IQN:chap/1
file     iscsi://127.0.0.1:$P/$IQN:chap/1  user=alice,password-file=$TMP/alice.pw
mutual   iscsi://127.0.0.1:$P/$IQN:mutual/1  user=bob,password-file=$TMP/bob.pw,target-user=tgtuser,target-password-file=$TMP/target.pw
wrongpw  iscsi://alice%Wrong-Guess-9@127.0.0.1:$P/$IQN:chap/1
badtgt   iscsi://127.0.0.1:$P/$IQN:mutual/1  user=bob,password-file=$TMP/bob.pw,target-user=tgtuser,target-password-file=$TMP/target-wrong.pw
nocreds  iscsi://127.0.0.1:$P/$IQN:chap/1
TAB
chmod 600 "$TMP/tab"
nd_mount "$TMP/tab" "$TMP/mnt"
for e in open:open url:chap file:chap mutual:mutual; do
    cmp "$TMP/mnt/${e%%:*}" "$TMP/${e#*:}.img" || { show_log "$TMP/mnt.log"; fail "${e%%:*} differs from its backing file"; }
done
echo "ok: CHAP from the URL, from password-file, mutual CHAP; the open target beside them"

# The wrong password: a clear error naming the entry, no password shown,
# and the entry is not readable.
grep "wrongpw" "$TMP/mnt.log" | grep -qi "authentication failure" ||
    { show_log "$TMP/mnt.log"; fail "no authentication error naming the entry 'wrongpw'"; }
grep "nocreds" "$TMP/mnt.log" | grep -qi "authentication failure" ||
    { show_log "$TMP/mnt.log"; fail "no authentication error naming the entry 'nocreds'"; }
grep "badtgt" "$TMP/mnt.log" | grep -qi "CHAP_R" ||
    { show_log "$TMP/mnt.log"; fail "no error about the target's CHAP answer naming the entry 'badtgt'"; }
grep -e "Wrong-Guess-9" -e "Alice-Secret-1" -e "Bob-Secret-22" -e "Target-Secret-333" -e "Target-Guess-4444" "$TMP/mnt.log" &&
    fail "a password appears in the log"
tr '\0' ' ' < "/proc/$(cat "$TMP/mnt.pid")/cmdline" | grep -q "Secret" && fail "a password appears in the command line"
if cat "$TMP/mnt/wrongpw" > /dev/null 2>&1; then fail "the entry with the wrong password is readable"; fi
echo "ok: wrong password: $(grep -m1 wrongpw "$TMP/mnt.log")"
echo "ok: target fails mutual CHAP: $(grep -m1 badtgt "$TMP/mnt.log")"
# ... and the others still work afterwards.
cmp "$TMP/mnt/open" "$TMP/open.img" && cmp "$TMP/mnt/url" "$TMP/chap.img" || fail "the good entries broke"
pattern "$TMP/w" 1
dd if="$TMP/w" of="$TMP/mnt/file" bs=64k conv=notrunc,fsync status=none || fail "write through the CHAP entry failed"
cmp -n 1048576 "$TMP/chap.img" "$TMP/w" || fail "the CHAP LUN's backing file does not hold the write"
echo "ok: the other entries keep working (read and write)"
nd_unmount "$TMP/mnt"

# Credentials from the environment, as QEMU takes them.
echo "env iscsi://127.0.0.1:$P/$IQN:chap/1" > "$TMP/tab-env"
LIBISCSI_CHAP_USERNAME=alice LIBISCSI_CHAP_PASSWORD=Alice-Secret-1 LIBISCSI_DEBUG=10 \
    nd_mount "$TMP/tab-env" "$TMP/mnt-env" -d
cmp "$TMP/mnt-env/env" "$TMP/chap.img" || { show_log "$TMP/mnt-env.log"; fail "CHAP from the environment: bytes differ"; }
nd_unmount "$TMP/mnt-env"
grep -q "libiscsi.*login successful" "$TMP/mnt-env.log" || { show_log "$TMP/mnt-env.log"; fail "-d does not show libiscsi's log"; }
grep -q "Alice-Secret-1" "$TMP/mnt-env.log" && fail "the password appears in the debug log"
echo "ok: CHAP from LIBISCSI_CHAP_USERNAME/LIBISCSI_CHAP_PASSWORD; libiscsi's log (level 10) under -d, without the password"

# With --strict the bad entry is fatal, and the message names it.
if timeout 30 "$ND" --strict "$TMP/tab" "$TMP/mnt" -f > "$TMP/strict.log" 2>&1; then
    fail "--strict mounted a table with a wrong password"
fi
grep -q wrongpw "$TMP/strict.log" || { cat "$TMP/strict.log"; fail "--strict error does not name the entry"; }
grep -q "Wrong-Guess-9" "$TMP/strict.log" && fail "--strict error shows the password"
echo "ok: --strict: $(grep -m1 wrongpw "$TMP/strict.log")"
