# fio-crash.sh: kill -9 of the daemon in the middle of a fio write load,
# then a check that every write fio had synced reads back. Source it after
# functions.sh and mount.sh.
#
#   fio_crash_start DIR FILE SIZE   start the write job on FILE (SIZE bytes
#                         of it) in the background, its verify state in DIR
#   fio_crash_kill MNT NAME KEY MIN   wait (bounded, 30 s) until the status
#                         counter KEY (a jq-like path: overlay.writes or
#                         requests_written) of entry NAME reaches MIN, then
#                         kill -9 the daemon of MNT, wait for fio (bounded)
#                         and unmount the dead mount
#   fio_crash_synced DIR  how many of fio's writes an fsync covered
#   fio_crash_verify DIR FILE SIZE N   fio checks the first N writes (their
#                         crc32c and header: offset, job seed) and must have
#                         read N blocks; the write after them (never issued,
#                         or not synced) is shown to fail the check, so the
#                         check is not vacuous
#
# Why this is sound. The job is psync at depth 1 with an fsync after every
# FIO_FSYNC writes: fio issues each write or fsync only after the one
# before completed, and stops at the first error. The verify state fio
# saves when it stops holds numberio, the writes it issued (I, the last
# maybe failed). Every write up to S = FIO_FSYNC * floor((I - 1) /
# FIO_FSYNC) was followed by an fsync that succeeded, since write S+1 <= I
# was issued after it. A verify-only run of the same job (same seed, same
# random map) with --number_ios=S replays exactly the first S offsets in
# issue order and reads each back; fio's own saved state is loaded too,
# and it never lets fio check a write past I. fio's stock verify of all I
# writes would wrongly count the writes after the last fsync, which a
# crash may lose.

FIO_FSYNC=16

requires fio

_fio_job() { # FILE SIZE
    echo --name=crash --filename="$1" --size="$2" --io_size=$(($2 * 15 / 16)) \
        --rw=randwrite --bs=4k --ioengine=psync --iodepth=1 --direct=1 \
        --randrepeat=1 --verify=crc32c --fsync=$FIO_FSYNC --end_fsync=1
}

fio_crash_start() { # DIR FILE SIZE
    mkdir -p "$1"
    rm -f "$1"/*.state
    # shellcheck disable=SC2046
    (cd "$1" && exec fio $(_fio_job "$2" "$3") --do_verify=0 \
        --verify_state_save=1 >"$1/write.log" 2>&1) &
    FIO_PID=$!
}

_status_num() { # MNT NAME KEY
    $PY - "$1/.netdiskfs/status" "$2" "$3" <<'EOF' 2>/dev/null
import json, sys
for e in json.load(open(sys.argv[1]))["entries"]:
    if e["name"] == sys.argv[2]:
        v = e
        for k in sys.argv[3].split("."):
            v = v[k]
        print(v)
EOF
}

_reached() { # MNT NAME KEY MIN
    local v
    v=$(_status_num "$1" "$2" "$3")
    [ -n "$v" ] && [ "$v" -ge "$4" ]
}

fio_crash_kill() { # MNT NAME KEY MIN
    local mnt=$1 pid
    pid=$(cat "$mnt.pid")
    wait_for 30 _reached "$@" || echo "note: $2.$3 did not reach $4 in 30 s; killing anyway" >&2
    kill -0 "$FIO_PID" 2>/dev/null || echo "note: fio ended before the kill" >&2
    kill -9 "$pid"
    wait_for 30 sh -c "! kill -0 $FIO_PID" || fail "fio still runs 30 s after the daemon died"
    wait "$FIO_PID" 2>/dev/null
    wait_for 10 sh -c "! kill -0 $pid" || fail "daemon $pid survived kill -9"
    fusermount3 -u -z "$mnt" 2>/dev/null || umount -l "$mnt" || fail "cannot unmount the dead mount $mnt"
}

fio_crash_synced() { # DIR
    local f issued
    f=$(ls "$1"/*crash*verify.state 2>/dev/null | head -n1)
    [ -n "$f" ] || { cat "$1/write.log" >&2; fail "fio saved no verify state in $1"; }
    # fio 3.x state file: a 24-byte header (version 3), then the job's
    # thread_io_list: no_comps u64, depth u32, nofiles u32, numberio u64,
    # index u64, the random state (56 bytes), the name.
    issued=$($PY - "$f" <<'EOF'
import struct, sys
d = open(sys.argv[1], "rb").read()
version, = struct.unpack_from("<Q", d, 0)
if version != 3 or d[24 + 88:24 + 93] != b"crash":
    sys.exit("unknown fio verify state format")
print(struct.unpack_from("<Q", d, 24 + 16)[0])
EOF
) || fail "cannot read $f"
    echo $(((issued > 0 ? issued - 1 : 0) / FIO_FSYNC * FIO_FSYNC))
}

_fio_verify_run() { # DIR FILE SIZE N OUT [ARGS...]
    local dir=$1 file=$2 size=$3 n=$4 out=$5
    shift 5
    # shellcheck disable=SC2046
    (cd "$dir" && exec fio $(_fio_job "$file" "$size") --verify_only \
        --number_ios="$n" --output-format=json "$@" >"$out" 2>"$out.err")
}

fio_crash_verify() { # DIR FILE SIZE N
    local dir=$1 n=$4 got
    [ "$n" -gt 0 ] || return 0
    _fio_verify_run "$@" "$dir/verify.json" --verify_state_load=1 ||
        { cat "$dir/verify.json.err" >&2; fail "fio: a synced write does not verify ($n synced)"; }
    got=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["jobs"][0]["read"]["total_ios"])' "$dir/verify.json")
    [ "$got" = "$n" ] || fail "fio verified $got blocks, not the $n synced writes"
    # The control: one write more (the next, not synced) must fail or be
    # there by chance of the crash's timing; a block never issued must fail.
    if _fio_verify_run "$1" "$2" "$3" $((n + 2 * FIO_FSYNC + 1)) "$dir/control.json"; then
        [ "$n" -ge $(($3 / 4096 * 15 / 16 - 2 * FIO_FSYNC)) ] ||
            fail "fio's check passed for writes that were never issued: the check is vacuous"
    fi
}
