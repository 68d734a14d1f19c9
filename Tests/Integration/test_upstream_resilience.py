"""Upstream resilience through real nginx and real upstream processes (docs/upstreams.md):
retries to another target, circuit breakers shared by every worker, active health checks by
the master, the bulkhead, the instance's own health endpoint and `status`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from harness import (EchoUpstream, Gateway, ManagedProcess, QuietHTTPServer, answer_json, assert_problem, echo_of, free_port,
                     wait_until)


@pytest.fixture
def make_echo(test_root: Path) -> Iterator[Any]:
    started: list[EchoUpstream] = []

    def make(port: int | None = None) -> EchoUpstream:
        echo = EchoUpstream(test_root, name=f"echo-{len(started)}", port=port).start()
        started.append(echo)
        return echo

    yield make
    for echo in started:
        echo.stop()


def served_by(response: Any) -> str:
    """The target that answered: the echo upstream reports the Host header it was sent."""
    return "http://" + echo_of(response)["headers"]["host"]


def upstream_config(targets: list[Any], **extra: Any) -> dict[str, Any]:
    return {"upstreams": {"pair": {"targets": targets, "connect_timeout_ms": 1000, "timeout_ms": 10000, **extra}},
            "routes": [{"name": "pair", "match": {"prefix": "/pair/"}, "upstream": "pair"}]}


def target_state(gw: Gateway, upstream: str, target: str) -> dict[str, Any]:
    for entry in gw.status()["upstreams"][upstream]:
        if entry["target"] == target:
            return entry
    raise AssertionError(f"{target} not in status")


# -- retries -----------------------------------------------------------------------------------


def test_killed_target_under_load_fails_no_idempotent_request(make_gateway: Any, make_echo: Any) -> None:
    a, b = make_echo(), make_echo()
    gw = make_gateway(config=upstream_config([a.url, b.url], circuit_breaker={"consecutive_failures": 3, "open_ms": 60000}))
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            statuses.append(gw.get("/pair/x", timeout=10).status_code)

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(load) for _ in range(4)]
        wait_until(lambda: len(statuses) > 100, 30, "traffic before the kill")
        b.stop()
        before = len(statuses)
        wait_until(lambda: len(statuses) > before + 200, 60, "traffic after the kill")
        stop.set()
        for f in futures:
            f.result()
    assert set(statuses) == {200}, f"failed requests: {[s for s in statuses if s != 200][:10]}"
    state = target_state(gw, "pair", b.url)
    assert state["breaker"] == "open", state
    # Every worker sees the open breaker: nothing more is sent to the dead target.
    tried = [t for e in gw.access_log()[-50:] for t in e.get("tries", [])]
    assert all(t["target"] != b.url for t in tried)
    retried = [e for e in gw.access_log() if "tries" in e]
    assert retried, "the requests that met the dead target were retried"
    first = retried[0]["tries"]
    assert first[0]["target"] == b.url and "error" in first[0] and first[-1]["status"] == 200


class Silent:
    """A target that accepts TCP connections (the kernel completes them, up to ``backlog``) and
    never answers."""

    def __init__(self, backlog: int = 64) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(backlog)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.fillers: list[socket.socket] = []

    def close(self) -> None:
        for s in self.fillers:
            s.close()
        self.sock.close()


class Blackhole(Silent):
    """A listening socket that never accepts: once its small queue is full, connects hang."""

    def __init__(self) -> None:
        super().__init__(backlog=0)
        # Fill the accept queue so later connects wait for the timeout.
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(self.sock.getsockname())
            except BlockingIOError:
                pass
            self.fillers.append(s)


def test_open_breaker_spares_the_connect_timeout(make_gateway: Any, make_echo: Any) -> None:
    a, hole = make_echo(), Blackhole()
    try:
        config = upstream_config([hole.url, a.url], circuit_breaker={"consecutive_failures": 2, "open_ms": 60000})
        config["upstreams"]["pair"]["connect_timeout_ms"] = 1500
        gw = make_gateway(config=config, workers=2, threads=2)
        for _ in range(12):
            assert gw.get("/pair/x").status_code == 200
        wait_until(lambda: target_state(gw, "pair", hole.url)["breaker"] == "open", 10, "the breaker opens")
        for _ in range(10):
            started = time.monotonic()
            response = gw.get("/pair/x")
            assert response.status_code == 200 and served_by(response) == a.url
            assert time.monotonic() - started < 1.0, "no request waits for the 1.5 s connect timeout once open"
    finally:
        hole.close()


def test_all_targets_open_answers_503_at_once(make_gateway: Any, dead_upstream_url: str) -> None:
    gw = make_gateway(config={"upstreams": {"gone": {"targets": [dead_upstream_url],
                                                      "circuit_breaker": {"consecutive_failures": 3, "open_ms": 30000}}},
                              "routes": [{"name": "gone", "match": {"prefix": "/gone/"}, "upstream": "gone"}]})
    for _ in range(3):
        assert_problem(gw.get("/gone/x"), 502, "upstream-unavailable")
    response = gw.get("/gone/x")
    body = assert_problem(response, 503, "upstream-circuit-open")
    assert 1 <= int(response.headers["Retry-After"]) <= 30
    assert "gone" in body["detail"]
    assert target_state(gw, "gone", dead_upstream_url)["breaker"] == "open"


def test_recovered_target_comes_back(make_gateway: Any, make_echo: Any) -> None:
    a, b = make_echo(), make_echo()
    gw = make_gateway(config=upstream_config([a.url, b.url], circuit_breaker={"consecutive_failures": 2, "open_ms": 1000,
                                                                                "half_open_probes": 2}))
    port = b.port
    b.stop()
    for _ in range(10):
        assert gw.get("/pair/x").status_code == 200
    wait_until(lambda: target_state(gw, "pair", b.url)["breaker"] != "closed", 10, "the breaker opens")
    make_echo(port=port)

    def back() -> bool:
        return any(served_by(gw.get("/pair/y")) == b.url for _ in range(10))
    wait_until(back, 30, "the recovered target serves again", interval=0.3)

    def closed() -> bool:
        gw.get("/pair/z")  # the probes are real requests
        return target_state(gw, "pair", b.url)["breaker"] == "closed"
    wait_until(closed, 10, "the breaker closes after both probes succeeded")


class ResetAfterReading:
    """Reads each request, then closes the connection without answering."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.requests: list[bytes] = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.settimeout(2)
            try:
                data = conn.recv(65536)
                if data:
                    self.requests.append(data)
            except OSError:
                pass
            conn.close()

    def close(self) -> None:
        self.sock.close()


def test_post_is_never_retried_after_it_was_sent(make_gateway: Any, make_echo: Any) -> None:
    reset = ResetAfterReading()
    a = make_echo()
    try:
        gw = make_gateway(config=upstream_config([reset.url, a.url], balancer="round_robin",
                                                 circuit_breaker=False, retries={"attempts": 2, "backoff_ms": 0}))
        outcomes = [gw.request("POST", "/pair/p", data=b"x" * 100).status_code for _ in range(6)]
        posts_at_reset = sum(1 for r in reset.requests if r.startswith(b"POST"))
        assert posts_at_reset == outcomes.count(502) and posts_at_reset >= 2, outcomes
        assert set(outcomes) == {200, 502}
        # The same failure after sending is retried for an idempotent method.
        assert all(gw.get("/pair/g").status_code == 200 for _ in range(6))
        logged = gw.wait_for_log_entries(lambda e: e["method"] == "GET" and "tries" in e)
        assert logged[0]["tries"][0]["target"] == reset.url and logged[0]["status"] == 200
        posts = [e for e in gw.access_log() if e["method"] == "POST"]
        assert all("tries" not in e for e in posts)
    finally:
        reset.close()


def test_post_is_retried_when_the_connection_was_refused(make_gateway: Any, make_echo: Any, dead_upstream_url: str) -> None:
    a = make_echo()
    gw = make_gateway(config=upstream_config([dead_upstream_url, a.url], circuit_breaker=False, retries={"backoff_ms": 0}))
    for _ in range(6):
        response = gw.request("POST", "/pair/p", data=b"payload")
        assert response.status_code == 200
        assert echo_of(response)["body"] == "payload", "the body is sent again in full"


def test_idempotent_request_is_retried_on_503_and_the_last_answer_stands(make_gateway: Any, make_echo: Any) -> None:
    a, b = make_echo(), make_echo()
    gw = make_gateway(config=upstream_config([a.url, b.url], circuit_breaker=False, retries={"attempts": 1, "backoff_ms": 5}))
    response = gw.get("/pair/x?status=503")
    assert response.status_code == 503 and response.headers["Content-Type"].startswith("application/json")
    entry = gw.wait_for_log_entries(lambda e: e["path"] == "/pair/x")[0]
    assert [t["status"] for t in entry["tries"]] == [503, 503]
    assert {t["target"] for t in entry["tries"]} == {a.url, b.url}
    assert gw.request("POST", "/pair/y?status=503").status_code == 503
    entry = gw.wait_for_log_entries(lambda e: e["path"] == "/pair/y")[0]
    assert "tries" not in entry


# -- health checks ------------------------------------------------------------------------------


class Switchable:
    """An upstream whose health answer the test flips; every other path answers 200."""

    def __init__(self) -> None:
        self.healthy = True
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                status = 200 if self.path != "/healthz" or outer.healthy else 503
                body = json.dumps({"served_by": "switchable"}).encode()
                answer_json(self, status, body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = QuietHTTPServer.serving(Handler)
        self.url = self.server.base_url

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_health_checks_remove_and_return_a_target(make_gateway: Any, make_echo: Any) -> None:
    switchable, echo = Switchable(), make_echo()
    try:
        gw = make_gateway(config=upstream_config(
            [switchable.url, echo.url],
            health_check={"path": "/healthz", "interval_ms": 200, "timeout_ms": 500, "healthy_threshold": 2, "unhealthy_threshold": 2}))

        def answered_by_switchable(n: int) -> int:
            return sum(1 for _ in range(n) if "served_by" in gw.get("/pair/x").json())

        assert answered_by_switchable(10) > 0
        switchable.healthy = False
        wait_until(lambda: target_state(gw, "pair", switchable.url)["health"] == "unhealthy", 10, "the target is unhealthy")
        assert answered_by_switchable(20) == 0, "an unhealthy target leaves the balancer"
        switchable.healthy = True
        wait_until(lambda: target_state(gw, "pair", switchable.url)["health"] == "healthy", 10, "the target is healthy again")
        assert answered_by_switchable(10) > 0
        # Health survives a reload for an unchanged target.
        switchable.healthy = False
        wait_until(lambda: target_state(gw, "pair", switchable.url)["health"] == "unhealthy", 10, "unhealthy again")
        config = json.loads(gw.config_path.read_text())
        config["upstreams"]["pair"]["timeout_ms"] = 9000
        gw.set_config(config)
        assert gw.cli("reload").returncode == 0
        assert target_state(gw, "pair", switchable.url)["health"] == "unhealthy"
        assert answered_by_switchable(10) == 0
    finally:
        switchable.close()


def test_a_target_that_never_answers_delays_no_other_targets_checks(make_gateway: Any, make_echo: Any) -> None:
    """Checks run concurrently: while a check of a silent target waits out its 60 s timeout,
    another upstream's target still goes down and comes back on its own 200 ms checks."""
    switchable, echo, silent = Switchable(), make_echo(), Silent()
    try:
        config = upstream_config(
            [switchable.url, echo.url],
            health_check={"path": "/healthz", "interval_ms": 200, "timeout_ms": 500, "healthy_threshold": 2, "unhealthy_threshold": 2})
        # Planned first (upstreams are checked in name order).
        config["upstreams"]["a-silent"] = {"targets": [silent.url], "health_check": {"interval_ms": 100, "timeout_ms": 60000}}
        config["routes"].append({"name": "silent", "match": {"prefix": "/silent/"}, "upstream": "a-silent"})
        gw = make_gateway(config=config)
        switchable.healthy = False
        wait_until(lambda: target_state(gw, "pair", switchable.url)["health"] == "unhealthy", 10, "the target is unhealthy")
        switchable.healthy = True
        wait_until(lambda: target_state(gw, "pair", switchable.url)["health"] == "healthy", 10, "the target is healthy again")
        entry = target_state(gw, "a-silent", silent.url)
        assert entry["health"] == "healthy", "the silent target's one check is still waiting for its timeout"
    finally:
        switchable.close()
        silent.close()


# -- bulkhead -----------------------------------------------------------------------------------


def test_slow_upstream_saturating_its_cap_does_not_slow_another_route(make_gateway: Any, echo_upstream: EchoUpstream) -> None:
    gw = make_gateway(config={
        "upstreams": {"slowsvc": {"targets": [echo_upstream.url], "max_in_flight": 3, "timeout_ms": 10000},
                      "fast": {"targets": [echo_upstream.url]}},
        "routes": [{"name": "slow", "match": {"prefix": "/slow/"}, "upstream": "slowsvc"},
                   {"name": "fast", "match": {"prefix": "/fast/"}, "upstream": "fast"}]}, workers=2, threads=2)
    with ThreadPoolExecutor(6) as pool:
        slow = [pool.submit(gw.get, "/slow/x?delay_ms=3000", timeout=20) for _ in range(3)]
        wait_until(lambda: target_state(gw, "slowsvc", echo_upstream.url)["in_flight"] == 3, 5, "three slow requests in flight")
        started = time.monotonic()
        rejected = gw.get("/slow/y")
        assert time.monotonic() - started < 1.0, "the excess is answered at once"
        assert_problem(rejected, 503, "upstream-saturated")
        assert rejected.headers["Retry-After"] == "1"
        for _ in range(20):
            started = time.monotonic()
            assert gw.get("/fast/z").status_code == 200
            assert time.monotonic() - started < 1.0, "the other route is not held up by the slow one"
        assert [f.result().status_code for f in slow] == [200, 200, 200]
    assert target_state(gw, "slowsvc", echo_upstream.url)["in_flight"] == 0
    assert gw.get("/slow/again").status_code == 200


def test_a_killed_worker_leaves_no_requests_counted_in_flight(make_gateway: Any, echo_upstream: EchoUpstream) -> None:
    gw = make_gateway(config={"upstreams": {"slowsvc": {"targets": [echo_upstream.url], "max_in_flight": 3}},
                              "routes": [{"name": "slow", "match": {"prefix": "/slow/"}, "upstream": "slowsvc"}]},
                      workers=1, threads=2)
    with ThreadPoolExecutor(3) as pool:
        slow = [pool.submit(gw.get, "/slow/x?delay_ms=2000", timeout=30) for _ in range(3)]
        wait_until(lambda: target_state(gw, "slowsvc", echo_upstream.url)["in_flight"] == 3, 5, "three requests in flight")
        worker = gw.worker_pids()[0]
        os.kill(worker, signal.SIGKILL)
        for f in slow:
            f.result()  # nginx resends them to the new worker, or answers 502: either is fine here
    # The master cleared the dead worker's counts: the cap is whole again.
    wait_until(lambda: target_state(gw, "slowsvc", echo_upstream.url)["in_flight"] == 0, 15, "no request counted in flight")
    with ThreadPoolExecutor(3) as pool:
        assert [f.result().status_code for f in [pool.submit(gw.get, "/slow/y?delay_ms=300") for _ in range(3)]] == [200] * 3


def test_hash_balancer_keeps_a_key_on_one_target(make_gateway: Any, make_echo: Any) -> None:
    targets = [make_echo().url for _ in range(3)]
    gw = make_gateway(config=upstream_config(targets, balancer={"algorithm": "hash", "hash_on": "header:X-User"}))
    owners = {}
    for user in [f"user-{i}" for i in range(30)]:
        seen = {served_by(gw.get("/pair/x", headers={"X-User": user})) for _ in range(4)}
        assert len(seen) == 1, f"{user} went to {seen}"
        owners[user] = seen.pop()
    assert len(set(owners.values())) == 3, "the keys spread over every target"


# -- instance health ----------------------------------------------------------------------------


def test_instance_health_endpoint(make_gateway: Any) -> None:
    gw = make_gateway()
    response = gw.get("/_portcullis/health")
    assert response.status_code == 200
    assert response.json() == {"status": "serving"}


def test_instance_health_fails_when_a_closed_redis_policy_cannot_reach_redis(make_gateway: Any, make_redis: Any) -> None:
    redis = make_redis()
    gw = make_gateway({"rate_limit": {"redis": {"host": "127.0.0.1", "port": redis.port, "timeout_ms": 200}},
                       "routes": [{"name": "limited", "match": {"prefix": "/limited/"}, "upstream": "echo",
                                   "limits": [{"name": "l", "algorithm": "fixed_window", "limit": 100, "window_seconds": 60,
                                               "key": ["ip"], "store": "redis", "on_store_failure": "closed"}]}]})
    assert gw.get("/_portcullis/health").status_code == 200
    redis.stop()

    def down() -> bool:
        return gw.get("/_portcullis/health").status_code == 503
    wait_until(down, 15, "health reports Redis down")
    body = assert_problem(gw.get("/_portcullis/health"), 503, "instance-unavailable")
    assert body["state"] == "redis_unreachable"


def test_instance_health_is_503_when_no_worker_answers(make_gateway: Any) -> None:
    gw = make_gateway()
    gw.master.stop()
    response = gw.get("/_portcullis/health")
    body = assert_problem(response, 503, "instance-unavailable")
    assert body["state"] == "no_worker"


# -- status -------------------------------------------------------------------------------------


def test_status_shows_each_target(make_gateway: Any, make_echo: Any, dead_upstream_url: str) -> None:
    a = make_echo()
    gw = make_gateway(config=upstream_config([a.url, dead_upstream_url], circuit_breaker={"consecutive_failures": 2}))
    for _ in range(8):
        gw.get("/pair/x")
    entries = {e["target"]: e for e in gw.status()["upstreams"]["pair"]}
    assert entries[a.url] == {"target": a.url, "health": "healthy", "breaker": "closed", "in_flight": 0, "consecutive_failures": 0}
    assert entries[dead_upstream_url]["breaker"] == "open"
    text = gw.cli("status").stdout
    assert "upstream pair:" in text and f"{dead_upstream_url}  healthy  breaker open" in text


# -- two instances behind HAProxy ---------------------------------------------------------------


HAPROXY_CONFIG = """
global
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    retries 2
    option redispatch

frontend api
    bind 127.0.0.1:{port}

    default_backend portcullis

backend portcullis
    balance roundrobin
    option httpchk GET /_portcullis/health
    http-check expect status 200
    default-server inter 500ms fall 2 rise 2 on-marked-down shutdown-sessions
    server a 127.0.0.1:{a} check
    server b 127.0.0.1:{b} check
"""


def test_two_instances_behind_haproxy(make_gateway: Any, make_redis: Any, test_root: Path) -> None:
    """The deployment of docs/upstreams.md: two nginx + pool instances sharing one Redis behind
    an HAProxy that checks /_portcullis/health. Limits are exact across both; one instance
    stopped under load → after the detection window, no failed request."""
    if shutil.which("haproxy") is None:
        pytest.fail("haproxy is not installed (scripts/install-deps.sh installs it)")
    redis = make_redis()
    limit = 20
    overrides = {"rate_limit": {"redis": {"host": "127.0.0.1", "port": redis.port, "namespace": "two", "timeout_ms": 200,
                                          "instances": 2}},
                 "routes": [{"name": "echo", "match": {"prefix": "/echo/"}, "upstream": "echo"},
                            {"name": "limited", "match": {"prefix": "/limited/"}, "upstream": "echo",
                             "limits": [{"name": "l", "algorithm": "fixed_window", "limit": limit, "window_seconds": 300,
                                         "key": ["header:X-Client"], "store": "redis", "on_store_failure": "closed"}]}]}
    a, b = make_gateway(overrides), make_gateway(overrides)
    workdir = Path(tempfile.mkdtemp(prefix="haproxy-", dir=test_root))
    port = free_port()
    (workdir / "haproxy.cfg").write_text(HAPROXY_CONFIG.format(port=port, a=a.port, b=b.port))
    haproxy = ManagedProcess("haproxy", ["haproxy", "-db", "-f", str(workdir / "haproxy.cfg")], workdir).start()
    try:
        session = requests.Session()
        front = f"http://127.0.0.1:{port}"
        wait_until(lambda: session.get(front + "/echo/up", timeout=5).status_code == 200, 15, "haproxy serves")
        statuses = [session.get(front + "/limited/x", headers={"X-Client": "c1"}, timeout=5).status_code for _ in range(2 * limit)]
        assert statuses.count(200) == limit and statuses.count(429) == limit, statuses
        wait_until(lambda: bool(a.access_log() and b.access_log()), 5, "both instances serve")

        results: list[tuple[float, int]] = []
        stop = threading.Event()

        def load() -> None:
            s = requests.Session()
            while not stop.is_set():
                started = time.monotonic()
                try:
                    code = s.get(front + "/echo/load", timeout=10).status_code
                except requests.RequestException:
                    code = 0
                results.append((started, code))

        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(load) for _ in range(4)]
            wait_until(lambda: len(results) > 50, 30, "traffic through both instances")
            stopped_at = time.monotonic()
            b.stop()
            wait_until(lambda: sum(1 for t, _ in results if t > stopped_at + 3) > 200, 60, "traffic after the stop")
            stop.set()
            for f in futures:
                f.result()
        after_window = [code for t, code in results if t > stopped_at + 3]
        assert set(after_window) == {200}, f"failed after the detection window: {[c for c in after_window if c != 200][:10]}"
        # Requests in flight on the stopped instance may fail; none before the stop did.
        assert all(code == 200 for t, code in results if t < stopped_at - 10), "failures before the stop"
    finally:
        haproxy.stop()
