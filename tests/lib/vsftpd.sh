# vsftpd.sh: vsftpd on 127.0.0.1 serving $FTP_ROOT to a password user,
# for the curl backend's tests. Source after functions.sh.
#   vsftpd_start plain|explicit|implicit   (explicit: AUTH TLS required,
#       implicit: TLS from the first byte). Each call starts one more
#       server (number $FTP_N) and sets FTP_PORT and FTP_URL
#       (ftp:// or ftps://127.0.0.1:PORT).
#   vsftpd_kill N      SIGKILL the Nth server and every session it forked
#   vsftpd_restart N   start it again, same port and configuration
#   VSFTPD_EXTRA  more vsftpd.conf lines for the next vsftpd_start
#   FTP_ROOT      the directory served (the user's chroot)
#   FTP_USER / FTP_PASS / FTP_PASSFILE   the account (made here, removed
#                 at exit; its password in a file for password-file=)
#   FTP_CERT      the self-signed certificate the TLS servers use

FTP_DIR=$TMP/vsftpd
FTP_ROOT=$FTP_DIR/root
FTP_USER=ndftp$$
FTP_PASS=ftp-Pass.$RANDOM$RANDOM
FTP_PASSFILE=$FTP_DIR/password
FTP_CERT=$FTP_DIR/cert.pem
FTP_N=0

unset http_proxy https_proxy ftp_proxy all_proxy HTTP_PROXY HTTPS_PROXY \
    FTP_PROXY ALL_PROXY no_proxy NO_PROXY

_vsftpd_user() {
    [ -s "$FTP_PASSFILE" ] && return 0
    mkdir -p "$FTP_ROOT" "$FTP_DIR/empty"
    chmod 755 "$FTP_ROOT" "$FTP_DIR/empty"
    grep -q "^$FTP_USER:" /etc/passwd || {
        useradd -M -d "$FTP_ROOT" -s /bin/bash "$FTP_USER" ||
            fail "useradd $FTP_USER failed"
        cleanup_fn "userdel $FTP_USER 2>/dev/null"
    }
    # SHA512: the default yescrypt makes every login take ~150 ms.
    echo "$FTP_USER:$FTP_PASS" | chpasswd -c SHA512 || fail "chpasswd failed"
    printf '%s\n' "$FTP_PASS" >"$FTP_PASSFILE"
    chmod 600 "$FTP_PASSFILE"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -nodes -keyout "$FTP_DIR/key.pem" -out "$FTP_CERT" -days 3650 \
        -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        >"$FTP_DIR/openssl.log" 2>&1 ||
        { show_log "$FTP_DIR/openssl.log"; fail "openssl could not make a certificate"; }
}

# vsftpd_start MODE: write a configuration, start one vsftpd, wait
# (bounded) until a login works.
vsftpd_start() {
    local mode=${1:-plain} n conf pasv
    requires vsftpd
    requires curl
    requires openssl
    _vsftpd_user
    FTP_N=$((FTP_N + 1))
    n=$FTP_N
    conf=$FTP_DIR/vsftpd-$n.conf
    FTP_PORT=$(free_port)
    pasv=$(free_port)
    cat >"$conf" <<CONF
listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port=$FTP_PORT
background=NO
anonymous_enable=NO
local_enable=YES
write_enable=NO
local_root=$FTP_ROOT
chroot_local_user=YES
allow_writeable_chroot=YES
secure_chroot_dir=$FTP_DIR/empty
pam_service_name=vsftpd
pasv_enable=YES
pasv_address=127.0.0.1
pasv_min_port=$pasv
pasv_max_port=$((pasv + 20))
seccomp_sandbox=NO
xferlog_enable=YES
vsftpd_log_file=$FTP_DIR/vsftpd-$n.xfer
dual_log_enable=NO
idle_session_timeout=120
data_connection_timeout=60
${VSFTPD_EXTRA:-}
CONF
    case $mode in
    plain) FTP_URL=ftp://127.0.0.1:$FTP_PORT ;;
    explicit|implicit)
        cat >>"$conf" <<CONF
ssl_enable=YES
rsa_cert_file=$FTP_CERT
rsa_private_key_file=$FTP_DIR/key.pem
ssl_tlsv1=NO
ssl_sslv2=NO
ssl_sslv3=NO
force_local_logins_ssl=YES
force_local_data_ssl=YES
CONF
        [ "$mode" = implicit ] && echo "implicit_ssl=YES" >>"$conf"
        FTP_URL=ftps://127.0.0.1:$FTP_PORT ;;
    *) fail "vsftpd_start: unknown mode $mode" ;;
    esac
    echo "$mode" >"$FTP_DIR/vsftpd-$n.mode"
    cleanup_fn "vsftpd_stop $n"
    _vsftpd_run $n
}

# _vsftpd_run N: start the Nth server from its configuration; wait
# (bounded) until it listens and one real login works.
_vsftpd_run() {
    local n=$1 conf=$FTP_DIR/vsftpd-$1.conf log=$FTP_DIR/vsftpd-$1.log
    local mode port pid ok=0 url
    local copt=()
    mode=$(cat "$FTP_DIR/vsftpd-$n.mode")
    port=$(sed -n 's/^listen_port=//p' "$conf")
    # vsftpd reports start-up errors on fd 0.
    vsftpd "$conf" 0>>"$log" >>"$log" 2>&1 &
    pid=$!
    disown $pid 2>/dev/null
    echo $pid >"$FTP_DIR/vsftpd-$n.pid"
    for _ in $(seq 1 100); do
        kill -0 $pid 2>/dev/null || break
        if ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then ok=1; break; fi
        sleep 0.1
    done
    [ $ok = 1 ] || { show_log "$log"; fail "vsftpd ($mode) did not start on port $port"; }
    # curl's own ftps:// is implicit TLS; explicit is ftp:// + AUTH TLS.
    case $mode in
    plain) url=ftp://127.0.0.1:$port ;;
    explicit) copt=(--ssl-reqd -k); url=ftp://127.0.0.1:$port ;;
    implicit) copt=(-k); url=ftps://127.0.0.1:$port ;;
    esac
    curl -sS --noproxy '*' --max-time 10 "${copt[@]}" -u "$FTP_USER:$FTP_PASS" \
        "$url/" -o /dev/null >"$FTP_DIR/login-$n.log" 2>&1 ||
        { show_log "$log"; show_log "$FTP_DIR/login-$n.log"
          fail "cannot log in to vsftpd ($mode) as $FTP_USER"; }
}

# _vsftpd_tree PID: PID and all its descendants.
_vsftpd_tree() {
    local c
    echo "$1"
    for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do _vsftpd_tree "$c"; done
}

# vsftpd_stop N: stop the Nth server (and its sessions) by PID.
vsftpd_stop() {
    local f=$FTP_DIR/vsftpd-$1.pid pids
    [ -s "$f" ] || return 0
    pids=$(_vsftpd_tree "$(cat "$f")")
    rm -f "$f"
    kill -TERM $pids 2>/dev/null
    wait_for 10 sh -c "! kill -0 $(echo $pids | cut -d' ' -f1) 2>/dev/null" ||
        kill -KILL $pids 2>/dev/null
    return 0
}

# vsftpd_kill N: SIGKILL the Nth server and every session it forked.
vsftpd_kill() {
    local f=$FTP_DIR/vsftpd-$1.pid pids
    [ -s "$f" ] || return 0
    pids=$(_vsftpd_tree "$(cat "$f")")
    rm -f "$f"
    kill -KILL $pids 2>/dev/null
    wait_for 10 sh -c "! kill -0 $(echo $pids | cut -d' ' -f1) 2>/dev/null"
    return 0
}

# vsftpd_restart N: the Nth server again, same port and configuration.
vsftpd_restart() {
    vsftpd_kill "$1"
    _vsftpd_run "$1"
}
