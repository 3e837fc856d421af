# glusterd.sh: run glusterd by hand on loopback for the gluster tests and
# the demo. Source it after functions.sh (tests: failures call fail) or on
# its own (demo: functions print the problem and return non-zero).
#
#   glusterd_start DIR     start glusterd on 127.0.0.1:24007 with its state in
#                          DIR; sets GD_DIR GD_SOCK GD_PID GD_HOST GD_LOG
#   glusterd_volume NAME   create and start a one-brick volume NAME (brick in
#                          DIR/bricks/NAME); sets GD_BRICK
#   glusterd_set NAME K V  gluster volume set NAME K V
#   glusterd_stop          kill the bricks and glusterd by their pidfiles,
#                          remove the /etc/hosts alias (idempotent)
#   gluster_lsan_suppress  make LeakSanitizer (make check-asan) ignore what
#                          libgfapi itself leaks: glfs_fini does not free
#                          its context and translator memory (upstream)
#
# Pitfalls handled here: the gluster CLI refuses 127.0.0.1/localhost as a
# brick host, so a name for 127.0.0.1 goes into /etc/hosts for the run
# (removed by glusterd_stop); bricks fetch their volfile from port 24007
# whatever glusterd listens on, so glusterd must have that port: one
# glusterd per machine at a time (we wait, bounded, for it to be free);
# brick processes outlive glusterd: they are killed by their pidfiles.
GD_PORT=24007
GD_DIR= GD_SOCK= GD_PID= GD_HOST= GD_LOG= GD_BRICK=
_gd_vols=()

_gd_fail() {
    if declare -F fail >/dev/null; then # a test
        [ -n "$GD_LOG" ] && show_log "$GD_LOG"
        fail "$@"
    fi
    echo "glusterd: $*" >&2
    return 1
}

_gd_cli() {
    timeout 60 gluster --mode=script --glusterd-sock="$GD_SOCK" "$@"
}

_gd_port_busy() { ss -Hltn "sport = :$GD_PORT" 2>/dev/null | grep -q .; }

# Is PID alive and running COMM? (guards against a reused PID)
_gd_is() { [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ]; }

glusterd_start() {
    local dir=$1 n
    for t in glusterd gluster glusterfsd; do
        command -v $t >/dev/null 2>&1 && continue
        declare -F requires >/dev/null && requires $t # a test: skip
        echo "glusterd: $t is not installed" >&2
        return 1
    done
    # Another glusterd (a test or the demo finishing) holds the port: wait.
    n=300
    while _gd_port_busy && ((n-- > 0)); do sleep 0.1; done
    _gd_port_busy && { _gd_fail "port $GD_PORT is in use by another glusterd"; return 1; }

    GD_DIR=$dir
    GD_SOCK=$dir/glusterd.socket
    GD_LOG=$dir/glusterd.log
    GD_HOST=nd-gluster-$$
    mkdir -p "$dir/state" "$dir/bricks"
    cat > "$dir/glusterd.vol" <<EOF
volume management
    type mgmt/glusterd
    option working-directory $dir/state
    option transport-type socket
    option transport.socket.bind-address 127.0.0.1
    option transport.socket.listen-port $GD_PORT
    option base-port 49152
    option max-port 49200
    option glusterd-sockfile $GD_SOCK
    option ping-timeout 0
    option event-threads 1
end-volume
EOF
    grep -qx "127.0.0.1 $GD_HOST" /etc/hosts || echo "127.0.0.1 $GD_HOST" >> /etc/hosts
    glusterd -N -f "$dir/glusterd.vol" -l "$GD_LOG" </dev/null >>"$GD_LOG" 2>&1 &
    GD_PID=$!
    echo $GD_PID > "$dir/glusterd.pid"
    declare -F cleanup_fn >/dev/null && cleanup_fn glusterd_stop
    n=300
    while ((n-- > 0)); do
        _gd_cli volume list >/dev/null 2>&1 && return 0
        kill -0 $GD_PID 2>/dev/null || break
        sleep 0.1
    done
    _gd_fail "glusterd did not answer on $GD_SOCK within 30 s"
}

glusterd_volume() {
    local name=$1 pidfile
    GD_BRICK=$GD_DIR/bricks/$name
    mkdir -p "$GD_BRICK"
    _gd_cli volume create "$name" "$GD_HOST:$GD_BRICK" force >>"$GD_DIR/cli.log" 2>&1 ||
        { _gd_fail "volume create $name failed: $(tail -n 3 "$GD_DIR/cli.log")"; return 1; }
    _gd_vols+=("$name")
    _gd_cli volume start "$name" >>"$GD_DIR/cli.log" 2>&1 ||
        { _gd_fail "volume start $name failed: $(tail -n 3 "$GD_DIR/cli.log")"; return 1; }
    # Keep the brick's pidfile: glusterd's copy goes with the volume.
    for pidfile in /var/run/gluster/vols/"$name"/*.pid; do
        [ -s "$pidfile" ] && cat "$pidfile" >> "$GD_DIR/bricks.pids"
    done
    [ -s "$GD_DIR/bricks.pids" ] || { _gd_fail "no brick pidfile for $name"; return 1; }
}

glusterd_set() {
    _gd_cli volume set "$@" >>"$GD_DIR/cli.log" 2>&1 ||
        { _gd_fail "volume set $*: $(tail -n 3 "$GD_DIR/cli.log")"; return 1; }
}

# Wait (bounded, 10 s) for PID to exit, then SIGKILL it if it did not.
_gd_reap() {
    local pid=$1 comm=$2 n=100
    while _gd_is "$pid" "$comm" && ((n-- > 0)); do sleep 0.1; done
    _gd_is "$pid" "$comm" && kill -KILL "$pid" 2>/dev/null
    return 0
}

# Brick PIDs: our copy of the pidfiles, and glusterd's copy.
_gd_brick_pids() {
    local v f
    [ -n "$GD_DIR" ] && cat "$GD_DIR/bricks.pids" 2>/dev/null
    for v in "${_gd_vols[@]}"; do
        for f in /var/run/gluster/vols/"$v"/*.pid; do
            [ -s "$f" ] && cat "$f"
        done
    done
}

glusterd_stop() {
    local pid pids v hosts
    [ -n "$GD_HOST" ] || return 0
    pids=$(_gd_brick_pids | sort -u)
    for pid in $pids; do
        _gd_is "$pid" glusterfsd && kill -CONT "$pid" 2>/dev/null && kill -TERM "$pid" 2>/dev/null
    done
    if [ -n "$GD_PID" ] && _gd_is "$GD_PID" glusterd; then
        kill -TERM "$GD_PID" 2>/dev/null
        _gd_reap "$GD_PID" glusterd
        wait "$GD_PID" 2>/dev/null
    fi
    for pid in $pids; do _gd_reap "$pid" glusterfsd; done
    [ -n "$GD_DIR" ] && rm -f "$GD_DIR/bricks.pids"
    for v in "${_gd_vols[@]}"; do rm -rf "/var/run/gluster/vols/$v"; done
    _gd_vols=()
    # Drop our alias line, rewriting /etc/hosts in place (it may be a bind
    # mount that cannot be renamed over) and only with a sane result.
    if grep -qx "127.0.0.1 $GD_HOST" /etc/hosts 2>/dev/null; then
        hosts=$(grep -vx "127.0.0.1 $GD_HOST" /etc/hosts)
        if [ -n "$hosts" ] && [ "$hosts" != "$(cat /etc/hosts)" ]; then
            printf '%s\n' "$hosts" > /etc/hosts
        fi
    fi
    GD_PID= GD_HOST=
}

gluster_lsan_suppress() {
    local supp=${TMP:-${GD_DIR:-/tmp}}/gluster-lsan.supp
    printf 'leak:libglusterfs.so\nleak:libgfapi.so\nleak:libgfrpc.so\nleak:libgfxdr.so\nleak:/glusterfs/\n' > "$supp"
    export LSAN_OPTIONS="suppressions=$supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
}
