"""Issue 8, event-driven workers: kept FastCGI connections cost a descriptor and nothing else,
reloads and scaling with kept connections lose no request, and nothing on the socket can hold
a loop for long."""

from __future__ import annotations

import os
import socket
import struct
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import pytest
import requests

from harness import Gateway, wait_until
from test_pool_lifecycle import MixedClients, live_worker_pids


def worker_threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_idle_kept_connections_far_beyond_the_pool_threads_cost_nothing(make_gateway: Callable[..., Gateway]) -> None:
    """One worker with one loop thread; nginx keeps up to 64 idle connections and 200 more idle
    connections sit on the socket itself. Requests still get answers at once, and the worker
    gains no thread for all those connections."""
    gw = make_gateway(workers=1, threads=1, keepalive=64)
    (pid,) = live_worker_pids(gw)
    threads_before = worker_threads(pid)
    idle = []
    try:
        for _ in range(200):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(gw.socket_path))
            idle.append(s)

        def burst(n: int) -> list[int]:
            with ThreadPoolExecutor(max_workers=48) as pool:
                return list(pool.map(lambda i: gw.get(f"/echo/idle/{i}", timeout=5).status_code, range(n)))

        assert burst(200) == [200] * 200
        time.sleep(1.0)  # every kept connection idle now, nginx holding up to 64 of them
        started = time.monotonic()
        assert burst(200) == [200] * 200
        assert time.monotonic() - started < 10
        assert worker_threads(pid) == threads_before, "a connection must not cost a thread"
    finally:
        for s in idle:
            s.close()


def test_fifty_reloads_and_scale_four_one_four_under_mixed_load_lose_nothing(make_gateway: Callable[..., Gateway]) -> None:
    """Kept connections (keepalive 32), constant GET and POST load: 50 reloads, then 4 → 1 → 4
    workers. Reloads swap the configuration inside the running workers; retiring workers hand
    their idle connections over; not one request fails."""
    gw = make_gateway(workers=4, threads=1, keepalive=32)
    generation = gw.status()["generation"]
    pids = live_worker_pids(gw)
    with MixedClients(gw, threads=8) as clients:
        clients.wait_for(40)
        for _ in range(50):
            result = gw.cli("reload")
            assert result.returncode == 0, result.stderr
            clients.wait_for(5)
        assert live_worker_pids(gw) == pids, "a reload must not restart workers"
        for target in (1, 4):
            result = gw.cli("scale", str(target))
            assert result.returncode == 0, result.stderr
            wait_until(lambda: len(live_worker_pids(gw)) == target and
                       len([w for w in gw.status()["workers"] if w.get("ready")]) >= target, 15, f"{target} ready workers")
            clients.wait_for(60)
    assert clients.failures == [], clients.failures[:5]
    assert clients.ok["POST"] > 100 and clients.ok["GET"] > 100, clients.ok
    status = gw.status()
    assert status["generation"] == generation + 50
    assert all(w["generation"] == generation + 50 for w in status["workers"])


def test_half_a_request_on_the_socket_holds_nothing_for_long(make_gateway: Callable[..., Gateway]) -> None:
    """A local client that sends a BEGIN_REQUEST and then nothing: the worker gives up on it
    within its read timeout (2 s), answers 400 and closes it, and requests keep being answered
    meanwhile (by the other worker)."""
    gw = make_gateway(workers=2, threads=1)
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.connect(str(gw.socket_path))
    stuck.sendall(struct.pack(">BBHHBx", 1, 1, 1, 8, 0) + struct.pack(">HB5x", 1, 1))
    stuck.settimeout(6)
    try:
        for i in range(10):
            assert gw.get(f"/echo/meanwhile/{i}", timeout=5).status_code == 200
        started = time.monotonic()
        received = b""
        while chunk := stuck.recv(65536):
            received += chunk
        assert time.monotonic() - started < 5, "the worker ends a connection that never completes its request"
        # What libfcgi read before giving up has no REQUEST_METHOD: answered 400, never routed.
        assert b"Status: 400" in received and b"incomplete-request" in received, received[:300]
    finally:
        stuck.close()
    for i in range(10):
        assert gw.get(f"/echo/after/{i}", timeout=5).status_code == 200


@pytest.mark.parametrize("route", ["/dead/upload", "/slow/upload?delay_ms=3000"])
def test_a_body_the_upstream_never_took_does_not_poison_the_kept_connection(make_gateway: Callable[..., Gateway],
                                                                             route: str) -> None:
    """One worker, one loop, nginx keeping one connection: a POST whose upstream is refused (or
    times out) leaves its body unread by the pipeline. The worker drains it, so the next
    requests on the same kept connection are read as requests, not as stale body bytes."""
    gw = make_gateway(workers=1, threads=1, keepalive=1)
    body = b"x" * 300_000
    response = gw.request("POST", route, data=body, timeout=10, headers={"Content-Type": "application/octet-stream"})
    assert response.status_code in (502, 504), response.text[:300]
    for i in range(5):
        started = time.monotonic()
        assert gw.get(f"/echo/after-unread-body/{i}", timeout=5).status_code == 200
        assert time.monotonic() - started < 1.0, "the next request must not wait on a confused connection"


def test_requests_on_one_kept_connection_carry_nothing_of_the_previous_one(make_gateway: Callable[..., Gateway]) -> None:
    """One worker, one loop, nginx keeping one connection: the worker reuses the connection's
    answer state and the loop's upstream exchange objects from one request to the next. Answers
    of every kind in turn (proxied with an extra header and status, gateway 404, POST with a
    body, refused upstream 502, HEAD, a large body) each carry their own status, request id,
    headers and body, never anything of the request before."""
    gw = make_gateway(workers=1, threads=1, keepalive=1)
    ids: dict[str, tuple[int, str]] = {}

    def send(method: str, path: str, status: int, **kwargs: object) -> requests.Response:
        rid = uuid.uuid4().hex
        response = gw.request(method, path, headers={"X-Request-ID": rid, **kwargs.pop("headers", {})}, timeout=10, **kwargs)
        assert response.status_code == status, f"{method} {path}: {response.status_code} {response.text[:200]}"
        assert response.headers["X-Request-ID"] == rid
        assert "X-Only-A" not in response.headers or path.startswith("/echo/a")
        ids[rid] = (status, path.split("?")[0])
        return response

    for round_ in range(3):
        a = send("GET", f"/echo/a{round_}?status=201&set_header=X-Only-A:a", 201)
        assert a.headers["X-Only-A"] == "a"
        assert a.json()["path"] == f"/echo/a{round_}"
        missing = send("GET", f"/nowhere/{round_}", 404)
        assert missing.headers["Content-Type"].startswith("application/problem+json")
        assert missing.json()["request_id"] == missing.headers["X-Request-ID"]
        post = send("POST", f"/echo/c{round_}", 200, data=b"c" * 1000, headers={"Content-Type": "text/plain"})
        assert post.json()["body_length"] == 1000
        assert "x-only-a" not in post.json()["headers"]
        dead = send("GET", f"/dead/d{round_}", 502)
        assert dead.json()["request_id"] == dead.headers["X-Request-ID"]
        head = send("HEAD", f"/echo/e{round_}", 200)
        assert head.content == b""
        big = send("GET", f"/echo/f{round_}?bytes=100000", 200)
        assert len(big.content) == 100_000
        plain = send("GET", f"/echo/g{round_}", 200)
        assert plain.json()["method"] == "GET" and plain.json()["body_length"] == 0
        assert "x-only-a" not in plain.json()["headers"]

    entries = gw.wait_for_log_entries(lambda e: e.get("request_id") in ids, count=len(ids))
    for entry in entries:
        status, path = ids[entry["request_id"]]
        assert (entry["status"], entry["path"]) == (status, path), entry
