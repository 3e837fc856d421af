# nbdkit.sh: nbdkit servers on loopback and Unix sockets for the NBD
# backend's tests. Source it after functions.sh.
#
#   nbdkit_unix NAME ARGS...      serve on the Unix socket $TMP/NAME.sock
#   nbdkit_tcp NAME ADDR ARGS...  serve on ADDR (127.0.0.1 or ::1), a free port
#   nbdkit_restart NAME           start NAME again with the same arguments
#   nbdkit_stop NAME              SIGTERM by PID, bounded wait, SIGKILL last
#   nbdkit_kill NAME              SIGKILL by PID (fault injection)
#   nbdkit_pid NAME / nbdkit_port NAME / nbdkit_sock NAME / nbdkit_log NAME
#   nbdsh_py CODE                 run python CODE in nbdsh (system python3)
#
# ARGS are nbdkit's: filters, the plugin and its parameters, e.g.
#   nbdkit_unix d --filter=log file "$TMP/disk.img" logfile="$TMP/d.nbdlog"
# Every server started here runs in the foreground with a pidfile (written
# by nbdkit once it listens), is killed by its PID, and is stopped at exit.

declare -A _nbdkit_args _nbdkit_pid _nbdkit_port _nbdkit_sock
_nbdkit_names=()

requires nbdkit

_nbdkit_launch() {
    local name=$1 pidfile=$TMP/nbdkit-$1.pid log=$TMP/nbdkit-$1.log pid n
    eval "local -a args=(${_nbdkit_args[$name]})"
    rm -f "$pidfile"
    [ -n "${_nbdkit_sock[$name]:-}" ] && rm -f "${_nbdkit_sock[$name]}"
    echo "+ nbdkit ${args[*]}" >>"$log"
    nbdkit -f ${NBDKIT_VERBOSE:+-v} --exit-with-parent -P "$pidfile" "${args[@]}" >>"$log" 2>&1 &
    pid=$!
    _nbdkit_pid[$name]=$pid
    n=100
    while ((n-- > 0)); do
        [ -s "$pidfile" ] && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    show_log "$log"
    fail "nbdkit '$name' did not start"
}

# nbdkit_unix NAME ARGS...
nbdkit_unix() {
    local name=$1; shift
    local sock=$TMP/$name.sock
    _nbdkit_sock[$name]=$sock
    _nbdkit_args[$name]=$(printf '%q ' -U "$sock" "$@")
    _nbdkit_names+=("$name")
    _nbdkit_launch "$name"
}

# nbdkit_tcp NAME ADDR ARGS...
nbdkit_tcp() {
    local name=$1 addr=$2; shift 2
    local port
    port=$(free_port)
    _nbdkit_port[$name]=$port
    _nbdkit_args[$name]=$(printf '%q ' -i "$addr" -p "$port" "$@")
    _nbdkit_names+=("$name")
    _nbdkit_launch "$name"
}

nbdkit_restart() { _nbdkit_launch "$1"; }

nbdkit_pid() { echo "${_nbdkit_pid[$1]}"; }
nbdkit_port() { echo "${_nbdkit_port[$1]}"; }
nbdkit_sock() { echo "${_nbdkit_sock[$1]}"; }
nbdkit_log() { echo "$TMP/nbdkit-$1.log"; }

_nbdkit_wait_gone() {
    local pid=$1 n=$2
    while ((n-- > 0)); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
        sleep 0.1
    done
    return 1
}

nbdkit_stop() {
    local pid=${_nbdkit_pid[$1]:-}
    [ -n "$pid" ] || return 0
    _nbdkit_pid[$1]=
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
    kill -TERM "$pid" 2>/dev/null
    _nbdkit_wait_gone "$pid" 50 && return 0
    kill -KILL "$pid" 2>/dev/null
    _nbdkit_wait_gone "$pid" 50
}

nbdkit_kill() {
    local pid=${_nbdkit_pid[$1]:-}
    [ -n "$pid" ] || return 0
    _nbdkit_pid[$1]=
    kill -KILL "$pid" 2>/dev/null
    _nbdkit_wait_gone "$pid" 50 || fail "nbdkit '$1' ($pid) survived SIGKILL"
}

_nbdkit_stop_all() {
    local name
    for name in "${_nbdkit_names[@]}"; do
        nbdkit_stop "$name"
    done
}
cleanup_fn _nbdkit_stop_all

# nbdsh_py URI CODE: run CODE with h connected to URI (nbdsh wraps the first
# python3 on PATH; the system one has the libnbd module).
nbdsh_py() {
    PATH=/usr/bin:$PATH nbdsh -u "$1" -c "$2"
}
