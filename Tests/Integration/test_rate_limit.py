"""Issue 4: rate limiting through real nginx and real gateway pools (and a real redis-server).

Every test keys its counters on values of its own (a uuid in a header or a fresh gateway), so
the tests are independent of each other and of their order. Fixed and sliding windows are
aligned to multiples of the window length since the epoch; tests that need one whole window
pick a window length whose current window has enough time left (``window_with_headroom``), so
no burst straddles a boundary and the counts are exact.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from harness import REPO_ROOT, EchoUpstream, Gateway, GatewayFactory, RedisServer, wait_until, assert_problem

DEMO_API_KEY = "demo-key-change-me"
CLIENT_HEADER = "X-Client-Key"
MAX_WINDOW_SECONDS = 31 * 86400
# A request that waits for Redis waits at most timeout_ms (tens of ms); anything near a second
# means a hang.
SLOW_REQUEST_SECONDS = 1.0


# -- helpers --------------------------------------------------------------------------------------


def window_with_headroom(headroom: float, shortest: int = 60) -> int:
    """A window length (s) whose current aligned window ends more than ``headroom`` s from now."""
    now = time.time()
    for window in range(shortest, shortest + 120):
        if window - (now % window) > headroom:
            return window
    raise AssertionError("unreachable: consecutive window lengths cannot all end within the headroom")


def wait_for_fresh_window(window: int, needed: float) -> None:
    """Sleeps into the next aligned window when the current one has less than ``needed`` s left
    (for the demo's fixed 10 s window, which the test cannot choose)."""
    left = window - (time.time() % window)
    if left < needed:
        time.sleep(left + 0.05)


def fresh_key(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:12]}"


def limit(name: str, algorithm: str, limit: int, window: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "algorithm": algorithm, "limit": limit, "window_seconds": window,
            "key": [f"header:{CLIENT_HEADER}"], **extra}


def limited_route(name: str, *limits: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": name, "match": {"prefix": f"/{name}/"}, "upstream": "echo", "limits": list(limits)}




def retry_after(response: requests.Response) -> int:
    value = response.headers.get("Retry-After", "")
    assert re.fullmatch(r"[0-9]+", value), f"Retry-After must be integer seconds, got {value!r}"
    return int(value)


def ratelimit_fields(response: requests.Response) -> tuple[int, int, int]:
    """(RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset), each required and an integer."""
    values = []
    for name in ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"):
        value = response.headers.get(name, "")
        assert re.fullmatch(r"[0-9]+", value), f"{name} must be a non-negative integer, got {value!r}: {response.headers}"
        values.append(int(value))
    return values[0], values[1], values[2]


@dataclass
class Result:
    status: int | str  # the HTTP status, or the name of the exception a request raised
    seconds: float
    remaining: str | None
    retry_after: str | None


def burst(gw: Gateway, path: str, headers: Mapping[str, str], clients: int, per_client: int,
          method: str = "GET") -> list[Result]:
    """``clients`` threads released together by a barrier, each sending ``per_client``
    sequential requests on its own keep-alive connection."""
    results: list[Result] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client() -> None:
        with requests.Session() as session:
            barrier.wait(timeout=10)
            for _ in range(per_client):
                started = time.monotonic()
                try:
                    response = session.request(method, gw.url(path), headers=dict(headers), timeout=10)
                    result = Result(response.status_code, time.monotonic() - started,
                                    response.headers.get("RateLimit-Remaining"), response.headers.get("Retry-After"))
                except requests.RequestException as error:
                    result = Result(type(error).__name__, time.monotonic() - started, None, None)
                with lock:
                    results.append(result)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a client thread is still running after 60 s"
    assert len(results) == clients * per_client
    return results


def tally(results: list[Result]) -> dict[int | str, int]:
    counts: dict[int | str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    return counts


def demo_config(echo: EchoUpstream) -> dict[str, Any]:
    """config/portcullis.json with its relative paths made absolute (the harness writes the
    config into a temporary directory) and the echo upstream of this test run."""
    config = json.loads((REPO_ROOT / "config/portcullis.json").read_text())
    config["plugins_dir"] = str(REPO_ROOT / "plugins")
    for issuer in config["auth"]["jwt"]["issuers"]:
        if "jwks_file" in issuer:
            issuer["jwks_file"] = str(REPO_ROOT / "config" / issuer["jwks_file"])
    config["upstreams"]["echo"]["targets"] = [echo.url]
    return config


# -- 1. the demo contract -------------------------------------------------------------------------


def test_demo_limited_route_contract(make_gateway: Callable[..., Gateway], echo_upstream: EchoUpstream) -> None:
    """/limited/ needs the demo API key and admits 5 per 10 s per key: five 200s counting down,
    then 429 problem+json with Retry-After and RateLimit-Remaining: 0; decisions in the access log."""
    gw = make_gateway(config=demo_config(echo_upstream))
    route = next(r for r in gw.config["routes"] if r["name"] == "limited")
    (spec,) = route["limits"]
    assert (spec["algorithm"], spec["limit"], spec["window_seconds"], spec["key"]) == ("fixed_window", 5, 10, ["api_key"])

    # Without the key: 401, and the limit is not consulted (no RateLimit fields).
    anonymous = gw.get("/limited/x")
    assert anonymous.status_code == 401, anonymous.text[:300]
    assert "RateLimit-Remaining" not in anonymous.headers

    wait_for_fresh_window(10, needed=4.0)
    ids = [f"limited-{i}-{uuid.uuid4().hex[:8]}" for i in range(6)]
    responses = [gw.get(f"/limited/item/{i}", headers={"X-API-Key": DEMO_API_KEY, "X-Request-ID": ids[i]})
                 for i in range(6)]

    for i, response in enumerate(responses[:5]):
        assert response.status_code == 200, f"request {i + 1}: {response.status_code} {response.text[:300]}"
        assert response.json()["path"] == f"/limited/item/{i}"
        assert "x-api-key" not in response.json()["headers"], "the key must not reach the upstream"
        lim, remaining, reset = ratelimit_fields(response)
        assert (lim, remaining) == (5, 4 - i), response.headers
        assert 1 <= reset <= 10, response.headers

    denied = responses[5]
    body = assert_problem(denied, 429, "rate-limited")
    assert body["request_id"] == ids[5]
    assert body["limit"] == "per-key-10s", body
    seconds = retry_after(denied)
    assert 1 <= seconds <= 10, denied.headers
    assert body["retry_after"] == seconds, body
    assert denied.headers.get("RateLimit-Remaining") == "0", denied.headers
    lim, _, reset = ratelimit_fields(denied)
    assert lim == 5 and 1 <= reset <= 10, denied.headers

    entries = {e["request_id"]: e for e in gw.wait_for_log_entries(lambda e: e.get("request_id") in ids, count=6)}
    for i in range(5):
        entry = entries[ids[i]]
        assert entry["status"] == 200 and entry["route"] == "limited", entry
        assert entry["limits"] == f"per-key-10s:allowed:{4 - i}", entry
    assert entries[ids[5]]["status"] == 429
    assert entries[ids[5]]["limits"] == "per-key-10s:denied:0", entries[ids[5]]
    assert DEMO_API_KEY not in gw.access_log_path.read_text(), "the clear key leaked into the access log"


# -- 2. exact counting across the workers of one instance ------------------------------------------


@pytest.fixture(scope="module")
def four_worker_gateway(gateway_factory: GatewayFactory) -> Iterator[tuple[Gateway, int]]:
    """4 workers x 2 threads with one route per algorithm (limit L each, in the local table)."""
    L = 50
    window = window_with_headroom(30)
    gw = gateway_factory.create({"routes": [
        limited_route("fw", limit("fw", "fixed_window", L, window)),
        # Tiny refill: one token per 31 days, so only the burst is ever admitted during the test.
        limited_route("tb", limit("tb", "token_bucket", 1, MAX_WINDOW_SECONDS, burst=L)),
        limited_route("sw", limit("sw", "sliding_window", L, window)),
    ]}, workers=4, threads=2)
    yield gw, L
    gateway_factory.close([gw])


@pytest.mark.parametrize("algorithm", ["fw", "tb", "sw"], ids=["fixed_window", "token_bucket", "sliding_window"])
def test_concurrent_clients_on_one_key_admit_exactly_the_limit(four_worker_gateway: tuple[Gateway, int],
                                                               algorithm: str) -> None:
    """64 concurrent clients, 2 requests each (128 > L) on one key through 4 worker processes:
    exactly L admitted, each seeing a distinct RateLimit-Remaining (every decision was one
    atomic step on the shared table), the rest 429. For the sliding window all requests fall in
    one aligned window with no previous count, where its documented bound is exact: ≤ L."""
    gw, L = four_worker_gateway
    assert len(gw.worker_pids()) == 4
    key = {CLIENT_HEADER: fresh_key(algorithm)}
    results = burst(gw, f"/{algorithm}/x", key, clients=64, per_client=2)
    counts = tally(results)
    assert set(counts) <= {200, 429}, f"unexpected answers: {counts}"
    admitted = counts.get(200, 0)
    assert admitted <= L, f"{algorithm}: {admitted} admitted, more than the limit {L}"
    assert admitted == L, f"{algorithm}: {admitted} admitted, expected exactly {L}: {counts}"
    remaining = sorted(int(r.remaining) for r in results if r.status == 200)  # type: ignore[arg-type]
    assert remaining == list(range(L)), f"{algorithm}: RateLimit-Remaining of admitted requests {remaining}"
    for r in results:
        if r.status == 429:
            assert r.remaining == "0" and r.retry_after is not None and int(r.retry_after) >= 1, r
    # The key stays exhausted; another key has its own counter.
    assert gw.get(f"/{algorithm}/after", headers=key).status_code == 429
    assert gw.get(f"/{algorithm}/after", headers={CLIENT_HEADER: fresh_key("other")}).status_code == 200
    slowest = max(r.seconds for r in results)
    assert slowest < 5, f"slowest request {slowest:.2f}s"


# -- 3. two instances sharing one Redis ---------------------------------------------------------


def redis_settings(redis: RedisServer, namespace: str, **extra: Any) -> dict[str, Any]:
    return {"rate_limit": {"redis": {"host": "127.0.0.1", "port": redis.port, "namespace": namespace,
                                     "timeout_ms": 50, "instances": 2, **extra}}}


def redis_int(redis: RedisServer, *command: str) -> int:
    reply = redis.command(*command)
    assert reply[:1] in (b":", b"*"), reply
    return int(reply[1:])


def test_two_instances_share_one_redis_limit(make_gateway: Callable[..., Gateway],
                                             make_redis: Callable[[], RedisServer]) -> None:
    """Two nginx + two pools (separate runtime dirs and shared-memory tables), one Redis:
    32 clients on each instance, 2 requests each, on one key → exactly L admitted in total for
    every algorithm (each instance alone would admit L from a local table)."""
    redis = make_redis()
    L = 30
    window = window_with_headroom(30)
    # A generous timeout: this test is about exact counting, and a loaded machine can hold a
    # reply past 50 ms (the `closed` policy would then answer 503).
    overrides = {**redis_settings(redis, "pc-two", timeout_ms=2000), "routes": [
        limited_route("fw", limit("fw", "fixed_window", L, window, store="redis", on_store_failure="closed")),
        limited_route("tb", limit("tb", "token_bucket", 1, MAX_WINDOW_SECONDS, burst=L, store="redis",
                                  on_store_failure="closed")),
        limited_route("sw", limit("sw", "sliding_window", L, window, store="redis", on_store_failure="closed")),
    ]}
    first = make_gateway(overrides, workers=2, threads=2)
    second = make_gateway(overrides, workers=2, threads=2)
    assert first.run_dir != second.run_dir and first.port != second.port

    for algorithm in ("fw", "tb", "sw"):
        headers = {CLIENT_HEADER: fresh_key(algorithm)}
        outcome: dict[str, list[Result]] = {}
        runners = [threading.Thread(target=lambda g=g: outcome.__setitem__(g.name, burst(g, f"/{algorithm}/x", headers, 32, 2)))
                   for g in (first, second)]
        for runner in runners:
            runner.start()
        for runner in runners:
            runner.join(timeout=90)
        assert len(outcome) == 2, f"{algorithm}: a client group did not finish"
        per_instance = {name: tally(results) for name, results in outcome.items()}
        for counts in per_instance.values():
            assert set(counts) <= {200, 429}, f"{algorithm}: unexpected answers {per_instance}"
        admitted = sum(c.get(200, 0) for c in per_instance.values())
        assert admitted <= L, f"{algorithm}: {admitted} admitted across both instances, limit {L}: {per_instance}"
        assert admitted == L, f"{algorithm}: {admitted} admitted across both instances, expected {L}: {per_instance}"

    # The counters are in Redis, under the namespace: one key per algorithm.
    assert redis_int(redis, "KEYS", "pc-two:rl:*") == 3
    for gw in (first, second):
        entries = gw.access_log()
        assert entries and all("@local" not in e.get("limits", "") for e in entries), "a decision fell back to local"


def wait_for_redis_decisions(gw: Gateway, path: str, count: int,
                             send: Callable[[str, str], requests.Response]) -> list[int]:
    """After Redis comes back, each worker thread retries it once its retry_ms has passed; until
    then it may still decide by its failure policy. Sends ``count`` requests on a fresh key until
    a whole sequence is decided by Redis (no ``@local``/``:open``/``:closed`` in the access log);
    their statuses."""
    def probe() -> list[int] | None:
        key = fresh_key("back")
        rids = [f"back-{i}-{uuid.uuid4().hex[:6]}" for i in range(count)]
        statuses = [send(key, rid).status_code for rid in rids]
        logged = gw.wait_for_log_entries(lambda e: e.get("request_id") in rids, count=count)
        if any(re.search(r"@local|:open$|:closed$", e.get("limits", "")) for e in logged):
            return None
        return statuses
    return wait_until(probe, timeout=10, what=f"limits on {path} decided by Redis again", interval=0.2)


# -- 4. Redis stopped mid-run -------------------------------------------------------------------


def test_redis_down_failure_policies_and_recovery(make_gateway: Callable[..., Gateway],
                                                  make_redis: Callable[[], RedisServer]) -> None:
    """Redis stopped under traffic: `open` admits without counting, `closed` answers 503
    problem+json with Retry-After, `local` counts limit/instances in the shared-memory table;
    nothing else fails, nothing waits, no worker dies. Redis restarted: counting resumes there."""
    redis = make_redis()
    window = window_with_headroom(30)
    retry_ms = 400
    gw = make_gateway({**redis_settings(redis, "pc-fail", retry_ms=retry_ms), "routes": [
        limited_route("open", limit("open", "fixed_window", 3, window, store="redis", on_store_failure="open")),
        limited_route("closed", limit("closed", "fixed_window", 3, window, store="redis", on_store_failure="closed")),
        limited_route("local", limit("local", "fixed_window", 4, window, store="redis", on_store_failure="local")),
    ]}, workers=2, threads=2)
    workers_before = sorted(gw.worker_pids())
    slow: list[tuple[str, float]] = []

    def timed(path: str, key: str, request_id: str | None = None) -> requests.Response:
        headers = {CLIENT_HEADER: key}
        if request_id:
            headers["X-Request-ID"] = request_id
        started = time.monotonic()
        response = gw.get(path, headers=headers, timeout=10)
        elapsed = time.monotonic() - started
        if elapsed >= SLOW_REQUEST_SECONDS:
            slow.append((path, elapsed))
        return response

    # Redis up: each route is counted in Redis.
    exhausted = fresh_key("up")
    for name, lim in (("open", 3), ("closed", 3), ("local", 4)):
        statuses = [timed(f"/{name}/up", exhausted).status_code for _ in range(lim + 1)]
        assert statuses == [200] * lim + [429], f"{name} with Redis up: {statuses}"
    assert redis_int(redis, "DBSIZE") == 3

    # Traffic on all three routes while Redis goes away.
    mid_key = fresh_key("mid")
    seen: dict[str, list[int]] = {"open": [], "closed": [], "local": []}
    stop_traffic = threading.Event()
    errors: list[BaseException] = []

    def traffic() -> None:
        try:
            while not stop_traffic.is_set():
                for name in seen:
                    seen[name].append(timed(f"/{name}/mid", mid_key).status_code)
                time.sleep(0.02)
        except BaseException as error:  # noqa: BLE001 (reported by the assertion below)
            errors.append(error)

    runner = threading.Thread(target=traffic)
    runner.start()
    time.sleep(0.3)
    redis.stop()
    time.sleep(1.0)
    stop_traffic.set()
    runner.join(timeout=30)
    assert not runner.is_alive() and not errors, errors
    assert set(seen["open"]) <= {200, 429}, seen["open"]
    assert set(seen["closed"]) <= {200, 429, 503} and 503 in seen["closed"], seen["closed"]
    assert set(seen["local"]) <= {200, 429}, seen["local"]

    # Redis down, deterministic checks per policy.
    # open: the key Redis had exhausted passes, uncounted, without RateLimit fields.
    ids = [f"open-down-{i}-{uuid.uuid4().hex[:6]}" for i in range(5)]
    for request_id in ids:
        response = timed("/open/down", exhausted, request_id)
        assert response.status_code == 200, response.text[:300]
        assert "RateLimit-Remaining" not in response.headers, response.headers
    for entry in gw.wait_for_log_entries(lambda e: e.get("request_id") in ids, count=len(ids)):
        assert entry["limits"] == "open:open", entry

    # closed: 503 problem+json, Retry-After = retry_ms rounded up to seconds.
    for _ in range(3):
        response = timed("/closed/down", fresh_key("closed"), f"closed-down-{uuid.uuid4().hex[:8]}")
        body = assert_problem(response, 503, "rate-limit-store-unavailable")
        assert body["limit"] == "closed", body
        assert retry_after(response) == math.ceil(retry_ms / 1000), response.headers
        (entry,) = gw.wait_for_log_entries(lambda e, rid=body["request_id"]: e.get("request_id") == rid)
        assert entry["status"] == 503 and entry["limits"] == "closed:closed", entry

    # local: a fresh key gets limit / instances = 4 / 2 = 2 from the shared-memory table.
    local_key = fresh_key("local")
    ids = [f"local-down-{i}-{uuid.uuid4().hex[:6]}" for i in range(4)]
    responses = [timed("/local/down", local_key, request_id) for request_id in ids]
    assert [r.status_code for r in responses] == [200, 200, 429, 429], [r.status_code for r in responses]
    assert [r.headers.get("RateLimit-Remaining") for r in responses] == ["1", "0", "0", "0"]
    # The headers describe the divided limit that decided (documented).
    assert {r.headers.get("RateLimit-Limit") for r in responses} == {"2"}, [r.headers for r in responses]
    assert_problem(responses[2], 429, "rate-limited")
    assert retry_after(responses[2]) >= 1
    entries = {e["request_id"]: e for e in gw.wait_for_log_entries(lambda e: e.get("request_id") in ids, count=4)}
    assert [entries[i]["limits"] for i in ids] == [
        "local:allowed@local:1", "local:allowed@local:0", "local:denied@local:0", "local:denied@local:0"]

    assert not slow, f"requests slower than {SLOW_REQUEST_SECONDS}s while Redis was down: {slow}"
    assert gw.master.running()
    assert sorted(gw.worker_pids()) == workers_before, "a worker died while Redis was down"
    assert "redis unavailable" in gw.master.stderr_path.read_text()
    # status --json spells the counters in snake_case, as docs/rate-limiting.md does.
    table_stats = gw.status()["rate_limit_table"]
    assert table_stats["store_failures"] >= 1 and table_stats["degraded_decisions"] >= 1, table_stats
    assert not any(k in table_stats for k in ("storeFailures", "degradedDecisions")), table_stats

    # Redis back (empty: no persistence). Each worker thread retries it after retry_ms; until a
    # thread has, it may still decide locally, so probe with fresh keys until a whole sequence is
    # decided by Redis again.
    redis.restart()

    statuses = wait_for_redis_decisions(gw, "/local/back", 5, send=lambda key, rid: timed("/local/back", key, rid))
    assert statuses == [200, 200, 200, 200, 429], f"Redis counts the full limit of 4 again: {statuses}"
    assert redis_int(redis, "DBSIZE") >= 1, "the restarted Redis holds no counter"
    assert not slow, f"requests slower than {SLOW_REQUEST_SECONDS}s: {slow}"
    assert sorted(gw.worker_pids()) == workers_before
    wait_until(lambda: "distributed counting resumed" in gw.master.stderr_path.read_text(), 5,
               "the recovery to be logged")


def test_redis_paused_requests_bounded_by_the_timeout(make_gateway: Callable[..., Gateway],
                                                      make_redis: Callable[[], RedisServer]) -> None:
    """A Redis that accepts connections but never answers (SIGSTOP): each request waits at most
    about timeout_ms (50 ms), then its policy decides; no worker is lost. SIGCONT: counting
    resumes in Redis."""
    redis = make_redis()
    window = window_with_headroom(30)
    gw = make_gateway({**redis_settings(redis, "pc-pause", retry_ms=300), "routes": [
        limited_route("closed", limit("closed", "fixed_window", 3, window, store="redis", on_store_failure="closed")),
        limited_route("local", limit("local", "fixed_window", 4, window, store="redis", on_store_failure="local")),
    ]}, workers=2, threads=2)
    workers_before = sorted(gw.worker_pids())
    assert [gw.get("/local/up", headers={CLIENT_HEADER: "warm"}).status_code for _ in range(2)] == [200, 200]
    timings: list[float] = []

    def timed(path: str, key: str, request_id: str = "") -> requests.Response:
        headers = {CLIENT_HEADER: key, **({"X-Request-ID": request_id} if request_id else {})}
        started = time.monotonic()
        response = gw.get(path, headers=headers, timeout=10)
        timings.append(time.monotonic() - started)
        return response

    redis.process.send(signal.SIGSTOP)
    try:
        # Spaced past retry_ms, so threads try the paused Redis again and time out again.
        for round_ in range(3):
            for _ in range(3):
                assert_problem(timed("/closed/paused", fresh_key("closed")), 503, "rate-limit-store-unavailable")
            time.sleep(0.35 if round_ < 2 else 0)
        local_key = fresh_key("local")
        statuses = [timed("/local/paused", local_key).status_code for _ in range(3)]
        assert statuses == [200, 200, 429], f"local fallback (4 / 2 instances): {statuses}"
        assert max(timings) < SLOW_REQUEST_SECONDS, f"slowest request while Redis was paused: {max(timings):.3f}s"
        stderr = gw.master.stderr_path.read_text()
        assert "redis unavailable" in stderr, stderr[-2000:]
    finally:
        redis.process.send(signal.SIGCONT)
    assert sorted(gw.worker_pids()) == workers_before, "a worker died while Redis was paused"
    statuses = wait_for_redis_decisions(gw, "/local/resumed", 5, send=lambda key, rid: timed("/local/resumed", key, rid))
    assert statuses == [200, 200, 200, 200, 429], f"Redis counts the full limit of 4 again: {statuses}"


# -- 5. counters survive a worker SIGKILL and a reload ----------------------------------------------


def test_counters_survive_worker_kill_and_reload(make_gateway: Callable[..., Gateway]) -> None:
    """The table belongs to the master: workers killed with SIGKILL are replaced and the
    replacements continue the count; a reload that keeps the limit keeps the counter, one that
    changes it starts afresh."""
    window = window_with_headroom(60)
    spec = limit("kept", "fixed_window", 6, window)
    gw = make_gateway({"routes": [limited_route("kept", spec)]}, workers=2, threads=2)
    key = {CLIENT_HEADER: fresh_key("kept")}

    def remaining_after_one() -> str | None:
        response = gw.get("/kept/x", headers=key)
        assert response.status_code in (200, 429), response.text[:300]
        return response.headers.get("RateLimit-Remaining") if response.status_code == 200 else "429"

    assert [remaining_after_one() for _ in range(2)] == ["5", "4"]

    # Kill every worker: whatever answers next is a respawned process.
    before = gw.worker_pids()
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    gw.wait_for_workers(lambda ws: len(ws) == gw.workers and not ({w["pid"] for w in ws} & set(before)),
                        timeout=10, what="replacements for every killed worker")
    assert [remaining_after_one() for _ in range(2)] == ["3", "2"]

    # A reload that keeps the limit (it adds an unrelated route) keeps the counter.
    generation = gw.status()["generation"]
    config = json.loads(gw.config_path.read_text())
    config["routes"].append({"name": "extra", "match": {"prefix": "/extra/"}, "upstream": "echo"})
    gw.write_raw_config(json.dumps(config))
    result = gw.cli("reload")
    assert result.returncode == 0, result.stdout + result.stderr
    gw.wait_for_workers(lambda ws: len(ws) == gw.workers and all(w["generation"] > generation for w in ws),
                        timeout=15, what="the new generation of workers")
    assert gw.get("/extra/x").status_code == 200  # the new config is live
    assert [remaining_after_one() for _ in range(3)] == ["1", "0", "429"]

    # A reload that changes the limit starts it afresh (its parameters are part of the key).
    generation = gw.status()["generation"]
    next(r for r in config["routes"] if r["name"] == "kept")["limits"][0]["limit"] = 7
    gw.write_raw_config(json.dumps(config))
    result = gw.cli("reload")
    assert result.returncode == 0, result.stdout + result.stderr
    gw.wait_for_workers(lambda ws: len(ws) == gw.workers and all(w["generation"] > generation for w in ws),
                        timeout=15, what="the new generation of workers")
    assert remaining_after_one() == "6"


def test_table_pressure_is_bounded_and_reported(make_gateway: Callable[..., Gateway]) -> None:
    """A 64-slot table fed 400 distinct keys: eviction happens, `status` reports it, the table
    file keeps its size, and a hot key stays limited while the churn goes on."""
    # Generous headroom: on a loaded machine the gateway start and 400 requests take a while, and a
    # window boundary inside the run would refill the hot key.
    route = limited_route("churn", limit("per-client", "fixed_window", 3, window_with_headroom(90)))
    gw = make_gateway({"rate_limit": {"table_slots": 64}, "routes": [route]}, workers=2, threads=2)
    table = gw.run_dir / "ratelimit.table"
    size_before = table.stat().st_size if table.exists() else None
    hot = fresh_key("hot")
    # The hot key has used more than any cold key (2 against 1) before the churn starts; a key
    # that has used no more than its neighbours ties with them and may be evicted like them.
    assert [gw.get("/churn/x", headers={CLIENT_HEADER: hot}).status_code for _ in range(2)] == [200, 200]
    hot_statuses = []
    for i in range(400):
        assert gw.get("/churn/x", headers={CLIENT_HEADER: fresh_key(f"cold{i}")}).status_code == 200
        if i % 40 == 0:
            hot_statuses.append(gw.get("/churn/x", headers={CLIENT_HEADER: hot}).status_code)
    # Among keys of one fixed window (equal expiries) the one that used the least is evicted
    # first, so the hot key is never the victim: one more admission, then limited throughout.
    assert hot_statuses == [200] + [429] * 9, hot_statuses
    stats = gw.status()["rate_limit_table"]
    assert stats["slots"] == 64
    assert stats["evictions"] > 0 and stats["insertions"] >= 400, stats
    if size_before is not None:
        assert table.stat().st_size == size_before
    human = gw.cli("status")
    assert re.search(r"rate-limit table: 64 slots, \d+ insertions, [1-9]\d* evictions", human.stdout), human.stdout


# -- 6. documented edges (issue 14) ---------------------------------------------------------------


def test_policy_header_and_upstream_ratelimit_fields(make_gateway: Callable[..., Gateway]) -> None:
    """RateLimit-Policy gives a token bucket's quota per window as `q` and its burst as
    `pc-burst`; the gateway's RateLimit fields replace an upstream's own, and the problem's
    `retry_after` is in seconds, equal to Retry-After."""
    gw = make_gateway({"routes": [
        limited_route("tb", limit("tb", "token_bucket", 2, 1, burst=10)),
        limited_route("fw", limit("fw", "fixed_window", 1, window_with_headroom(10))),
        {**limited_route("dl", limit("dl", "fixed_window", 5, 60)), "upstream": "dead"},
    ]}, workers=1, threads=2)
    key = {CLIENT_HEADER: fresh_key("policy")}
    response = gw.get("/tb/x", headers=key)
    assert response.status_code == 200, response.text[:300]
    assert response.headers["RateLimit-Policy"] == '"tb";q=2;w=1;pc-burst=10', response.headers
    assert response.headers["RateLimit-Limit"] == "10", response.headers

    upstream_says = "set_header=RateLimit-Limit:999&set_header=RateLimit-Policy:upstream&set_header=RateLimit-Remaining:998"
    response = gw.get(f"/fw/x?{upstream_says}", headers=key)
    assert response.status_code == 200, response.text[:300]
    assert response.headers["RateLimit-Limit"] == "1", response.headers
    assert response.headers["RateLimit-Remaining"] == "0", response.headers
    assert response.headers["RateLimit-Policy"].startswith('"fw";q=1;w='), response.headers

    denied = gw.get("/fw/x", headers=key)
    body = assert_problem(denied, 429, "rate-limited")
    assert body["retry_after"] == retry_after(denied) and 1 <= body["retry_after"] <= 180, (body, denied.headers)

    # rate-limiting.md, Answers: the fields go on upstream answers and rejections only; an
    # answer the gateway makes itself after admitting the request (here 502) carries none.
    dead = gw.get("/dl/x", headers={CLIENT_HEADER: fresh_key("dead")})
    assert_problem(dead, 502, "upstream-unavailable")
    assert not any(h.lower().startswith("ratelimit") for h in dead.headers), dead.headers
