"""Issue 10, observability: Prometheus metrics in shared memory, the scoreboard, W3C trace
context, the slow-request log, and the status page in a real headless Chromium.

Counts are checked against the traffic each test sends; metrics are read through nginx's
`/_portcullis/` location (nginx/portcullis.conf) and with `portcullis metrics`, and parsed with
the Python prometheus_client parser (the text format's reference implementation).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import REPO_ROOT, EchoUpstream, Gateway, RedisServer, assert_problem, echo_of, wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape, keyed by (sample name, labels); the parser rejects bad syntax."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def scrape(gw: Gateway) -> Samples:
    response = gw.get("/_portcullis/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over every series of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def send(gw: Gateway, paths: list[str], workers: int = 8, **kwargs: Any) -> list[int]:
    """Sends the requests concurrently (so both workers serve some) and returns the statuses."""
    def one(path: str) -> int:
        import requests
        return requests.get(gw.url(path), timeout=15, **kwargs).status_code
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, paths))


@pytest.fixture
def gw(make_gateway: Callable[..., Gateway]) -> Gateway:
    return make_gateway(workers=2, threads=2)


def test_counts_equal_the_traffic_by_route_and_class_across_workers_reload_and_crash(gw: Gateway) -> None:
    # The harness's readiness probe was one unmatched request already.
    unmatched = value(scrape(gw), "portcullis_requests_total", route="_unmatched", **{"class": "4xx"})
    # 5xx from the dead upstream (502, or 503 once its breaker opens), not from the echo
    # upstream, whose breaker would then refuse the other routes' requests.
    statuses = send(gw, ["/echo/a"] * 40 + ["/dead/b"] * 6 + ["/nowhere"] * 5 + ["/v1/x?status=404"] * 3)
    assert statuses.count(200) == 40 and len([s for s in statuses if s >= 500]) == 6 and statuses.count(404) == 8
    s = scrape(gw)
    assert value(s, "portcullis_requests_total", route="echo", **{"class": "2xx"}) == 40
    assert value(s, "portcullis_requests_total", route="dead", **{"class": "5xx"}) == 6
    assert value(s, "portcullis_requests_total", route="v1", **{"class": "4xx"}) == 3
    assert value(s, "portcullis_requests_total", route="_unmatched", **{"class": "4xx"}) == unmatched + 5
    # Histogram: _count is the requests, +Inf bucket equals it, upstream only for routed ones.
    for name in ("portcullis_request_duration_seconds", "portcullis_upstream_duration_seconds"):
        assert value(s, name + "_count", route="echo", **{"class": "2xx"}) == 40
        assert value(s, name + "_bucket", route="echo", le="+Inf", **{"class": "2xx"}) == 40
    assert value(s, "portcullis_upstream_duration_seconds_count", route="_unmatched", **{"class": "4xx"}) == 0
    assert value(s, "portcullis_workers", state="ready") == 2
    assert len({ls for (n, ls) in s if n == "portcullis_requests_in_flight"}) == 2, "one block per worker"
    assert value(s, "portcullis_config_generation") == 1

    # A reload (a route added) and a crashed worker: counters carry on, never backwards.
    config = dict(gw.config)
    config["routes"] = [*config["routes"], {"name": "extra", "match": {"prefix": "/extra/"}, "upstream": "echo"}]
    gw.set_config(config)
    result = gw.cli("reload")
    assert result.returncode == 0, result.stderr
    victim = gw.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    gw.wait_for_workers(lambda ws: len(ws) == 2 and victim not in [w["pid"] for w in ws] and all(w["ready"] for w in ws),
                        15, "a replacement worker")
    assert send(gw, ["/echo/a"] * 10 + ["/extra/y"] * 4).count(200) == 14
    after = scrape(gw)
    assert value(after, "portcullis_requests_total", route="echo", **{"class": "2xx"}) == 50
    assert value(after, "portcullis_requests_total", route="extra", **{"class": "2xx"}) == 4
    assert value(after, "portcullis_requests_total", route="dead", **{"class": "5xx"}) == 6
    assert value(after, "portcullis_config_generation") == 2
    assert value(after, "portcullis_reloads_total", result="ok") == 1
    for key, v in s.items():
        if key[0].endswith(("_total", "_count", "_bucket", "_sum")) and "pid" not in dict(key[1]):
            assert after.get(key, 0) >= v, f"{key} went backwards: {v} -> {after.get(key)}"


def test_latency_buckets_separate_slow_from_fast_requests(gw: Gateway) -> None:
    assert send(gw, ["/echo/fast"] * 10 + ["/echo/slow?delay_ms=600"] * 3).count(200) == 13
    s = scrape(gw)
    labels = {"route": "echo", "class": "2xx"}
    assert value(s, "portcullis_request_duration_seconds_bucket", le="0.5", **labels) == 10
    assert value(s, "portcullis_request_duration_seconds_bucket", le="30", **labels) == 13
    assert value(s, "portcullis_upstream_duration_seconds_bucket", le="0.5", **labels) == 10
    assert value(s, "portcullis_request_duration_seconds_sum", **labels) >= 1.8


def test_auth_failures_and_rate_limits_are_counted_by_reason_and_limit(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway({
        "consumers": [{"id": "alice", "api_keys": [{"id": "k1", "sha256": "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"}]}],
        "routes": [{"name": "private", "match": {"prefix": "/private/"}, "upstream": "echo", "auth": {"methods": ["api_key"]},
                    "limits": [{"name": "per-ip", "algorithm": "fixed_window", "limit": 2, "window_seconds": 60, "key": ["ip"]}]}],
    })
    assert send(gw, ["/private/x"] * 3, workers=1).count(401) == 3
    assert send(gw, ["/private/x"] * 2, workers=1, headers={"X-API-Key": "wrong"}).count(401) == 2
    statuses = send(gw, ["/private/x"] * 5, workers=1, headers={"X-API-Key": "secret"})
    assert statuses.count(200) == 2 and statuses.count(429) == 3, statuses
    s = scrape(gw)
    assert value(s, "portcullis_auth_failures_total", route="private", reason="missing_credential") == 3
    assert value(s, "portcullis_auth_failures_total", route="private", reason="invalid_credential") == 2
    assert value(s, "portcullis_rate_limited_total", route="private", limit="per-ip") == 3
    assert value(s, "portcullis_rate_table_used_slots") >= 1


def test_scoreboard_shows_a_busy_loop_during_a_slow_request(gw: Gateway) -> None:
    import requests
    done = threading.Event()
    thread = threading.Thread(target=lambda: (requests.get(gw.url("/echo/held?delay_ms=2500"), timeout=15), done.set()))
    thread.start()

    def busy() -> Samples | None:
        s = scrape(gw)
        ages = [v for (n, ls), v in s.items() if n == "portcullis_loop_oldest_request_seconds" and ("route", "echo") in ls]
        return s if ages and max(ages) >= 0.3 else None
    s = wait_until(busy, 2.4, "a loop busy with the slow echo request")
    assert total(s, "portcullis_requests_in_flight") >= 1
    assert total(s, "portcullis_loop_requests_in_flight") >= 1
    assert value(s, "portcullis_loops", state="busy") >= 1
    assert value(s, "portcullis_loops", state="total") == 4  # 2 workers x 2 threads
    thread.join(15)
    assert done.is_set()
    after = scrape(gw)
    assert not [k for k in after if k[0] == "portcullis_loop_oldest_request_seconds" and ("route", "echo") in k[1]]
    assert total(after, "portcullis_requests_in_flight") == 0
    assert value(after, "portcullis_loops", state="busy") == 0


def test_cli_reads_the_same_counters_and_admin_paths_answer_problems(gw: Gateway) -> None:
    unmatched = value(scrape(gw), "portcullis_requests_total", route="_unmatched", **{"class": "4xx"})
    assert send(gw, ["/echo/cli"] * 7).count(200) == 7
    result = gw.cli("metrics")
    assert result.returncode == 0, result.stderr
    s = parse(result.stdout)
    assert value(s, "portcullis_requests_total", route="echo", **{"class": "2xx"}) == 7
    assert value(s, "portcullis_info", version="0.1.0", master_pid=str(gw.pid_file())) == 1
    assert_problem(gw.get("/_portcullis/nope"), 404, "route-not-found")
    refused = gw.request("POST", "/_portcullis/metrics")
    assert_problem(refused, 405, "method-not-allowed")
    assert refused.headers["Allow"] == "GET, HEAD"
    head = gw.request("HEAD", "/_portcullis/metrics")
    assert head.status_code == 200 and head.content == b"", head.content[:100]
    assert head.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert head.headers["Cache-Control"] == "no-store"
    for page in ("/_portcullis/", "/_portcullis/status"):
        html = gw.get(page)
        assert html.status_code == 200 and html.headers["Content-Type"] == "text/html; charset=utf-8", (page, html.headers)
        assert html.text.lstrip().lower().startswith("<!doctype html"), html.text[:80]
    # Scrapes are not counted as requests.
    assert value(scrape(gw), "portcullis_requests_total", route="_unmatched", **{"class": "4xx"}) == unmatched


def test_metrics_can_be_switched_off(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway({"metrics": {"enabled": False}})
    assert send(gw, ["/echo/off"] * 5).count(200) == 5
    s = scrape(gw)
    assert value(s, "portcullis_metrics_enabled") == 0
    assert total(s, "portcullis_requests_total") == 0
    assert value(s, "portcullis_workers", state="ready") == 2


def test_metrics_refuses_without_a_running_master(tmp_path: Path, portcullis_bin: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"server": {"runtime_dir": str(tmp_path / "run")}, "upstreams": {}, "routes": []}))
    result = subprocess.run([str(portcullis_bin), "metrics", "--config", str(config)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 3 and "not running" in result.stderr


def test_every_served_family_is_documented_and_the_dashboard_uses_only_those(gw: Gateway) -> None:
    served = set(re.findall(r"^# TYPE (\S+) ", gw.get("/_portcullis/metrics").text, re.M))
    documented = set(re.findall(r"^\| `(portcullis_[a-z_]+)` \|", (REPO_ROOT / "docs/observability.md").read_text(), re.M))
    assert served == documented, f"served, not documented: {served - documented}; documented, not served: {documented - served}"
    dashboard = json.loads((REPO_ROOT / "docs/grafana-dashboard.json").read_text())
    used = {re.sub(r"_(bucket|sum|count)$", "", name) for panel in dashboard["panels"] for target in panel["targets"]
            for name in re.findall(r"portcullis_[a-z_]+", target["expr"])}
    assert used <= documented, f"the dashboard queries unknown metrics: {used - documented}"


# -- upstream targets and Redis degraded mode ---------------------------------------------

HEALTH_CHECK = {"path": "/healthz", "interval_ms": 200, "timeout_ms": 500, "healthy_threshold": 2, "unhealthy_threshold": 2}


def test_upstream_targets_are_counted_with_health_and_breaker_state(make_gateway: Callable[..., Gateway],
                                                                     echo_upstream: EchoUpstream,
                                                                     dead_upstream_url: str) -> None:
    dead, echo = dead_upstream_url, echo_upstream.url
    # "pair": no health checks, a breaker that opens on the first failure; the dead target is
    # first, so each loop's first request tries it. "checked": health checks take it out.
    gw = make_gateway(config={
        "upstreams": {
            "pair": {"targets": [dead, echo], "connect_timeout_ms": 1000, "timeout_ms": 10000,
                     "circuit_breaker": {"consecutive_failures": 1, "open_ms": 600000, "max_open_ms": 600000}},
            "checked": {"targets": [dead, echo], "connect_timeout_ms": 1000, "timeout_ms": 10000, "health_check": HEALTH_CHECK},
        },
        "routes": [{"name": "pair", "match": {"prefix": "/pair/"}, "upstream": "pair"},
                   {"name": "checked", "match": {"prefix": "/checked/"}, "upstream": "checked"}],
    }, workers=2, threads=2)
    # One at a time: the first try on the dead target opens its breaker before anything else
    # is sent, so it gets exactly one try, which fails and is retried on the echo target.
    statuses = [gw.get("/pair/x").status_code for _ in range(20)]
    assert statuses == [200] * 20
    pair_dead, pair_echo = {"upstream": "pair", "target": dead}, {"upstream": "pair", "target": echo}
    checked_dead, checked_echo = {"upstream": "checked", "target": dead}, {"upstream": "checked", "target": echo}
    def dead_checked_down() -> Samples | None:
        s = scrape(gw)
        return s if value(s, "portcullis_upstream_up", **checked_dead) == 0 else None
    s = wait_until(dead_checked_down, 10, "the health checks take the dead target out")
    assert value(s, "portcullis_upstream_requests_total", **pair_dead) == 1
    assert value(s, "portcullis_upstream_failures_total", **pair_dead) == 1
    assert value(s, "portcullis_upstream_retries_total", **pair_dead) == 1
    assert value(s, "portcullis_upstream_requests_total", **pair_echo) == 20
    assert value(s, "portcullis_upstream_failures_total", **pair_echo) == 0
    assert value(s, "portcullis_upstream_retries_total", **pair_echo) == 0
    assert value(s, "portcullis_upstream_breaker_state", **pair_dead, state="open") == 1
    assert value(s, "portcullis_upstream_breaker_state", **pair_dead, state="closed") == 0
    assert value(s, "portcullis_upstream_breaker_state", **pair_echo, state="closed") == 1
    assert value(s, "portcullis_upstream_up", **pair_dead) == 1, "no health check: only the breaker says it is out"
    assert value(s, "portcullis_upstream_up", **checked_echo) == 1
    assert value(s, "portcullis_upstream_breaker_state", **checked_dead, state="closed") == 1
    for target in (pair_dead, pair_echo, checked_dead, checked_echo):
        assert ("portcullis_upstream_in_flight", frozenset(target.items())) in s
        assert value(s, "portcullis_upstream_in_flight", **target) == 0
    # `portcullis metrics` reads the same shared state.
    cli = parse(gw.cli("metrics").stdout)
    assert value(cli, "portcullis_upstream_up", **checked_dead) == 0
    assert value(cli, "portcullis_upstream_requests_total", **pair_echo) == 20
    # A reload that drops the dead target: its counters stay, its gauges go.
    config = json.loads(gw.config_path.read_text())
    config["upstreams"]["pair"]["targets"] = [echo]
    gw.set_config(config)
    assert gw.cli("reload").returncode == 0
    s = scrape(gw)
    assert value(s, "portcullis_upstream_requests_total", **pair_dead) == 1
    assert ("portcullis_upstream_up", frozenset(pair_dead.items())) not in s
    assert value(s, "portcullis_upstream_up", **pair_echo) == 1


def test_redis_degraded_seconds_rise_while_redis_is_down(make_gateway: Callable[..., Gateway],
                                                         make_redis: Callable[[], RedisServer],
                                                         echo_upstream: EchoUpstream) -> None:
    redis = make_redis()
    gw = make_gateway(config={
        "rate_limit": {"redis": {"host": "127.0.0.1", "port": redis.port, "namespace": "pc-degraded", "timeout_ms": 100, "retry_ms": 300}},
        "upstreams": {"echo": {"targets": [echo_upstream.url]}},
        "routes": [{"name": "limited", "match": {"prefix": "/limited/"}, "upstream": "echo",
                    "limits": [{"name": "big", "algorithm": "fixed_window", "limit": 1000000, "window_seconds": 3600,
                                "key": ["route"], "store": "redis", "on_store_failure": "open"}]}],
    }, workers=2, threads=2)
    degraded = "portcullis_rate_limit_degraded_seconds_total"
    assert send(gw, ["/limited/up"] * 8).count(200) == 8
    assert value(scrape(gw), degraded) == 0
    redis.stop()
    # Requests on every loop find Redis gone and are admitted by the `open` policy.
    assert send(gw, ["/limited/down"] * 16).count(200) == 16
    first = value(scrape(gw), degraded)
    time.sleep(1.0)
    second = value(scrape(gw), degraded)
    assert 0 < first < second, (first, second)
    assert second - first >= 0.9, "the counter rises with the time spent degraded, not with requests"
    redis.restart()
    # Once each loop's retry interval is over, its next request reaches Redis again.
    def recovered() -> float | None:
        send(gw, ["/limited/back"] * 16)
        a = value(scrape(gw), degraded)
        time.sleep(0.5)
        return a if value(scrape(gw), degraded) == a else None
    final = wait_until(recovered, 20, "degraded mode ends", interval=0.4)
    assert final >= second


# -- trace context -------------------------------------------------------------------------

TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def test_traceparent_kept_started_and_replaced(gw: Gateway) -> None:
    incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
    kept = echo_of(gw.get("/echo/t", headers={"traceparent": incoming, "tracestate": "vendor=abc", "X-Request-ID": "trace-kept"}))
    m = TRACEPARENT.match(kept["headers"]["traceparent"])
    assert m and m.group(1) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert m.group(2) != "00f067aa0ba902b7", "the gateway's hop has its own span id"
    assert m.group(3) == "00", "not sampled stays not sampled"
    assert kept["headers"]["tracestate"] == "vendor=abc"

    started = echo_of(gw.get("/echo/t", headers={"X-Request-ID": "trace-started"}))
    m2 = TRACEPARENT.match(started["headers"]["traceparent"])
    assert m2 and m2.group(3) == "01" and m2.group(1) != "0" * 32
    assert "tracestate" not in started["headers"]

    replaced = echo_of(gw.get("/echo/t", headers={"traceparent": "00-XYZ-bad-01", "tracestate": "vendor=abc",
                                                  "X-Request-ID": "trace-replaced"}))
    m3 = TRACEPARENT.match(replaced["headers"]["traceparent"])
    assert m3 and m3.group(1) not in ("4bf92f3577b34da6a3ce929d0e0e4736", m2.group(1))
    assert "tracestate" not in replaced["headers"]

    log = {e["request_id"]: e for e in gw.wait_for_log_entries(lambda e: e["request_id"].startswith("trace-"), count=3)}
    assert log["trace-kept"]["trace_id"] == m.group(1)
    assert log["trace-started"]["trace_id"] == m2.group(1)
    assert log["trace-replaced"]["trace_id"] == m3.group(1)


# -- slow-request log -----------------------------------------------------------------------

def test_slow_requests_are_logged_with_their_stages(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway({"routes": [{"name": "echo", "match": {"prefix": "/echo/"}, "upstream": "echo", "slow_ms": 300}]})
    assert gw.get("/echo/quick", headers={"X-Request-ID": "not-slow"}).status_code == 200
    assert gw.get("/echo/late?delay_ms=500", headers={"X-Request-ID": "slow-1", "X-API-Key": "x"}).status_code == 200

    def slow_lines() -> list[dict[str, Any]] | None:
        lines = [json.loads(l) for l in gw.master.stderr_path.read_text().splitlines() if '"slow_request"' in l]
        return lines or None
    lines = wait_until(slow_lines, 5, "a slow_request line")
    assert [l["request_id"] for l in lines] == ["slow-1"]
    line = lines[0]
    assert line["route"] == "echo" and line["status"] == 200 and line["threshold_ms"] == 300
    assert line["upstream"] == gw.config["upstreams"]["echo"]["targets"][0]
    assert line["duration_ms"] >= 500 and line["upstream_ms"] >= 500
    assert re.fullmatch(r"[0-9a-f]{32}", line["trace_id"])
    for stage in ("auth_ms", "limit_ms", "transform_ms"):
        assert 0 <= line[stage] < 300
    assert line["consumer"] is None


# -- status page in headless Chromium -------------------------------------------------------

def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    pytest.fail("chromium is not installed: run `make deps`")


def run_chromium(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    profile = tempfile.mkdtemp(prefix="pc-chromium-")
    try:
        return subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                               "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def test_status_page_in_headless_chromium_shows_the_traffic(make_gateway: Callable[..., Gateway],
                                                            echo_upstream: EchoUpstream, dead_upstream_url: str) -> None:
    # The dead upstream's target: health checks take it out, the /dead/ requests open its breaker.
    gw = make_gateway({"upstreams": {"dead": {"health_check": HEALTH_CHECK}}}, workers=2, threads=2)
    assert len([s for s in send(gw, ["/dead/x"] * 6, workers=1) if s >= 500]) == 6
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            send(gw, ["/echo/page"] * 8 + ["/v1/p?status=500"] * 2, workers=4)
    background = threading.Thread(target=load)
    background.start()
    try:
        time.sleep(1.5)
        artefacts = gw.workdir / "artefacts"
        artefacts.mkdir()
        shot = artefacts / "status-page.png"
        result = run_chromium("--window-size=1280,900", "--virtual-time-budget=4000", f"--screenshot={shot}",
                              gw.url("/_portcullis/"))
        assert shot.exists() and shot.stat().st_size > 10_000, result.stderr[-2000:]
    finally:
        stop.set()
        background.join(30)
    # With the traffic stopped, the page's numbers must equal the counters.
    s = scrape(gw)
    dom = run_chromium("--virtual-time-budget=3000", "--dump-dom", gw.url("/_portcullis/")).stdout
    assert 'data-polls="' in dom, dom[-2000:]

    def row(route: str) -> dict[str, str]:
        m = re.search(r'<tr data-route="' + route + r'">(.*?)</tr>', dom)
        assert m, f"no row for {route} in {dom[-3000:]}"
        return dict(re.findall(r'<td class="([a-z0-9 ]+?)(?: err)?">([^<]*)</td>', m.group(1)))
    echo, v1 = row("echo"), row("v1")
    assert int(echo["requests"]) == total(s, "portcullis_requests_total", route="echo") > 0
    assert int(echo["c2xx"]) == value(s, "portcullis_requests_total", route="echo", **{"class": "2xx"})
    assert int(v1["c5xx"]) == value(s, "portcullis_requests_total", route="v1", **{"class": "5xx"}) > 0
    assert echo["p50"].endswith("ms") or echo["p50"].endswith("µs")
    assert re.search(r'id="workers">2 / 2<', dom)
    assert re.search(r'id="generation">1<', dom)

    def target(upstream: str, url: str) -> tuple[dict[str, str], dict[str, str]]:
        m = re.search(r'<tr data-upstream="' + upstream + r'" data-target="' + re.escape(url) + r'"([^>]*)>(.*?)</tr>', dom)
        assert m, f"no row for {upstream} {url} in {dom[-3000:]}"
        return dict(re.findall(r'data-([a-z]+)="([^"]*)"', m.group(1))), dict(re.findall(r'<td class="([a-z_]+)">([^<]*)</td>', m.group(2)))
    (dead_state, dead_cells), (echo_state, echo_cells) = target("dead", dead_upstream_url), target("echo", echo_upstream.url)
    assert dead_state == {"health": "down", "breaker": "open"}, dead_state
    assert dead_cells["down"] == "down" and dead_cells["open"] == "open"
    assert int(dead_cells["failures"]) == value(s, "portcullis_upstream_failures_total", upstream="dead", target=dead_upstream_url) >= 5
    assert echo_state == {"health": "up", "breaker": "closed"}, echo_state
    assert int(echo_cells["tries"]) == value(s, "portcullis_upstream_requests_total", upstream="echo", target=echo_upstream.url) > 0
    print(f"status page screenshot: {shot}")
