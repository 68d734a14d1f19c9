"""WebSocket and gRPC routes (issue 15, docs/protocols.md), through real nginx.

The worker authenticates, limits and routes the handshake or call, then hands it to nginx
(`X-Accel-Redirect` to the snippet's named location), which proxies it with Upgrade or
grpc_pass to the target the worker chose, with the headers the worker decided.

One gateway runs the demo config (its `/ws/` and `grpc-echo` routes) plus two limited test
routes; its echo upstream also echoes WebSocket messages, and scripts/grpc_echo.py is the gRPC
service. An idle WebSocket connection opened with the module's first test is checked past
nginx's default 60 s proxy timeout by a test that runs last in the session (`run_last`), so in
a full run the wait overlaps the other modules and costs nothing; the module's gateway is
session-scoped for that reason.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from harness import (
    PROBLEM_BASE, PROBLEM_JSON, REPO_ROOT, WS_BINARY, WS_PING, WS_PONG, WS_TEXT, EchoUpstream, Gateway,
    GatewayFactory, GrpcEcho, WebSocketClient, wait_until,
)

DEMO_KEY = "demo-key-change-me"
SAY = "/portcullis.demo.Echo/Say"
# An idle connection must outlive nginx's default proxy_read_timeout (60 s).
IDLE_SECONDS = 62

EXTRA_ROUTES = [
    {"name": "ws-limited", "match": {"prefix": "/ws-limited/"}, "upstream": "echo", "protocol": "websocket",
     "limits": [{"name": "per-connection", "algorithm": "fixed_window", "limit": 2, "window_seconds": 600, "key": ["route"]}]},
    {"name": "grpc-limited", "match": {"path": SAY, "headers": {"x-limited": True}}, "upstream": "grpc_echo",
     "protocol": "grpc", "auth": {"methods": ["api_key"]},
     "limits": [{"name": "per-call", "algorithm": "fixed_window", "limit": 2, "window_seconds": 600, "key": ["route"]}]},
    {"name": "ws-open", "match": {"prefix": "/ws-open/"}, "upstream": "echo", "protocol": "websocket"},
]
RATELIMIT_FIELDS = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "ratelimit-policy", "ratelimit")
# The upstream's own RateLimit fields, which the client must not get on a handed-off route.
UPSTREAM_RATELIMIT = "set_header=RateLimit-Limit:999&set_header=RateLimit-Policy:upstream&set_header=X-Upstream-Own:kept"


@pytest.fixture(scope="session")
def grpc_echo(test_root: Path) -> Iterator[GrpcEcho]:
    service = GrpcEcho(test_root).start()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def gw(gateway_factory: GatewayFactory, echo_upstream: EchoUpstream, grpc_echo: GrpcEcho) -> Iterator[Gateway]:
    demo = json.loads((REPO_ROOT / "config/portcullis.json").read_text())
    gateway = gateway_factory.create_from_repo_config("config/portcullis.json", {
        "upstreams": {"echo": {"targets": [echo_upstream.url]}, "grpc_echo": {"targets": [grpc_echo.url]}},
        "routes": demo["routes"] + EXTRA_ROUTES,
    })
    yield gateway
    gateway_factory.close([gateway])


@pytest.fixture(scope="session")
def idle_connection(gw: Gateway) -> Iterator[tuple[WebSocketClient, float]]:
    """Opened with the module's first test, left idle, used by the session's last test."""
    client = WebSocketClient(gw.port, "/ws/idle", {"X-API-Key": DEMO_KEY}, timeout=IDLE_SECONDS + 30)
    assert client.accepted, (client.status, client.headers)
    yield client, time.monotonic()
    client.close()


@pytest.fixture(autouse=True)
def _idle_opened_first(idle_connection: tuple[WebSocketClient, float]) -> None:
    """Every test of the module depends on it, so the idle clock starts with the first test."""


def assert_ratelimit_fields(lines: list[tuple[str, str]], limit: str) -> int:
    """The five RateLimit fields, each once, for `limit` (30 a minute per key in the demo
    config) and not the upstream's; returns RateLimit-Remaining."""
    fields = [(name, value) for name, value in lines if name.startswith("ratelimit")]
    assert sorted(name for name, _ in fields) == sorted(RATELIMIT_FIELDS), f"each once: {fields}"
    values = dict(fields)
    assert values["ratelimit-limit"] == "30"
    assert values["ratelimit-policy"] == f'"{limit}";q=30;w=60'
    remaining, reset = int(values["ratelimit-remaining"]), int(values["ratelimit-reset"])
    assert 0 <= remaining < 30 and 1 <= reset <= 60
    assert values["ratelimit"] == f'"{limit}";r={remaining};t={reset}'
    return remaining


def handshake_echo(client: WebSocketClient) -> dict:
    """What the echo upstream saw in the handshake request."""
    opcode, payload = client.exchange("__handshake__")
    assert opcode == WS_TEXT
    return json.loads(payload)


# -- WebSocket ----------------------------------------------------------------------------------


def test_handshake_with_a_valid_key_is_101_and_frames_are_echoed_both_ways(gw: Gateway) -> None:
    client = WebSocketClient(gw.port, "/ws/chat?room=1", {"X-API-Key": DEMO_KEY})
    try:
        assert client.accepted, (client.status, client.headers)
        assert client.exchange("hello") == (WS_TEXT, b"hello")
        big = bytes(range(256)) * 300  # 76800 bytes: a 64-bit length, more than one socket read
        assert client.exchange(big) == (WS_BINARY, big)
        client.send(b"are you there", opcode=WS_PING)
        assert client.receive() == (WS_PONG, b"are you there")
        assert client.exchange("héllo again") == (WS_TEXT, "héllo again".encode())
    finally:
        client.close()


def test_handshake_without_a_key_is_401_problem_and_never_reaches_the_upstream(gw: Gateway) -> None:
    client = WebSocketClient(gw.port, "/ws/chat", {})
    try:
        assert client.status == 401
        assert client.headers["content-type"].startswith(PROBLEM_JSON)
        body = json.loads(client.body)
        assert body["request_id"] == client.headers["x-request-id"]
        assert "sec-websocket-accept" not in client.headers
    finally:
        client.close()
    entry = gw.wait_for_log_entries(lambda e: e.get("request_id") == body["request_id"])[0]
    assert entry["status"] == 401 and entry["upstream"] is None and "handoff" not in entry


def test_upstream_sees_the_gateways_headers_and_not_the_clients_forged_ones(gw: Gateway, echo_upstream: EchoUpstream) -> None:
    forged = {"X-API-Key": DEMO_KEY, "X-Consumer-ID": "mallory", "X-Credential-ID": "forged", "X-Consumer-Groups": "admin",
              "X-Authenticated-Scopes": "root", "X-Forwarded-For": "6.6.6.6", "X-Forwarded-Host": "evil.example",
              "X-Real-IP": "6.6.6.6", "Forwarded": "for=6.6.6.6", "X-Forwarded-Port": "1", "X-Request-ID": "bad id!",
              "X-Forwarded-User": "admin", "X-Forwarded-Email": "root@evil.example", "X-Forwarded-Client-Cert": "Hash=forged",
              "X-Forwarded-Ssl": "on", "X-Forwarded-Custom": "passes", "Cookie": "session=kept"}
    client = WebSocketClient(gw.port, "/ws/who", forged)
    try:
        assert client.accepted, (client.status, client.headers)
        seen = handshake_echo(client)
    finally:
        client.close()
    headers = seen["headers"]
    assert seen["path"] == "/ws/who"
    assert headers["x-consumer-id"] == "demo"
    assert headers["x-credential-id"] == "demo-key"
    assert headers["x-consumer-groups"] == "demo"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-host"] == "127.0.0.1"
    assert headers["host"] == echo_upstream.url.removeprefix("http://")
    assert headers["upgrade"].lower() == "websocket"
    assert headers["cookie"] == "session=kept", "a header the gateway does not own passes as the client sent it"
    for name in ("x-api-key", "x-authenticated-scopes", "x-real-ip", "forwarded", "x-forwarded-port",
                 "x-forwarded-user", "x-forwarded-email", "x-forwarded-client-cert", "x-forwarded-ssl"):
        assert name not in headers, f"{name} reached the upstream: {headers}"
    # The documented limit: nginx cannot drop X-Forwarded-* by prefix, so an unlisted name passes.
    assert headers["x-forwarded-custom"] == "passes"
    # One correlation id: the upstream's, the client's, the gateway's log and nginx's log.
    request_id = headers["x-request-id"]
    assert request_id != "bad id!" and client.headers["x-request-id"] == request_id
    assert headers["traceparent"].startswith("00-")
    entry = gw.wait_for_log_entries(lambda e: e.get("request_id") == request_id)[0]
    assert entry["route"] == "ws" and entry["handoff"] == "websocket" and entry["consumer"] == "demo"
    assert entry["upstream"] == echo_upstream.url
    line = wait_until(lambda: next((e for e in gw.nginx_log() if e["request_id"] == request_id), None), 10,
                      "nginx's handoff log line")
    assert line["status"] == 101 and line["uri"] == "/ws/who"
    assert line["bytes_sent"] > 0 and line["duration_s"] >= 0
    assert str(echo_upstream.port) in line["upstream"], line


def test_the_101_carries_the_gateways_ratelimit_fields_and_not_the_upstreams(gw: Gateway) -> None:
    """docs/rate-limiting.md: the answer to an admitted request carries the RateLimit fields of
    the route's limits (`ws`: 30 handshakes a minute per key), the upstream's own replaced."""
    client = WebSocketClient(gw.port, f"/ws/limits?{UPSTREAM_RATELIMIT}", {"X-API-Key": DEMO_KEY})
    try:
        assert client.accepted, (client.status, client.headers)
        assert client.exchange("framed") == (WS_TEXT, b"framed")
    finally:
        client.close()
    remaining = assert_ratelimit_fields(client.header_lines, "connections-per-key")
    assert client.headers["x-upstream-own"] == "kept", "other upstream fields of the 101 pass"
    entry = gw.wait_for_log_entries(lambda e: e.get("request_id") == client.headers["x-request-id"])[0]
    assert entry["limits"] == f"connections-per-key:allowed:{remaining}"


def test_a_route_without_limits_sends_no_ratelimit_fields_not_even_the_upstreams(gw: Gateway) -> None:
    client = WebSocketClient(gw.port, f"/ws-open/x?{UPSTREAM_RATELIMIT}", {})
    try:
        assert client.accepted, (client.status, client.headers)
    finally:
        client.close()
    assert not [line for line in client.header_lines if line[0].startswith("ratelimit")], client.header_lines
    assert client.headers["x-upstream-own"] == "kept"


def test_a_websocket_handshake_on_an_http_route_gets_a_clear_problem(gw: Gateway) -> None:
    client = WebSocketClient(gw.port, "/echo/socket", {})
    try:
        assert client.status == 400
        body = json.loads(client.body)
        assert body["type"] == PROBLEM_BASE + "websocket-not-enabled"
        assert '"protocol": "websocket"' in body["detail"]
    finally:
        client.close()


def test_a_plain_request_on_a_websocket_route_is_426(gw: Gateway) -> None:
    response = gw.get("/ws/chat", headers={"X-API-Key": DEMO_KEY})
    assert response.status_code == 426
    assert response.json()["type"] == PROBLEM_BASE + "websocket-upgrade-required"


def test_handshakes_beyond_the_per_connection_limit_get_429(gw: Gateway) -> None:
    opened = [WebSocketClient(gw.port, "/ws-limited/x", {}) for _ in range(2)]
    try:
        assert all(c.accepted for c in opened), [c.status for c in opened]
        assert opened[0].exchange("still open") == (WS_TEXT, b"still open")
        third = WebSocketClient(gw.port, "/ws-limited/x", {})
        assert third.status == 429
        assert json.loads(third.body)["type"] == PROBLEM_BASE + "rate-limited"
        assert "retry-after" in third.headers
        third.close()
        # The connections admitted before the limit was reached are not affected.
        assert opened[1].exchange("fine") == (WS_TEXT, b"fine")
    finally:
        for c in opened:
            c.close()


# -- gRPC ---------------------------------------------------------------------------------------


def call(gw: Gateway, metadata: list[tuple[str, str]]) -> bytes:
    with grpc.insecure_channel(f"127.0.0.1:{gw.grpc_port}") as channel:
        return channel.unary_unary(SAY)(b"hi there", metadata=metadata, timeout=15)


def test_grpc_unary_call_with_a_key_reaches_the_service_with_the_consumer_headers(gw: Gateway) -> None:
    answer = json.loads(call(gw, [("x-api-key", DEMO_KEY), ("x-consumer-id", "mallory"), ("x-forwarded-user", "admin")]))
    assert answer["message"] == "hi there"
    metadata = answer["metadata"]
    assert metadata["x-consumer-id"] == "demo"
    assert metadata["x-credential-id"] == "demo-key"
    assert "x-api-key" not in metadata and "x-forwarded-user" not in metadata
    entry = gw.wait_for_log_entries(lambda e: e.get("request_id") == metadata["x-request-id"])[0]
    assert entry["route"] == "grpc-echo" and entry["handoff"] == "grpc"
    line = wait_until(lambda: next((e for e in gw.nginx_log() if e["request_id"] == metadata["x-request-id"]), None), 10,
                      "nginx's handoff log line")
    assert line["status"] == 200 and line["protocol"] == "HTTP/2.0"
    # The handed-off call counts as a request to the target it went to.
    metrics = gw.get("/_portcullis/metrics").text
    counted = [float(l.rsplit(" ", 1)[1]) for l in metrics.splitlines()
               if l.startswith('portcullis_upstream_requests_total{upstream="grpc_echo"')]
    assert counted and counted[0] >= 1, [l for l in metrics.splitlines() if "upstream_requests_total" in l]


def test_grpc_response_headers_carry_the_gateways_ratelimit_fields_and_not_the_services(gw: Gateway) -> None:
    metadata = [("x-api-key", DEMO_KEY), ("x-echo-metadata", "ratelimit-limit=999"),
                ("x-echo-metadata", "ratelimit=upstream"), ("x-echo-metadata", "x-service-own=kept")]
    with grpc.insecure_channel(f"127.0.0.1:{gw.grpc_port}") as channel:
        answer, outcome = channel.unary_unary(SAY).with_call(b"limits", metadata=metadata, timeout=15)
    assert json.loads(answer)["message"] == "limits"
    initial = list(outcome.initial_metadata())
    assert_ratelimit_fields(initial, "calls-per-key")
    assert dict(initial)["x-service-own"] == "kept", "the service's other metadata passes"


def test_grpc_call_without_a_key_is_unauthenticated(gw: Gateway) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        call(gw, [])
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, refused.value
    assert refused.value.details() == "this route requires authentication"
    # Trailers-only: the status and the gateway's metadata arrive as the call's trailers.
    trailers = dict(refused.value.trailing_metadata() or ())
    assert trailers["portcullis-problem"] == PROBLEM_BASE + "authentication-required"
    assert trailers["x-request-id"]


def test_grpc_calls_beyond_the_per_call_limit_are_resource_exhausted(gw: Gateway) -> None:
    metadata = [("x-api-key", DEMO_KEY), ("x-limited", "1")]
    for _ in range(2):
        assert json.loads(call(gw, metadata))["message"] == "hi there"
    with pytest.raises(grpc.RpcError) as limited:
        call(gw, metadata)
    assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, limited.value
    assert 'rate limit "per-call" exceeded' in limited.value.details()
    assert int(dict(limited.value.trailing_metadata())["retry-after"]) > 0
    entry = gw.wait_for_log_entries(lambda e: e.get("route") == "grpc-limited" and e.get("grpc_status") == 8)[0]
    assert entry["status"] == 200


def test_grpc_server_and_client_streaming_calls_pass_through_the_handoff(gw: Gateway) -> None:
    """A server-streaming answer arrives message by message through grpc_pass; a client stream
    works once the client ended it (nginx reads the whole request first, docs/protocols.md)."""
    metadata = [("x-api-key", DEMO_KEY)]
    with grpc.insecure_channel(f"127.0.0.1:{gw.grpc_port}") as channel:
        counted = list(channel.unary_stream("/portcullis.demo.Echo/Count")(b"5", metadata=metadata, timeout=15))
        collected = channel.stream_unary("/portcullis.demo.Echo/Collect")(iter([b"a", b"b", b"c"]), metadata=metadata, timeout=15)
        with pytest.raises(grpc.RpcError) as refused:
            list(channel.unary_stream("/portcullis.demo.Echo/Count")(b"5", timeout=15))
    assert counted == [b"1", b"2", b"3", b"4", b"5"]
    assert collected == b"a,b,c"
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


# -- the nginx reload rule ----------------------------------------------------------------------


def test_a_new_target_needs_regenerated_upstreams_and_an_nginx_reload(
        make_gateway: Callable[..., Gateway], echo_upstream: EchoUpstream, test_root: Path) -> None:
    """docs/protocols.md: the worker names the target's nginx upstream block, which nginx only
    knows once the file is regenerated and nginx reloaded. A target added by `portcullis
    reload` alone fails in nginx (502) when the balancer picks it; after the nginx reload
    every handshake passes, to both targets."""
    second = EchoUpstream(test_root, name="echo-second").start()
    try:
        route = {"name": "ws", "match": {"prefix": "/ws/"}, "upstream": "pair", "protocol": "websocket"}
        config = {"upstreams": {"pair": {"targets": [echo_upstream.url]}}, "routes": [route]}
        gw = make_gateway(config=config, workers=1, threads=1)

        def statuses(n: int) -> list[int]:
            found = []
            for _ in range(n):
                client = WebSocketClient(gw.port, "/ws/x", {})
                found.append(client.status if client.status != 101 or client.accepted else -1)
                client.close()
            return found

        assert statuses(2) == [101, 101]
        gw.set_config({**config, "upstreams": {"pair": {"targets": [echo_upstream.url, second.url]}}})
        assert gw.cli("reload").returncode == 0
        before = statuses(4)
        assert sorted(set(before)) == [101, 502], f"round robin over both targets, the new one unknown to nginx: {before}"
        assert "no resolver defined to resolve portcullis_pair_1" in gw.nginx.stderr_path.read_text()
        gw.restart_nginx()  # regenerates portcullis-upstreams.conf from the config, as an operator would
        assert statuses(4) == [101] * 4
    finally:
        second.stop()


# -- last: the idle connection ------------------------------------------------------------------


@pytest.mark.run_last
def test_an_idle_websocket_connection_is_kept_past_60_seconds(idle_connection: tuple[WebSocketClient, float]) -> None:
    client, opened = idle_connection
    remaining = IDLE_SECONDS - (time.monotonic() - opened)
    if remaining > 0:
        time.sleep(remaining)
    assert client.exchange("still here") == (WS_TEXT, b"still here")
