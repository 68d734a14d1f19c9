#!/usr/bin/env bash
# make bench: Portcullis against nginx proxy_pass, the design's C ceiling and HAProxy, in one run.
# The method is written out in docs/benchmarks.md; in short:
#
#  1. Pinned (the gateway stack on core 1; wrk, h2load, the upstreams and Redis on core 0):
#     every scenario of scripts/bench/scenarios.sh alternates ROUNDS runs of nginx proxy_pass and
#     of the gateway (wrk, DURATION, CONNS connections) and reports the median requests/s of each,
#     their ratio, and the workers' CPU µs and context switches per request (/proc, summed over the
#     gateway's rounds). The same is done for the C event-loop proxy (scripts/bench/evproxy.c, the
#     design's ceiling) and for HAProxy 2.6 doing HS256 jwt_verify + a stick-table limit.
#  2. Latency (pinned): p50/p99 at a fixed offered rate of 50% of nginx proxy_pass's measured
#     maximum (h2load --rps), for nginx, Portcullis and the C ceiling; "p99 added" = Portcullis
#     minus nginx.
#  3. Unpinned (everything free on all cores): worker RSS after 10 000 and after 1 000 000
#     route-only requests of a fresh pool, then route only, nginx and the C ceiling.
#  4. `portcullis microbench`: the CPU cost of each decision, in-process.
# Results: printed, and in run/bench/results.md (+ results.jsonl, ratios.png); --chart also writes
# docs/benchmarks-ratios.png.
#
#   scripts/bench.sh [--rounds 3] [--duration 3s] [--conns 32] [--workers 1] [--threads 1]
#                    [--keep-conn on|off] [--keepalive 32] [--only ID|NAME] [--chart]
#                    [--latency-duration 6s] [--rss-requests 1000000] [--unpinned-threads N]
#                    [--no-unpinned] [--no-rss] [--no-latency] [--no-microbench] [--metrics on|off]
#   PORTCULLIS_BIN=path/to/portcullis scripts/bench.sh ...   (default: .build/release/portcullis,
#                                                             built here when missing or stale)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
source scripts/bench/common.sh
export PATH=/opt/swift/usr/bin:$PATH
started=$SECONDS

rounds=3 duration=3s conns=32 workers=1 threads=1 keepconn=on keepalive=32 only="" chart=0 metrics=on
lat_duration=6s rss_requests=1000000 rss_warm=10000 unpinned_threads=""
do_unpinned=1 do_rss=1 do_latency=1 do_microbench=1
while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) rounds=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --conns) conns=$2; shift 2 ;;
        --workers) workers=$2; shift 2 ;;              # Portcullis worker processes
        --threads) threads=$2; shift 2 ;;              # server.threads per worker (pinned runs)
        --unpinned-threads) unpinned_threads=$2; shift 2 ;;  # default: threads x cores
        --keep-conn) keepconn=$2; shift 2 ;;           # on|off: fastcgi_keep_conn to the pool
        --keepalive) keepalive=$2; shift 2 ;;          # idle FastCGI connections nginx keeps
        --only) only=$2; shift 2 ;;                    # scenarios whose id or name contains this
        --chart) chart=1; shift ;;                     # also write docs/benchmarks-ratios.png
        --latency-duration) lat_duration=$2; shift 2 ;;
        --rss-requests) rss_requests=$2; shift 2 ;;
        --no-unpinned) do_unpinned=0; shift ;;
        --no-rss) do_rss=0; shift ;;
        --no-latency) do_latency=0; shift ;;
        --no-microbench) do_microbench=0; shift ;;
        --metrics) metrics=$2; shift 2 ;;              # on|off: metrics.enabled of the gateway config
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
[[ $keepconn == on || $keepconn == off ]] || { echo "--keep-conn on|off" >&2; exit 2; }
[[ $metrics == on || $metrics == off ]] || { echo "--metrics on|off" >&2; exit 2; }

# What the bench needs beyond `make test` (gcc, libfcgi-dev, haproxy, h2load, gnuplot): a fast
# no-op when present.
BENCH=1 scripts/install-deps.sh
if [[ -n ${PORTCULLIS_BIN:-} ]]; then
    bin=$PORTCULLIS_BIN
else
    swift build -c release >/dev/null
    bin=$here/.build/release/portcullis
fi
[[ -x $bin ]] || { echo "no gateway binary at $bin" >&2; exit 1; }

cores=$(nproc)
gw_core=1 load_core=0 all_cores="0-$((cores - 1))"
if [[ $cores -lt 2 ]]; then gw_core=0; do_unpinned=0; fi
[[ -z $unpinned_threads ]] && unpinned_threads=$((threads * cores))
tck=$(getconf CLK_TCK)

work=$here/run/bench
rm -rf "$work"; mkdir -p "$work"/static/{logs,temp}
results=$work/results.jsonl
: > "$results"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
static_port=$(port) static_port2=$(port) static_port3=$(port) echo_port=$(port) redis_port=$(port)

pids=()        # everything, killed at exit
stack_pids=()  # the current phase's gateway stack
# stop PID...: SIGTERM, then SIGKILL whatever still runs after 10 s.
running() { [[ -r /proc/$1/stat && $(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) != Z ]]; }
stop() {
    local p i
    for p in "$@"; do kill "$p" 2>/dev/null || true; done
    for p in "$@"; do
        for i in $(seq 100); do running "$p" || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
}
cleanup() { stop_stack; stop "${pids[@]}"; }
trap cleanup EXIT

# The design's ceiling: the C event-loop proxy, compiled from the repository.
gcc -O2 -Wall -o "$work/evproxy" scripts/bench/evproxy.c -lfcgi

bench_bodies "$work"

# ---- upstreams (on the load core while pinned) -------------------------------------------------
# Static upstream: answers a small JSON body, like a fast microservice.
cat > "$work/static/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $work/static/nginx.pid; error_log $work/static/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off; keepalive_requests 1000000;
  client_body_temp_path $work/static/temp/cb; proxy_temp_path $work/static/temp/p; fastcgi_temp_path $work/static/temp/f;
  uwsgi_temp_path $work/static/temp/u; scgi_temp_path $work/static/temp/s;
  server { listen 127.0.0.1:$static_port; listen 127.0.0.1:$static_port2; listen 127.0.0.1:$static_port3;
    $(bench_static_locations "$work") }
}
CONF
taskset -c $load_core nginx -p "$work/static" -c "$work/static/nginx.conf" -e stderr & pids+=($!)
# The echo upstream of the demo (Python): a slow real service.
taskset -c $load_core python3 scripts/echo_upstream.py --port "$echo_port" >/dev/null 2>&1 & pids+=($!)
echo_pid=$!
taskset -c $load_core redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null & pids+=($!)
upstream_pids=("${pids[@]}")

# ---- one gateway stack: Portcullis pool, C ceiling, HAProxy, and the front nginx ---------------
# start_stack PHASE CPUS WORKERS THREADS NGINX_WORKERS LOOPS
start_stack() {
    local phase=$1 cpus=$2 nworkers=$3 nthreads=$4 nginx_workers=$5 loops=$6
    local dir=$work/$phase
    mkdir -p "$dir"/front/{logs,temp}
    sed -e "s#@STATIC@#http://127.0.0.1:$static_port#" -e "s#@STATIC2@#http://127.0.0.1:$static_port2#" -e "s#@STATIC3@#http://127.0.0.1:$static_port3#" -e "s#@ECHO@#http://127.0.0.1:$echo_port#" \
        -e "s#@WORK@#$dir#g" -e "s#@REDIS_PORT@#$redis_port#" -e "s#@WORKERS@#$nworkers#" -e "s#@THREADS@#$nthreads#" \
        -e "s#@METRICS@#$([[ $metrics == on ]] && echo true || echo false)#" \
        scripts/bench/config.json.in > "$dir/portcullis.json"
    bench_files "$dir"
    taskset -c "$cpus" "$bin" serve --config "$dir/portcullis.json" 2>"$dir/gateway.log" & stack_pids+=($!)
    taskset -c "$cpus" "$work/evproxy" "$dir/evproxy.sock" "$static_port" "$loops" 2>"$dir/evproxy.log" & stack_pids+=($!)
    evproxy_pid=$!
    sed -e "s#@PORT@#$hap_port#" -e "s#@STATIC_PORT@#$static_port#" -e "s#@THREADS@#$loops#" \
        -e "s#@HS256_SECRET@#demo-hs256-secret-change-me-0123456789#" scripts/bench/haproxy.cfg.in > "$dir/haproxy.cfg"
    taskset -c "$cpus" haproxy -f "$dir/haproxy.cfg" 2>"$dir/haproxy.log" & stack_pids+=($!)
    haproxy_pid=$!

    # The shipped snippet, with the connection model under test (docs/nginx.md).
    sed -E "s/fastcgi_keep_conn (on|off);/fastcgi_keep_conn $keepconn;/" nginx/portcullis.conf > "$dir/portcullis.conf"
    sed -e 's/fastcgi_pass portcullis;/fastcgi_pass evproxy;/' "$dir/portcullis.conf" > "$dir/evproxy.conf"
    local pool_keepalive=""
    [[ $keepconn == on ]] && pool_keepalive="keepalive $keepalive; keepalive_requests 1000000;"
    local user_directive=""
    [[ $(id -u) -eq 0 ]] && user_directive="user root;"  # so nginx's worker can reach the 0660 socket
    cat > "$dir/front/nginx.conf" <<CONF
$user_directive
worker_processes $nginx_workers; daemon off; pid $dir/front/nginx.pid; error_log $dir/front/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off; keepalive_requests 1000000; variables_hash_max_size 2048;
  client_body_temp_path $dir/front/temp/cb; proxy_temp_path $dir/front/temp/p; fastcgi_temp_path $dir/front/temp/f;
  uwsgi_temp_path $dir/front/temp/u; scgi_temp_path $dir/front/temp/s;
  upstream portcullis { server unix:$dir/portcullis.sock; $pool_keepalive }
  upstream evproxy { server unix:$dir/evproxy.sock; $pool_keepalive }
  upstream static { server 127.0.0.1:$static_port; keepalive 32; keepalive_requests 1000000; }
  upstream echo { server 127.0.0.1:$echo_port; keepalive 32; }
  server { listen 127.0.0.1:$gw_port; include $dir/portcullis.conf; }
  server { listen 127.0.0.1:$ceiling_port; include $dir/evproxy.conf; }
  server { listen 127.0.0.1:$proxy_port;
    location / { proxy_pass http://static; proxy_http_version 1.1; proxy_set_header Connection ""; }
    location /echo/ { proxy_pass http://echo; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
CONF
    for _ in $(seq 100); do [[ -S $dir/portcullis.sock && -S $dir/evproxy.sock ]] && break; sleep 0.1; done
    taskset -c "$cpus" nginx -p "$dir/front" -c "$dir/front/nginx.conf" -e stderr & stack_pids+=($!)
    local url
    for url in "$gw_port/bench/plain" "$ceiling_port/bench/plain" "$proxy_port/bench/plain"; do
        local ok=0
        for _ in $(seq 100); do curl -fs --max-time 5 "http://127.0.0.1:$url" >/dev/null 2>&1 && { ok=1; break; }; sleep 0.1; done
        (( ok )) || { echo "127.0.0.1:$url does not answer; see $dir/*.log and $dir/front/logs/error.log" >&2; exit 1; }
    done
    curl -fs --max-time 5 "http://127.0.0.1:$hap_port/bench/plain" -H "Authorization: Bearer $hs" >/dev/null ||
        { echo "haproxy does not answer; see $dir/haproxy.log" >&2; exit 1; }
    stack_dir=$dir
}
stop_stack() {
    local workers p
    workers=$(worker_pids 2>/dev/null || true)
    stop "${stack_pids[@]}"
    for p in $workers; do kill -9 "$p" 2>/dev/null || true; done  # if the master had to be killed
    stack_pids=()
}

# ---- measuring ----------------------------------------------------------------------------------
# wrk_run CPUS THREADS URL [header... | @POST2K] -> "requests/s requests"
wrk_run() {
    local cpus=$1 wthreads=$2 url=$3; shift 3
    local args=() h
    for h in "$@"; do
        if [[ $h == "@POST2K" ]]; then args+=(-s "$work/post2k.lua"); elif [[ -n $h ]]; then args+=(-H "$h"); fi
    done
    taskset -c "$cpus" wrk -t"$wthreads" -c"$conns" -d"$duration" "${args[@]}" "$url" 2>&1 |
        awk -v url="$url" '/requests in/ {n=$1} /Requests\/sec/ {r=$2}
             /Non-2xx|Socket errors/ {print "warning: " url ": " $0 > "/dev/stderr"}
             END {print (r == "" ? 0 : r), (n == "" ? 0 : n)}'
}
# The gateway's worker processes, from the master's state file.
worker_pids() {
    python3 -c 'import json,sys; print(" ".join(str(w["pid"]) for w in json.load(open(sys.argv[1]))["workers"]))' "$stack_dir/state.json"
}
# proc_sample PID... -> "cpu_ticks context_switches": utime+stime of each process (all its threads)
# from /proc/PID/stat, and voluntary+nonvoluntary switches of every thread from /proc/PID/task/*/status.
proc_sample() {
    local ticks=0 ctx=0 p
    for p in "$@"; do
        [[ -r /proc/$p/stat ]] || continue
        ticks=$((ticks + $(sed 's/^.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')))
        ctx=$((ctx + $(cat /proc/"$p"/task/*/status 2>/dev/null | awk '/^(non)?voluntary_ctxt_switches/ {s += $2} END {print s + 0}')))
    done
    echo "$ticks $ctx"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
fmt() { awk -v v="$1" -v d="${2:-0}" 'BEGIN {if (v == "" || v == "null") print "null"; else printf "%.*f\n", d, v}'; }

# measure PHASE ID NAME KIND PATH HEADERS: ROUNDS alternating runs of nginx proxy_pass and of the
# system under test (KIND: portcullis | ceiling | haproxy), one JSON line into results.jsonl.
measure() {
    local phase=$1 id=$2 name=$3 kind=$4 path=$5 headers=$6
    local cpus=$load_core wthreads=1
    [[ $phase == unpinned ]] && { cpus=$all_cores; wthreads=$cores; }
    local hdrs=()
    IFS=';' read -r -a hdrs <<<"$headers"
    hdrs+=("")
    local url
    case $kind in
        portcullis) url=http://127.0.0.1:$gw_port$path ;;
        ceiling) url=http://127.0.0.1:$ceiling_port$path ;;
        haproxy) url=http://127.0.0.1:$hap_port$path ;;
    esac
    local p=() g=() ticks=0 ctx=0 served=0 stable=1 r
    # The echo row's upstream is the slow part: its CPU per request behind each proxy tells what
    # the proxy's request costs the service (the forwarded fields it parses and echoes).
    local up_ticks_n=0 up_n=0 up_ticks_g=0 u0 u1 nn
    for r in $(seq "$rounds"); do
        read -r u0 _ < <(proc_sample "$echo_pid")
        read -r rps nn < <(wrk_run "$cpus" "$wthreads" "http://127.0.0.1:$proxy_port$path" "${hdrs[@]}")
        read -r u1 _ < <(proc_sample "$echo_pid")
        up_ticks_n=$((up_ticks_n + u1 - u0)) up_n=$((up_n + nn))
        p+=("$rps")
        local who
        case $kind in
            portcullis) who=$(worker_pids) ;;
            ceiling) who="$evproxy_pid $(pgrep -P "$evproxy_pid" | tr '\n' ' ' || true)" ;;
            haproxy) who=$haproxy_pid ;;
        esac
        local t0 c0 t1 c1 n
        read -r t0 c0 < <(proc_sample $who)
        read -r u0 _ < <(proc_sample "$echo_pid")
        read -r rps n < <(wrk_run "$cpus" "$wthreads" "$url" "${hdrs[@]}")
        read -r u1 _ < <(proc_sample "$echo_pid")
        read -r t1 c1 < <(proc_sample $who)
        up_ticks_g=$((up_ticks_g + u1 - u0))
        [[ $kind == portcullis && $(worker_pids) != "$who" ]] && stable=0  # a worker was replaced
        g+=("$rps")
        ticks=$((ticks + t1 - t0)) ctx=$((ctx + c1 - c0)) served=$((served + n))
    done
    local pm gm ratio cpu_us ctx_req
    pm=$(printf '%s\n' "${p[@]}" | median) gm=$(printf '%s\n' "${g[@]}" | median)
    ratio=$(awk -v g="$gm" -v p="$pm" 'BEGIN {printf "%.3f", (p > 0 ? g / p : 0)}')
    cpu_us=null ctx_req=null
    if (( served > 0 && stable )); then
        cpu_us=$(awk -v t="$ticks" -v k="$tck" -v n="$served" 'BEGIN {printf "%.1f", t / k / n * 1e6}')
        ctx_req=$(awk -v c="$ctx" -v n="$served" 'BEGIN {printf "%.2f", c / n}')
    fi
    local upstream=""
    if [[ $path == /echo/* ]] && (( up_n > 0 && served > 0 )); then
        upstream=$(awk -v a="$up_ticks_n" -v na="$up_n" -v b="$up_ticks_g" -v nb="$served" -v k="$tck" \
            'BEGIN {printf ",\"upstream_cpu_us_nginx\":%.1f,\"upstream_cpu_us\":%.1f", a / k / na * 1e6, b / k / nb * 1e6}')
    fi
    printf '{"kind":"throughput","phase":"%s","id":"%s","name":"%s","system":"%s","nginx_rps":%s,"rps":%s,"ratio":%s,"cpu_us":%s,"ctx":%s,"requests":%s%s}\n' \
        "$phase" "$id" "$name" "$kind" "$(fmt "$pm")" "$(fmt "$gm")" "$ratio" "$cpu_us" "$ctx_req" "$served" "$upstream" >> "$results"
    printf '  %-9s %-48s nginx %8s req/s  %-10s %8s req/s  ratio %s  CPU %s µs/req  ctx %s/req\n' \
        "$phase" "$name" "$(fmt "$pm")" "$kind" "$(fmt "$gm")" "$ratio" "$cpu_us" "$ctx_req"
}

# latency LEVEL NAME URL RATE: p50/p99 at a fixed offered rate (h2load --rps per connection;
# HTTP/1.1, one request in flight per connection), from h2load's per-request log. LEVEL names the
# rate: nginx50 (50% of nginx's maximum) or gateway50 (50% of route only's maximum).
latency() {
    local level=$1 name=$2 url=$3 rate=$4
    local per_conn=$(( (rate + conns - 1) / conns ))
    local log=$work/latency-$level-${name// /_}.log
    taskset -c $load_core h2load --h1 -t1 -c"$conns" --rps="$per_conn" -D "$lat_duration" --warm-up-time=1s \
        --log-file="$log" "$url" >"$log.out" 2>&1 || true
    python3 - "$log" "$name" "$((per_conn * conns))" "${lat_duration%s}" "$results" "$level" <<'PY'
import json, sys
path, name, offered, seconds, results, level = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5], sys.argv[6]
lat, failed = [], 0
for line in open(path):
    f = line.split("\t")
    if len(f) < 3: continue
    if f[1].strip() != "200": failed += 1; continue
    lat.append(int(f[2]))
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] / 1000.0 if lat else None
r = {"kind": "latency", "level": level, "name": name, "offered_rps": offered, "achieved_rps": round(len(lat) / seconds),
     "p50_ms": q(0.50), "p99_ms": q(0.99), "failed": failed}
open(results, "a").write(json.dumps(r) + "\n")
print(f"  latency   {name:<48} offered {offered} req/s, answered {r['achieved_rps']}: "
      f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, failed {failed}")
PY
}

wants() { [[ -z $only || $1 == *"$only"* || $2 == *"$only"* ]]; }

gw_port=$(port) proxy_port=$(port) ceiling_port=$(port) hap_port=$(port)
source scripts/bench/scenarios.sh   # sets scenarios=() and the tokens $hs, $rs

echo "bench: $cores cores; pinned: gateway stack on core $gw_core, load on core $load_core; pool $workers x $threads; fastcgi_keep_conn $keepconn (keepalive $keepalive); $rounds x $duration, $conns connections"

# ---- 1. pinned ---------------------------------------------------------------------------------
start_stack pinned "$gw_core" "$workers" "$threads" 1 1
echo "pinned: gateway stack on core $gw_core"
for s in "${scenarios[@]}"; do
    IFS='|' read -r id name path headers <<<"$s"
    wants "$id" "$name" || continue
    measure pinned "$id" "$name" portcullis "$path" "$headers"
done
if wants ceiling "C event-loop proxy (the design's ceiling)"; then
    measure pinned ceiling "C event-loop proxy (the design's ceiling)" ceiling /bench/plain ""
fi
if wants haproxy "HAProxy 2.6: HS256 jwt_verify + stick-table limit"; then
    measure pinned haproxy "HAProxy 2.6: HS256 jwt_verify + stick-table limit" haproxy /bench/jwt "Authorization: Bearer $hs"
fi

# ---- 2. latency at 50% of nginx's maximum (pinned) ----------------------------------------------
if (( do_latency )); then
    nginx_max=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    if r["kind"] == "throughput" and r["id"] == "plain" and r["phase"] == "pinned": print(int(r["nginx_rps"]))' "$results")
    if [[ -z $nginx_max ]]; then  # route only was not measured (--only): one nginx run
        read -r nginx_max _ < <(wrk_run "$load_core" 1 "http://127.0.0.1:$proxy_port/bench/plain")
        nginx_max=${nginx_max%.*}
    fi
    rate=$((nginx_max / 2))
    echo "latency: h2load at 50% of nginx proxy_pass's maximum ($nginx_max req/s) = $rate req/s, $lat_duration each"
    latency nginx50 "nginx proxy_pass" "http://127.0.0.1:$proxy_port/bench/plain" "$rate"
    wants plain "route only" && latency nginx50 "route only" "http://127.0.0.1:$gw_port/bench/plain" "$rate"
    wants ceiling "C event-loop proxy (the design's ceiling)" &&
        latency nginx50 "C event-loop proxy (the design's ceiling)" "http://127.0.0.1:$ceiling_port/bench/plain" "$rate"
    # The same at half of what the gateway itself sustains: the latency it adds when not
    # saturated, which the rate above cannot show once the gateway's maximum is below it.
    gw_max=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    if r["kind"] == "throughput" and r["id"] == "plain" and r["phase"] == "pinned": print(int(r["rps"]))' "$results")
    if [[ -n $gw_max ]]; then
        rate=$((gw_max / 2))
        echo "latency: h2load at 50% of route only's maximum ($gw_max req/s) = $rate req/s, $lat_duration each"
        latency gateway50 "nginx proxy_pass" "http://127.0.0.1:$proxy_port/bench/plain" "$rate"
        latency gateway50 "route only" "http://127.0.0.1:$gw_port/bench/plain" "$rate"
    fi
fi

# ---- 4. in-process CPU per decision (same config, keys and rule files) ---------------------------
if (( do_microbench )) && [[ -z $only ]]; then
    taskset -c "$gw_core" "$bin" microbench --config "$stack_dir/portcullis.json" --hs256 "$hs" --rs256 "$rs" \
        --body "$work/v1.json" --response-body "$work/static/2k.json" > "$work/microbench.txt" 2>&1 ||
        echo "warning: microbench failed (see $work/microbench.txt)" >&2
fi
stop_stack

# ---- 3. unpinned: RSS, route only, nginx, C ceiling --------------------------------------------
if (( do_unpinned )); then
    # The upstreams (and nginx's worker, a child of its master) may now use every core too.
    for p in "${upstream_pids[@]}" $(for q in "${upstream_pids[@]}"; do pgrep -P "$q"; done); do
        taskset -a -p -c "$all_cores" "$p" >/dev/null 2>&1 || true
    done
    start_stack unpinned "$all_cores" "$workers" "$unpinned_threads" "$cores" "$cores"
    echo "unpinned: everything on cores $all_cores; pool $workers x $unpinned_threads, front nginx $cores workers, C ceiling $cores loops"
    if (( do_rss )) && wants plain "route only"; then
        rss() {  # sum of VmRSS (kB) over the workers
            local t=0 p
            for p in $(worker_pids); do
                v=$(awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
                t=$((t + ${v:-0}))
            done
            echo "$t"
        }
        h2() {  # a fixed number of route-only requests through the gateway
            timeout 600 h2load --h1 -t"$cores" -c"$conns" -n"$1" "http://127.0.0.1:$gw_port/bench/plain" > "$work/rss-$1.out" 2>&1 || true
            awk '/^requests:/ {print $8 + 0}' "$work/rss-$1.out"  # succeeded
        }
        before=$(worker_pids)
        ok1=$(h2 "$rss_warm"); rss1=$(rss)
        ok2=$(h2 "$((rss_requests - rss_warm))"); rss2=$(rss)
        same=true; [[ $(worker_pids) == "$before" ]] || same=false
        printf '{"kind":"rss","requests_1":%s,"rss_kb_1":%s,"requests_2":%s,"rss_kb_2":%s,"ok":%s,"same_workers":%s}\n' \
            "$rss_warm" "$rss1" "$rss_requests" "$rss2" "$((ok1 + ok2))" "$same" >> "$results"
        echo "  rss       workers' RSS after $rss_warm requests: $rss1 kB; after $rss_requests: $rss2 kB ($((ok1 + ok2)) succeeded, same workers: $same)"
    fi
    if wants plain "route only"; then
        measure unpinned plain "route only" portcullis /bench/plain ""
    fi
    if wants ceiling "C event-loop proxy (the design's ceiling)"; then
        measure unpinned ceiling "C event-loop proxy (the design's ceiling)" ceiling /bench/plain ""
    fi
    stop_stack
fi

# ---- report -------------------------------------------------------------------------------------
elapsed=$((SECONDS - started))
settings="$(date -u +%F), $cores cores ($(uname -r)); pool $workers x $threads pinned, $workers x $unpinned_threads unpinned; fastcgi_keep_conn $keepconn, keepalive $keepalive; $rounds x $duration, $conns connections; gateway ${PORTCULLIS_BIN:-.build/release/portcullis of $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo '?')}; bench took ${elapsed}s"
chart_out=$work/ratios.png
python3 scripts/bench/report.py "$results" "$work/microbench.txt" "$settings" "$work/results.md" "$chart_out"
if (( chart )); then
    cp "$chart_out" docs/benchmarks-ratios.png && echo "chart: docs/benchmarks-ratios.png"
fi
echo
echo "results: $work/results.md (raw: $results; chart: $chart_out)"
