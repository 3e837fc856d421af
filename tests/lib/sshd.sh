# sshd.sh: a private OpenSSH server and ssh-agent on loopback for the SSH
# backend's tests (and the benchmark). Source it after functions.sh. Every
# function returns non-zero after fail/requires, for callers that make
# those return instead of exit.
#
#   sshd_setup            keys, authorized_keys, known_hosts, config in $SSHD_DIR
#   sshd_start [LINE...]  start sshd (extra sshd_config lines), wait until it answers
#   sshd_stop             stop it by its PID
#   sshd_kill_sessions    kill the per-connection sshd children (live sessions)
#   sshd_signal SIG       signal the listener and every session (STOP, CONT)
#   agent_start           private ssh-agent holding the client key; exports SSH_AUTH_SOCK
#   sshd_add_user         create a throwaway local user (removed at exit): $SSHD_USER
#
# Variables after sshd_setup: SSHD_DIR SSHD_PORT SSHD_CONF SSHD_LOG
# SSHD_PIDFILE SSHD_HOSTKEY SSH_CLIENT_KEY SSHD_KNOWN_HOSTS (entries for
# 127.0.0.1 and ::1 on $SSHD_PORT).

SSHD=/usr/sbin/sshd

sshd_setup() {
    requires ssh-keygen || return 1
    requires "$SSHD" || return 1
    SSHD_DIR=$TMP/sshd
    mkdir -p "$SSHD_DIR"
    chmod 755 "$SSHD_DIR"
    SSHD_PORT=$(free_port)
    SSHD_CONF=$SSHD_DIR/sshd_config
    SSHD_LOG=$SSHD_DIR/sshd.log
    SSHD_PIDFILE=$SSHD_DIR/sshd.pid
    SSHD_HOSTKEY=$SSHD_DIR/host_ed25519
    SSH_CLIENT_KEY=$SSHD_DIR/client_ed25519
    SSHD_KNOWN_HOSTS=$SSHD_DIR/known_hosts
    ssh-keygen -q -t ed25519 -N '' -C netdiskfs-test-host -f "$SSHD_HOSTKEY" ||
        { fail "ssh-keygen (host key) failed"; return 1; }
    ssh-keygen -q -t ed25519 -N '' -C netdiskfs-test-client -f "$SSH_CLIENT_KEY" ||
        { fail "ssh-keygen (client key) failed"; return 1; }
    cp "$SSH_CLIENT_KEY.pub" "$SSHD_DIR/authorized_keys"
    chmod 644 "$SSHD_DIR/authorized_keys"
    sshd_write_known_hosts "$SSHD_HOSTKEY.pub" "$SSHD_KNOWN_HOSTS"
    mkdir -p /run/sshd
    chmod 755 /run/sshd
    cleanup_fn sshd_stop
}

# sshd_write_known_hosts PUBKEY FILE: known_hosts lines for both loopbacks.
sshd_write_known_hosts() {
    local type key
    read -r type key _ < "$1"
    {
        echo "[127.0.0.1]:$SSHD_PORT $type $key"
        echo "[::1]:$SSHD_PORT $type $key"
    } > "$2"
}

# sshd_fingerprint HASH: the host key's fingerprint as lowercase hex
# (HASH = sha256, sha1 or md5).
sshd_fingerprint() {
    local b64
    b64=$(awk '{print $2}' "$SSHD_HOSTKEY.pub")
    echo "$b64" | base64 -d | openssl dgst -"$1" -r | awk '{print $1}'
}

sshd_start() {
    local line key
    {
        # Extra lines first: sshd keeps the first value of a keyword (and
        # refuses a second Subsystem), so a default is written only when
        # no extra line sets the same keyword.
        for line in "$@"; do echo "$line"; done
        for line in "Port $SSHD_PORT" "ListenAddress 127.0.0.1" "ListenAddress ::1" \
            "HostKey $SSHD_HOSTKEY" "PidFile $SSHD_PIDFILE" \
            "AuthorizedKeysFile $SSHD_DIR/authorized_keys" "UsePAM no" \
            "StrictModes no" "PermitRootLogin prohibit-password" \
            "KbdInteractiveAuthentication no" "LogLevel VERBOSE" \
            "MaxStartups 200" "Subsystem sftp internal-sftp" \
            "PasswordAuthentication no"; do
            key=${line%% *}
            printf '%s\n' "$@" | grep -qi "^$key " && [ "$key" != ListenAddress ] && continue
            echo "$line"
        done
    } > "$SSHD_CONF"
    rm -f "$SSHD_PIDFILE"
    "$SSHD" -D -e -f "$SSHD_CONF" >>"$SSHD_LOG" 2>&1 &
    SSHD_MAIN_PID=$!
    if ! wait_for 10 sshd_answers; then
        show_log "$SSHD_LOG"
        fail "sshd did not start on port $SSHD_PORT"
        return 1
    fi
}

sshd_answers() {
    kill -0 "$SSHD_MAIN_PID" 2>/dev/null || return 1
    [ -s "$SSHD_PIDFILE" ] || return 1
    ssh-keyscan -p "$SSHD_PORT" -T 1 127.0.0.1 2>/dev/null | grep -q .
}

# The pid of the listener (from its pidfile, else the one we started).
sshd_pid() {
    if [ -s "$SSHD_PIDFILE" ]; then cat "$SSHD_PIDFILE"; else echo "${SSHD_MAIN_PID:-}"; fi
}

# Every descendant of PID (children first-level and below).
_sshd_descendants() {
    local c
    for c in $(pgrep -P "$1" 2>/dev/null); do
        echo "$c"
        _sshd_descendants "$c"
    done
}

# sshd_signal SIG: send SIG to the listener and every session process
# (STOP/CONT to freeze the whole server).
sshd_signal() {
    local pid
    pid=$(sshd_pid)
    [ -n "$pid" ] || return 0
    kill -"$1" "$pid" $(_sshd_descendants "$pid") 2>/dev/null
    return 0
}

# Kill the per-connection sshd processes under our listener: every live
# SSH session to it ends now (the listener keeps running).
sshd_kill_sessions() {
    local pid kids
    pid=$(sshd_pid)
    [ -n "$pid" ] || return 0
    kids=$(_sshd_descendants "$pid")
    [ -n "$kids" ] && kill -9 $kids 2>/dev/null
    return 0
}

sshd_stop() {
    local pid kids
    pid=$(sshd_pid)
    [ -n "$pid" ] || return 0
    kids=$(_sshd_descendants "$pid")
    kill "$pid" 2>/dev/null
    kill -CONT "$pid" 2>/dev/null  # a test may have stopped it
    [ -n "$kids" ] && kill -9 $kids 2>/dev/null
    wait_for 10 sh -c "! kill -0 $pid" || kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    rm -f "$SSHD_PIDFILE"
    SSHD_MAIN_PID=
    return 0
}

agent_start() {
    requires ssh-agent || return 1
    local sock=$SSHD_DIR/agent.sock out
    rm -f "$sock"
    out=$(ssh-agent -a "$sock" -s) || { fail "ssh-agent did not start"; return 1; }
    SSH_AGENT_PID=$(echo "$out" | sed -n 's/^SSH_AGENT_PID=\([0-9]*\);.*/\1/p')
    [ -n "$SSH_AGENT_PID" ] || { fail "ssh-agent printed no pid: $out"; return 1; }
    export SSH_AUTH_SOCK=$sock SSH_AGENT_PID
    cleanup_fn "kill $SSH_AGENT_PID 2>/dev/null"
    ssh-add -q "$SSH_CLIENT_KEY" 2>/dev/null || { fail "ssh-add failed"; return 1; }
}

# sshd_add_user [PASSWORD]: a throwaway user, removed at exit.
sshd_add_user() {
    local i
    SSHD_USER=ndssh$$
    for i in $(seq 1 50); do
        useradd -M -d "$TMP" -s /bin/sh "$SSHD_USER" 2>/dev/null && break
        id "$SSHD_USER" >/dev/null 2>&1 && break
        sleep 0.1
    done
    id "$SSHD_USER" >/dev/null 2>&1 || { fail "useradd $SSHD_USER failed"; return 1; }
    cleanup_fn "sshd_del_user $SSHD_USER"
    if [ $# -gt 0 ]; then
        for i in $(seq 1 50); do
            echo "$SSHD_USER:$1" | chpasswd -c SHA512 2>/dev/null && return 0
            sleep 0.1
        done
        fail "chpasswd $SSHD_USER failed"
        return 1
    fi
}

sshd_del_user() {
    local i
    for i in $(seq 1 50); do
        userdel "$1" 2>/dev/null
        id "$1" >/dev/null 2>&1 || return 0
        sleep 0.1
    done
}

# ssh_cmd CMD...: run a command on the test server as root (for checks).
ssh_cmd() {
    ssh -o BatchMode=yes -o UserKnownHostsFile="$SSHD_KNOWN_HOSTS" \
        -o GlobalKnownHostsFile=/dev/null -i "$SSH_CLIENT_KEY" \
        -p "$SSHD_PORT" root@127.0.0.1 "$@"
}
