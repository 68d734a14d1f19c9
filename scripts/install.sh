#!/usr/bin/env bash
# `make install`: installs Portcullis under PREFIX (docs/operations.md, "Install").
#
#   scripts/install.sh PREFIX BINARY
#
#   PREFIX/bin/portcullis                          the binary
#   PREFIX/etc/portcullis/portcullis.json          example config (the demo's, paths made absolute
#                                                  for this layout; kept if it already exists)
#   PREFIX/etc/portcullis/plugins/                 example transformation rules
#   PREFIX/share/portcullis/nginx/portcullis.conf  the drop-in nginx snippet (and example.conf)
#   PREFIX/lib/systemd/system/portcullis.service   the systemd unit
#   PREFIX/etc/logrotate.d/portcullis              logrotate with the USR1 postrotate
#   PREFIX/var/run/portcullis/                     runtime directory (socket, pid, state)
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 PREFIX BINARY" >&2
    exit 2
fi
prefix=$1 binary=$2
case $prefix in /*) ;; *) prefix="$PWD/$prefix" ;; esac
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ -x $binary ]] || { echo "install: $binary is not an executable (build it first)" >&2; exit 1; }

etc="$prefix/etc/portcullis"
share="$prefix/share/portcullis"
run="$prefix/var/run/portcullis"
config="$etc/portcullis.json"

install -d "$prefix/bin" "$etc/plugins" "$share/nginx" "$prefix/lib/systemd/system" "$prefix/etc/logrotate.d" "$run"
install -m 0755 "$binary" "$prefix/bin/portcullis"
install -m 0644 "$root/nginx/portcullis.conf" "$root/nginx/example.conf" "$share/nginx/"
install -m 0644 "$root"/plugins/*.json "$etc/plugins/"
install -m 0644 "$root/config/demo-jwks.json" "$etc/"
if [[ ! -e $config ]]; then
    sed -e "s|\"\\.\\./run/portcullis.sock\"|\"$run/portcullis.sock\"|" \
        -e "s|\"runtime_dir\": \"\\.\\./run\"|\"runtime_dir\": \"$run\"|" \
        -e "s|\"plugins_dir\": \"\\.\\./plugins\"|\"plugins_dir\": \"plugins\"|" \
        "$root/config/portcullis.json" > "$config"
    chmod 0640 "$config"
fi
sed -e "s|@PREFIX@|$prefix|g" -e "s|@CONFIG@|$config|g" "$root/dist/systemd/portcullis.service.in" \
    > "$prefix/lib/systemd/system/portcullis.service"
sed -e "s|@RUNTIME_DIR@|$run|g" "$root/dist/logrotate/portcullis" > "$prefix/etc/logrotate.d/portcullis"

"$prefix/bin/portcullis" check --config "$config" >/dev/null
echo "installed portcullis under $prefix (config $config)"
