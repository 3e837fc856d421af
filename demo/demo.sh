#!/bin/bash
# make demo: start local servers on loopback, mount a sample table that
# reaches them, show the disks working (ls -l, dd in and out, cmp), unmount.
# Each backend adds itself with demo/parts/NAME.sh, which defines
# demo_NAME_start (start a server, append table lines to $DEMO_TABLE),
# demo_NAME_check (read its entries under $DEMO_MNT and compare) and
# demo_NAME_stop.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
ND=${ND:-$top/netdiskfs}
export DEMO_WORK=$top/demo/work
export DEMO_TABLE=$DEMO_WORK/netdisk.tab
export DEMO_MNT=$DEMO_WORK/mnt
parts=() started=() failed=()

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# demo_stop_pidfile FILE...: stop each process named by a pidfile (SIGTERM,
# then SIGKILL after 5 s) and remove the pidfile. For the parts' _stop.
demo_stop_pidfile() {
    local f pid n
    for f in "$@"; do
        [ -s "$f" ] || continue
        pid=$(cat "$f")
        kill "$pid" 2>/dev/null
        for n in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
        rm -f "$f"
    done
}

cleanup() {
    if mountpoint -q "$DEMO_MNT" 2>/dev/null; then
        fusermount3 -u "$DEMO_MNT" 2>/dev/null || fusermount3 -u -z "$DEMO_MNT"
    fi
    local p
    for p in "${started[@]}"; do "demo_${p}_stop" || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if mountpoint -q "$DEMO_MNT" 2>/dev/null; then fusermount3 -u "$DEMO_MNT"; fi
rm -rf "$DEMO_WORK"
mkdir -p "$DEMO_WORK" "$DEMO_MNT"
chmod 700 "$DEMO_WORK"

say "a sample image and a mount table"
head -c $((32 << 20)) /dev/urandom > "$DEMO_WORK/sample.img"
cat > "$DEMO_TABLE" <<EOT
# netdisk.tab: NAME  URL  [OPTIONS]
*          readahead=512K
sample     file://$DEMO_WORK/sample.img
sample-ro  $DEMO_WORK/sample.img   ro
EOT

for f in "$top"/demo/parts/*.sh; do
    [ -e "$f" ] || continue
    p=$(basename "$f" .sh)
    . "$f"
    say "starting the $p server on loopback"
    if "demo_${p}_start"; then
        started+=("$p")
    else
        echo "demo: $p could not start; continuing without it" >&2
        failed+=("$p")
    fi
done
chmod 600 "$DEMO_TABLE"

say "the table"
cat "$DEMO_TABLE"
say "netdiskfs --print-config (canonical options per entry)"
"$ND" --print-config "$DEMO_TABLE" | head -n 40
echo "..."

say "mounting on $DEMO_MNT"
"$ND" "$DEMO_TABLE" "$DEMO_MNT" --pidfile "$DEMO_WORK/netdiskfs.pid" || { echo "demo: mount failed" >&2; exit 1; }
ls -l "$DEMO_MNT"

say "copy data in and out of the sample disk with dd, verify with cmp"
head -c $((4 << 20)) /dev/urandom > "$DEMO_WORK/chunk"
dd if="$DEMO_WORK/chunk" of="$DEMO_MNT/sample" bs=1M seek=8 conv=notrunc,fsync status=none
dd if="$DEMO_MNT/sample" of="$DEMO_WORK/back" bs=1M skip=8 count=4 status=none
cmp "$DEMO_WORK/chunk" "$DEMO_WORK/back" && echo "sample: 4 MiB written at 8 MiB and read back: identical"
cmp "$DEMO_MNT/sample" "$DEMO_WORK/sample.img" && echo "sample: the whole disk matches its backing file"
if dd if=/dev/zero of="$DEMO_MNT/sample-ro" bs=4k count=1 conv=notrunc status=none 2>/dev/null; then
    echo "sample-ro: a write succeeded?!"; failed+=(sample-ro)
else
    echo "sample-ro: writes refused (read-only)"
fi

for p in "${started[@]}"; do
    say "$p"
    "demo_${p}_check" || failed+=("$p")
done

say "status (netdiskfs status $DEMO_MNT)"
"$ND" status "$DEMO_MNT"

say "unmounting"
fusermount3 -u "$DEMO_MNT" && echo "unmounted"
if [ ${#failed[@]} -gt 0 ]; then
    echo "demo: these parts failed: ${failed[*]}" >&2
    exit 1
fi
echo
echo "demo: every disk worked."
