#!/usr/bin/env bash
# Instructions per request of one worker, counted by valgrind's callgrind: a figure that does
# not depend on machine noise, for deciding an optimisation on a shared machine.
#
#   scripts/bench/instructions.sh [--seconds 5] [--header 'X-API-Key: demo-key-change-me'] [--redis | --limit] [--metrics on|off]
#   scripts/bench/instructions.sh [--seconds 5] --jwt | --rs256 | --post | --three [--metrics on|off]
#   scripts/bench/instructions.sh [--seconds 5] --scenario ID [--metrics on|off]
#   PORTCULLIS_BIN=path/to/portcullis scripts/bench/instructions.sh ...
#
# A static nginx upstream, the gateway (1 worker x 1 loop, its master and worker under callgrind)
# and a front nginx with the shipped snippet (keep-conn on). After a 10 s warm-up the worker's
# counters are zeroed, wrk sends requests for --seconds, the counters are dumped, and the total
# is divided by the requests the access log recorded. With --header, the route requires an API
# key (the demo key). With --limit, the route has one limit in the shared-memory table (never
# reached: one table update per request). With --redis, the route has one limit in Redis (a private redis-server,
# a limit never reached: every request is one EVALSHA). With --metrics off, the gateway runs
# with `metrics.enabled: false` (the cost of metrics is the difference to the default, on).
# --jwt and --post measure a scenario of scripts/bench.sh instead of route only, configured from
# the same pieces (scripts/bench/common.sh): --jwt the bench's route `jwt` (an HS256 JWT, the
# bench's issuer, token cache on) with one valid token on every request, --rs256 the same route
# with the bench's RS256 token (the demo JWKS key); --post its route
# `transform` (the request and response transform plugins), wrk POSTing the bench's 2 KB v1 body
# and the upstream answering its 2 KB JSON document; --three its route `plain3` (upstream
# `static3`: three targets, round robin, active health checks), the static nginx listening on
# three ports. --scenario ID measures the row ID of scripts/bench/scenarios.sh (apikey, limit-shm,
# jwt-hs, jwt-hs-limit, jwt-rs, limit-redis, transform, three, plain; not echo) exactly as scripts/bench.sh
# sends it: its path and headers, the bench config's route for that path, its consumers and JWT
# issuer, and for limit-redis its Redis settings (a private redis-server; the timeout raised to
# 1000 ms for valgrind's pace).
# Prints the figure and writes the top functions (inclusive) to run/instructions/top.txt.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$here"
source scripts/bench/common.sh

seconds=5 header="" redis=0 shm_limit=0 metrics=on scenario=plain token=hs256
while [[ $# -gt 0 ]]; do
    case $1 in
        --seconds) seconds=$2; shift 2 ;;
        --header) header=$2; shift 2 ;;
        --redis) redis=1; shift ;;
        --limit) shm_limit=1; shift ;;
        --metrics) metrics=$2; shift 2 ;;
        --jwt) scenario=jwt; shift ;;
        --rs256) scenario=jwt token=rs256; shift ;;
        --post) scenario=transform; shift ;;
        --three) scenario=plain3; shift ;;
        --scenario) scenario=row; row_id=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
[[ $metrics == on || $metrics == off ]] || { echo "--metrics takes on or off" >&2; exit 2; }
[[ $scenario == plain || ( -z $header && $redis == 0 && $shm_limit == 0 ) ]] ||
    { echo "--jwt, --rs256, --post, --three and --scenario take no --header, --limit or --redis" >&2; exit 2; }
for tool in valgrind callgrind_control callgrind_annotate wrk nginx; do
    command -v "$tool" >/dev/null || { echo "instructions: $tool is missing (apt-get install valgrind wrk nginx-light)" >&2; exit 1; }
done
bin=${PORTCULLIS_BIN:-$here/.build/release/portcullis}
[[ -x $bin ]] || { echo "instructions: $bin is missing: swift build -c release" >&2; exit 1; }

work=$here/run/instructions
rm -rf "$work"; mkdir -p "$work"/{static,front}/{logs,temp} "$work/run"
bench_bodies "$work"
bench_files "$work"
# valgrind 3.19 cannot read the DWARF of Swift release binaries; symbols are enough here.
strip --strip-debug -o "$work/portcullis" "$bin"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
static_port=$(port) static_port2=$(port) static_port3=$(port) gw_port=$(port)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

cat > "$work/static/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $work/static/nginx.pid; error_log $work/static/logs/error.log warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  client_body_temp_path $work/static/temp/cb; proxy_temp_path $work/static/temp/p; fastcgi_temp_path $work/static/temp/f;
  uwsgi_temp_path $work/static/temp/u; scgi_temp_path $work/static/temp/s;
  server { listen 127.0.0.1:$static_port; listen 127.0.0.1:$static_port2; listen 127.0.0.1:$static_port3;
    $(bench_static_locations "$work") } }
CONF
nginx -p "$work/static" -c "$work/static/nginx.conf" -e stderr & pids+=($!)

auth=""
[[ -n $header ]] && auth=', "auth": {"methods": ["api_key"]}'
rate_limit="" limits=""
if (( redis )); then
    redis_port=$(port)
    redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" >"$work/redis.log" 2>&1 & pids+=($!)
    rate_limit='"rate_limit": {"redis": {"host": "127.0.0.1", "port": '$redis_port', "timeout_ms": 1000}},'
    limits=', "limits": [{"name": "r", "algorithm": "fixed_window", "limit": 4294967295, "window_seconds": 3600, "key": ["route"], "store": "redis", "on_store_failure": "closed"}]'
elif (( shm_limit )); then
    limits=', "limits": [{"name": "l", "algorithm": "fixed_window", "limit": 4294967295, "window_seconds": 3600, "key": ["route"]}]'
fi
sections=""
[[ $metrics == off ]] && sections='"metrics": {"enabled": false},'
route='{"name": "plain", "match": {"prefix": "/bench/plain"}, "upstream": "static"'$auth$limits'}' path=/bench/plain
wrk_args=(-t1 -c8)
case $scenario in
    jwt) route=$(bench_config_part route jwt) path=/bench/jwt
         sections+=' "auth": '$(bench_config_part auth)','
         wrk_args+=(-H "Authorization: Bearer $(bench_token "$token")") ;;
    plain3) route=$(bench_config_part route plain3) path=/bench/three-targets ;;
    transform) route=$(bench_config_part route transform) path=/bench/transform
         sections+=' "plugins_dir": "plugins",'
         wrk_args+=(-s "$work/post2k.lua") ;;
    row) source scripts/bench/scenarios.sh
         line=""
         for s in "${scenarios[@]}"; do [[ ${s%%|*} == "$row_id" ]] && line=$s; done
         [[ -n $line ]] || { echo "instructions: no scenario $row_id in scripts/bench/scenarios.sh" >&2; exit 2; }
         IFS='|' read -r _ _ path row_headers <<<"$line"
         route=$(bench_config_part route-for "$path")
         sections+=' "auth": '$(bench_config_part auth)', "plugins_dir": "plugins",'
         if [[ $route == *'"redis"'* ]]; then
             redis_port=$(port)
             redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" >"$work/redis.log" 2>&1 & pids+=($!)
             rate_limit='"rate_limit": '$(bench_config_part rate_limit | python3 -c 'import json, sys
r = json.load(sys.stdin)
r["redis"].update(port=int(sys.argv[1]), timeout_ms=1000)
print(json.dumps(r))' "$redis_port")','
         fi
         IFS=';' read -r -a row_headers <<<"$row_headers"
         for h in "${row_headers[@]}"; do
             if [[ $h == @POST2K ]]; then wrk_args+=(-s "$work/post2k.lua"); elif [[ -n $h ]]; then wrk_args+=(-H "$h"); fi
         done ;;
esac
consumers='[{"id": "demo", "api_keys": [{"id": "demo-key", "sha256": "090d1548c9d65f413a1a2c828a0bee3a7ae02d2137caf51e6029e6c3cb1f1fa4"}]}]'
[[ $scenario == row ]] && consumers=$(bench_config_part consumers)
cat > "$work/portcullis.json" <<CONF
{$rate_limit $sections "server": {"socket": "$work/pc.sock", "runtime_dir": "$work/run", "workers": 1, "threads": 1},
 "log": {"access_log": "$work/access.log"},
 "upstreams": {"static": {"targets": ["http://127.0.0.1:$static_port"]},
   "static3": $(bench_config_part upstreams | python3 -c 'import json, sys
u = json.load(sys.stdin)["static3"]
u["targets"] = [f"http://127.0.0.1:{p}" for p in sys.argv[1:]]
print(json.dumps(u))' "$static_port" "$static_port2" "$static_port3")},
 "consumers": $consumers,
 "routes": [$route]}
CONF
valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$work/callgrind.%p" \
    "$work/portcullis" serve --config "$work/portcullis.json" 2> "$work/portcullis.err" & pids+=($!)
scripts/render-nginx.sh "$work/front/nginx.conf" "$work/front" "127.0.0.1:$gw_port" "$work/pc.sock" 32 >/dev/null
for _ in $(seq 1 120); do [[ -S $work/pc.sock && -s $work/run/state.json ]] && break; sleep 0.5; done
nginx -p "$work/front" -c "$work/front/nginx.conf" -e stderr 2> "$work/front.err" & pids+=($!)
sleep 1

url=http://127.0.0.1:$gw_port$path
[[ -n $header ]] && wrk_args+=(-H "$header")
# The worker loads its configuration slowly under valgrind: the warm-up starts once it answers
# (a GET with the same headers), so that the load never falls into the counted window.
curl_args=()
for ((i = 0; i < ${#wrk_args[@]}; i++)); do [[ ${wrk_args[i]} == -H ]] && curl_args+=(-H "${wrk_args[i + 1]}"); done
for _ in $(seq 1 120); do curl -fs -o /dev/null --max-time 10 "${curl_args[@]}" "$url" && break; sleep 1; done
wrk "${wrk_args[@]}" -d10s "$url" >/dev/null
worker=$(python3 -c "import json; print(json.load(open('$work/run/state.json'))['workers'][0]['pid'])")
callgrind_control -z "$worker" >/dev/null 2>&1
: > "$work/access.log"
wrk "${wrk_args[@]}" -d"${seconds}s" "$url" | grep -E "requests in|Non-2xx" || true
sleep 2
callgrind_control -d "$worker" >/dev/null 2>&1
sleep 1
requests=$(wc -l < "$work/access.log")
dumps=("$work"/callgrind."$worker".*)
dump=${dumps[0]}
total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
callgrind_annotate --inclusive=yes "$dump" 2>/dev/null > "$work/top.txt" || true
echo "requests logged: $requests"
echo "instructions per request: $((total / requests))"
echo "top functions (inclusive): $work/top.txt"
