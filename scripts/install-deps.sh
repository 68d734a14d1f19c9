#!/usr/bin/env bash
# Installs the system packages and Python test modules Portcullis needs, when missing.
# As root: apt-get (Debian/Ubuntu) and, for a Python that is not the system one, pip.
# Otherwise: prints what to install and fails. A fast no-op when everything is present.
# BENCH=1 (make bench) adds what only the benchmark needs; `make test` and CI never install it.
set -euo pipefail

# redis-server also runs the tests' sentinels (`redis-server --sentinel`: no redis-sentinel
# package needed); redis-tools has the redis-cli they use; stunnel4 is the TLS tunnel to Redis
# that docs/rate-limiting.md recommends (hiredis 0.14 has no TLS), tested.
apt_packages=(
    libfcgi-dev libjansson-dev libcurl4-openssl-dev libhiredis-dev libhttp-parser-dev libmimalloc-dev
    nginx-light redis-server redis-tools stunnel4 wrk pkg-config openssl
    # haproxy: the load balancer of the two-instance deployment test (docs/upstreams.md)
    haproxy
    python3 python3-pytest python3-requests python3-cryptography
    python3-prometheus-client chromium
    # grpcio: the gRPC example service (scripts/grpc_echo.py) and the tests' gRPC client
    python3-grpcio
    # systemd-analyze verifies the shipped unit file (test_install.py)
    systemd
)
# prometheus_client parses the metrics text in the tests; chromium renders the status page.
# Each entry is an import name, or import:pip-name when they differ.
python_modules=(pytest requests cryptography prometheus_client grpc:grpcio)
# scripts/bench.sh only: the C ceiling is compiled with gcc against libfcgi; haproxy (also a test
# dependency above) is the peer gateway; h2load (nghttp2-client) is the rate-limited load generator; gnuplot draws the chart;
# valgrind counts instructions per request (scripts/bench/instructions.sh).
bench_apt_packages=(gcc libc6-dev libfcgi-dev haproxy nghttp2-client gnuplot-nox valgrind)
if [[ ${BENCH:-0} == 1 ]]; then
    apt_packages+=("${bench_apt_packages[@]}")
fi
python=${PYTHON:-python3}

# True when the package (or, for nginx, any nginx flavour) is installed.
installed() {
    case $1 in
        nginx-light) command -v nginx >/dev/null 2>&1 && return 0 ;;
        gnuplot-nox) command -v gnuplot >/dev/null 2>&1 && return 0 ;;
    esac
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

# Stops Debian's maintainer scripts from starting system nginx/redis services while installing:
# the project always runs its own instances on its own ports.
with_services_blocked() {
    local policy=/usr/sbin/policy-rc.d created=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
        created=1
    fi
    local status=0
    "$@" || status=$?
    if (( created )); then rm -f "$policy"; fi
    return $status
}

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
    for pkg in "${apt_packages[@]}"; do
        installed "$pkg" || missing+=("$pkg")
    done
fi

if (( ${#missing[@]} )); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "install-deps: apt-get install ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        with_services_blocked apt-get update -qq
        with_services_blocked apt-get install -y -qq --no-install-recommends "${missing[@]}"
    else
        echo "install-deps: missing system packages: ${missing[*]}" >&2
        echo "install-deps: run as root: apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi

# The Python that runs the integration tests may not be the system one (pyenv, venv).
missing_modules=()
for entry in "${python_modules[@]}"; do
    module=${entry%%:*}
    "$python" -c "import $module" >/dev/null 2>&1 || missing_modules+=("${entry#*:}")
done
if (( ${#missing_modules[@]} )); then
    echo "install-deps: pip install ${missing_modules[*]} (for $(command -v "$python"))"
    "$python" -m pip install --quiet "${missing_modules[@]}" ||
        "$python" -m pip install --quiet --break-system-packages "${missing_modules[@]}" || {
        echo "install-deps: could not install ${missing_modules[*]} for $python" >&2
        exit 1
    }
fi

if ! command -v swift >/dev/null 2>&1; then
    echo "install-deps: swift is not on PATH (expected at /opt/swift/usr/bin)" >&2
    exit 1
fi
