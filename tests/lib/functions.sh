# functions.sh: shared helpers for netdiskfs functional tests.
# Source it first thing: `. "$(dirname "$0")/../lib/functions.sh"`.
# Provides: $TOP (repo), $ND (the daemon), $TMP (private temp dir, removed at
# exit), requires, cleanup_fn, fail, free_port, nd_mount, nd_unmount,
# wait_for, pattern, expect_eio.
set -u
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ND=${ND:-$TOP/netdiskfs}
TMP=$(mktemp -d /tmp/netdiskfs-test.XXXXXX)
chmod 755 "$TMP"
_cleanups=()
_nd_mounts=()

# Is DIR a mount point? Unlike mountpoint(1) this also holds for a FUSE
# mount whose daemon died ("Transport endpoint is not connected").
is_mounted() {
    local d
    d=$(realpath -m "$1")
    awk -v d="$d" '$2 == d { found = 1 } END { exit !found }' /proc/self/mounts
}

# Run CMD at exit, last registered first.
cleanup_fn() { _cleanups+=("$*"); }

_run_cleanups() {
    local rc=$? i m
    for m in "${_nd_mounts[@]}"; do
        is_mounted "$m" && { fusermount3 -u -z "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; }
    done
    for ((i = ${#_cleanups[@]} - 1; i >= 0; i--)); do
        eval "${_cleanups[$i]}" || true
    done
    rm -rf "$TMP"
    exit $rc
}
trap _run_cleanups EXIT
trap 'exit 130' INT TERM

fail() { echo "FAIL: $*" >&2; exit 1; }

# Skip (exit 77) only when a tool is absent and cannot be installed.
requires() {
    command -v "$1" >/dev/null 2>&1 || { echo "SKIP: $1 not installed" >&2; exit 77; }
}

# wait_for SECONDS CMD...: poll CMD every 0.1 s until it succeeds, for at
# most SECONDS of wall time however slow CMD is.
wait_for() {
    local end=$(( $(date +%s%N) + $1 * 1000000000 )); shift
    while :; do
        "$@" >/dev/null 2>&1 && return 0
        [ "$(date +%s%N)" -lt $end ] || return 1
        sleep 0.1
    done
}

# A TCP port that nothing listens on now. Below the kernel's ephemeral
# range (32768 up), so a reconnecting client can never take it as its own
# source port while the server is down.
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$(( 20000 + RANDOM % 12000 ))
        ss -Hltn "sport = :$p" 2>/dev/null | grep -q . || { echo $p; return 0; }
    done
    fail "no free port"
}

# pattern FILE SIZE_MiB: write a reproducible pseudo-random file.
pattern() {
    head -c $(( $2 * 1048576 )) /dev/urandom > "$1"
}

# expect_eio BOUND_MS LOG WHAT FILE SKIP: a one-block (64 KiB) O_DIRECT
# read of FILE at block SKIP must fail with EIO within BOUND_MS of wall
# time (LOG is shown when it fails otherwise). Sets EIO_MS.
expect_eio() {
    local bound=$1 log=$2 what=$3 file=$4 skip=$5 start
    start=$(date +%s%N)
    if timeout 60 dd if="$file" of=/dev/null bs=64k count=1 skip="$skip" iflag=direct status=none 2>"$TMP/eio.err"; then
        fail "$what: the read succeeded"
    fi
    EIO_MS=$(( ($(date +%s%N) - start) / 1000000 ))
    grep -q "Input/output error" "$TMP/eio.err" ||
        { cat "$TMP/eio.err"; show_log "$log"; fail "$what: the read did not fail with EIO"; }
    [ "$EIO_MS" -le "$bound" ] || fail "$what: the read took $EIO_MS ms to fail (bound: $bound ms)"
}

# Print a log file under a header (for failures).
show_log() { echo "--- $1" >&2; cat "$1" >&2 2>/dev/null; echo "---" >&2; }

# nd_mount SOURCE MNT [ARGS...]: mount in the background with a pidfile,
# wait until it is live, register unmount at exit. Log in $MNT.log.
nd_mount() {
    local src=$1 mnt=$2; shift 2
    mkdir -p "$mnt"
    rm -f "$mnt.pid"
    _nd_mounts+=("$mnt")
    "$ND" "$src" "$mnt" -f --pidfile "$mnt.pid" "$@" >"$mnt.log" 2>&1 &
    local pid=$!
    local n=300
    while ((n-- > 0)); do
        [ -s "$mnt.pid" ] && mountpoint -q "$mnt" && return 0
        kill -0 $pid 2>/dev/null || { show_log "$mnt.log"; fail "netdiskfs exited before mounting $src"; }
        sleep 0.1
    done
    show_log "$mnt.log"
    fail "mount of $src on $mnt did not come up in 30 s"
}

# nd_unmount MNT: unmount and wait (bounded) for the daemon to exit.
nd_unmount() {
    local mnt=$1 pid=""
    [ -s "$mnt.pid" ] && pid=$(cat "$mnt.pid")
    fusermount3 -u "$mnt" || { show_log "$mnt.log"; fail "fusermount3 -u $mnt failed"; }
    if [ -n "$pid" ]; then
        wait_for 20 sh -c "! kill -0 $pid" || fail "daemon $pid still alive after unmount"
    fi
    check_sanitizers "$mnt.log"
}

# Fail when a daemon log holds an AddressSanitizer/UBSan/LeakSanitizer report.
check_sanitizers() {
    if grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$1" 2>/dev/null; then
        show_log "$1"
        fail "sanitizer report in $1"
    fi
}

# paced_dd IN OUT N FLAG: copy N pieces of 256 KiB from IN to OUT, one dd
# each, 20 ms apart (FLAG: iflag=direct or oflag=direct), so a server
# killed during it is killed in the middle whatever the machine's speed;
# a write (oflag) ends with an fsync of OUT.
paced_dd() {
    local i
    for i in $(seq 0 $(($3 - 1))); do
        dd if="$1" of="$2" bs=256k skip=$i seek=$i count=1 "$4" \
            conv=notrunc status=none || return 1
        sleep 0.02
    done
    case $4 in oflag=*) dd if=/dev/null of="$2" conv=notrunc,fsync status=none ;; esac
}
