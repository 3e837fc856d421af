#!/bin/bash
# cache-dir-validator.sh: the server's validator (nginx's strong ETag)
# guards the cache. The file replaced on the server between mounts: the
# next mount serves the new bytes and says (log, status) that the tier was
# dropped. Replaced during a random read loop (O_DIRECT, 64 KiB blocks):
# every block read is the old file's or the new file's same block, never
# anything else, and once a new block was seen every read is new (ranged
# GETs carry If-Range: a changed object answers 200, not a mix; the
# caches are small there, so the loop keeps asking the server). Over FTP
# the validator is the size and MDTM: a file replaced between mounts is
# found the same way.
. "$(dirname "$0")/../lib/functions.sh"
. "$TOP/tests/lib/nginx.sh"
. "$TOP/tests/lib/vsftpd.sh"

nginx_start
pattern "$TMP/v1" 16
pattern "$TMP/v2" 16
pattern "$TMP/v3" 16
cp "$TMP/v1" "$NGINX_ROOT/img"
touch -d '2020-01-01 00:00:00' "$NGINX_ROOT/img"
CD=$TMP/cd
echo "h $NGINX_URL/img cache-dir=$CD,reconnect-delay=2,timeout=2" >"$TMP/h.tab"
ST=$TMP/m/.netdiskfs/status
tier() { python3 -c '
import json,sys; print(json.load(open(sys.argv[1]))["entries"][0]["cache_dir"][sys.argv[2]])' "$ST" "$1"; }
etag() { curl -sI --noproxy '*' "$NGINX_URL/img" | sed -n 's/^ETag: *\(.*\)\r$/\1/Ip'; }
# replace FILE: a new object under the same name (new mtime: new ETag).
replace() { cp "$1" "$NGINX_ROOT/img.new"; touch -d "$2" "$NGINX_ROOT/img.new"; mv "$NGINX_ROOT/img.new" "$NGINX_ROOT/img"; }

echo "== between mounts"
nd_mount "$TMP/h.tab" "$TMP/m" -v
cmp "$TMP/m/h" "$TMP/v1" || fail "first mount: wrong bytes"
[ "$(tier validator)" = "$(etag)" ] || { cat "$ST"; fail "status validator '$(tier validator)', server ETag '$(etag)'"; }
nd_unmount "$TMP/m"
replace "$TMP/v2" '2021-01-01 00:00:00'
nd_mount "$TMP/h.tab" "$TMP/m" -v
cmp "$TMP/m/h" "$TMP/v2" || { show_log "$TMP/m.log"; cat "$ST"; fail "after the file changed between mounts: not the new bytes"; }
grep -q "dropped.*validator" "$TMP/m.log" || { show_log "$TMP/m.log"; fail "the log does not say the tier was dropped"; }
tier dropped | grep -q validator || { cat "$ST"; fail "the status does not say the tier was dropped"; }
[ "$(tier validator)" = "$(etag)" ] || fail "status validator is not the new ETag"

echo "== during a read loop"
# Small caches, so that the loop keeps asking the server (a block held in
# memory or on disk is served without asking it: the old file's, allowed).
nd_unmount "$TMP/m"
echo "h $NGINX_URL/img cache-dir=$CD,reconnect-delay=2,timeout=2,cache-size=2M,cache-dir-size=4M,readahead=0" >"$TMP/h.tab"
nd_mount "$TMP/h.tab" "$TMP/m" -v
cat >"$TMP/loop.py" <<'PY'
import mmap, os, random, subprocess, sys, time
path, oldf, newf, replace_cmd = sys.argv[1:5]
B = 65536
old, new = open(oldf, "rb").read(), open(newf, "rb").read()
n = len(old) // B
fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
buf = mmap.mmap(-1, B)
seen_new, after, i, t_end = None, 0, 0, time.time() + 40
random.seed(7)
while time.time() < t_end:
    if i == 150:
        subprocess.run(replace_cmd, shell=True, check=True)
    k = random.randrange(n)
    try:
        os.preadv(fd, [buf], k * B)
    except OSError as e:
        sys.exit("read %d of block %d: %s" % (i, k, e))
    got = bytes(buf)
    if got == new[k * B:(k + 1) * B]:
        if seen_new is None:
            seen_new = i
    elif got == old[k * B:(k + 1) * B]:
        if seen_new is not None:
            sys.exit("read %d: block %d is the old file's after the new one was seen at read %d" % (i, k, seen_new))
    else:
        sys.exit("read %d: block %d is neither the old nor the new file's" % (i, k))
    if seen_new is not None:
        after += 1
        if after >= 600:
            break
    i += 1
if seen_new is None or after < 600:
    sys.exit("the new file was not seen within 40 s (%d reads, new seen at %s)" % (i, seen_new))
print("old until read %d, then %d reads all new" % (seen_new, after))
PY
python3 "$TMP/loop.py" "$TMP/m/h" "$TMP/v2" "$TMP/v3" \
    "cp $TMP/v3 $NGINX_ROOT/img.new && touch -d '2022-01-01 00:00:00' $NGINX_ROOT/img.new && mv $NGINX_ROOT/img.new $NGINX_ROOT/img" ||
    { show_log "$TMP/m.log"; fail "read loop over a changing file"; }
cmp "$TMP/m/h" "$TMP/v3" || fail "after the change: the whole file is not the new one"
grep -q "changed" "$TMP/m.log" || { show_log "$TMP/m.log"; fail "the log does not say the object changed"; }
tier dropped | grep -q validator || { cat "$ST"; fail "the status does not say the tier was dropped"; }
[ "$(tier validator)" = "$(etag)" ] || { cat "$ST"; fail "status validator is not the newest ETag $(etag)"; }
nd_unmount "$TMP/m"
echo "h $NGINX_URL/img cache-dir=$CD,reconnect-delay=2,timeout=2" >"$TMP/h.tab"
nd_mount "$TMP/h.tab" "$TMP/m"
cat "$TMP/m/h" >/dev/null
nd_unmount "$TMP/m"
nginx_stop
nd_mount "$TMP/h.tab" "$TMP/m"
cmp "$TMP/m/h" "$TMP/v3" || fail "server down: the tier does not hold the newest file"
nd_unmount "$TMP/m"
echo "== ftp: size and MDTM"
vsftpd_start plain
cp "$TMP/v1" "$FTP_ROOT/img"
touch -d '2020-01-01 00:00:00 UTC' "$FTP_ROOT/img"
echo "f $FTP_URL/img username=$FTP_USER,password-file=$FTP_PASSFILE,cache-dir=$CD" >"$TMP/f.tab"
nd_mount "$TMP/f.tab" "$TMP/m" -v
cmp "$TMP/m/f" "$TMP/v1" || fail "ftp: first mount"
[ "$(tier validator)" = "size=$((16 << 20)),mdtm=$(date -d '2020-01-01 00:00:00 UTC' +%s)" ] ||
    { cat "$ST"; fail "ftp: validator $(tier validator)"; }
nd_unmount "$TMP/m"
cp "$TMP/v2" "$FTP_ROOT/img.new"
touch -d '2021-01-01 00:00:00 UTC' "$FTP_ROOT/img.new"
mv "$FTP_ROOT/img.new" "$FTP_ROOT/img"
nd_mount "$TMP/f.tab" "$TMP/m" -v
cmp "$TMP/m/f" "$TMP/v2" || fail "ftp: after the file changed between mounts: not the new bytes"
tier dropped | grep -q mdtm || { cat "$ST"; fail "ftp: the status does not say the tier was dropped"; }
nd_unmount "$TMP/m"
echo "cache-dir-validator: a changed object is never mixed and drops the tier"
