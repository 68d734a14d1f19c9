#!/usr/bin/env bash
# `make run`: builds the release binary, then runs the echo upstream (127.0.0.1:9000, also the
# WebSocket echo of /ws/), the gRPC example service (127.0.0.1:50051), the gateway pool
# (config/portcullis.json) and nginx (127.0.0.1:8080, gRPC on 127.0.0.1:8081) in the foreground.
# Ctrl-C (or SIGTERM) stops them all.
#
# Environment: CONFIG (default config/portcullis.json), LISTEN (default 127.0.0.1:8080),
# GRPC_LISTEN (default 127.0.0.1:8081), ECHO_PORT (default 9000), GRPC_PORT (default 50051),
# SKIP_BUILD=1 to skip the build, PORTCULLIS_BIN to run another binary (default
# .build/release/portcullis).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export PATH="/opt/swift/usr/bin:$PATH"

config=${CONFIG:-config/portcullis.json}
listen=${LISTEN:-127.0.0.1:8080}
echo_port=${ECHO_PORT:-9000}
grpc_listen=${GRPC_LISTEN:-127.0.0.1:8081}
grpc_port=${GRPC_PORT:-50051}
bin=${PORTCULLIS_BIN:-$root/.build/release/portcullis}
nginx_prefix="$root/run/nginx"

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    echo "==> swift build -c release"
    swift build -c release
fi
[[ -x $bin ]] || { echo "run-demo: $bin is missing (build failed?)" >&2; exit 1; }

echo "==> portcullis check --config $config"
"$bin" check --config "$config"

# The socket path as the gateway resolves it (the effective configuration: defaults filled in,
# paths absolute), so this script keeps no copy of the defaults.
socket=$("$bin" check --field /server/socket --config "$config" 2>/dev/null)
# Idle kept FastCGI connections cost the pool a descriptor each (nginx/portcullis.conf).
keepalive=32

pids=()
stopping=0
stop_all() {
    (( stopping )) && return
    stopping=1
    echo
    echo "==> stopping"
    local pid deadline=$((SECONDS + 10))
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    # A stop never hangs: whatever still runs after 10 s is killed, and said.
    for pid in "${pids[@]}"; do
        while running "$pid" && (( SECONDS < deadline )); do sleep 0.1; done
        if running "$pid"; then
            echo "run-demo: $(cat "/proc/$pid/comm" 2>/dev/null || echo "process $pid") did not stop within 10 s: killed" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
}
# Whether a child still runs (an exited one stays a zombie until it is waited for).
running() {
    local state
    state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [[ -n $state && $state != Z ]]
}
trap 'stop_all; exit 0' INT TERM
trap 'stop_all' EXIT

echo "==> echo upstream on 127.0.0.1:$echo_port"
python3 scripts/echo_upstream.py --port "$echo_port" &
pids+=($!)

echo "==> gRPC echo service on 127.0.0.1:$grpc_port"
python3 scripts/grpc_echo.py --port "$grpc_port" &
pids+=($!)

echo "==> portcullis serve --config $config"
"$bin" serve --config "$config" &
pids+=($!)

for _ in $(seq 1 150); do
    [[ -S $socket ]] && break
    sleep 0.1
done
[[ -S $socket ]] || { echo "run-demo: the gateway did not create $socket within 15 s" >&2; exit 1; }

echo "==> nginx on $listen (prefix $nginx_prefix)"
# The upstream blocks of the websocket/grpc routes' targets (docs/protocols.md).
mkdir -p "$nginx_prefix"
"$bin" nginx-upstreams --config "$config" --output "$nginx_prefix/portcullis-upstreams.conf"
UPSTREAMS_CONF="$nginx_prefix/portcullis-upstreams.conf" GRPC_LISTEN="$grpc_listen" \
    scripts/render-nginx.sh "$nginx_prefix/nginx.conf" "$nginx_prefix" "$listen" "$socket" "$keepalive"
nginx -p "$nginx_prefix" -c "$nginx_prefix/nginx.conf" -e stderr &
pids+=($!)

cat <<EOF

Portcullis demo is up. Try:
    curl -i http://$listen/echo/hello
    curl -i http://$listen/no-such-route
    curl -i -H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' \
         -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' -H 'X-API-Key: demo-key-change-me' http://$listen/ws/
    (gRPC on $grpc_listen: /portcullis.demo.Echo/Say with metadata x-api-key, see docs/protocols.md)
    .build/release/portcullis status --config $config
Ctrl-C stops everything.

EOF

# Runs until Ctrl-C, or until one of them exits on its own (then the others are stopped).
status=0
wait -n "${pids[@]}" || status=$?
if (( ! stopping )) && (( status == 0 )); then
    # Ctrl-C reaches the gateway and nginx too (they handle SIGINT themselves), and one of them
    # may end before this script's trap runs: a clean exit is a stop, not a failure.
    stop_all
    exit 0
fi
if (( ! stopping )); then
    echo "run-demo: a process exited (status $status); stopping the others" >&2
    stop_all
    exit 1
fi
