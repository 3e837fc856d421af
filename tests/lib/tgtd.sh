# tgtd.sh: start and stop userspace iSCSI targets (tgt) for the tests.
# Source after functions.sh. Every instance is named by its TCP port (from
# free_port: 20000-39999), derives its own tgtadm control port (-C, which
# must stay below 32768) from it, listens on loopback only and is stopped
# through tgtadm (tgtd ignores SIGTERM), then by PID.
#
#   tgtd_start PORT [PORTAL...]   portals default to 127.0.0.1:PORT
#   tgt PORT ARGS...              tgtadm for that instance (--lld iscsi)
#   tgt_target PORT TID IQN       a target open to any initiator
#   tgt_lun PORT TID LUN FILE [ARGS...]   a LUN backed by FILE
#   tgt_chap PORT TID USER PASSWORD [outgoing]   CHAP account bound to TID
#   tgtd_stop PORT                shut down, wait for the process (bounded)

tgt_ctl() { echo $(( $1 % 20000 + 10000 )); }

tgt() {
    local port=$1; shift
    tgtadm -C "$(tgt_ctl "$port")" --lld iscsi "$@"
}

tgtd_start() {
    local port=$1; shift
    local portals=${*:-127.0.0.1:$port}
    local pidfile=$TMP/tgtd.$port.pid log=$TMP/tgtd.$port.log
    local ctl
    ctl=$(tgt_ctl "$port")
    requires tgtd
    requires tgtadm
    mkdir -p /var/run/tgtd
    rm -f /var/run/tgtd/socket.$ctl /var/run/tgtd/socket.$ctl.lock
    # in a subshell, so the daemon is not our child (no zombie to reap)
    (tgtd -f -C "$ctl" --iscsi "portal=${portals// /,portal=}" \
        </dev/null >>"$log" 2>&1 & echo $! >"$pidfile")
    cleanup_fn "tgtd_stop $port"
    local n=100
    while ((n-- > 0)); do
        if tgt "$port" --mode sys --op show >/dev/null 2>&1 &&
            ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then
            return 0
        fi
        kill -0 "$(cat "$pidfile")" 2>/dev/null || break
        sleep 0.1
    done
    show_log "$log"
    fail "tgtd on port $port did not start"
}

tgt_target() {
    local port=$1 tid=$2 iqn=$3
    tgt "$port" --mode target --op new --tid "$tid" --targetname "$iqn" &&
        tgt "$port" --mode target --op bind --tid "$tid" --initiator-address ALL ||
        fail "tgtadm: cannot create target $iqn"
}

tgt_lun() {
    local port=$1 tid=$2 lun=$3 file=$4; shift 4
    tgt "$port" --mode logicalunit --op new --tid "$tid" --lun "$lun" \
        --backing-store "$file" "$@" ||
        fail "tgtadm: cannot add LUN $lun ($file) to target $tid"
}

tgt_chap() {
    local port=$1 tid=$2 user=$3 pass=$4 out=${5:+--outgoing}
    tgt "$port" --mode account --op new --user "$user" --password "$pass" &&
        tgt "$port" --mode account --op bind --tid "$tid" --user "$user" $out ||
        fail "tgtadm: cannot add CHAP account $user"
}

tgtd_stop() {
    local port=$1 pid tid
    local pidfile=$TMP/tgtd.$port.pid
    [ -s "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        tgt "$port" --op update --mode sys --name State -v offline >/dev/null 2>&1
        for tid in $(tgt "$port" --mode target --op show 2>/dev/null |
            sed -n 's/^Target \([0-9]*\):.*/\1/p'); do
            tgt "$port" --mode target --op delete --force --tid "$tid" >/dev/null 2>&1
        done
        tgt "$port" --op delete --mode system >/dev/null 2>&1
        wait_for 10 sh -c "! kill -0 $pid" || kill -KILL "$pid" 2>/dev/null
        wait_for 5 sh -c "! kill -0 $pid"
    fi
    rm -f "$pidfile" /var/run/tgtd/socket.$(tgt_ctl "$port")*
}
