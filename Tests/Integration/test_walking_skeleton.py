"""Issue 2: nginx -> FastCGI worker pool -> routed upstream, end to end, through real processes."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from harness import Gateway, GatewayFactory, pattern_sha256, peak_rss_bytes, assert_problem, echo_of

NGINX_REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def gateway(gateway_factory: GatewayFactory) -> Iterator[Gateway]:
    """One gateway with the walking-skeleton routes, shared by the read-only tests."""
    gw = gateway_factory.create()
    yield gw
    gateway_factory.close([gw])






# -- routing --------------------------------------------------------------------------------------


def test_echo_round_trip(gateway: Gateway) -> None:
    response = gateway.get("/echo/hello?x=1")
    echo = echo_of(response)
    assert echo["method"] == "GET"
    assert echo["path"] == "/echo/hello"
    assert echo["query"] == "x=1"
    request_id = response.headers.get("X-Request-ID")
    assert request_id, response.headers
    assert echo["headers"].get("x-request-id") == request_id


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_every_method_reaches_the_echo_route(gateway: Gateway, method: str) -> None:
    response = gateway.request(method, "/echo/methods", data=b"payload" if method not in ("GET", "OPTIONS") else None)
    echo = echo_of(response)
    assert echo["method"] == method
    if method not in ("GET", "OPTIONS"):
        assert echo["body"] == "payload"


def test_head_answers_without_body(gateway: Gateway) -> None:
    response = gateway.request("HEAD", "/echo/head")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers.get("X-Request-ID")


def test_no_route_is_404_problem(gateway: Gateway) -> None:
    assert_problem(gateway.get("/no-such-route"), 404)


def test_method_mismatch_is_405_with_allow(gateway: Gateway) -> None:
    response = gateway.request("POST", "/users/42?v=2", headers=users_route_headers())
    assert_problem(response, 405)
    allowed = {m.strip() for m in response.headers.get("Allow", "").split(",")}
    assert "GET" in allowed, response.headers
    assert "POST" not in allowed


def users_route_headers(**changes: str | None) -> dict[str, str]:
    headers = {"Host": "api.example.com", "X-Version": "2", "X-Debug": "yes"}
    for name, value in changes.items():
        key = name.replace("_", "-")
        headers.pop(key, None)
        if value is not None:
            headers[key] = value
    return headers


def test_route_by_host_header_query_with_param_rewrite(gateway: Gateway) -> None:
    echo = echo_of(gateway.get("/users/42?v=2", headers=users_route_headers()))
    assert echo["path"] == "/internal/users/42"
    assert echo["query"] == "v=2"


@pytest.mark.parametrize("path, headers", [
    pytest.param("/users/42?v=2", users_route_headers(Host="other.example.com"), id="wrong-host"),
    pytest.param("/users/42?v=2", users_route_headers(X_Version="1"), id="header-value-differs"),
    pytest.param("/users/42?v=2", users_route_headers(X_Debug=None), id="header-absent"),
    pytest.param("/users/42?v=1", users_route_headers(), id="query-value-differs"),
    pytest.param("/users/42", users_route_headers(), id="query-absent"),
    pytest.param("/users/42/extra?v=2", users_route_headers(), id="exact-path-longer"),
])
def test_route_conditions_must_all_hold(gateway: Gateway, path: str, headers: dict[str, str]) -> None:
    assert_problem(gateway.get(path, headers=headers), 404)


def test_strip_prefix(gateway: Gateway) -> None:
    echo = echo_of(gateway.get("/v1/things/7?a=b"))
    assert echo["path"] == "/things/7"
    assert echo["query"] == "a=b"


# -- bodies ---------------------------------------------------------------------------------------


def test_post_5mb_forwarded_byte_exact(gateway: Gateway) -> None:
    body = os.urandom(5 * MiB)
    response = gateway.request("POST", "/echo/upload", data=body,
                               headers={"Content-Type": "application/octet-stream"}, timeout=60)
    echo = echo_of(response)
    assert echo["body_length"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert echo["headers"].get("content-type") == "application/octet-stream"


def test_chunked_request_body_forwarded(gateway: Gateway) -> None:
    parts = [os.urandom(100_000) for _ in range(10)]
    response = gateway.request("PUT", "/echo/chunked", data=iter(parts), timeout=30)
    echo = echo_of(response)
    assert echo["body_length"] == sum(map(len, parts))
    assert echo["body_sha256"] == hashlib.sha256(b"".join(parts)).hexdigest()


def test_50mb_response_streamed_with_bounded_worker_memory(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway()  # a fresh pool, so the peak RSS reflects this download only
    size = 50 * MiB
    digest = hashlib.sha256()
    received = 0
    with gw.session.get(gw.url(f"/echo/big?bytes={size}"), stream=True, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers.get("Content-Type") == "application/octet-stream"
        for chunk in response.iter_content(chunk_size=256 * 1024):
            digest.update(chunk)
            received += len(chunk)
    assert received == size
    assert digest.hexdigest() == pattern_sha256(size)
    limit = 64 * MiB
    peaks = {pid: peak_rss_bytes(pid) for pid in gw.worker_pids()}
    assert all(peak < limit for peak in peaks.values()), \
        f"worker peak RSS (VmHWM) over {limit // MiB} MiB: { {p: v // MiB for p, v in peaks.items()} } MiB"


# -- upstream failures ----------------------------------------------------------------------------


def test_upstream_refused_is_502(gateway: Gateway) -> None:
    assert_problem(gateway.get("/dead/anything"), 502)


def test_upstream_timeout_is_504(gateway: Gateway) -> None:
    started = time.monotonic()
    response = gateway.get("/slow/x?delay_ms=3000")
    elapsed = time.monotonic() - started
    assert_problem(response, 504)
    assert elapsed < 2.5, f"the 500 ms upstream timeout took {elapsed:.2f}s to answer"


@pytest.mark.parametrize("status", [201, 404, 500, 503])
def test_upstream_status_and_body_pass_through(gateway: Gateway, status: int) -> None:
    """An upstream's own answer is relayed as is, never turned into a gateway problem."""
    response = gateway.get(f"/echo/status?status={status}")
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["path"] == "/echo/status"


# -- request id -----------------------------------------------------------------------------------


@pytest.mark.parametrize("client_id", ["abc-123.XYZ_9", "a" * 128])
def test_valid_request_id_is_kept(gateway: Gateway, client_id: str) -> None:
    response = gateway.get("/echo/rid", headers={"X-Request-ID": client_id})
    echo = echo_of(response)
    assert response.headers.get("X-Request-ID") == client_id
    assert echo["headers"].get("x-request-id") == client_id


@pytest.mark.parametrize("client_id", ["bad id!", "a" * 129, "semi;colon", "ünïcode"], ids=[
    "space-and-bang", "129-chars", "semicolon", "non-ascii"])
def test_invalid_request_id_is_replaced(gateway: Gateway, client_id: str) -> None:
    response = gateway.get("/echo/rid", headers={"X-Request-ID": client_id.encode("utf-8")})
    echo = echo_of(response)
    replaced = response.headers.get("X-Request-ID", "")
    assert NGINX_REQUEST_ID.match(replaced), f"expected nginx's $request_id, got {replaced!r}"
    assert echo["headers"].get("x-request-id") == replaced


def test_request_id_generated_when_absent_and_in_error_bodies(gateway: Gateway) -> None:
    response = gateway.get("/no-such-route")
    body = assert_problem(response, 404)
    assert NGINX_REQUEST_ID.match(body["request_id"]), body
    kept = assert_problem(gateway.get("/no-such-route", headers={"X-Request-ID": "trace-404"}), 404)
    assert kept["request_id"] == "trace-404"


# -- header hygiene -------------------------------------------------------------------------------


def test_hop_by_hop_request_headers_stripped(gateway: Gateway) -> None:
    echo = echo_of(gateway.get("/echo/hop", headers={
        "Connection": "keep-alive, X-Foo", "X-Foo": "bar", "Keep-Alive": "timeout=1",
        "Proxy-Connection": "keep-alive", "TE": "trailers", "X-Kept": "yes",
    }))
    seen = echo["headers"]
    assert seen.get("x-kept") == "yes"  # an ordinary header passes
    for name in ("x-foo", "keep-alive", "proxy-connection", "te"):
        assert name not in seen, f"upstream saw hop-by-hop {name}: {seen}"


def test_hostile_upstream_header_names_are_dropped(gateway: Gateway) -> None:
    """A response header whose name is not an RFC 9110 token (here one with a space, which
    would let an upstream smuggle text into the FastCGI head) never reaches the client; the
    rest of the response does."""
    response = gateway.get("/echo/hostile?set_header=Bad%20Name:x&set_header=X-Fine:1")
    assert response.status_code == 200
    assert response.headers.get("X-Fine") == "1"
    assert "Bad Name" not in response.headers and "Name" not in response.headers, response.headers
    assert echo_of(response)["path"] == "/echo/hostile"


def test_hop_by_hop_response_headers_stripped(gateway: Gateway) -> None:
    response = gateway.get("/echo/hop?hop=1&set_header=X-Visible:yes")
    assert response.status_code == 200
    assert response.headers.get("X-Visible") == "yes"  # an ordinary header passes
    assert "X-Hop-Secret" not in response.headers, response.headers
    assert "timeout=5" not in response.headers.get("Keep-Alive", ""), response.headers
    assert "x-hop-secret" not in response.headers.get("Connection", "").lower(), response.headers


def test_forwarded_headers_come_from_nginx_not_the_client(gateway: Gateway) -> None:
    echo = echo_of(gateway.get("/echo/xff", headers={
        "X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example",
    }))
    seen = echo["headers"]
    assert seen.get("x-forwarded-for") == "127.0.0.1", seen
    assert seen.get("x-forwarded-proto") == "http", seen
    assert seen.get("x-forwarded-host") in ("127.0.0.1", f"127.0.0.1:{gateway.port}"), seen


# -- access log -----------------------------------------------------------------------------------

ACCESS_LOG_FIELDS = ("time", "request_id", "route", "method", "path", "status", "upstream",
                     "upstream_status", "duration_ms", "upstream_ms", "bytes_sent")


def test_access_log_line_per_request(gateway: Gateway, echo_upstream: Any) -> None:
    ids = [f"log-test-{i}-{time.monotonic_ns()}" for i in range(3)]
    for request_id in ids:
        assert gateway.get("/echo/logged", headers={"X-Request-ID": request_id}).status_code == 200
    entries = gateway.wait_for_log_entries(lambda e: e.get("request_id") in ids, count=3)
    assert sorted(e["request_id"] for e in entries) == sorted(ids), "exactly one line per request"
    for entry in entries:
        missing = [f for f in ACCESS_LOG_FIELDS if f not in entry]
        assert not missing, f"access log line lacks {missing}: {entry}"
        assert entry["route"] == "echo"
        assert entry["method"] == "GET"
        assert entry["path"] == "/echo/logged"
        assert entry["status"] == 200
        assert entry["upstream"] == echo_upstream.url
        assert entry["upstream_status"] == 200
        assert isinstance(entry["duration_ms"], (int, float)) and entry["duration_ms"] >= 0
        assert isinstance(entry["upstream_ms"], (int, float)) and 0 <= entry["upstream_ms"] <= entry["duration_ms"] + 1
        assert isinstance(entry["bytes_sent"], int) and entry["bytes_sent"] > 0


def test_access_log_records_gateway_errors(gateway: Gateway) -> None:
    request_id = f"log-404-{time.monotonic_ns()}"
    assert gateway.get("/no-such-route", headers={"X-Request-ID": request_id}).status_code == 404
    (entry,) = gateway.wait_for_log_entries(lambda e: e.get("request_id") == request_id)
    assert entry["status"] == 404
    assert entry["path"] == "/no-such-route"
    assert entry["method"] == "GET"


# -- the pool -------------------------------------------------------------------------------------


def test_status_and_state_files(gateway: Gateway) -> None:
    status = gateway.status()
    assert status["master_pid"] == gateway.master.pid == gateway.pid_file()
    assert status["socket"] == str(gateway.socket_path)
    assert len(status["workers"]) == gateway.workers
    for worker in status["workers"]:
        assert {"pid", "generation", "started_at"} <= worker.keys(), worker
        assert os.path.exists(f"/proc/{worker['pid']}")
    state = gateway.state()
    assert state["master_pid"] == status["master_pid"]


def test_killed_worker_is_respawned(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway()
    before = gw.worker_pids()
    victim = before[0]
    os.kill(victim, signal.SIGKILL)
    workers = gw.wait_for_workers(
        lambda ws: victim not in {w["pid"] for w in ws} and len(ws) == gw.workers,
        timeout=5, what=f"a replacement for killed worker {victim}")
    replacement = {w["pid"] for w in workers} - set(before)
    assert replacement, f"no new worker pid after killing {victim}: {workers}"
    assert gw.master.running()
    for i in range(20):
        response = gw.get(f"/echo/after-kill/{i}")
        assert response.status_code == 200, f"request {i} after respawn: {response.status_code} {response.text[:300]}"


def test_concurrency_at_four_times_the_pool_threads(make_gateway: Callable[..., Gateway]) -> None:
    """2 workers x 2 loop threads, nginx keeping 3 idle connections, 16 concurrent clients: no
    starvation, no 5xx, nothing slower than 1 s. Two bursts with a pause between, so the second
    one starts with idle kept-alive connections (which must pin nothing)."""
    gw = make_gateway(workers=2, threads=2, keepalive=3)
    clients = 4 * gw.workers * gw.threads
    per_client = 20
    results: list[tuple[int | str, float]] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        with requests.Session() as session:
            for i in range(per_client):
                delay = "&delay_ms=5" if i % 2 else ""
                started = time.monotonic()
                try:
                    status = session.get(gw.url(f"/echo/load/{index}/{i}?n={i}{delay}"), timeout=5).status_code
                except requests.RequestException as error:  # a starved request times out
                    status = f"{type(error).__name__}"
                with lock:
                    results.append((status, time.monotonic() - started))

    for burst in range(2):
        with ThreadPoolExecutor(max_workers=clients) as pool:
            list(pool.map(client, range(clients)))
        if burst == 0:
            time.sleep(1.0)

    assert len(results) == 2 * clients * per_client
    statuses = [s for s, _ in results]
    slowest = max(e for _, e in results)
    assert all(s == 200 for s in statuses), f"non-200 answers: { {s: statuses.count(s) for s in set(statuses)} }"
    assert slowest < 1.0, f"slowest request took {slowest:.3f}s"


# -- CLI: check, stop, reload ---------------------------------------------------------------------


def test_check_accepts_a_valid_config(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(start=False)
    result = gw.cli("check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_reports_every_error_with_file_and_pointer(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(start=False)
    broken = json.loads(gw.config_path.read_text())
    broken["routes"][0]["upstream"] = "nope"
    broken["server"]["workers"] = 0
    gw.write_raw_config(json.dumps(broken))
    result = gw.cli("check")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    path = str(gw.config_path)
    lines = output.splitlines()
    assert f'{path}: /routes/0/upstream: unknown upstream "nope"' in lines, output
    assert any(line.startswith(f"{path}: /server/workers: ") for line in lines), output


def test_check_rejects_invalid_json(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(start=False)
    gw.write_raw_config('{"routes": [')
    result = gw.cli("check")
    assert result.returncode == 1
    assert str(gw.config_path) in result.stdout + result.stderr


def test_stop_lets_in_flight_request_finish(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway()
    outcome: dict[str, Any] = {}

    def slow_request() -> None:
        try:
            outcome["response"] = requests.get(gw.url("/echo/slow-stop?delay_ms=1500"), timeout=15)
        except requests.RequestException as error:
            outcome["error"] = error

    thread = threading.Thread(target=slow_request)
    thread.start()
    time.sleep(0.4)  # the request is now inside a worker, waiting for the upstream
    stop = gw.cli_background("stop")
    code = gw.master.wait(timeout=15)  # reaps the master, which `stop` is waiting for
    stop_out, stop_err = stop.communicate(timeout=15)
    thread.join(timeout=15)
    assert "error" not in outcome, f"in-flight request failed during stop: {outcome.get('error')!r}"
    response = outcome["response"]
    assert response.status_code == 200, response.text[:300]
    assert response.json()["path"] == "/echo/slow-stop"
    assert code == 0, f"master exit status {code}"
    assert stop.returncode == 0, stop_out + stop_err
    assert not gw.socket_path.exists() or not _connectable(gw.socket_path), "socket still accepting after stop"
    # A new master starts over the old runtime directory and nginx reaches it again.
    gw.start_master()
    assert echo_of(gw.get("/echo/after-restart"))["path"] == "/echo/after-restart"


def _connectable(path: Any) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
        return True


def test_reload_with_broken_config_is_refused_and_old_config_serves(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway()
    generation = gw.status()["generation"]
    good = gw.config_path.read_text()
    broken = json.loads(good)
    broken["routes"][0]["upstream"] = "nope"
    gw.write_raw_config(json.dumps(broken))
    result = gw.cli("reload")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert 'unknown upstream "nope"' in output, output
    assert gw.status()["generation"] == generation
    for i in range(5):
        assert gw.get(f"/echo/still-serving/{i}").status_code == 200


def test_reload_applies_a_valid_config(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway()
    generation = gw.status()["generation"]
    assert_problem(gw.get("/added/x"), 404)
    config = json.loads(gw.config_path.read_text())
    config["routes"].append({"name": "added", "match": {"prefix": "/added/"}, "upstream": "echo"})
    gw.write_raw_config(json.dumps(config))
    result = gw.cli("reload")
    assert result.returncode == 0, result.stdout + result.stderr
    gw.wait_for_workers(
        lambda ws: len(ws) == gw.workers and all(w["generation"] > generation for w in ws),
        timeout=15, what="a new generation of workers after reload")
    assert gw.status()["generation"] > generation
    echo = echo_of(gw.get("/added/x"))
    assert echo["path"] == "/added/x"


def test_upstream_calls_ignore_proxy_environment(make_gateway: Callable[..., Gateway]) -> None:
    """libcurl would honour http_proxy/ALL_PROXY; the gateway tells it not to. A canary listener
    posing as the proxy must see no connection while requests still reach the upstream."""
    canary = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    canary.bind(("127.0.0.1", 0))
    canary.listen(16)
    canary.settimeout(0.2)
    proxy = f"http://127.0.0.1:{canary.getsockname()[1]}"
    try:
        gw = make_gateway(start=False)
        gw.master_env = {**os.environ, "http_proxy": proxy, "HTTP_PROXY": proxy, "https_proxy": proxy,
                         "HTTPS_PROXY": proxy, "ALL_PROXY": proxy, "all_proxy": proxy, "NO_PROXY": "", "no_proxy": ""}
        gw.start()
        for _ in range(5):
            assert echo_of(gw.get("/echo/through-no-proxy"))["path"] == "/echo/through-no-proxy"
        with pytest.raises(socket.timeout):
            canary.accept()
    finally:
        canary.close()
