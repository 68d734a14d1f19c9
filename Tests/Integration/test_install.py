"""Issue 11, item 8: `make install` into a temporary prefix, then the demo served through a
second nginx configured only from the installed files, following docs/operations.md
("Add Portcullis to the nginx you already run"), with `serve --daemon --pid-file`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
from pathlib import Path

import requests

from harness import REPO_ROOT, EchoUpstream, ManagedProcess, assert_problem, free_port, wait_until

DEMO_KEY = "demo-key-change-me"


def test_make_install_serves_the_demo_through_its_own_nginx(portcullis_bin: Path, echo_upstream: EchoUpstream,
                                                             test_root: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="install-", dir=test_root))
    prefix = work / "prefix"
    make = subprocess.run(["make", "-s", "install", f"PREFIX={prefix}", f"BIN={portcullis_bin}"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert make.returncode == 0, make.stdout + make.stderr
    binary = prefix / "bin/portcullis"
    config_path = prefix / "etc/portcullis/portcullis.json"
    snippet = prefix / "share/portcullis/nginx/portcullis.conf"
    unit = (prefix / "lib/systemd/system/portcullis.service").read_text()
    for path in (binary, config_path, snippet, prefix / "etc/logrotate.d/portcullis"):
        assert path.exists(), path
    assert f"ExecStart={binary} serve --config {config_path}" in unit
    assert f"ExecReload={binary} reload --config {config_path}" in unit
    assert "@" not in unit
    assert "Type=notify" in unit
    # systemd's own parser (make deps installs it): a misspelt directive or value is only a
    # warning on standard error, so that must be empty of the unit too.
    unit_path = prefix / "lib/systemd/system/portcullis.service"
    verified = subprocess.run(["systemd-analyze", "verify", str(unit_path)], capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0 and "portcullis.service" not in verified.stderr, verified.stderr

    # The one change the demo needs here: its upstream is this test's echo server.
    config = json.loads(config_path.read_text())
    config["upstreams"]["echo"]["targets"] = [echo_upstream.url]
    config_path.write_text(json.dumps(config))
    socket_path = json.loads(subprocess.run([str(binary), "check", "--print-effective", "--config", str(config_path)],
                                            capture_output=True, text=True, check=True).stdout)["server"]["socket"]
    assert socket_path == str(prefix / "var/run/portcullis/portcullis.sock")

    pid_file = work / "portcullis.pid"
    started = subprocess.run([str(binary), "serve", "--daemon", "--pid-file", str(pid_file), "--config", str(config_path)],
                             capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
    assert started.returncode == 0, started.stdout + started.stderr
    master = int(pid_file.read_text())
    nginx = None
    try:
        again = subprocess.run([str(binary), "serve", "--daemon", "--config", str(config_path)],
                               capture_output=True, text=True, timeout=30)
        assert again.returncode == 1 and "already running" in again.stderr, again.stderr

        # The nginx "you already run": an http block of its own, plus the two documented steps.
        port = free_port()
        nginx_dir = work / "nginx"
        (nginx_dir / "logs").mkdir(parents=True)
        nginx_conf = nginx_dir / "nginx.conf"
        # As root (the test machine), nginx's workers run as root to reach the socket; a real
        # nginx keeps its user and gets the socket's group (server.socket_group).
        user = "user root;" if os.geteuid() == 0 else ""
        nginx_conf.write_text(f"""
{user}
daemon off;
pid {nginx_dir}/nginx.pid;
error_log stderr;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {nginx_dir}/client_temp;
    fastcgi_temp_path {nginx_dir}/fastcgi_temp;
    proxy_temp_path {nginx_dir}/proxy_temp;
    uwsgi_temp_path {nginx_dir}/uwsgi_temp;
    scgi_temp_path {nginx_dir}/scgi_temp;

    # Step 1: the upstream, in the http block.
    upstream portcullis {{
        server unix:{socket_path};
        keepalive 32;
    }}

    server {{
        listen 127.0.0.1:{port};
        # Step 2: the snippet, inside the server block.
        include {snippet};
    }}
}}
""")
        nginx = ManagedProcess("install-nginx", ["nginx", "-p", str(nginx_dir), "-c", str(nginx_conf), "-e", "stderr"], work).start()
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: requests.get(base + "/echo/hello", timeout=2).status_code == 200, 20, "the demo through nginx",
                   on_timeout=nginx.output_tail)
        echo = requests.get(base + "/echo/hello", timeout=5).json()
        assert echo["path"] == "/echo/hello", echo
        assert_problem(requests.get(base + "/private/x", timeout=5), 401)
        private = requests.get(base + "/private/x", headers={"X-API-Key": DEMO_KEY}, timeout=5).json()
        assert private["headers"]["x-consumer-id"] == "demo", private
        wrapped = requests.get(base + "/v1/users/7", timeout=5).json()
        assert "data" in wrapped and "meta" in wrapped, wrapped

        status = subprocess.run([str(binary), "status", "--json", "--config", str(config_path)],
                                capture_output=True, text=True, timeout=30)
        assert status.returncode == 0 and json.loads(status.stdout)["master_pid"] == master
        stopped = subprocess.run([str(binary), "stop", "--config", str(config_path)], capture_output=True, text=True, timeout=90)
        assert stopped.returncode == 0, stopped.stderr
        assert not pid_file.exists()
    finally:
        if nginx is not None:
            nginx.stop(signal.SIGQUIT, timeout=5)
        try:
            os.kill(master, signal.SIGKILL)
        except ProcessLookupError:
            pass
