#!/usr/bin/env bash
# make bench: nginx proxy_pass against Portcullis, side by side in the same run.
#
# Pinned as in ARCHITECTURE.md: the gateway under test (front nginx + Portcullis workers) on
# core 1; wrk and the static upstream nginx on core 0. Each scenario runs ROUNDS rounds of
# DURATION with CONNS connections, alternating with the nginx proxy_pass baseline; the median
# requests/s of each and their ratio are printed (and written to run/bench/results.md).
#
#   scripts/bench.sh [--rounds N] [--duration 4s] [--conns 32] [--workers 2] [--threads 8]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"

rounds=3 duration=4s conns=32 workers=2 threads=8
while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) rounds=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --conns) conns=$2; shift 2 ;;
        --workers) workers=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

command -v wrk >/dev/null || { echo "wrk is missing: make deps" >&2; exit 1; }
swift build -c release >/dev/null
bin=$here/.build/release/portcullis
cores=$(nproc)
gw_core=1 load_core=0
if [[ $cores -lt 2 ]]; then gw_core=0; fi

work=$here/run/bench
rm -rf "$work"; mkdir -p "$work"/{static,front}/{logs,temp}
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
static_port=$(port) gw_port=$(port) proxy_port=$(port) redis_port=$(port)

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

# Static upstream: answers a small JSON body, like a fast microservice.
cat > "$work/static/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $work/static/nginx.pid; error_log $work/static/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off; keepalive_requests 1000000;
  client_body_temp_path $work/static/temp/cb; proxy_temp_path $work/static/temp/p; fastcgi_temp_path $work/static/temp/f;
  uwsgi_temp_path $work/static/temp/u; scgi_temp_path $work/static/temp/s;
  server { listen 127.0.0.1:$static_port;
    location / { default_type application/json; return 200 '{"id":42,"name":"widget","price":9.5,"internal_cost":3.1,"tags":["a","b"]}'; } }
}
CONF
taskset -c $load_core nginx -p "$work/static" -c "$work/static/nginx.conf" -e stderr & pids+=($!)

if command -v redis-server >/dev/null; then
    taskset -c $load_core redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null & pids+=($!)
fi

# Gateway configuration: one route per scenario, all to the same static upstream.
sed -e "s#@STATIC@#http://127.0.0.1:$static_port#" -e "s#@WORK@#$work#g" -e "s#@REDIS_PORT@#$redis_port#" \
    -e "s#@WORKERS@#$workers#" -e "s#@THREADS@#$threads#" scripts/bench-config.json > "$work/portcullis.json"
cp -r config/demo-* "$work/" 2>/dev/null || true
cp -r plugins "$work/plugins" 2>/dev/null || true
taskset -c $gw_core "$bin" serve --config "$work/portcullis.json" 2>"$work/gateway.log" & pids+=($!)

cat > "$work/front/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $work/front/nginx.pid; error_log $work/front/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/front/temp/cb; proxy_temp_path $work/front/temp/p; fastcgi_temp_path $work/front/temp/f;
  uwsgi_temp_path $work/front/temp/u; scgi_temp_path $work/front/temp/s;
  upstream portcullis { server unix:$work/portcullis.sock; keepalive 4; keepalive_requests 100000; }
  upstream static { server 127.0.0.1:$static_port; keepalive 32; keepalive_requests 100000; }
  server { listen 127.0.0.1:$gw_port; include $here/nginx/portcullis.conf; }
  server { listen 127.0.0.1:$proxy_port;
    location / { proxy_pass http://static; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
CONF
for _ in $(seq 100); do [[ -S $work/portcullis.sock ]] && break; sleep 0.1; done
taskset -c $gw_core nginx -p "$work/front" -c "$work/front/nginx.conf" -e stderr & pids+=($!)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$gw_port/bench/plain" >/dev/null 2>&1 && break; sleep 0.1; done

rps() {  # url [header...]
    local url=$1; shift
    local args=()
    for h in "$@"; do args+=(-H "$h"); done
    taskset -c $load_core wrk -t1 -c"$conns" -d"$duration" "${args[@]}" "$url" 2>&1 \
        | awk '/Requests\/sec/ {print $2} /Non-2xx/ {print "NON2XX " $4 > "/dev/stderr"}'
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# Scenarios: name | path | headers (separated by ;;)
scenarios=("plain|/bench/plain|")
if [[ -f scripts/bench-scenarios.sh ]]; then source scripts/bench-scenarios.sh; fi

out=$work/results.md
{
    echo "| scenario | nginx proxy_pass req/s | Portcullis req/s | ratio |"
    echo "|---|---|---|---|"
} > "$out"
for s in "${scenarios[@]}"; do
    IFS='|' read -r name path headers <<<"$s"
    IFS=';;' read -r -a hdrs <<<"${headers}"
    hdrs=("${hdrs[@]:-}")
    curl -fs "http://127.0.0.1:$gw_port$path" $(for h in "${hdrs[@]}"; do [[ -n $h ]] && printf -- "-H\n%s\n" "$h"; done) -o /dev/null \
        || { echo "scenario $name: warm-up request failed" >&2; }
    p=() g=()
    for _ in $(seq "$rounds"); do
        p+=("$(rps "http://127.0.0.1:$proxy_port/bench/plain")")
        g+=("$(rps "http://127.0.0.1:$gw_port$path" "${hdrs[@]}")")
    done
    pm=$(printf '%s\n' "${p[@]}" | median) gm=$(printf '%s\n' "${g[@]}" | median)
    ratio=$(python3 -c "print(f'{$gm/$pm:.2f}')")
    echo "| $name | $pm | $gm | $ratio |" | tee -a "$out"
done
echo
echo "machine: $(nproc) cores; gateway on core $gw_core, load on core $load_core; $rounds x $duration, $conns connections; pool $workers x $threads"
echo "results: $out"
