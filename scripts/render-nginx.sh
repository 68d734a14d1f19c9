#!/usr/bin/env bash
# Renders nginx/example.conf into a runnable nginx configuration.
#
#   scripts/render-nginx.sh OUT PREFIX LISTEN SOCKET [KEEPALIVE]
#
#   OUT        file to write (portcullis.conf is copied next to it)
#   PREFIX     nginx prefix directory: pid, logs/ and temp/ go there (created)
#   LISTEN     what nginx listens on, e.g. 127.0.0.1:8080
#   SOCKET     the gateway's FastCGI unix socket (server.socket of the gateway config)
#   KEEPALIVE  idle FastCGI connections nginx keeps (default 32; an idle one costs the pool a
#              file descriptor, see nginx/portcullis.conf)
#
# Environment (optional):
#   NGINX_TEMPLATE  template to render instead of nginx/example.conf, e.g. nginx/example-mtls.conf
#   TLS_LISTEN      fills @TLS_LISTEN@ (the TLS listener of example-mtls.conf), e.g. 127.0.0.1:8443
#   UPSTREAMS_CONF  the output of `portcullis nginx-upstreams` (upstream blocks of websocket/grpc
#                   route targets, the portcullis_handoff log format), included in http { };
#                   unset: neither is included, nor the handoff.log that uses the format
#   GRPC_LISTEN     fills @GRPC_LISTEN@ (the HTTP/2 cleartext listener gRPC clients use), e.g.
#                   127.0.0.1:8081; unset: that server block is left out
#
# Then: nginx -p PREFIX -c OUT -e stderr
set -euo pipefail

if [[ $# -lt 4 || $# -gt 5 ]]; then
    echo "usage: $0 OUT PREFIX LISTEN SOCKET [KEEPALIVE]" >&2
    exit 2
fi

out=$1 prefix=$2 listen=$3 socket=$4 keepalive=${5:-32}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
template="${NGINX_TEMPLATE:-$here/../nginx/example.conf}"
tls_listen=${TLS_LISTEN:-}
upstreams_conf=${UPSTREAMS_CONF:-}
grpc_listen=${GRPC_LISTEN:-}
snippet_source="$here/../nginx/portcullis.conf"

if ! [[ $keepalive =~ ^[1-9][0-9]*$ ]]; then
    echo "$0: KEEPALIVE must be a positive integer, got '$keepalive'" >&2
    exit 2
fi
case $prefix in
    /*) ;;
    *) prefix="$PWD/$prefix" ;;
esac
case $socket in
    /*) ;;
    *) socket="$PWD/$socket" ;;
esac

mkdir -p "$(dirname "$out")" "$prefix/logs" "$prefix/temp"
out_dir=$(cd "$(dirname "$out")" && pwd)
snippet="$out_dir/portcullis.conf"
if [[ "$(realpath "$snippet_source")" != "$(realpath -m "$snippet")" ]]; then
    cp "$snippet_source" "$snippet"
fi

if [[ $(id -u) -eq 0 ]]; then
    user_directive="user root;"
else
    user_directive=""
fi

# Escapes a value for the replacement side of a sed s||| command.
escape() { printf '%s' "$1" | sed -e 's/[\\|&]/\\&/g'; }

# Optional parts: without UPSTREAMS_CONF the include and the log that uses its format go, without
# GRPC_LISTEN the gRPC server block goes.
optional=()
if [[ -z $upstreams_conf ]]; then
    optional+=(-e '/@UPSTREAMS@/d' -e '/portcullis_handoff;/d')
else
    case $upstreams_conf in /*) ;; *) upstreams_conf="$PWD/$upstreams_conf" ;; esac
fi
[[ -n $grpc_listen ]] || optional+=(-e '/# grpc-server-begin/,/# grpc-server-end/d')

sed "${optional[@]}" \
    -e "s|@USER_DIRECTIVE@|$(escape "$user_directive")|g" \
    -e "s|@PREFIX@|$(escape "$prefix")|g" \
    -e "s|@LISTEN@|$(escape "$listen")|g" \
    -e "s|@SOCKET@|$(escape "$socket")|g" \
    -e "s|@KEEPALIVE@|$(escape "$keepalive")|g" \
    -e "s|@SNIPPET@|$(escape "$snippet")|g" \
    -e "${tls_listen:+s|@TLS_LISTEN@|$(escape "$tls_listen")|g}" \
    -e "${upstreams_conf:+s|@UPSTREAMS@|$(escape "$upstreams_conf")|g}" \
    -e "${grpc_listen:+s|@GRPC_LISTEN@|$(escape "$grpc_listen")|g}" \
    "$template" >"$out.tmp"
if grep -q '@[A-Z_]*@' "$out.tmp"; then
    echo "$0: unrendered placeholder left in $out:" >&2
    grep -n '@[A-Z_]*@' "$out.tmp" >&2
    rm -f "$out.tmp"
    exit 1
fi
mv "$out.tmp" "$out"
