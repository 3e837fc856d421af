# ganesha.sh: a user-space NFS server (nfs-ganesha, VFS FSAL) on
# 127.0.0.1 for the NFS backend's tests. Source it after functions.sh.
#
#   ganesha_start       export $GANESHA_EXPORT (a directory) as /export,
#                       NFSv3 and v4 over TCP on $GANESHA_PORT, MOUNT on
#                       $GANESHA_MNTPORT
#   ganesha_kill        SIGKILL by PID (fault injection)
#   ganesha_restart     start again with the same ports and export
#
# This ganesha refuses to start without rpcbind, and rpcbind binds every
# address: both run in a private mount namespace whose /run is a directory
# of the test, rpcbind itself in an empty network namespace, so ganesha
# registers through rpcbind's Unix socket and the host sees only ganesha
# on 127.0.0.1. Clients use nfsport= and mountport= (no portmapper).
# $GANESHA_DIR/sid names the session to kill (the demo, demo/parts/nfs.sh,
# runs ganesha_start in a subshell with its own GANESHA_DIR).

requires ganesha.nfsd
requires rpcbind
requires unshare

GANESHA_DIR=${GANESHA_DIR:-$TMP/ganesha}
GANESHA_EXPORT=$GANESHA_DIR/export

_ganesha_conf() {
    cat > "$GANESHA_DIR/ganesha.conf" <<EOF
NFS_CORE_PARAM {
    Bind_addr = 127.0.0.1;
    NFS_Port = $GANESHA_PORT;
    MNT_Port = $GANESHA_MNTPORT;
    Protocols = 3, 4;
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Enable_UDP = false;
    Plugins_Dir = /usr/lib/x86_64-linux-gnu/ganesha;
    mount_path_pseudo = true;
}
NFSv4 { Graceless = true; RecoveryBackend = fs; RecoveryRoot = $GANESHA_DIR/recov; }
NFS_KRB5 { Active_krb5 = false; }
EXPORT {
    Export_Id = 1;
    Path = $GANESHA_EXPORT;
    Pseudo = /export;
    Access_Type = RW;
    Squash = No_Root_Squash;
    Protocols = 3, 4;
    Transports = TCP;
    SecType = sys;
    FSAL { Name = VFS; }
}
EOF
    # Inside the namespaces: rpcbind on the private /run, then ganesha.
    cat > "$GANESHA_DIR/inner.sh" <<'EOF'
d=$1
mount --bind "$d/nsrun" /run || exit 1
# The namespace got a copy of every mount, FUSE mounts of the test too:
# drop them here, or unmounting one outside would not end its daemon.
awk '$3 ~ /^fuse/ { print $2 }' /proc/self/mounts | while read -r m; do umount -l "$m"; done
unshare -n -- rpcbind -f &
n=50
while [ ! -S /run/rpcbind.sock ] && [ $n -gt 0 ]; do sleep 0.1; n=$((n - 1)); done
exec ganesha.nfsd -F -L "$d/log/ganesha.log" -p "$d/run/g.pid" -f "$d/ganesha.conf" -N NIV_EVENT
EOF
}

_ganesha_listening() { ss -Hltn "sport = :$GANESHA_PORT" | grep -q 127.0.0.1; }

_ganesha_launch() {
    rm -rf "$GANESHA_DIR/nsrun" "$GANESHA_DIR/run/g.pid"
    mkdir -p "$GANESHA_DIR"/{nsrun,run,log,recov}
    setsid unshare -m --propagation private -- bash "$GANESHA_DIR/inner.sh" "$GANESHA_DIR" \
        >>"$GANESHA_DIR/log/inner.log" 2>&1 &
    _ganesha_sid=$!
    disown "$_ganesha_sid" # no "Killed" notice from bash at ganesha_kill
    echo "$_ganesha_sid" > "$GANESHA_DIR/sid"
    wait_for 20 _ganesha_listening ||
        { show_log "$GANESHA_DIR/log/ganesha.log"; show_log "$GANESHA_DIR/log/inner.log"; fail "ganesha did not listen in 20 s"; }
}

# Every process of the namespace (rpcbind, ganesha): its session.
_ganesha_stop() {
    [ -n "${_ganesha_sid:-}" ] || return 0
    kill -KILL -- -"$_ganesha_sid" 2>/dev/null
    wait_for 10 sh -c "! kill -0 -- -$_ganesha_sid 2>/dev/null" || true
    _ganesha_sid=
}

ganesha_kill() { _ganesha_stop; }
ganesha_restart() { _ganesha_launch; }

ganesha_start() {
    mkdir -p "$GANESHA_EXPORT"
    GANESHA_PORT=$(free_port)
    GANESHA_MNTPORT=$(free_port)
    [ "$GANESHA_PORT" != "$GANESHA_MNTPORT" ] || GANESHA_MNTPORT=$((GANESHA_PORT + 1))
    _ganesha_conf
    cleanup_fn _ganesha_stop
    _ganesha_launch
}
