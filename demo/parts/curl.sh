# demo/parts/curl.sh: an image served by nginx on loopback over HTTP and
# HTTPS (a certificate made here, basic auth from a password file), and by
# an anonymous read-only vsftpd over FTP, mounted through three entries.
# Sourced by demo/demo.sh.

_demo_curl_dir() { echo "$DEMO_WORK/curl"; }

# _demo_curl_port FIRST LAST: a TCP port nothing listens on.
_demo_curl_port() {
    local p
    for p in $(seq "$1" "$2"); do
        ss -Hltn "sport = :$p" 2>/dev/null | grep -q . || { echo "$p"; return 0; }
    done
    return 1
}

demo_curl_start() {
    local dir port tport fport pasv n user=""
    dir=$(_demo_curl_dir)
    command -v nginx >/dev/null || { echo "curl: nginx is not installed" >&2; return 1; }
    command -v openssl >/dev/null || { echo "curl: openssl is not installed" >&2; return 1; }
    mkdir -p "$dir/www" "$dir/empty"
    chmod 755 "$dir" "$dir/www" "$dir/empty"
    head -c $((16 * 1048576)) /dev/urandom > "$dir/www/disk.img" || return 1
    chmod 644 "$dir/www/disk.img"
    cp "$dir/www/disk.img" "$dir/disk.img.orig"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$dir/key.pem" -out "$dir/cert.pem" -days 30 -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >"$dir/openssl.log" 2>&1 ||
        { echo "curl: openssl could not make a certificate:" >&2; cat "$dir/openssl.log" >&2; return 1; }
    echo "demo-$RANDOM$RANDOM" > "$dir/password"
    chmod 600 "$dir/password"
    printf 'demo:%s\n' "$(openssl passwd -apr1 "$(cat "$dir/password")")" > "$dir/htpasswd"
    port=$(_demo_curl_port 20880 20929) && tport=$(_demo_curl_port 20930 20979) ||
        { echo "curl: no free TCP port" >&2; return 1; }
    [ "$(id -u)" = 0 ] && user="user root root;"
    cat > "$dir/nginx.conf" <<EOT
$user
worker_processes 2;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log;
events { worker_connections 256; }
http {
    access_log $dir/nginx-access.log;
    client_body_temp_path $dir/client_temp;
    proxy_temp_path $dir/proxy_temp;
    fastcgi_temp_path $dir/fastcgi_temp;
    uwsgi_temp_path $dir/uwsgi_temp;
    scgi_temp_path $dir/scgi_temp;
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$port;
        listen 127.0.0.1:$tport ssl;
        ssl_certificate $dir/cert.pem;
        ssl_certificate_key $dir/key.pem;
        root $dir/www;
        location /private/ {
            auth_basic "netdiskfs demo";
            auth_basic_user_file $dir/htpasswd;
            alias $dir/www/;
        }
    }
}
EOT
    rm -f "$dir/nginx.pid"
    nginx -c "$dir/nginx.conf" -e "$dir/nginx-error.log" || {
        echo "curl: nginx failed to start:" >&2; cat "$dir/nginx-error.log" >&2; return 1; }
    for n in $(seq 1 50); do
        [ -s "$dir/nginx.pid" ] && curl -s -o /dev/null --noproxy '*' "http://127.0.0.1:$port/disk.img" -r 0-0 && break
        sleep 0.1
    done
    [ -s "$dir/nginx.pid" ] || { echo "curl: nginx wrote no pidfile in 5 s" >&2; return 1; }
    cat >> "$DEMO_TABLE" <<EOT
http-disk   http://127.0.0.1:$port/disk.img
https-disk  https://demo@localhost:$tport/private/disk.img  password-file=$dir/password,cainfo=$dir/cert.pem
EOT

    # Anonymous read-only FTP, when vsftpd and its "ftp" user are here.
    if command -v vsftpd >/dev/null && id ftp >/dev/null 2>&1 &&
       fport=$(_demo_curl_port 20980 21020) && pasv=$(_demo_curl_port 21030 21060); then
        mkdir -p "$dir/ftp"
        chmod 755 "$dir/ftp"
        ln -f "$dir/www/disk.img" "$dir/ftp/disk.img" 2>/dev/null || cp "$dir/www/disk.img" "$dir/ftp/disk.img"
        cat > "$dir/vsftpd.conf" <<EOT
listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port=$fport
background=NO
anonymous_enable=YES
anon_root=$dir/ftp
no_anon_password=YES
local_enable=NO
write_enable=NO
secure_chroot_dir=$dir/empty
pasv_address=127.0.0.1
pasv_min_port=$pasv
pasv_max_port=$((pasv + 20))
seccomp_sandbox=NO
EOT
        vsftpd "$dir/vsftpd.conf" 0>>"$dir/vsftpd.log" >>"$dir/vsftpd.log" 2>&1 &
        echo $! > "$dir/vsftpd.pid"
        disown 2>/dev/null
        for n in $(seq 1 50); do
            ss -Hltn "sport = :$fport" 2>/dev/null | grep -q . && break
            sleep 0.1
        done
        if ss -Hltn "sport = :$fport" 2>/dev/null | grep -q .; then
            echo "ftp-disk    ftp://127.0.0.1:$fport/disk.img" >> "$DEMO_TABLE"
        else
            echo "curl: vsftpd did not start; FTP left out:" >&2
            cat "$dir/vsftpd.log" >&2
        fi
    fi
}

demo_curl_check() {
    local dir name ok=0 n=0
    dir=$(_demo_curl_dir)
    for name in http-disk https-disk ftp-disk; do
        grep -q "^$name " "$DEMO_TABLE" || continue
        n=$((n + 1))
        if cmp -s "$DEMO_MNT/$name" "$dir/disk.img.orig"; then
            ok=$((ok + 1))
        else
            echo "curl: $name differs from the image the server has" >&2
        fi
    done
    if dd if=/dev/zero of="$DEMO_MNT/http-disk" bs=4k count=1 conv=notrunc status=none 2>/dev/null; then
        echo "curl: a write to http-disk succeeded?!" >&2
        return 1
    fi
    echo "curl: $ok/$n entries (http://, https:// with basic auth and the test CA, anonymous ftp://) read back the 16 MiB image byte for byte; writes refused (read-only)"
    [ $ok -eq $n ]
}

demo_curl_stop() {
    local dir pid n name
    dir=$(_demo_curl_dir)
    demo_stop_pidfile "$dir/nginx.pid" "$dir/vsftpd.pid"
}
