# tgtd.sh: start and stop userspace iSCSI targets (tgt) on loopback for the
# iSCSI tests and the demo. Source it after functions.sh (tests: a failure
# calls fail, the daemon is stopped at exit) or on its own with TGT_DIR set
# (demo: functions print the problem and return non-zero).
#
#   tgt_free_port                 a free port below the ephemeral range
#   tgtd_start PORT [PORTAL...]   portals default to 127.0.0.1:PORT
#   tgt PORT ARGS...              tgtadm for that instance (--lld iscsi)
#   tgt_target PORT TID IQN       a target open to any initiator
#   tgt_lun PORT TID LUN FILE [ARGS...]   a LUN backed by FILE
#   tgt_chap PORT TID USER PASSWORD [outgoing]   a CHAP account bound to TID
#   tgtd_stop PORT                shut down, wait for the process (bounded)
#
# Every instance is named by its TCP port and derives its own tgtadm
# control port (-C, which must stay below 32768) from it, so several can
# run at once. Pitfalls handled here: tgtd ignores SIGTERM, so it is
# stopped through tgtadm (offline, delete targets, delete system) and only
# killed by its PID as a last resort; its control socket files are left in
# /var/run/tgtd and removed; readonly=1 cannot be given when a LUN is
# created, only in an update (tgt_lun does that for "readonly"). The port
# must lie outside net.ipv4.ip_local_port_range: while the target is down,
# an initiator reconnecting to a port in that range can be handed the very
# same port as its source (a TCP self-connect) and hold it, so tgtd cannot
# listen there again.

_tgt_fail() {
    if declare -F fail >/dev/null; then # a test
        [ -n "${_tgt_log:-}" ] && show_log "$_tgt_log"
        fail "$@"
    fi
    echo "tgtd: $*" >&2
    return 1
}

_tgt_dir() { echo "${TGT_DIR:-$TMP}"; }
_tgt_ctl() { echo $(($1 % 20000 + 10000)); }
# Is PID a live tgtd (not a zombie, not a reused PID)?
_tgt_alive() {
    local st
    st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    [[ $st == *"(tgtd) "[!ZX]* ]]
}

tgt_free_port() {
    local lo p n
    lo=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    for n in $(seq 1 200); do
        p=$((20000 + RANDOM % (lo - 20000)))
        ss -Hltn "sport = :$p" 2>/dev/null | grep -q . || { echo "$p"; return 0; }
    done
    _tgt_fail "no free port below $lo"
}

tgt() {
    local port=$1
    shift
    tgtadm -C "$(_tgt_ctl "$port")" --lld iscsi "$@"
}

# _tgt_launch PORT PORTALS: one try at starting tgtd; 0 once it answers
# tgtadm and listens (bounded, 20 s)
_tgt_launch() {
    local port=$1 portals=$2 dir ctl n pid
    dir=$(_tgt_dir)
    ctl=$(_tgt_ctl "$port")
    rm -f "/var/run/tgtd/socket.$ctl" "/var/run/tgtd/socket.$ctl.lock"
    # Started by a subshell that exits once tgtd runs, so the daemon is not
    # our child (a plain "wait" in a test would wait for it, and once it
    # exits there is no zombie left for "is it alive" to see). It keeps
    # none of our file descriptors beyond 0-2.
    (
        (
            for fd in $(ls /proc/$BASHPID/fd); do
                [ "$fd" -gt 2 ] && eval "exec $fd>&-"
            done 2>/dev/null
            exec tgtd -f -C "$ctl" --iscsi "portal=${portals// /,portal=}" \
                </dev/null >>"$_tgt_log" 2>&1
        ) &
        for n in $(seq 1 100); do
            [ "$(cat /proc/$!/comm 2>/dev/null)" = tgtd ] && break
            [ -d /proc/$! ] || break
            sleep 0.05
        done
        echo $! >"$dir/tgtd.$port.pid"
    )
    pid=$(cat "$dir/tgtd.$port.pid")
    echo "$pid" >>"$dir/tgtd.$port.pids"
    # under load a fresh tgtd was seen to take more than 10 s
    for n in $(seq 1 200); do
        if tgt "$port" --mode sys --op show >/dev/null 2>&1 &&
            ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then
            return 0
        fi
        _tgt_alive "$pid" || break
        sleep 0.1
    done
    {
        echo "tgtd (pid $pid) on port $port is not up after $n tries:"
        echo "  process: $(cat "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1-3)"
        echo "  listening: $(ss -Hltnp "sport = :$port" 2>/dev/null)"
        echo "  tgtadm: $(tgt "$port" --mode sys --op show 2>&1 | head -n 1)"
    } >&2
    tgtd_stop "$port"
    return 1
}

tgtd_start() {
    local port=$1
    shift
    local portals=${*:-127.0.0.1:$port}
    _tgt_log=$(_tgt_dir)/tgtd.$port.log
    command -v tgtd >/dev/null && command -v tgtadm >/dev/null || {
        echo "SKIP: tgt (tgtd, tgtadm) is not installed" >&2
        declare -F fail >/dev/null && exit 77
        return 1
    }
    mkdir -p /var/run/tgtd "$(_tgt_dir)"
    declare -F cleanup_fn >/dev/null && cleanup_fn "tgtd_stop $port"
    # A second try: once in a long while a fresh tgtd never answered.
    _tgt_launch "$port" "$portals" || _tgt_launch "$port" "$portals" ||
        _tgt_fail "tgtd on port $port did not start"
}

tgt_target() {
    local port=$1 tid=$2 iqn=$3
    tgt "$port" --mode target --op new --tid "$tid" --targetname "$iqn" &&
        tgt "$port" --mode target --op bind --tid "$tid" \
            --initiator-address ALL ||
        _tgt_fail "tgtadm: cannot create target $iqn"
}

# tgt_lun PORT TID LUN FILE [readonly] [thin] [TGTADM-ARGS...]
tgt_lun() {
    local port=$1 tid=$2 lun=$3 file=$4 ro= thin=
    shift 4
    while [ $# -gt 0 ]; do
        case $1 in
        readonly) ro=1 ;;
        thin) thin=1 ;;
        *) break ;;
        esac
        shift
    done
    tgt "$port" --mode logicalunit --op new --tid "$tid" --lun "$lun" \
        --backing-store "$file" "$@" ||
        _tgt_fail "tgtadm: cannot add LUN $lun ($file) to target $tid" ||
        return 1
    if [ -n "$ro" ]; then
        tgt "$port" --mode logicalunit --op update --tid "$tid" \
            --lun "$lun" --params readonly=1 ||
            _tgt_fail "tgtadm: cannot make LUN $lun read-only" || return 1
    fi
    if [ -n "$thin" ]; then
        tgt "$port" --mode logicalunit --op update --tid "$tid" \
            --lun "$lun" --params thin_provisioning=1 ||
            _tgt_fail "tgtadm: cannot thin-provision LUN $lun" || return 1
    fi
}

tgt_chap() {
    local port=$1 tid=$2 user=$3 pass=$4 out=${5:+--outgoing}
    tgt "$port" --mode account --op new --user "$user" --password "$pass" &&
        tgt "$port" --mode account --op bind --tid "$tid" --user "$user" \
            $out ||
        _tgt_fail "tgtadm: cannot add CHAP account $user"
}

# _tgt_drop PORT TID: close every connection of the target's sessions
_tgt_drop() {
    local port=$1 tid=$2 sid=
    tgt "$port" --mode conn --op show --tid "$tid" 2>/dev/null |
        while read -r key val; do
            case $key in
            Session:) sid=$val ;;
            Connection:)
                tgt "$port" --mode conn --op delete --tid "$tid" \
                    --sid "$sid" --cid "$val" >/dev/null 2>&1 ;;
            esac
        done
}

tgtd_stop() {
    local port=$1 dir pid tid n
    dir=$(_tgt_dir)
    pid=$(cat "$dir/tgtd.$port.pid" 2>/dev/null)
    if [ -n "$pid" ] && _tgt_alive "$pid"; then
        tgt "$port" --op update --mode sys --name State -v offline \
            >/dev/null 2>&1
        # A LUN with commands in flight refuses the delete ("still
        # active"): drop the connections and try again for a while.
        for tid in $(tgt "$port" --mode target --op show 2>/dev/null |
            sed -n 's/^Target \([0-9]*\):.*/\1/p'); do
            for n in $(seq 1 30); do
                _tgt_drop "$port" "$tid"
                tgt "$port" --mode target --op delete --force --tid "$tid" \
                    >/dev/null 2>&1 && break
                sleep 0.1
            done
        done
        tgt "$port" --op delete --mode system >/dev/null 2>&1
        for n in $(seq 1 50); do
            _tgt_alive "$pid" || break
            sleep 0.1
        done
        if _tgt_alive "$pid"; then
            echo "tgtd on port $port did not shut down: SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null
            for n in $(seq 1 50); do
                _tgt_alive "$pid" || break
                sleep 0.1
            done
        fi
    fi
    # Any earlier tgtd of this port still around (one that came up too
    # late for _tgt_launch, say) goes by its PID.
    for pid in $(cat "$dir/tgtd.$port.pids" 2>/dev/null); do
        _tgt_alive "$pid" || continue
        kill -KILL "$pid" 2>/dev/null
        for n in $(seq 1 50); do
            _tgt_alive "$pid" || break
            sleep 0.1
        done
    done
    rm -f "$dir/tgtd.$port.pid" "/var/run/tgtd/socket.$(_tgt_ctl "$port")" \
        "/var/run/tgtd/socket.$(_tgt_ctl "$port").lock"
}
