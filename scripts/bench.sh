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

rounds=3 duration=4s conns=32 workers=2 threads=8 keepconn=off only="" keepalive=4
while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) rounds=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --conns) conns=$2; shift 2 ;;
        --workers) workers=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --keep-conn) keepconn=$2; shift 2 ;;   # on|off: fastcgi_keep_conn between nginx and the pool
        --only) only=$2; shift 2 ;;
        --keepalive) keepalive=$2; shift 2 ;;  # idle FastCGI connections nginx keeps (< workers x threads)            # run only scenarios whose name contains this
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
static_port=$(port) echo_port=$(port) gw_port=$(port) proxy_port=$(port) redis_port=$(port)

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

# A ~2 KB JSON document: the response body of the transform scenario and (as v1 request) its POST body.
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
items = [{"name": f"item-{i}", "cost_price": i * 1.5, "supplier": "acme", "qty": i} for i in range(18)]
doc = {"internal_id": "x-1", "debug": {"trace": "abc"}, "name": "widget", "items": items}
open(f"{work}/static/2k.json", "w").write(json.dumps(doc))
v1 = {"user_name": "alice", "email": "a@example.com", "phone": "+100", "street": "Main 1", "city": "Zurich",
      "notes": "n" * 1850}
open(f"{work}/v1.json", "w").write(json.dumps(v1))
body = json.dumps(v1).replace('"', '\\"')
open(f"{work}/post2k.lua", "w").write(
    'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = "' + body + '"\n')
PY
# Static upstream: answers a small JSON body, like a fast microservice.
cat > "$work/static/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $work/static/nginx.pid; error_log $work/static/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off; keepalive_requests 1000000;
  client_body_temp_path $work/static/temp/cb; proxy_temp_path $work/static/temp/p; fastcgi_temp_path $work/static/temp/f;
  uwsgi_temp_path $work/static/temp/u; scgi_temp_path $work/static/temp/s;
  server { listen 127.0.0.1:$static_port;
    location /bench/transform { default_type application/json; return 200 '$(cat "$work/static/2k.json")'; }
    location / { default_type application/json; return 200 '{"id":42,"name":"widget","price":9.5,"internal_cost":3.1,"tags":["a","b"]}'; } }
}
CONF
taskset -c $load_core nginx -p "$work/static" -c "$work/static/nginx.conf" -e stderr & pids+=($!)

# The echo upstream of the demo (Python): the issue-2 figure is /echo/ through both paths.
taskset -c $load_core python3 scripts/echo_upstream.py --port "$echo_port" >/dev/null 2>&1 & pids+=($!)

if command -v redis-server >/dev/null; then
    taskset -c $load_core redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null & pids+=($!)
fi

# Gateway configuration: one route per scenario, all to the same static upstream.
sed -e "s#@STATIC@#http://127.0.0.1:$static_port#" -e "s#@ECHO@#http://127.0.0.1:$echo_port#" -e "s#@WORK@#$work#g" -e "s#@REDIS_PORT@#$redis_port#" \
    -e "s#@WORKERS@#$workers#" -e "s#@THREADS@#$threads#" scripts/bench-config.json > "$work/portcullis.json"
cp -r config/demo-* "$work/" 2>/dev/null || true
cp -r plugins "$work/plugins" 2>/dev/null || true
taskset -c $gw_core "$bin" serve --config "$work/portcullis.json" 2>"$work/gateway.log" & pids+=($!)

# The shipped snippet opens one FastCGI connection per request; --keep-conn on measures the
# alternative (docs/nginx.md).
snippet=$here/nginx/portcullis.conf
pool_keepalive=""
if [[ $keepconn == on ]]; then
    sed 's/fastcgi_keep_conn off;/fastcgi_keep_conn on;/' "$here/nginx/portcullis.conf" > "$work/portcullis-keepconn.conf"
    snippet=$work/portcullis-keepconn.conf
    pool_keepalive="keepalive $keepalive;"
fi
user_directive=""
[[ $(id -u) -eq 0 ]] && user_directive="user root;"  # so nginx's worker can reach the 0660 socket
cat > "$work/front/nginx.conf" <<CONF
$user_directive
worker_processes 1; daemon off; pid $work/front/nginx.pid; error_log $work/front/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/front/temp/cb; proxy_temp_path $work/front/temp/p; fastcgi_temp_path $work/front/temp/f;
  uwsgi_temp_path $work/front/temp/u; scgi_temp_path $work/front/temp/s;
  upstream portcullis { server unix:$work/portcullis.sock; $pool_keepalive keepalive_requests 100000; }
  upstream static { server 127.0.0.1:$static_port; keepalive 32; keepalive_requests 100000; }
  upstream echo { server 127.0.0.1:$echo_port; keepalive 32; }
  server { listen 127.0.0.1:$gw_port; include $snippet; }
  server { listen 127.0.0.1:$proxy_port;
    location / { proxy_pass http://static; proxy_http_version 1.1; proxy_set_header Connection ""; }
    location /echo/ { proxy_pass http://echo; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
CONF
for _ in $(seq 100); do [[ -S $work/portcullis.sock ]] && break; sleep 0.1; done
taskset -c $gw_core nginx -p "$work/front" -c "$work/front/nginx.conf" -e stderr & pids+=($!)
ready=0
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$gw_port/bench/plain" >/dev/null 2>&1 && { ready=1; break; }; sleep 0.1; done
(( ready )) || { echo "the gateway does not answer; see $work/gateway.log and $work/front/logs/error.log" >&2; exit 1; }

rps() {  # url [header... | @POST2K]
    local url=$1; shift
    local args=()
    for h in "$@"; do
        if [[ $h == "@POST2K" ]]; then args+=(-s "$work/post2k.lua"); elif [[ -n $h ]]; then args+=(-H "$h"); fi
    done
    taskset -c $load_core wrk -t1 -c"$conns" -d"$duration" "${args[@]}" "$url" 2>&1 \
        | awk '/Requests\/sec/ {print $2} /Non-2xx/ {print "warning: " $0 > "/dev/stderr"}'
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# Scenarios: name | path | headers (separated by ;;)
scenarios=("plain|/bench/plain|" "echo (Python upstream)|/echo/bench|")
if [[ -f scripts/bench-scenarios.sh ]]; then source scripts/bench-scenarios.sh; fi

out=$work/results.md
{
    echo "| scenario | nginx proxy_pass req/s | Portcullis req/s | ratio |"
    echo "|---|---|---|---|"
} > "$out"
for s in "${scenarios[@]}"; do
    IFS='|' read -r name path headers <<<"$s"
    [[ -n $only && $name != *"$only"* ]] && continue
    IFS=';' read -r -a hdrs <<<"${headers}"
    hdrs+=("")
    # The baseline proxies the same request (method, headers, body, path) to the same upstream.
    base=("${hdrs[@]}")
    p=() g=()
    for _ in $(seq "$rounds"); do
        p+=("$(rps "http://127.0.0.1:$proxy_port$path" "${base[@]}")")
        g+=("$(rps "http://127.0.0.1:$gw_port$path" "${hdrs[@]}")")
    done
    pm=$(printf '%s\n' "${p[@]}" | median) gm=$(printf '%s\n' "${g[@]}" | median)
    ratio=$(python3 -c "print(f'{$gm/$pm:.2f}')")
    echo "| $name | $pm | $gm | $ratio |" | tee -a "$out"
done
# Worker CPU per request on the plain route: user and system time of every worker (from
# /proc/PID/stat) across one more wrk run, divided by the requests it served.
worker_cpu() {
    local pids
    pids=$(python3 -c 'import json,sys; print(" ".join(str(w["pid"]) for w in json.load(open(sys.argv[1]))["workers"]))' "$work/state.json")
    local u=0 s=0 p
    for p in $pids; do
        read -r pu ps < <(awk '{print $14, $15}' "/proc/$p/stat")
        u=$((u + pu)) s=$((s + ps))
    done
    echo "$u $s"
}
if [[ -z $only || plain == *"$only"* ]]; then
    read -r u0 s0 < <(worker_cpu)
    requests=$(taskset -c $load_core wrk -t1 -c"$conns" -d"$duration" "http://127.0.0.1:$gw_port/bench/plain" 2>&1 | awk '/requests in/ {print $1}')
    read -r u1 s1 < <(worker_cpu)
    python3 -c "
tck = $(getconf CLK_TCK); n = $requests
print(f'worker CPU per request (plain route, {n} requests): {($u1-$u0)/tck/n*1e6:.0f} µs user + {($s1-$s0)/tck/n*1e6:.0f} µs system')" | tee -a "$out"
fi

echo
if [[ -z $only ]]; then
    echo "CPU per decision, measured in-process (no sockets):"
    "$bin" microbench --config "$work/portcullis.json" --hs256 "$hs" --rs256 "$rs" \
        --body "$work/v1.json" --response-body "$work/static/2k.json" | tee -a "$out"
fi
echo
echo "fastcgi_keep_conn $keepconn, keepalive $keepalive; machine: $(nproc) cores; gateway on core $gw_core, load on core $load_core; $rounds x $duration, $conns connections; pool $workers x $threads"
echo "results: $out"
