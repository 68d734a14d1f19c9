"""Issue 14: rate limiting, second round, through real nginx, worker pools and redis-server:
request cost, shadow mode, rejection shape and hidden headers, more key parts, exemptions and
concurrency limits (leases in the shared-memory table, reclaimed after a worker is SIGKILLed).

Counters are keyed on values of each test's own (uuid headers) or on fresh gateways, so the
tests do not depend on each other or on their order.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from harness import Gateway, GatewayFactory, RedisServer, assert_problem, wait_until
from test_auth import bearer, demo_hs256_token
from test_rate_limit import (
    CLIENT_HEADER, DEMO_API_KEY, MAX_WINDOW_SECONDS, Result, burst, demo_config, fresh_key, limit, limited_route,
    redis_int, redis_settings, retry_after, tally, window_with_headroom,
)

RATELIMIT_FIELDS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "RateLimit-Policy", "RateLimit")


# -- cost ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cost_gateway(gateway_factory: GatewayFactory) -> Iterator[Gateway]:
    """4 workers x 2 threads; per algorithm a limit of 60 charged 3 per request, and one whose
    cost comes from the X-Cost header (at most 5)."""
    window = window_with_headroom(30)
    gw = gateway_factory.create({"routes": [
        limited_route("fw", limit("fw", "fixed_window", 60, window, cost=3)),
        limited_route("tb", limit("tb", "token_bucket", 1, MAX_WINDOW_SECONDS, burst=60, cost=3)),
        limited_route("sw", limit("sw", "sliding_window", 60, window, cost=3)),
        limited_route("hdr", limit("hdr", "fixed_window", 50, window, cost={"header": "X-Cost", "max": 5})),
    ]}, workers=4, threads=2)
    yield gw
    gateway_factory.close([gw])


@pytest.mark.parametrize("route", ["fw", "tb", "sw"], ids=["fixed_window", "token_bucket", "sliding_window"])
def test_constant_cost_is_exact_under_64_concurrent_clients(cost_gateway: Gateway, route: str) -> None:
    """64 clients x 2 requests on one key, each request costing 3 of a limit of 60: exactly 20
    admitted, their RateLimit-Remaining values 57, 54, ..., 0 each seen once."""
    key = {CLIENT_HEADER: fresh_key(route)}
    results = burst(cost_gateway, f"/{route}/x", key, clients=64, per_client=2)
    counts = tally(results)
    assert counts == {200: 20, 429: 108}, f"{route}: {counts}"
    remaining = sorted(int(r.remaining) for r in results if r.status == 200)  # type: ignore[arg-type]
    assert remaining == list(range(0, 60, 3)), f"{route}: {remaining}"


def test_header_cost_is_exact_and_bad_costs_get_400(cost_gateway: Gateway) -> None:
    """Cost from X-Cost (1..5, default 1): 64 clients sending 2 on a limit of 50 → exactly 25
    admitted; a cost outside the bounds is a 400 problem that consumes nothing."""
    key = fresh_key("hdr")
    for bad in ("6", "0", "-2", "two", "1.5"):
        rid = f"bad-cost-{uuid.uuid4().hex[:8]}"
        response = cost_gateway.get("/hdr/x", headers={CLIENT_HEADER: key, "X-Cost": bad, "X-Request-ID": rid})
        body = assert_problem(response, 400, "invalid-rate-limit-cost")
        assert body["request_id"] == rid
        assert body["detail"] == 'rate limit "hdr": header "x-cost" must be an integer between 1 and 5', body
    results = burst(cost_gateway, "/hdr/x", {CLIENT_HEADER: key, "X-Cost": "2"}, clients=64, per_client=1)
    assert tally(results) == {200: 25, 429: 39}, tally(results)
    # Nothing is left for a cost of 1 either (25 x 2 = 50): the bad requests consumed nothing.
    assert cost_gateway.get("/hdr/x", headers={CLIENT_HEADER: key}).status_code == 429


def test_claim_cost(make_gateway: Callable[..., Gateway], echo_upstream: Any) -> None:
    """Cost from a JWT claim: a token with `weight: 4` on a limit of 10 → 2 admitted."""
    config = demo_config(echo_upstream)
    config["routes"].append({"name": "weighted", "match": {"prefix": "/weighted/"}, "upstream": "echo",
                             "auth": {"methods": ["jwt"]},
                             "limits": [{"name": "w", "algorithm": "fixed_window", "limit": 10,
                                         "window_seconds": window_with_headroom(10), "key": ["consumer"],
                                         "cost": {"claim": "weight", "max": 8}}]})
    gw = make_gateway(config=config, workers=1, threads=2)
    sub = fresh_key("heavy")
    statuses = [gw.get("/weighted/x", headers=bearer(demo_hs256_token(sub=sub, weight=4))).status_code for _ in range(3)]
    assert statuses == [200, 200, 429], statuses
    light = fresh_key("light")
    assert [gw.get("/weighted/x", headers=bearer(demo_hs256_token(sub=light))).status_code for _ in range(11)] == [200] * 10 + [429]
    assert_problem(gw.get("/weighted/x", headers=bearer(demo_hs256_token(sub=fresh_key("x"), weight=9))), 400,
                   "invalid-rate-limit-cost")


def test_cost_is_exact_in_redis_across_two_instances(make_gateway: Callable[..., Gateway],
                                                     make_redis: Callable[[], RedisServer]) -> None:
    """Two instances sharing one Redis, 32 clients on each, cost 3 of 60 (the Lua script takes
    the cost): exactly 20 admitted in total, per algorithm."""
    redis = make_redis()
    window = window_with_headroom(30)
    # A generous timeout: a loaded machine can hold a reply past 50 ms (`closed` would answer 503).
    overrides = {**redis_settings(redis, "pc-cost", timeout_ms=2000), "routes": [
        limited_route("fw", limit("fw", "fixed_window", 60, window, cost=3, store="redis", on_store_failure="closed")),
        limited_route("tb", limit("tb", "token_bucket", 1, MAX_WINDOW_SECONDS, burst=60, cost=3, store="redis",
                                  on_store_failure="closed")),
        limited_route("sw", limit("sw", "sliding_window", 60, window, cost=3, store="redis", on_store_failure="closed")),
    ]}
    first = make_gateway(overrides, workers=2, threads=2)
    second = make_gateway(overrides, workers=2, threads=2)
    for route in ("fw", "tb", "sw"):
        headers = {CLIENT_HEADER: fresh_key(route)}
        outcome: dict[str, list[Result]] = {}
        runners = [threading.Thread(target=lambda g=g: outcome.__setitem__(g.name, burst(g, f"/{route}/x", headers, 32, 2)))
                   for g in (first, second)]
        for runner in runners:
            runner.start()
        for runner in runners:
            runner.join(timeout=90)
        assert len(outcome) == 2
        admitted = sum(tally(results).get(200, 0) for results in outcome.values())
        assert admitted == 20, f"{route}: {admitted} admitted across both instances: {[tally(r) for r in outcome.values()]}"
    assert redis_int(redis, "KEYS", "pc-cost:rl:*") == 3


# -- shadow ----------------------------------------------------------------------------------------


def test_shadow_limit_counts_exactly_and_never_rejects(make_gateway: Callable[..., Gateway]) -> None:
    """A shadow limit of 10 under 64 concurrent clients x 2: all 128 admitted; the access log
    holds exactly 10 `shadow_allowed` decisions (remaining 9..0, each once) and 118
    `shadow_denied`; clients see only the enforced limit's fields."""
    window = window_with_headroom(30)
    gw = make_gateway({"routes": [limited_route("trial",
        limit("trial", "fixed_window", 10, window, mode="shadow"),
        limit("real", "fixed_window", 1000, window))]}, workers=4, threads=2)
    key = {CLIENT_HEADER: fresh_key("shadow")}
    results = burst(gw, "/trial/x", key, clients=64, per_client=2)
    assert tally(results) == {200: 128}, tally(results)
    response = gw.get("/trial/x", headers=key)
    assert response.status_code == 200
    assert response.headers["RateLimit-Policy"].startswith('"real";q=1000;'), response.headers
    assert response.headers["RateLimit-Limit"] == "1000", response.headers

    entries = gw.wait_for_log_entries(lambda e: e.get("route") == "trial", count=129)
    verdicts = [re.fullmatch(r"trial:(\w+):(\d+),real:allowed:\d+", e["limits"]) for e in entries]
    assert all(verdicts), [e["limits"] for e in entries][:5]
    allowed = sorted(int(m.group(2)) for m in verdicts if m and m.group(1) == "shadow_allowed")
    denied = [m for m in verdicts if m and m.group(1) == "shadow_denied"]
    assert allowed == list(range(10)), allowed
    assert len(denied) == 119
    assert all(e["status"] == 200 for e in entries)


# -- rejection shape and hidden headers --------------------------------------------------------------


def test_rejection_status_title_detail_and_hidden_headers(make_gateway: Callable[..., Gateway]) -> None:
    window = window_with_headroom(10)
    gw = make_gateway({"routes": [
        limited_route("shaped", limit("shaped", "fixed_window", 1, window, hide_client_headers=True,
                                      rejection={"status": 503, "title": "Busy", "detail": "Come back later."})),
        limited_route("plain", limit("plain", "fixed_window", 1, window, rejection={"status": 503})),
    ]}, workers=1, threads=2)
    key = {CLIENT_HEADER: fresh_key("shape"), "X-Request-ID": "shape-1"}
    first = gw.get("/shaped/x?set_header=RateLimit-Limit:7", headers=key)
    assert first.status_code == 200
    # Hidden: no field of the gateway's, so the upstream's own passes through untouched.
    assert first.headers.get("RateLimit-Limit") == "7" and "RateLimit-Policy" not in first.headers, first.headers
    denied = gw.get("/shaped/x", headers=key)
    body = assert_problem(denied, 503, "rate-limited")
    assert (body["title"], body["detail"], body["limit"], body["request_id"]) == ("Busy", "Come back later.", "shaped", "shape-1")
    assert body["retry_after"] == retry_after(denied)
    assert not any(name in denied.headers for name in RATELIMIT_FIELDS), denied.headers

    gw.get("/plain/x", headers=key)
    plain = gw.get("/plain/x", headers=key)
    body = assert_problem(plain, 503, "rate-limited")
    assert body["title"] == "Service Unavailable" and body["detail"].startswith('rate limit "plain" exceeded'), body
    assert plain.headers["RateLimit-Remaining"] == "0"


# -- key parts -------------------------------------------------------------------------------------


def test_path_method_query_cookie_and_path_param_key_parts(make_gateway: Callable[..., Gateway]) -> None:
    """Each route has a limit of 1 keyed on one part (and a per-test header): requests that
    differ in that part have separate counters, the same value shares one."""
    window = window_with_headroom(10)

    def keyed(name: str, part: str, match: dict[str, Any] | None = None) -> dict[str, Any]:
        spec = {"name": name, "algorithm": "fixed_window", "limit": 1, "window_seconds": window,
                "key": [part, f"header:{CLIENT_HEADER}"]}
        return {"name": name, "match": match or {"prefix": f"/{name}/"}, "upstream": "echo", "limits": [spec]}

    gw = make_gateway({"routes": [
        keyed("bypath", "path"),
        keyed("bymethod", "method"),
        keyed("byquery", "query:tenant"),
        keyed("bycookie", "cookie:session"),
        keyed("byparam", "path_param:id", {"path": "/byparam/{id}/items"}),
    ]}, workers=1, threads=2)
    key = {CLIENT_HEADER: fresh_key("parts")}

    def statuses(method: str, path: str, **extra: str) -> list[int]:
        return [gw.request(method, path, headers={**key, **extra}).status_code for _ in range(2)]

    assert statuses("GET", "/bypath/a") == [200, 429]
    assert statuses("GET", "/bypath/b") == [200, 429]
    assert statuses("GET", "/bymethod/x") == [200, 429]
    assert statuses("POST", "/bymethod/y") == [200, 429]
    assert statuses("GET", "/byquery/x?tenant=a&z=1") == [200, 429]
    assert statuses("GET", "/byquery/y?z=2&tenant=b") == [200, 429]
    assert statuses("GET", "/byquery/y?tenant=a") == [429, 429]
    assert statuses("GET", "/bycookie/x", Cookie="session=s1; other=1") == [200, 429]
    assert statuses("GET", "/bycookie/x", Cookie="other=1; session=s2") == [200, 429]
    assert statuses("GET", "/byparam/1/items") == [200, 429]
    assert statuses("GET", "/byparam/2/items") == [200, 429]


def test_nginx_variable_key_part(make_gateway: Callable[..., Gateway]) -> None:
    """`var:TENANT` reads the FastCGI param PORTCULLIS_VAR_TENANT that the operator adds to the
    snippet (here `$arg_tenant`); a client header of a similar name cannot pose as it."""
    window = window_with_headroom(10)
    gw = make_gateway({"routes": [
        limited_route("byvar", limit("byvar", "fixed_window", 2, window, key=["var:TENANT"])),
    ]}, workers=1, threads=2)

    def fresh_get(path: str, **headers: str) -> requests.Response:
        return requests.get(gw.url(path), headers=headers, timeout=10)  # a new connection each time

    # Before the snippet sets the param, every request shares the `-` counter: exhaust it.
    assert [fresh_get("/byvar/x?tenant=a").status_code for _ in range(3)] == [200, 200, 429]
    snippet = gw.nginx_prefix / "portcullis.conf"
    snippet.write_text(snippet.read_text().replace(
        "fastcgi_pass portcullis;", "fastcgi_pass portcullis;\n    fastcgi_param PORTCULLIS_VAR_TENANT $arg_tenant;", 1))
    gw.reload_nginx()
    for tenant in ("a", "b"):
        assert [fresh_get(f"/byvar/x?tenant={tenant}").status_code for _ in range(3)] == [200, 200, 429], tenant
    # A client header arrives as HTTP_PORTCULLIS_VAR_TENANT, never as the param itself.
    assert fresh_get("/byvar/x?tenant=a", **{"Portcullis-Var-Tenant": "zzz"}).status_code == 429
    assert fresh_get("/byvar/x?tenant=c", **{"Portcullis-Var-Tenant": "a"}).status_code == 200


# -- exemptions ------------------------------------------------------------------------------------


def test_exempt_consumers_groups_and_client_networks(make_gateway: Callable[..., Gateway], echo_upstream: Any) -> None:
    """A limit of 1 that exempts the `demo` group, the JWT consumer `ops` and 127.0.0.0/8 (on
    another route): exempt requests pass without counting and are logged `name:exempt`."""
    window = window_with_headroom(10)
    config = demo_config(echo_upstream)

    def route(name: str, exempt: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "match": {"prefix": f"/{name}/"}, "upstream": "echo",
                "auth": {"methods": ["api_key", "jwt"]},
                "limits": [{"name": name, "algorithm": "fixed_window", "limit": 1, "window_seconds": window,
                            "key": ["consumer"], "exempt": exempt}]}

    config["routes"] += [route("bygroup", {"groups": ["demo"], "consumers": ["ops"]}),
                         route("bynet", {"clients": ["127.0.0.0/8"]}),
                         route("othernet", {"clients": ["10.0.0.0/8", "::1"]})]
    gw = make_gateway(config=config, workers=1, threads=2)
    api_key = {"X-API-Key": DEMO_API_KEY}
    ops = bearer(demo_hs256_token(sub="ops"))
    other = bearer(demo_hs256_token(sub=fresh_key("someone")))
    for _ in range(3):
        response = gw.get("/bygroup/x", headers=api_key)
        assert response.status_code == 200 and "RateLimit-Remaining" not in response.headers, response.headers
        assert gw.get("/bygroup/x", headers=ops).status_code == 200
        assert gw.get("/bynet/x", headers=other).status_code == 200
    assert [gw.get("/bygroup/x", headers=other).status_code for _ in range(2)] == [200, 429]
    assert [gw.get("/othernet/x", headers=other).status_code for _ in range(2)] == [200, 429]
    entries = gw.wait_for_log_entries(lambda e: e.get("route") == "bynet", count=3)
    assert len(entries) == 3 and all(e["limits"] == "bynet:exempt" for e in entries), entries


# -- concurrency limits ------------------------------------------------------------------------------


def conn_limit(name: str, in_flight: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "algorithm": "concurrency", "limit": in_flight, "key": [f"header:{CLIENT_HEADER}"], **extra}


def test_concurrency_limit_is_exact_under_64_concurrent_clients(make_gateway: Callable[..., Gateway]) -> None:
    """At most 10 in flight: 64 clients at once on a slow upstream (1.5 s) → exactly 10 admitted,
    54 answered 429 with Retry-After 1; once they end, the places are free again (released at the
    end of each request, long before the 60 s leases would lapse)."""
    gw = make_gateway({"routes": [limited_route("conn", conn_limit("conn", 10))]},
                      workers=4, threads=2)
    key = {CLIENT_HEADER: fresh_key("conn")}
    results = burst(gw, "/conn/x?delay_ms=1500", key, clients=64, per_client=1)
    assert tally(results) == {200: 10, 429: 54}, tally(results)
    assert all(r.retry_after == "1" for r in results if r.status == 429)
    # All ended: the next wave gets all 10 places again.
    again = burst(gw, "/conn/x?delay_ms=800", key, clients=20, per_client=1)
    assert tally(again) == {200: 10, 429: 10}, tally(again)
    assert gw.get("/conn/x", headers=key).status_code == 200
    entries = gw.wait_for_log_entries(lambda e: e.get("route") == "conn", count=64 + 20 + 1)
    assert sum(1 for e in entries if e["limits"].startswith("conn:allowed:")) == 21, [e["limits"] for e in entries]


def test_concurrency_leases_of_a_killed_worker_lapse(make_gateway: Callable[..., Gateway]) -> None:
    """A worker SIGKILLed while its 3 requests hold all 3 places: the places stay taken (no
    release ever comes) until the leases lapse, 3 to 6 s after they were taken
    (lease_seconds: 3), then the capacity is back."""
    gw = make_gateway({"routes": [limited_route("lease", conn_limit("lease", 3, lease_seconds=3))]},
                      workers=1, threads=2)
    key = {CLIENT_HEADER: fresh_key("lease")}
    (worker,) = gw.worker_pids()
    outcome: list[Result] = []
    # POST: nginx never replays it on another connection when the worker dies.
    runner = threading.Thread(target=lambda: outcome.extend(burst(gw, "/lease/x?delay_ms=8000", key, clients=3, per_client=1, method="POST")))
    taken = time.monotonic()
    runner.start()
    # The probe competes for a place itself: let the 3 requests arrive first.
    time.sleep(1.0)
    assert gw.get("/lease/probe", headers=key).status_code == 429, "all 3 places are taken"
    os.kill(worker, signal.SIGKILL)
    gw.wait_for_workers(lambda ws: len(ws) == 1 and ws[0]["pid"] != worker, timeout=10, what="a replacement worker")
    runner.join(timeout=30)
    assert len(outcome) == 3 and 200 not in [r.status for r in outcome], outcome
    if time.monotonic() - taken < 2.9:  # within one lease period a lease cannot have lapsed
        assert gw.get("/lease/x", headers=key).status_code == 429, "the dead worker's leases still hold their places"
    # Within two lease periods the places come back, all three.
    wait_until(lambda: gw.get("/lease/probe", headers=key).status_code == 200 or None, 8, "the leases to lapse")
    assert time.monotonic() - taken > 3.0, "a lease lapsed before its period was over"
    results = burst(gw, "/lease/x?delay_ms=1000", key, clients=5, per_client=1)
    assert tally(results) == {200: 3, 429: 2}, tally(results)
