# demo/parts/ssh.sh: an image served over SFTP by a private sshd on
# loopback (its own host key, an ssh-agent holding the client key), mounted
# through two entries: ssh:// over 127.0.0.1 with ssh-agent and known_hosts,
# and QEMU's json: form over ::1 with a pinned host key (and a key file,
# used if the agent fails).
# Sourced by demo/demo.sh.

_demo_ssh_dir() { echo "$DEMO_WORK/ssh"; }

demo_ssh_start() {
    local dir port p type key n sha user
    dir=$(_demo_ssh_dir)
    [ -x /usr/sbin/sshd ] || { echo "ssh: /usr/sbin/sshd is not installed" >&2; return 1; }
    command -v ssh-agent >/dev/null || { echo "ssh: ssh-agent is not installed" >&2; return 1; }
    mkdir -p "$dir"
    chmod 755 "$dir"
    user=$(id -un)
    head -c $((16 * 1048576)) /dev/urandom > "$dir/disk.img" || return 1
    cp "$dir/disk.img" "$dir/disk.img.orig"
    rm -f "$dir/host_key" "$dir/host_key.pub" "$dir/client_key" "$dir/client_key.pub"
    ssh-keygen -q -t ed25519 -N '' -f "$dir/host_key" || return 1
    ssh-keygen -q -t ed25519 -N '' -f "$dir/client_key" || return 1
    cp "$dir/client_key.pub" "$dir/authorized_keys"
    port=
    for p in $(seq 20922 20999); do
        ss -Hltn "sport = :$p" 2>/dev/null | grep -q . || { port=$p; break; }
    done
    [ -n "$port" ] || { echo "ssh: no free TCP port" >&2; return 1; }
    read -r type key _ < "$dir/host_key.pub"
    echo "[127.0.0.1]:$port $type $key" > "$dir/known_hosts"
    sha=$(echo "$key" | base64 -d | sha256sum | awk '{print $1}')
    cat > "$dir/sshd_config" <<EOT
Port $port
ListenAddress 127.0.0.1
ListenAddress ::1
HostKey $dir/host_key
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
EOT
    [ "$(id -u)" = 0 ] && mkdir -p /run/sshd
    rm -f "$dir/sshd.pid"
    /usr/sbin/sshd -f "$dir/sshd_config" -E "$dir/sshd.log" || {
        echo "ssh: sshd failed to start:" >&2
        cat "$dir/sshd.log" >&2
        return 1
    }
    for n in $(seq 1 50); do
        [ -s "$dir/sshd.pid" ] && ssh-keyscan -p "$port" -T 1 127.0.0.1 2>/dev/null | grep -q . && break
        sleep 0.1
    done
    [ -s "$dir/sshd.pid" ] || { echo "ssh: sshd wrote no pidfile in 5 s" >&2; cat "$dir/sshd.log" >&2; return 1; }
    # The agent the daemon will use (SSH_AUTH_SOCK is inherited).
    rm -f "$dir/agent.sock"
    eval "$(ssh-agent -a "$dir/agent.sock" -s)" >/dev/null || { echo "ssh: ssh-agent failed" >&2; return 1; }
    echo "$SSH_AGENT_PID" > "$dir/agent.pid"
    export SSH_AUTH_SOCK
    ssh-add -q "$dir/client_key" 2>/dev/null || { echo "ssh: ssh-add failed" >&2; return 1; }
    cat >> "$DEMO_TABLE" <<EOT
ssh-agent  ssh://$user@127.0.0.1:$port$dir/disk.img  known-hosts=$dir/known_hosts
ssh-json   json:{"driver":"ssh","server":{"host":"::1","port":"$port"},"path":"$dir/disk.img","user":"$user"}  host-key-check=sha256:$sha,identity=$dir/client_key
EOT
}

demo_ssh_check() {
    local dir name ok=0
    dir=$(_demo_ssh_dir)
    for name in ssh-agent ssh-json; do
        if cmp -s "$DEMO_MNT/$name" "$dir/disk.img.orig"; then
            ok=$((ok + 1))
        else
            echo "ssh: $name differs from the image sshd serves" >&2
        fi
    done
    echo "ssh: $ok/2 entries (ssh:// with ssh-agent + known_hosts over 127.0.0.1, json: with a pinned sha256 host key over ::1) read back the 16 MiB image over SFTP byte for byte"
    [ $ok -eq 2 ]
}

demo_ssh_stop() {
    local dir pid n f
    dir=$(_demo_ssh_dir)
    demo_stop_pidfile "$dir/sshd.pid" "$dir/agent.pid"
    rm -f "$dir/agent.sock"
}
