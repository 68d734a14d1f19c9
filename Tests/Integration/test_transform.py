"""Issue 5: transformation plugins through real nginx and the real gateway.

Every gateway here loads a private COPY of the repository's ``plugins/`` (inside its own
directory), so tests can add, change and break rule files without touching the repository.

Request transforms are visible in the echo upstream's answer (it returns the request it
received); response transforms run against ``CannedUpstream``, a tiny HTTP service started by
this module that answers fixed bodies and headers and records what it received.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import requests

from harness import REPO_ROOT, EchoUpstream, Gateway, GatewayFactory, free_port, wait_until, assert_problem, PROBLEM_BASE, echo_of, QuietHTTPServer

RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")

DEMO_KEY = "demo-key-change-me"
DEMO_KEY_SHA256 = hashlib.sha256(DEMO_KEY.encode()).hexdigest()

# The transform body limit configured for these gateways (transform.max_body_bytes).
TRANSFORM_LIMIT = 64 * 1024
KiB = 1024
MiB = 1024 * 1024


# -- the canned upstream --------------------------------------------------------------------------

# What a v2 service answers for /api/users/1: nested v2 fields, internal fields (top level and in
# every element of items) and internal headers.
V2_USER = {
    "id": 1,
    "name": "Ada",
    "contact": {"email": "ada@example.com", "phone": "+44 20 7946 0000"},
    "address": {"street": "1 Main St", "city": "London"},
    "internal_id": "x-991",
    "debug": {"sql": "select * from users"},
    "items": [{"cost_price": 1, "name": "a", "supplier": "s1"}, {"cost_price": 2, "name": "b"}],
}
INTERNAL_HEADERS = {"Server": "canned-internal/1.0", "X-Powered-By": "PHP/5.6", "X-Internal-Trace": "trace-123"}
NOT_FOUND_HTML = b"<html><body><h1>404</h1>nothing here</body></html>"
# Larger than TRANSFORM_LIMIT once serialised.
BIG_JSON = json.dumps({"rows": ["r" * 100] * 1000}).encode()


class CannedUpstream:
    """A loopback HTTP service with fixed answers, recording each request's path and query."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[str] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802 (stdlib naming)
                upstream.received.append(self.path)
                path = self.path.split("?", 1)[0]
                if path == "/api/users/1":
                    self._send(200, "application/json", json.dumps(V2_USER).encode(), INTERNAL_HEADERS)
                elif path == "/api/big":
                    self._send(200, "application/json", BIG_JSON, {})
                elif path == "/api/not-json":
                    self._send(200, "application/json", b"{\"id\": 1,", {})
                else:
                    self._send(404, "text/html; charset=utf-8", NOT_FOUND_HTML, {"X-Internal-Trace": "trace-404"})

            def _send(self, status: int, content_type: str, body: bytes, headers: dict[str, str]) -> None:
                self.send_response_only(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()

        self.server = QuietHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> CannedUpstream:
        self.thread.start()
        wait_until(lambda: requests.get(f"{self.url}/__health", timeout=1).status_code == 404, 10, "canned upstream")
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- configuration --------------------------------------------------------------------------------


def transform_config(echo_url: str, canned_url: str) -> dict[str, Any]:
    """Routes exercising each example rule set of plugins/ (plugins_dir is the gateway's copy)."""
    return {
        "plugins_dir": "plugins",
        "transform": {"max_body_bytes": TRANSFORM_LIMIT},
        "upstreams": {
            "echo": {"targets": [echo_url], "connect_timeout_ms": 1000, "timeout_ms": 10000},
            "users": {"targets": [canned_url], "connect_timeout_ms": 1000, "timeout_ms": 10000},
        },
        "consumers": [
            {"id": "demo", "name": "Demo consumer", "groups": ["demo", "beta"],
             "api_keys": [{"id": "demo-key", "sha256": DEMO_KEY_SHA256}]},
        ],
        "auth": {"api_key": {"header": "X-API-Key"}},
        "routes": [
            # The README's combined example, in front of a v2 service.
            {"name": "users-v1", "match": {"prefix": "/v1/", "host": "users.example"}, "upstream": "users",
             "plugins": ["path-versioning", "v1-to-v2-request", "v2-to-v1-response", "strip-internal",
                         "not-found-problem"]},
            # The request-phase examples in front of the echo, so their effect is visible.
            {"name": "v1-echo", "match": {"prefix": "/v1/"}, "upstream": "echo",
             "plugins": ["path-versioning", "v1-to-v2-request"]},
            {"name": "orders", "match": {"prefix": "/orders/"}, "upstream": "echo",
             "auth": {"methods": ["api_key"]}, "plugins": ["inject-consumer"]},
            {"name": "strip-echo", "match": {"prefix": "/strip/"}, "upstream": "echo", "plugins": ["strip-internal"]},
            {"name": "nf-echo", "match": {"prefix": "/nf/"}, "upstream": "echo", "plugins": ["not-found-problem"]},
            {"name": "v2-echo", "match": {"prefix": "/v2-echo/"}, "upstream": "echo", "plugins": ["v2-to-v1-response"]},
            # The same v2 service without rule sets: what the plugins change is visible by contrast.
            {"name": "users-plain", "match": {"prefix": "/plain/"}, "upstream": "users", "strip_prefix": True},
        ],
    }


def transform_gateway(create: Callable[..., Gateway], config: dict[str, Any],
                      extra_rules: dict[str, Any] | None = None, **kwargs: Any) -> Gateway:
    """A started gateway whose plugins_dir is a fresh copy of the repository's plugins/, plus
    ``extra_rules`` (file name → rule file content). ``create`` is ``gateway_factory.create`` or
    ``make_gateway``."""
    gateway = create(config=config, start=False, **kwargs)
    shutil.copytree(REPO_ROOT / "plugins", plugins_dir(gateway))
    for name, content in (extra_rules or {}).items():
        write_rule_file(gateway, name, content)
    return gateway.start()


def with_route(config: dict[str, Any], name: str, prefix: str, plugins: list[str]) -> dict[str, Any]:
    """``config`` with one more route to the echo upstream."""
    config["routes"].append({"name": name, "match": {"prefix": prefix}, "upstream": "echo", "plugins": plugins})
    return config


def plugins_dir(gateway: Gateway) -> Path:
    return gateway.workdir / "plugins"


def write_rule_file(gateway: Gateway, name: str, content: Any) -> Path:
    """Writes a rule file atomically (JSON value, or raw text for broken files)."""
    path = plugins_dir(gateway) / name
    tmp = path.with_name(f".{name}.tmp")
    tmp.write_text(content if isinstance(content, str) else json.dumps(content, indent=2))
    tmp.replace(path)
    return path


@pytest.fixture(scope="module")
def canned() -> Iterator[CannedUpstream]:
    upstream = CannedUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def gateway(gateway_factory: GatewayFactory, echo_upstream: EchoUpstream, canned: CannedUpstream) -> Iterator[Gateway]:
    """One gateway with the example rule sets, shared by the tests that do not change its files."""
    gw = transform_gateway(gateway_factory.create, transform_config(echo_upstream.url, canned.url))
    yield gw
    gateway_factory.close([gw])


# -- assertions -----------------------------------------------------------------------------------


def assert_length_matches(response: requests.Response) -> None:
    """The body the client got is exactly as long as the Content-Length the gateway sent."""
    length = response.headers.get("Content-Length")
    assert length is not None, f"no Content-Length: {response.headers}"
    assert int(length) == len(response.content), (length, len(response.content))




def forwarded_json(echo: dict[str, Any]) -> Any:
    """The JSON body the echo upstream received, after checking its framing was recomputed."""
    assert echo["headers"].get("content-length") == str(echo["body_length"]), echo["headers"]
    assert echo["body"] is not None
    assert len(echo["body"].encode()) == echo["body_length"]
    return json.loads(echo["body"])




# -- 1. the examples of plugins/ ------------------------------------------------------------------


def test_v1_request_is_translated_to_the_v2_contract(gateway: Gateway) -> None:
    v1 = {"user_name": "ada", "email": "ada@example.com", "phone": "+44", "street": "1 Main St",
          "city": "London", "newsletter": True}
    echo = echo_of(gateway.request("POST", "/v1/users?x=1", json=v1))
    assert forwarded_json(echo) == {
        "name": "ada", "newsletter": True,
        "contact": {"email": "ada@example.com", "phone": "+44"},
        "address": {"street": "1 Main St", "city": "London"},
    }
    assert echo["headers"].get("x-api-version") == "2"
    # path-versioning ran first on the same route.
    assert echo["path"] == "/api/users"


def test_v2_answer_is_translated_back_to_v1_and_stripped(gateway: Gateway, canned: CannedUpstream) -> None:
    response = gateway.get("/v1/users/1?fields=all", headers={"Host": "users.example"})
    assert response.status_code == 200, response.text
    assert_length_matches(response)
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == {
        "id": 1, "user_name": "Ada",
        "email": "ada@example.com", "phone": "+44 20 7946 0000", "street": "1 Main St", "city": "London",
        "items": [{"name": "a"}, {"name": "b"}],
    }
    assert response.headers.get("X-API-Version") == "1"
    # The v2 service was called on its /api/ path with the version parameter.
    assert canned.received[-1] == "/api/users/1?fields=all&api_version=1"


def test_without_rule_sets_the_v2_service_answer_is_untouched(gateway: Gateway) -> None:
    """The contrast for the test above: the same upstream answer, no plugins."""
    response = gateway.get("/plain/api/users/1")
    assert response.status_code == 200
    assert response.json() == V2_USER
    assert response.headers.get("Server") == INTERNAL_HEADERS["Server"]
    assert response.headers.get("X-Powered-By") == INTERNAL_HEADERS["X-Powered-By"]
    assert response.headers.get("X-Internal-Trace") == INTERNAL_HEADERS["X-Internal-Trace"]


def test_strip_internal_removes_internal_headers_and_fields(gateway: Gateway) -> None:
    response = gateway.get("/v1/users/1", headers={"Host": "users.example"})
    assert response.status_code == 200
    assert "X-Powered-By" not in response.headers
    assert "X-Internal-Trace" not in response.headers
    # The upstream's Server header is gone; what is left is nginx's own.
    assert response.headers.get("Server") != INTERNAL_HEADERS["Server"]
    body = response.json()
    assert "internal_id" not in body and "debug" not in body
    assert all(set(item) == {"name"} for item in body["items"]), body["items"]


def test_strip_internal_on_echo_keeps_other_headers(gateway: Gateway) -> None:
    response = gateway.get("/strip/x?set_header=X-Internal-Trace:abc&set_header=X-Powered-By:py"
                           "&set_header=X-Public:visible")
    echo = echo_of(response)
    assert_length_matches(response)
    assert "X-Internal-Trace" not in response.headers
    assert "X-Powered-By" not in response.headers
    assert response.headers.get("X-Public") == "visible"
    assert echo["path"] == "/strip/x"


def test_inject_consumer_writes_the_authenticated_consumer(gateway: Gateway) -> None:
    before = time.time()
    response = gateway.request("POST", "/orders/new", headers={"X-API-Key": DEMO_KEY},
                               json={"item": "book", "qty": 2, "owner": {"id": "mallory"}})
    echo = echo_of(response)
    body = forwarded_json(echo)
    assert body["item"] == "book" and body["qty"] == 2
    assert body["owner"] == {"id": "demo", "groups": ["demo", "beta"]}
    assert RFC3339_UTC.match(body["received_at"]), body["received_at"]
    stamp = calendar.timegm(time.strptime(body["received_at"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert before - 2 <= stamp <= time.time() + 2, (before, body["received_at"])
    assert echo["headers"].get("x-submitted-via") == "portcullis route orders"
    # The credential itself never reaches the service.
    assert "x-api-key" not in echo["headers"]


def test_inject_consumer_skips_reads_and_needs_a_consumer(gateway: Gateway) -> None:
    echo = echo_of(gateway.get("/orders/1", headers={"X-API-Key": DEMO_KEY}))
    assert "x-submitted-via" not in echo["headers"], "condition methods=[POST,PUT,PATCH] must skip GET"
    assert echo["body_length"] == 0
    unauthenticated = gateway.request("POST", "/orders/new", json={"item": "book"})
    assert unauthenticated.status_code == 401


def test_path_versioning(gateway: Gateway) -> None:
    echo = echo_of(gateway.get("/v1/items/42?sort=name"))
    assert echo["path"] == "/api/items/42"
    assert echo["query_params"] == {"sort": ["name"], "api_version": ["1"]}
    assert echo["headers"].get("x-original-path") == "/v1/items/42"


def test_upstream_404_becomes_problem_json(gateway: Gateway, canned: CannedUpstream) -> None:
    response = gateway.get("/v1/missing/thing", headers={"Host": "users.example"})
    body = assert_problem(response, 404, "resource-not-found")
    assert body == {
        "type": PROBLEM_BASE + "resource-not-found", "title": "Not Found", "status": 404,
        "detail": "no resource exists at /v1/missing/thing", "instance": "/v1/missing/thing",
        "request_id": response.headers["X-Request-ID"],
    }
    assert canned.received[-1] == "/api/missing/thing?api_version=1"
    assert "X-Internal-Trace" not in response.headers  # strip-internal ran before it


@pytest.mark.parametrize("status", [200, 400, 500])
def test_not_found_problem_leaves_other_statuses_alone(gateway: Gateway, status: int) -> None:
    response = gateway.get(f"/nf/x?status={status}")
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["path"] == "/nf/x"


def test_not_found_problem_on_echo_404(gateway: Gateway) -> None:
    response = gateway.get("/nf/gone?status=404", headers={"X-Request-ID": "nf-test-1"})
    body = assert_problem(response, 404, "resource-not-found")
    assert body["request_id"] == "nf-test-1"
    assert body["detail"] == "no resource exists at /nf/gone"


def test_v2_to_v1_response_only_on_2xx(gateway: Gateway) -> None:
    """The response rule set's status condition: a 4xx echo answer is not touched, a 2xx one is."""
    ok = gateway.get("/v2-echo/a")
    assert ok.headers.get("X-API-Version") == "1"
    failed = gateway.get("/v2-echo/a?status=409")
    assert failed.status_code == 409
    assert "X-API-Version" not in failed.headers
    assert failed.json()["path"] == "/v2-echo/a"


# -- 2. body safety -------------------------------------------------------------------------------


def test_binary_body_passes_through_byte_exact(gateway: Gateway) -> None:
    """1 MiB of non-JSON on a route whose rule sets have body operations: forwarded untouched,
    although it is far above the transform limit (it is never buffered for transformation)."""
    payload = os.urandom(MiB)
    echo = echo_of(gateway.request("POST", "/v1/upload", data=payload,
                                   headers={"Content-Type": "application/octet-stream"}))
    assert echo["body_length"] == len(payload)
    assert echo["body_sha256"] == hashlib.sha256(payload).hexdigest()
    assert echo["path"] == "/api/upload"  # the non-body operations still ran
    assert echo["headers"].get("x-api-version") == "2"


def test_json_looking_text_body_is_not_transformed(gateway: Gateway) -> None:
    text = b'{"user_name": "ada", "email": "a@x"}'
    echo = echo_of(gateway.request("POST", "/v1/users", data=text, headers={"Content-Type": "text/plain"}))
    assert echo["body"].encode() == text


def test_json_body_above_the_transform_limit_is_413(gateway: Gateway) -> None:
    document = {"user_name": "ada", "padding": "p" * (TRANSFORM_LIMIT + 10)}
    response = gateway.request("POST", "/v1/users", json=document)
    body = assert_problem(response, 413, "transform-body-too-large")
    assert str(TRANSFORM_LIMIT) in body["detail"], body


def test_json_body_at_the_transform_limit_is_transformed(gateway: Gateway) -> None:
    base = json.dumps({"user_name": "ada", "padding": ""}).encode()
    document = {"user_name": "ada", "padding": "p" * (TRANSFORM_LIMIT - len(base) - 100)}
    echo = echo_of(gateway.request("POST", "/v1/users", json=document))
    assert forwarded_json(echo)["name"] == "ada"


def test_invalid_json_request_body_is_400(gateway: Gateway) -> None:
    response = gateway.request("POST", "/v1/users", data=b'{"user_name": ', headers={"Content-Type": "application/json"})
    assert_problem(response, 400, "transform-invalid-json")


def test_upstream_json_above_the_transform_limit_is_502(gateway: Gateway) -> None:
    response = gateway.get("/v1/big", headers={"Host": "users.example"})
    assert_problem(response, 502, "transform-body-too-large")


def test_invalid_upstream_json_is_502(gateway: Gateway) -> None:
    response = gateway.get("/v1/not-json", headers={"Host": "users.example"})
    assert_problem(response, 502, "transform-invalid-json")


# -- 3. reload under load -------------------------------------------------------------------------


def tag_rule(value: str) -> dict[str, Any]:
    return {"name": "tag", "type": "transform", "phase": "request",
            "operations": [{"op": "header.set", "name": "X-Rules", "value": value}]}


class ClientLoop:
    """``threads`` clients sending GET ``path`` in a loop, recording every outcome."""

    def __init__(self, gateway: Gateway, path: str, threads: int = 8):
        self.gateway = gateway
        self.path = path
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        # (monotonic start time, status or exception text, X-Rules value the upstream saw)
        self.results: list[tuple[float, int | str, str | None]] = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        session = requests.Session()
        try:
            while not self.stop_event.is_set():
                started = time.monotonic()
                try:
                    response = session.get(self.gateway.url(self.path), timeout=10)
                    outcome: int | str = response.status_code
                    seen = response.json()["headers"].get("x-rules") if response.status_code == 200 else None
                except Exception as error:  # noqa: BLE001 (every failure is recorded)
                    outcome, seen = repr(error), None
                with self.lock:
                    self.results.append((started, outcome, seen))
        finally:
            session.close()

    def __enter__(self) -> ClientLoop:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=15)
        assert not any(t.is_alive() for t in self.threads), "a client thread hung"

    def count(self) -> int:
        with self.lock:
            return len(self.results)

    def wait_for(self, more: int, timeout: float = 10) -> None:
        target = self.count() + more
        wait_until(lambda: self.count() >= target, timeout, f"{more} more client requests")

    def wait_started_after(self, moment: float, count: int, timeout: float = 10) -> list[tuple[float, int | str, str | None]]:
        """Waits until ``count`` requests that started after ``moment`` have finished; returns them."""
        def probe() -> list[tuple[float, int | str, str | None]] | None:
            with self.lock:
                late = [r for r in self.results if r[0] > moment]
            return late if len(late) >= count else None
        return wait_until(probe, timeout, f"{count} client requests started after the reload")

    def failures(self) -> list[tuple[float, int | str, str | None]]:
        with self.lock:
            return [r for r in self.results if r[1] != 200]


def generation_of(gateway: Gateway) -> int:
    return gateway.status()["generation"]


def wait_for_generation(gateway: Gateway, generation: int) -> None:
    """Waits until every worker belongs to ``generation`` (the old ones have drained)."""
    gateway.wait_for_workers(
        lambda workers: len(workers) >= gateway.workers and all(w["generation"] == generation for w in workers),
        15, f"only generation {generation} workers")


@pytest.fixture
def tag_gateway(make_gateway: Callable[..., Gateway], echo_upstream: EchoUpstream, canned: CannedUpstream) -> Gateway:
    """A gateway of this test only, with an extra rule file ``tag.json`` (X-Rules: v1) on /tag/."""
    config = with_route(transform_config(echo_upstream.url, canned.url), "tag", "/tag/", ["tag"])
    return transform_gateway(make_gateway, config, {"tag.json": tag_rule("v1")}, workers=2, threads=4)


def test_reload_under_load_switches_rules_without_failures(tag_gateway: Gateway) -> None:
    """8 clients run while tag.json changes v1 → v2 → v3 → v4, each change followed by
    `portcullis reload`: no request fails, each sees one whole rule set, and once the old
    generation has drained every request sees the new value."""
    gw = tag_gateway
    assert gw.get("/tag/x").json()["headers"]["x-rules"] == "v1"
    generation = generation_of(gw)
    with ClientLoop(gw, "/tag/x", threads=8) as clients:
        clients.wait_for(50)
        for version in ("v2", "v3", "v4"):
            write_rule_file(gw, "tag.json", tag_rule(version))
            result = gw.cli("reload")
            generation += 1
            assert result.returncode == 0, result.stderr
            assert f"reloaded: generation {generation}" in result.stdout
            wait_for_generation(gw, generation)
            drained_at = time.monotonic()
            late = clients.wait_started_after(drained_at, 50)
            assert {r[2] for r in late} == {version}, f"after reload to {version}: {sorted({r[2] for r in late})}"
    assert clients.failures() == [], clients.failures()[:5]
    seen = [r[2] for r in clients.results]
    assert set(seen) == {"v1", "v2", "v3", "v4"}, set(seen)
    for _ in range(10):
        assert gw.get("/tag/x").json()["headers"]["x-rules"] == "v4"


# -- 4. broken rule files -------------------------------------------------------------------------


# kind → (file content, the reason printed after "<file>: ")
BROKEN_RULE_FILES: dict[str, tuple[Any, str]] = {
    "invalid-json": (
        '{"name": "broken", "type": "transform", "phase": "request", "operations": [}\n',
        "/: invalid JSON at line 1, column 76: unexpected token near '}'",
    ),
    "unknown-op": (
        {"name": "broken", "type": "transform", "phase": "request",
         "operations": [{"op": "header.set", "name": "X-A", "value": "a"},
                        {"op": "header.sett", "name": "X-B", "value": "b"}]},
        '/operations/1/op: unknown operation "header.sett"',
    ),
    "bad-pointer": (
        {"name": "broken", "type": "transform", "phase": "request",
         "operations": [{"op": "body.remove", "path": "owner"}]},
        '/operations/0/path: invalid JSON pointer "owner": must be empty or start with "/"',
    ),
    "crlf-header": (
        {"name": "broken", "type": "transform", "phase": "request",
         "operations": [{"op": "header.set", "name": "X-Injected", "value": "ok\r\nSet-Cookie: evil=1"}]},
        "/operations/0/value: value contains CR, LF or another control character",
    ),
}


@pytest.fixture(scope="module")
def stable_gateway(gateway_factory: GatewayFactory, echo_upstream: EchoUpstream,
                   canned: CannedUpstream) -> Iterator[Gateway]:
    """A gateway whose rule files the broken-file tests break (and repair) one at a time."""
    config = with_route(transform_config(echo_upstream.url, canned.url), "tag", "/tag/", ["tag"])
    gw = transform_gateway(gateway_factory.create, config, {"tag.json": tag_rule("old")})
    yield gw
    gateway_factory.close([gw])


@pytest.mark.parametrize("kind", list(BROKEN_RULE_FILES))
def test_broken_rule_file_is_refused_and_old_rules_keep_serving(stable_gateway: Gateway, kind: str) -> None:
    gw = stable_gateway
    generation = generation_of(gw)
    workers_before = sorted(gw.worker_pids())
    content, reason = BROKEN_RULE_FILES[kind]
    # A valid edit next to the broken file must not land either: only a fully valid set is used.
    write_rule_file(gw, "tag.json", tag_rule("new"))
    broken = write_rule_file(gw, "zz-broken.json", content)
    try:
        with ClientLoop(gw, "/tag/x", threads=4) as clients:
            clients.wait_for(20)
            check = gw.cli("check")
            assert check.returncode == 1, (check.stdout, check.stderr)
            line = f"{broken}: {reason}"
            assert line in check.stderr.splitlines(), check.stderr

            reload = gw.cli("reload")
            assert reload.returncode == 1, (reload.stdout, reload.stderr)
            assert line in reload.stderr.splitlines(), reload.stderr
            clients.wait_for(20)
        assert clients.failures() == [], clients.failures()[:5]
        assert {r[2] for r in clients.results} == {"old"}
        # The running set is untouched: same generation, same workers, old behaviour.
        assert generation_of(gw) == generation
        assert sorted(gw.worker_pids()) == workers_before
        for _ in range(5):
            assert gw.get("/tag/x").json()["headers"]["x-rules"] == "old"
        echo = echo_of(gw.get("/v1/items/1"))
        assert echo["path"] == "/api/items/1"
    finally:
        broken.unlink()
        write_rule_file(gw, "tag.json", tag_rule("old"))


def test_unknown_rule_set_reference_is_refused(stable_gateway: Gateway) -> None:
    gw = stable_gateway
    original = json.loads(gw.config_path.read_text())
    changed = json.loads(json.dumps(original))
    changed["routes"][-1]["plugins"] = ["tag-v3"]
    index = len(changed["routes"]) - 1
    gw.write_raw_config(json.dumps(changed, indent=2))
    try:
        check = gw.cli("check")
        assert check.returncode == 1
        assert f'{gw.config_path}: /routes/{index}/plugins/0: unknown plugin rule set "tag-v3"' in check.stderr.splitlines(), check.stderr
        reload = gw.cli("reload")
        assert reload.returncode == 1
        assert f'{gw.config_path}: /routes/{index}/plugins/0: unknown plugin rule set "tag-v3"' in reload.stderr.splitlines()
        assert gw.get("/tag/x").json()["headers"]["x-rules"] == "old"
    finally:
        gw.write_raw_config(json.dumps(original, indent=2))
    assert gw.cli("check").returncode == 0


# -- 5. control characters rendered at run time ---------------------------------------------------


UNSAFE_RULE = {
    "name": "unsafe", "type": "transform", "phase": "request",
    "operations": [
        {"op": "header.set", "name": "X-From-Query", "value": "q={{query.note}}"},
        {"op": "header.set", "name": "X-From-Header", "value": "{{header.X-Note}}"},
    ],
}


@pytest.fixture(scope="module")
def unsafe_gateway(gateway_factory: GatewayFactory, echo_upstream: EchoUpstream,
                   canned: CannedUpstream) -> Iterator[Gateway]:
    config = with_route(transform_config(echo_upstream.url, canned.url), "unsafe", "/unsafe/", ["unsafe"])
    gw = transform_gateway(gateway_factory.create, config, {"unsafe.json": UNSAFE_RULE})
    yield gw
    gateway_factory.close([gw])


def test_dynamic_values_without_control_characters_are_forwarded(unsafe_gateway: Gateway) -> None:
    echo = echo_of(unsafe_gateway.get("/unsafe/x?note=hello%20world", headers={"X-Note": "tab\there"}))
    assert echo["headers"]["x-from-query"] == "q=hello world"
    assert echo["headers"]["x-from-header"] == "tab\there"


@pytest.mark.parametrize("path, headers", [
    pytest.param("/unsafe/x?note=a%0D%0ASet-Cookie:%20evil=1", {}, id="crlf-in-query"),
    pytest.param("/unsafe/x?note=a%0Ab", {}, id="lf-in-query"),
    pytest.param("/unsafe/x?note=a%00b", {}, id="nul-in-query"),
    pytest.param("/unsafe/x?note=fine", {"X-Note": "bell\x07here"}, id="control-in-header"),
])
def test_dynamic_control_characters_in_a_header_are_500(unsafe_gateway: Gateway, path: str,
                                                        headers: dict[str, str]) -> None:
    gw = unsafe_gateway
    request_id = f"unsafe-{hashlib.sha256(path.encode() + repr(headers).encode()).hexdigest()[:12]}"
    response = gw.get(path, headers={**headers, "X-Request-ID": request_id})
    body = assert_problem(response, 500, "transform-unsafe-value")
    assert body["request_id"] == request_id
    assert "Set-Cookie" not in response.headers
    entries = gw.wait_for_log_entries(lambda e: e.get("request_id") == request_id)
    entry = entries[-1]
    assert entry["status"] == 500
    assert entry["route"] == "unsafe"
    assert entry.get("upstream") is None, entry  # refused before proxying
    assert 'rule set "unsafe"' in entry.get("error", ""), entry


def test_plugins_watch_reloads_on_file_change_and_refuses_broken_files(
        make_gateway: Callable[..., Gateway], echo_upstream: EchoUpstream, canned: CannedUpstream) -> None:
    """With `plugins_watch`, editing a rule file is enough: the master notices within about a
    second and runs the same validated reload; a broken file is refused (recorded as the last
    reload) and the running rules keep serving."""
    config = with_route(transform_config(echo_upstream.url, canned.url), "tag", "/tag/", ["tag"])
    config["plugins_watch"] = True
    gw = transform_gateway(make_gateway, config, {"tag.json": tag_rule("v1")}, workers=2, threads=2)
    generation = generation_of(gw)
    assert echo_of(gw.get("/tag/x"))["headers"]["x-rules"] == "v1"

    write_rule_file(gw, "tag.json", tag_rule("v2"))
    wait_for_generation(gw, generation + 1)
    assert echo_of(gw.get("/tag/x"))["headers"]["x-rules"] == "v2"

    write_rule_file(gw, "tag.json", '{"name": "tag", "type": "transform", "phase": "request", "operations": [}')
    wait_until(lambda: gw.status().get("last_reload", {}).get("ok") is False, 10, "the broken file refused")
    errors = gw.status()["last_reload"]["errors"]
    assert any(e.endswith("tag.json: /: invalid JSON at line 1, column 73: unexpected token near '}'") for e in errors), errors
    assert generation_of(gw) == generation + 1
    assert echo_of(gw.get("/tag/x"))["headers"]["x-rules"] == "v2"
