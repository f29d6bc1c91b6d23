#!/usr/bin/env bash
# Side-by-side benchmark of Causette, ejabberd and Prosody on this machine, on loopback, one
# server at a time, with the same load generator (causette-load) and the same scenarios.
# Prints one JSON line per measurement (kept in $OUT) and a table with ratios at the end.
#
# Usage: bash bench/run.sh [USERS] [PAIRS] [RATES] [ROOM_RATES]
#   USERS  idle logged-in connections for memory and login rate (default 2000)
#   PAIRS  pairs for 1:1 messages (default 500)
#   RATES  comma-separated target messages/s, stepped (default 1000,2000,4000,8000)
#   ROOM_RATES  comma-separated groupchat messages sent per second in the room fan-out
#               scenario, each delivered to every occupant (default 20,50,100,200)
# Environment: SERVERS (default "causette ejabberd prosody"), TLS=1 for STARTTLS runs,
#              WEBSOCKET=1 to measure logins and idle sessions over XMPP over WebSocket
#              (RFC 7395, plain ws:// on loopback) instead of the TCP scenarios, and
#              BOSH=1 to add the same over BOSH (each idle client holding one request),
#              MECHANISM (default PLAIN),
#              STEP_SECS (default 10), OUT (default bench/out/results-<date>.jsonl),
#              ROOMS x OCCUPANTS for the fan-out scenario (default 100 x 50; 0 skips it).
# Needs root (apt-get installs ejabberd and prosody when missing). Only loopback is used.
set -euo pipefail
cd "$(dirname "$0")/.."
USERS=${1:-2000}
PAIRS=${2:-500}
RATES=${3:-1000,2000,4000,8000}
ROOM_RATES=${4:-20,50,100,200}
ROOMS=${ROOMS:-100}
OCCUPANTS=${OCCUPANTS:-50}
SERVERS=${SERVERS:-causette ejabberd prosody}
STEP_SECS=${STEP_SECS:-10}
TLS=${TLS:-0}
WEBSOCKET=${WEBSOCKET:-0}
BOSH=${BOSH:-0}
# PLAIN checked against salted, hashed credentials on every server (Causette: SCRAM-SHA-256
# keys; ejabberd: scram sha256; Prosody: internal_hashed), so that a login costs each server
# the same kind of work and the generator none.
MECHANISM=${MECHANISM:-PLAIN}
# How ejabberd and Prosody store passwords: "hashed" (like Causette, which never stores a
# password) or "plain" (their fastest setting, as in the issue's baseline figures).
STORAGE=${STORAGE:-hashed}
if [ "$STORAGE" = plain ]; then
    EJABBERD_STORAGE="auth_password_format: plain"
    PROSODY_AUTH=internal_plain
else
    EJABBERD_STORAGE=$'auth_password_format: scram\nauth_scram_hash: sha256'
    PROSODY_AUTH=internal_hashed
fi
mkdir -p bench/out
OUT=${OUT:-bench/out/results-$(date +%Y%m%d-%H%M%S).jsonl}
WORK=$(mktemp -d /tmp/causette-bench.XXXXXX)
# ejabberd runs as its own user and must reach its files.
chmod 755 "$WORK"
PASSWORD=load-password
trap 'stop_server; rm -rf "$WORK"' EXIT

need_users=$(( USERS > 2 * PAIRS ? USERS : 2 * PAIRS ))
need_users=$(( need_users > ROOMS * OCCUPANTS ? need_users : ROOMS * OCCUPANTS ))
ulimit -n 20000 2>/dev/null || true

if ! command -v ejabberdctl >/dev/null || ! command -v prosody >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ejabberd prosody >/dev/null
fi
cargo build --release --bins -q
LOAD=target/release/causette-load
CAUSETTE=target/release/causette

# One self-signed certificate for localhost, shared by the three servers; an end-entity
# certificate (CA:FALSE), which the generator's TLS stack (webpki) requires.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost -addext basicConstraints=critical,CA:FALSE \
    -addext extendedKeyUsage=serverAuth -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
cat "$WORK/cert.pem" "$WORK/key.pem" > "$WORK/combined.pem"
chmod 644 "$WORK"/*.pem

SERVER_PID=""
stop_server() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}

wait_port() {
    for _ in $(seq 150); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.2
    done
    echo "server on port $1 did not start" >&2
    return 1
}

start_causette() {
    PORT=25222
    local dir="$WORK/causette"
    mkdir -p "$dir"
    cat > "$dir/causette.toml" <<TOML
domain = "localhost"
data_dir = "$dir/data"
[listen]
c2s = ["127.0.0.1:$PORT"]
c2s_direct_tls = []
[http]
listen = ["127.0.0.1:25280"]
[tls]
cert = "$WORK/cert.pem"
key = "$WORK/key.pem"
allow_plaintext_on_loopback = true
[limits]
max_connections = 19900
# The load generator logs thousands in at once from one address (as the others are set up).
max_unauthenticated = 19900
max_unauthenticated_per_ip = 19900
[admin]
demo_directory = false
[im]
chat_requires_acceptance = false
[log]
level = "warn"
TOML
    echo "$PASSWORD" | "$CAUSETTE" --config "$dir/causette.toml" user add-many load "$need_users" >/dev/null
    "$CAUSETTE" --config "$dir/causette.toml" serve >"$dir/log" 2>&1 &
    SERVER_PID=$!
    wait_port $PORT
    WS_PORT=25280
    WS_PATH=/xmpp-websocket
    BOSH_PATH=/http-bind
    REGISTER=""
}

start_ejabberd() {
    PORT=25232
    WS_PORT=25290
    WS_PATH=/xmpp-websocket
    BOSH_PATH=/http-bind
    EJABBERD_WS=""
    EJABBERD_MODULES=""
    if [ "$WEBSOCKET" = "1" ]; then
        EJABBERD_MODULES="  mod_bosh: {}"
        EJABBERD_WS="  - port: $WS_PORT
    ip: \"127.0.0.1\"
    module: ejabberd_http
    backlog: 4096
    request_handlers:
      \"$WS_PATH\": ejabberd_http_ws
      \"$BOSH_PATH\": mod_bosh"
    fi
    local dir="$WORK/ejabberd"
    mkdir -p "$dir/spool" "$dir/logs"
    cat > "$dir/ejabberd.yml" <<YML
hosts: ["localhost"]
loglevel: warning
certfiles: ["$WORK/combined.pem"]
registration_timeout: infinity
auth_method: internal
$EJABBERD_STORAGE
listen:
  - port: $PORT
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls: true
    shaper: none
    access: c2s
    max_stanza_size: 262144
    # The default backlog drops connections of a login burst.
    backlog: 4096
$EJABBERD_WS
acl:
  loopback:
    ip: ["127.0.0.0/8"]
access_rules:
  c2s:
    allow: all
  register:
    allow: all
modules:
$EJABBERD_MODULES
  mod_disco: {}
  mod_ping: {}
  mod_roster: {}
  mod_register:
    ip_access: all
    access: register
  mod_muc:
    host: "conference.localhost"
    access_create: all
    max_user_conferences: 10
    max_users: 200
YML
    # Debian's ejabberdctl.cfg pins the configuration file: use our own.
    printf 'ERLANG_NODE=bench@localhost\nINET_DIST_INTERFACE=127.0.0.1\nERL_MAX_PORTS=32000\nERL_PROCESSES=250000\n' >"$dir/ejabberdctl.cfg"
    chown -R ejabberd:ejabberd "$dir" "$WORK"/*.pem 2>/dev/null || true
    # su resets the open-files limit to the system default (1024): raise it again inside.
    su ejabberd -s /bin/sh -c "ulimit -n 20000; HOME=$dir ERL_EPMD_ADDRESS=127.0.0.1 ejabberdctl --ctl-config $dir/ejabberdctl.cfg --config $dir/ejabberd.yml --spool $dir/spool --logs $dir/logs foreground" >"$dir/out" 2>&1 &
    wait_port $PORT
    SERVER_PID=$(pgrep -f "beam.*bench@localhost" | head -n 1)
    REGISTER="--register"
}

start_prosody() {
    PORT=25242
    WS_PORT=25300
    WS_PATH=/xmpp-websocket
    BOSH_PATH=/http-bind
    local http_ports="" websocket_module=""
    if [ "$WEBSOCKET" = "1" ]; then
        http_ports="$WS_PORT"
        websocket_module=', "websocket", "bosh"'
    fi
    local dir="$WORK/prosody"
    mkdir -p "$dir/data"
    cat > "$dir/prosody.cfg.lua" <<LUA
run_as_root = true
daemonize = false
pidfile = "$dir/prosody.pid"
data_path = "$dir/data"
log = { warn = "$dir/prosody.log" }
c2s_ports = { $PORT }
c2s_interfaces = { "127.0.0.1" }
s2s_ports = { }
http_ports = { $http_ports }
http_interfaces = { "127.0.0.1" }
https_ports = { }
consider_websocket_secure = true
admin_socket = "$dir/admin.sock"
authentication = "$PROSODY_AUTH"
allow_registration = true
min_seconds_between_registrations = 0
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
limits = { c2s = { rate = "1000mb/s" } }
network_settings = { tcp_backlog = 4096 }
modules_enabled = { "roster", "saslauth", "tls", "disco", "ping", "register", "posix"$websocket_module }
modules_disabled = { "s2s" }
ssl = { certificate = "$WORK/cert.pem", key = "$WORK/key.pem" }
VirtualHost "localhost"
Component "conference.localhost" "muc"
    restrict_room_creation = false
LUA
    prosody --config "$dir/prosody.cfg.lua" >"$dir/out" 2>&1 &
    SERVER_PID=$!
    wait_port $PORT
    REGISTER="--register"
}

measure() {
    local name=$1
    "start_$name"
    local tls_args=()
    [ "$TLS" = "1" ] && tls_args=(--tls-ca "$WORK/cert.pem")
    if [ -n "$REGISTER" ]; then
        "$LOAD" --scenario login --server 127.0.0.1:$PORT --users "$need_users" --register \
            --concurrency 50 --hold-secs 0 --password "$PASSWORD" >/dev/null
        stop_server; "start_$name"
    fi
    "$LOAD" --scenario login --server 127.0.0.1:$PORT --label "$name" --server-pid "$SERVER_PID" \
        --users "$USERS" --concurrency 100 --hold-secs 10 --password "$PASSWORD" \
        --mechanism "$MECHANISM" "${tls_args[@]}" | tee -a "$OUT"
    stop_server; "start_$name"
    "$LOAD" --scenario chat --server 127.0.0.1:$PORT --label "$name" --server-pid "$SERVER_PID" \
        --pairs "$PAIRS" --rates "$RATES" --step-secs "$STEP_SECS" --password "$PASSWORD" \
        --mechanism "$MECHANISM" "${tls_args[@]}" | tee -a "$OUT"
    stop_server
    if [ "$ROOMS" -gt 0 ]; then
        "start_$name"
        "$LOAD" --scenario rooms --server 127.0.0.1:$PORT --label "$name" --server-pid "$SERVER_PID" \
            --rooms "$ROOMS" --occupants "$OCCUPANTS" --rates "$ROOM_RATES" \
            --step-secs "$STEP_SECS" --password "$PASSWORD" --mechanism "$MECHANISM" \
            "${tls_args[@]}" | tee -a "$OUT"
        stop_server
    fi
}

# Logins and idle sessions over WebSocket (the ENT window's transport): the same login
# scenario, at each server's WebSocket endpoint.
measure_websocket() {
    local name=$1
    "start_$name"
    if [ -n "$REGISTER" ]; then
        "$LOAD" --scenario login --server 127.0.0.1:$PORT --users "$USERS" --register \
            --concurrency 50 --hold-secs 0 --password "$PASSWORD" >/dev/null
        stop_server; "start_$name"
    fi
    wait_port "$WS_PORT"
    "$LOAD" --scenario login --server 127.0.0.1:$WS_PORT --websocket "$WS_PATH" --label "$name" \
        --server-pid "$SERVER_PID" --users "$USERS" --concurrency 100 --hold-secs 10 \
        --password "$PASSWORD" --mechanism "$MECHANISM" | tee -a "$OUT"
    stop_server
    if [ "$BOSH" = "1" ] && [ -n "${BOSH_PATH:-}" ]; then
        "start_$name"
        wait_port "$WS_PORT"
        "$LOAD" --scenario login --server 127.0.0.1:$WS_PORT --bosh "$BOSH_PATH" --label "$name-bosh" \
            --server-pid "$SERVER_PID" --users "$USERS" --concurrency 100 --hold-secs 10 \
            --password "$PASSWORD" | tee -a "$OUT"
        stop_server
    fi
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem/ {print $2}') GiB; users=$USERS pairs=$PAIRS rates=$RATES tls=$TLS mechanism=$MECHANISM storage(ejabberd,prosody)=$STORAGE" | tee "$OUT.txt"
for server in $SERVERS; do
    if [ "$WEBSOCKET" = "1" ]; then
        measure_websocket "$server"
    else
        measure "$server"
    fi
done
python3 bench/table.py "$OUT" | tee -a "$OUT.txt"
