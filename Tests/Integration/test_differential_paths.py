"""Differential path checks (issue 12): nginx and the worker's router must agree on which route
a raw request target reaches.

Two views of the same raw target:

* **nginx alone**: a probe nginx whose `location`s mirror the gateway's routes (`location = /p`
  and `location /p/` for a route with prefix `/p/`, as a prefix route matches `/p` itself) and
  answer the route's name, `none` from `location /`;
* **the gateway**: the real nginx with the shipped snippet in front of the pool, whose routes
  rewrite to `/_r/<name>/` on the echo upstream, so the echo's path names the route the worker
  chose; the gateway's own 404 means none.

The targets are generated from a few base paths by the encodings an attacker would use to make
the two disagree: `%2e` dot segments, `%2f`, `//`, `;`, `\\`, overlong UTF-8, letter case and
percent-encoding case, NFC/NFD, a `/` followed by a combining mark. A target nginx itself refuses (400) must be refused for both.
"""

from __future__ import annotations

import itertools
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import EchoUpstream, Gateway, GatewayFactory, free_port

# (route name, prefix as the config and nginx.conf spell it)
ROUTES = [
    ("echo", "/echo/"),
    ("admin", "/admin/"),
    ("api", "/api/v1/"),
    ("cafe", "/caf\u00e9/"),
    ("semi", "/a;b/"),
]


def probe_conf(prefix: Path, port: int) -> str:
    locations = []
    for name, path in ROUTES:
        bare = path.rstrip("/")
        locations.append(f'        location = "{bare}" {{ return 200 "{name}"; }}')
        locations.append(f'        location "{path}" {{ return 200 "{name}"; }}')
    body = "\n".join(locations)
    return f"""worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/temp/client_body;
    proxy_temp_path {prefix}/temp/proxy;
    fastcgi_temp_path {prefix}/temp/fastcgi;
    scgi_temp_path {prefix}/temp/scgi;
    uwsgi_temp_path {prefix}/temp/uwsgi;
    default_type text/plain;
    server {{
        listen 127.0.0.1:{port};
        client_header_buffer_size 4k;
        large_client_header_buffers 4 8k;
{body}
        location / {{ return 200 "none"; }}
    }}
}}
"""


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    prefix = tmp_path_factory.mktemp("nginx-probe")
    (prefix / "temp").mkdir()
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(probe_conf(prefix, port), encoding="utf-8")
    process = subprocess.Popen([shutil.which("nginx") or "nginx", "-p", str(prefix), "-c", str(conf), "-e", "stderr"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"probe nginx did not start: {process.stderr.read().decode() if process.stderr else ''}")
            time.sleep(0.05)
    yield port
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def gateway(gateway_factory: GatewayFactory, echo_upstream: EchoUpstream) -> Iterator[Gateway]:
    gw = gateway_factory.create({
        "upstreams": {"echo": {"targets": [echo_upstream.url]}},
        "routes": [{"name": name, "match": {"prefix": path}, "upstream": "echo", "rewrite": f"/_r/{name}/"}
                   for name, path in ROUTES],
    }, config={}, workers=1, threads=2)
    yield gw
    gateway_factory.close([gw])


def send(port: int, target: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def nginx_decision(port: int, target: bytes) -> str:
    status, body = send(port, target)
    return body.decode() if status == 200 else f"refused {status}"


def gateway_decision(gw: Gateway, target: bytes) -> str:
    import json
    status, body = send(gw.port, target)
    if status == 200:
        path = json.loads(body)["path"]
        assert path.startswith("/_r/"), path
        return path.split("/")[2]
    if status == 404 and b"route-not-found" in body:
        return "none"
    return f"refused {status}"


def pct(text: str, upper: bool = True) -> str:
    return "".join(f"%{b:02X}" if upper else f"%{b:02x}" for b in text.encode())


def variants(base: str) -> list[str]:
    """Encodings of `base` (a path like `/admin/x`) that nginx normalises, or not."""
    first, _, rest = base[1:].partition("/")
    out = {
        base,
        "/" + pct(first[:1]) + first[1:] + "/" + rest,                      # %61dmin
        "/" + pct(first[:1], upper=False) + first[1:] + "/" + rest,         # lower-case hex
        "/" + first + "%2f" + rest, "/" + first + "%2F" + rest,             # encoded slash
        "//" + first + "//" + rest, "/" + first + "///" + rest,             # doubled slashes
        "/" + first + "/./" + rest, "/" + first + "/%2e/" + rest,           # dot segments
        "/x/../" + first + "/" + rest, "/x/%2e%2e/" + first + "/" + rest, "/x/%2E%2E/" + first + "/" + rest,
        "/x/.%2e/" + first + "/" + rest,
        "/" + first + ";/" + rest, "/" + first + ";x/" + rest, "/" + first + "/;/" + rest,   # ;
        "/" + first + "\\" + rest, "\\" + first + "/" + rest, "/" + first + "%5c" + rest,    # backslash
        "/x/%C0%AE%C0%AE/" + first + "/" + rest, "/" + first + "%C0%AF" + rest,              # overlong . and /
        "/" + first + "%E0%80%AF" + rest,
        "/" + first.upper() + "/" + rest, "/" + first.capitalize() + "/" + rest,             # letter case
        "/" + first, "/" + first + "/", "/" + first + "x/" + rest,                           # prefix edges
        "/" + first + "%00/" + rest, "/" + first + "%20/" + rest,
        "/" + first + "/\u0338" + rest, "/" + first + "/%CC%B8" + rest,                    # "/" + combining mark
    }
    return sorted(out)


BASES = ["/echo/x", "/admin/x", "/api/v1/x", "/a;b/x", "/nothing/x"]


def generated_targets() -> list[bytes]:
    targets: set[bytes] = set()
    for base in BASES:
        for v in variants(base):
            targets.add(v.encode())
    # The UTF-8 prefix: NFC as configured, NFD (other bytes), percent-encoded in either case,
    # an overlong encoding of its ASCII letters.
    cafe_nfc, cafe_nfd = "caf\u00e9", "cafe\u0301"
    for spelled in (cafe_nfc, cafe_nfd, pct(cafe_nfc), pct(cafe_nfc, upper=False), pct(cafe_nfd), "%C1%A3af%C3%A9"):
        for suffix in ("/x", "", "/", "%2fx", "//x"):
            targets.add(("/" + spelled + suffix).encode())
    # Pairs of the tricks on one base, to reach combinations.
    admin = variants("/admin/x")
    for a, b in itertools.islice(itertools.combinations(admin, 2), 0, None, 7):
        targets.add((a.rstrip("/") + b).encode())
    return sorted(targets)


def test_nginx_and_the_router_agree_on_every_generated_target(probe: int, gateway: Gateway) -> None:
    targets = generated_targets()
    assert len(targets) > 150
    disagreements = []
    decisions: dict[str, int] = {}
    for target in targets:
        by_nginx = nginx_decision(probe, target)
        by_gateway = gateway_decision(gateway, target)
        decisions[by_nginx] = decisions.get(by_nginx, 0) + 1
        if by_nginx != by_gateway:
            disagreements.append((target, by_nginx, by_gateway))
    assert not disagreements, "\n".join(f"{t!r}: nginx {n}, gateway {g}" for t, n, g in disagreements)
    # The set reaches every route, no route, and nginx's refusals.
    assert {name for name, _ in ROUTES} <= decisions.keys(), decisions
    assert "none" in decisions, decisions
