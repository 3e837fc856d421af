# nginx.sh: an nginx on loopback serving $NGINX_ROOT over HTTP and HTTPS
# (a self-signed certificate made here), for the curl backend's tests.
# Source after functions.sh. nginx_start sets:
#   NGINX_ROOT  the document root (put the files to serve there)
#   NGINX_URL   http://127.0.0.1:PORT      NGINX_URL6  http://[::1]:PORT
#   NGINX_TLS_URL https://localhost:TLSPORT (the certificate names
#               localhost, 127.0.0.1 and ::1)
#   NGINX_CA    the certificate (self-signed: it is its own CA)
#   NGINX_USER / NGINX_PASS  basic-auth account for /auth/
#   NGINX_COOKIE  the cookie /cookie/ wants (session=...)
#   NGINX_PROXY_URL  http://127.0.0.1:PROXYPORT, a forward proxy to this
#               server (its log: $NGINX_DIR/proxy.log)
#   NGINX_PID   the master's PID
# Locations: / (plain), /auth/ (basic auth), /cookie/ (403 without the
# cookie), /noranges/ (no byte ranges), /slow/ (at most $NGINX_REQ_RATE
# requests a second, the rest queued: small ranged requests are not slowed
# by limit_rate, whose first second is free),
# /moved/X (302 to /X), /busy/ (always 503), /flaky/ (503, 429 with
# Retry-After: 1, or 404 while $NGINX_DIR/flaky-503, -429 or -404 exists).

NGINX_DIR=$TMP/nginx
NGINX_ROOT=$NGINX_DIR/www
NGINX_USER=alice
NGINX_PASS=s3cret-Pass.42
NGINX_COOKIE=session=abc123
NGINX_REQ_RATE=${NGINX_REQ_RATE:-20}

# Nothing of ours goes through a proxy.
unset http_proxy https_proxy ftp_proxy all_proxy HTTP_PROXY HTTPS_PROXY \
    FTP_PROXY ALL_PROXY no_proxy NO_PROXY

_nginx_conf() {
    local d=$NGINX_DIR
    cat >"$d/nginx.conf" <<EOF
user root root;
worker_processes 2;
pid $d/nginx.pid;
error_log $d/error.log info;
events { worker_connections 512; }
http {
    access_log $d/access.log;
    client_body_temp_path $d/client_temp;
    proxy_temp_path $d/proxy_temp;
    fastcgi_temp_path $d/fastcgi_temp;
    uwsgi_temp_path $d/uwsgi_temp;
    scgi_temp_path $d/scgi_temp;
    default_type application/octet-stream;
    sendfile on;
    keepalive_requests 100000;
    limit_req_zone \$binary_remote_addr zone=slow:1m rate=${NGINX_REQ_RATE}r/s;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        listen [::1]:$NGINX_PORT;
        listen 127.0.0.1:$NGINX_TLS_PORT ssl http2;
        listen [::1]:$NGINX_TLS_PORT ssl http2;
        server_name localhost;
        ssl_certificate $d/cert.pem;
        ssl_certificate_key $d/key.pem;
        root $NGINX_ROOT;
        location /auth/ {
            auth_basic "netdiskfs test";
            auth_basic_user_file $d/htpasswd;
            alias $NGINX_ROOT/;
        }
        location /cookie/ {
            if (\$cookie_session != "abc123") { return 403; }
            alias $NGINX_ROOT/;
        }
        location /noranges/ {
            max_ranges 0;
            alias $NGINX_ROOT/;
        }
        location /slow/ {
            limit_req zone=slow burst=100000;
            alias $NGINX_ROOT/;
        }
        location /busy/ {
            return 503;
        }
        location /flaky/ {
            if (-f $d/flaky-503) { return 503; }
            if (-f $d/flaky-429) {
                add_header Retry-After 1 always;
                return 429;
            }
            if (-f $d/flaky-404) { return 404; }
            alias $NGINX_ROOT/;
        }
        location /moved/ {
            rewrite ^/moved/(.*)\$ /\$1 redirect;
        }
    }
    server {
        listen 127.0.0.1:$NGINX_PROXY_PORT;
        access_log $d/proxy.log;
        location / {
            proxy_pass http://127.0.0.1:$NGINX_PORT;
            proxy_buffering off;
        }
    }
}
EOF
}

# nginx_start: make the config, certificate and accounts, start nginx,
# wait (bounded) until it answers on both ports.
nginx_start() {
    requires nginx
    requires openssl
    requires curl
    mkdir -p "$NGINX_DIR" "$NGINX_ROOT"
    local d=$NGINX_DIR
    if [ ! -s "$d/cert.pem" ]; then
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
            -nodes -keyout "$d/key.pem" -out "$d/cert.pem" -days 3650 \
            -subj /CN=localhost \
            -addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
            >"$d/openssl.log" 2>&1 || { show_log "$d/openssl.log"; fail "openssl could not make a certificate"; }
        printf '%s:%s\n' "$NGINX_USER" "$(openssl passwd -apr1 "$NGINX_PASS")" >"$d/htpasswd"
    fi
    NGINX_CA=$d/cert.pem
    [ -n "${NGINX_PORT:-}" ] || NGINX_PORT=$(free_port)
    [ -n "${NGINX_TLS_PORT:-}" ] || NGINX_TLS_PORT=$(free_port)
    [ -n "${NGINX_PROXY_PORT:-}" ] || NGINX_PROXY_PORT=$(free_port)
    NGINX_PROXY_URL=http://127.0.0.1:$NGINX_PROXY_PORT
    NGINX_URL=http://127.0.0.1:$NGINX_PORT
    NGINX_URL6=http://[::1]:$NGINX_PORT
    NGINX_TLS_URL=https://localhost:$NGINX_TLS_PORT
    _nginx_conf
    rm -f "$d/nginx.pid"
    nginx -c "$d/nginx.conf" -e "$d/error.log" >"$d/start.log" 2>&1 || {
        show_log "$d/start.log"; show_log "$d/error.log"; fail "nginx did not start"; }
    wait_for 10 test -s "$d/nginx.pid" || { show_log "$d/error.log"; fail "nginx wrote no pidfile"; }
    NGINX_PID=$(cat "$d/nginx.pid")
    wait_for 10 sh -c "curl -s -o /dev/null --noproxy '*' '$NGINX_URL/' && curl -sk -o /dev/null --noproxy '*' '$NGINX_TLS_URL/'" || {
        show_log "$d/error.log"; fail "nginx does not answer on ports $NGINX_PORT/$NGINX_TLS_PORT"; }
    cleanup_fn nginx_stop
}

# nginx_stop: stop the master by its PID and wait (bounded) for it.
nginx_stop() {
    local pid=${NGINX_PID:-}
    [ -n "$pid" ] || return 0
    NGINX_PID=
    kill -CONT "$pid" $(nginx_workers "$pid") 2>/dev/null
    kill -TERM "$pid" 2>/dev/null || return 0
    wait_for 10 sh -c "! kill -0 $pid" || kill -KILL "$pid" 2>/dev/null
    return 0
}

# nginx_workers [PID]: the worker PIDs of the master.
nginx_workers() {
    local pid=${1:-$NGINX_PID}
    ps -o pid= --ppid "$pid" 2>/dev/null | tr -d ' '
}

# nginx_restart: stop and start again on the same ports.
nginx_restart() {
    nginx_stop
    nginx_start
}
