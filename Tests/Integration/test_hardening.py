"""Issue 12: the defects an outside attack run found, each through real nginx.

Raw requests go over a plain socket where an HTTP library would normalise what the test needs
to send (absolute request lines, bytes that are not UTF-8, header sizes at nginx's limits).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from harness import EchoUpstream, Gateway, GatewayFactory, assert_problem, echo_of


def raw_request(gateway: Gateway, head: bytes, body: bytes = b"", timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """Sends `head` (request line and headers, without the final blank line) and `body` to
    nginx on a fresh connection that closes after the answer; returns status, headers
    (lower-case names, latin-1) and body."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=timeout) as s:
        s.sendall(head + b"Connection: close\r\n\r\n" + body)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head_bytes, _, payload = data.partition(b"\r\n\r\n")
    lines = head_bytes.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        decoded, rest = b"", payload
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            decoded, rest = decoded + rest[:size], rest[size + 2:]
        payload = decoded
    return status, headers, payload


def assert_raw_problem(status: int, headers: dict[str, str], body: bytes, expected: int, problem_type: str) -> dict[str, Any]:
    assert status == expected, (status, body[:300])
    assert headers.get("content-type", "").startswith("application/problem+json"), (headers, body[:300])
    problem = json.loads(body)
    assert problem["status"] == expected
    assert problem["type"].endswith("/" + problem_type), problem
    assert problem["request_id"] and problem["request_id"] == headers.get("x-request-id"), (problem, headers)
    return problem


# -- 1. a path rewrite that does not match fails closed ------------------------------------------


@pytest.fixture(scope="module")
def demo(gateway_factory: GatewayFactory, echo_upstream: EchoUpstream) -> Iterator[Gateway]:
    gw = gateway_factory.create_from_repo_config(
        "config/portcullis.json", {"upstreams": {"echo": {"targets": [echo_upstream.url]}}})
    yield gw
    gateway_factory.close([gw])


def test_shipped_path_versioning_rewrites_v1_itself(demo: Gateway) -> None:
    """`GET /v1?probe=1` used to reach the upstream as `/v1` (the route prefix /v1/ matches /v1)."""
    response = demo.get("/v1?probe=1")
    assert response.status_code == 200, response.text[:300]
    seen = response.json()["data"]
    assert seen["path"] == "/api", seen
    assert seen["query_params"]["probe"] == ["1"]


@pytest.mark.parametrize("separator", ["%E2%80%A8", "%E2%80%A9", "%C2%85"])
def test_shipped_path_versioning_rewrites_paths_with_line_separators(demo: Gateway, separator: str) -> None:
    """`GET /v1/admin;%E2%80%A8x` used to pass through unrewritten (`.` did not match U+2028)."""
    status, _, body = raw_request(demo, f"GET /v1/admin;{separator}x HTTP/1.1\r\nHost: localhost\r\n".encode())
    assert status == 200, body[:300]
    seen = json.loads(body)["data"]
    assert seen["path"] == f"/api/admin;{separator}x", seen


@pytest.fixture(scope="module")
def rewrites(gateway_factory: GatewayFactory, echo_upstream: EchoUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    plugins = tmp_path_factory.mktemp("rewrite-plugins")
    (plugins / "strict.json").write_text(json.dumps({
        "name": "strict", "type": "transform", "phase": "request",
        "operations": [{"op": "path.rewrite", "regex": "^/r/users/([0-9]+)$", "replacement": "/api/users/$1"}]}))
    (plugins / "lenient.json").write_text(json.dumps({
        "name": "lenient", "type": "transform", "phase": "request",
        "operations": [{"op": "path.rewrite", "regex": "^/p/users/([0-9]+)$", "replacement": "/api/users/$1",
                        "on_no_match": "pass"}]}))
    gw = gateway_factory.create({
        "plugins_dir": str(plugins),
        "upstreams": {"echo": {"targets": [echo_upstream.url]}},
        "routes": [
            {"name": "strict", "match": {"prefix": "/r/"}, "upstream": "echo", "plugins": ["strict"]},
            {"name": "lenient", "match": {"prefix": "/p/"}, "upstream": "echo", "plugins": ["lenient"]},
        ]}, config={})
    yield gw
    gateway_factory.close([gw])


def test_rewrite_without_match_is_404_problem_and_nothing_upstream(rewrites: Gateway, echo_upstream: EchoUpstream) -> None:
    assert echo_of(rewrites.get("/r/users/7"))["path"] == "/api/users/7"
    problem = assert_problem(rewrites.get("/r/admin"), 404, "rewrite-no-match")
    assert "strict" in problem["detail"]
    entry = rewrites.wait_for_log_entries(lambda e: e.get("request_id") == problem["request_id"])[0]
    assert entry.get("upstream") in (None, ""), entry


def test_rewrite_passes_through_only_when_the_rule_says_so(rewrites: Gateway) -> None:
    assert echo_of(rewrites.get("/p/users/7"))["path"] == "/api/users/7"
    assert echo_of(rewrites.get("/p/admin"))["path"] == "/p/admin"


# -- 2. the host is nginx's $host ----------------------------------------------------------------


@pytest.fixture(scope="module")
def hosted(gateway_factory: GatewayFactory, echo_upstream: EchoUpstream) -> Iterator[Gateway]:
    gw = gateway_factory.create({
        "upstreams": {"echo": {"targets": [echo_upstream.url]}},
        "routes": [
            {"name": "a-only", "match": {"prefix": "/echo/", "host": "a.example"}, "upstream": "echo"},
            {"name": "any", "match": {"prefix": "/echo/"}, "upstream": "echo", "rewrite": "/any/"},
        ]}, config={})
    yield gw
    gateway_factory.close([gw])


def test_absolute_request_line_host_wins_for_routing_and_forwarded_host(hosted: Gateway) -> None:
    """`GET http://a.example/echo/h` with `Host: b.example`: nginx routes on a.example, and so
    must the gateway, and the upstream must be told a.example (it used to hear b.example)."""
    status, _, body = raw_request(hosted, b"GET http://a.example/echo/h HTTP/1.1\r\nHost: b.example\r\n")
    assert status == 200, body[:300]
    seen = json.loads(body)
    assert seen["path"] == "/echo/h", "routed to the a.example route"
    assert seen["headers"]["x-forwarded-host"] == "a.example", seen["headers"]


def test_host_header_alone_routes_and_forwards_the_same_host(hosted: Gateway) -> None:
    status, _, body = raw_request(hosted, b"GET /echo/h HTTP/1.1\r\nHost: B.Example:8080\r\n")
    assert status == 200, body[:300]
    seen = json.loads(body)
    assert seen["path"] == "/any/h", "b.example is not a.example"
    assert seen["headers"]["x-forwarded-host"] == "b.example", seen["headers"]
    status, _, body = raw_request(hosted, b"GET /echo/h HTTP/1.1\r\nHost: a.example\r\n")
    assert json.loads(body)["path"] == "/echo/h"


# -- 3. Connection tokens are capped -------------------------------------------------------------


@pytest.fixture(scope="module")
def plain(gateway_factory: GatewayFactory) -> Iterator[Gateway]:
    gw = gateway_factory.create(workers=1, threads=2)
    yield gw
    gateway_factory.close([gw])


def test_connection_tokens_at_the_cap_are_stripped(plain: Gateway) -> None:
    names = [f"x-t{i}" for i in range(31)]  # with "close": 32 tokens, the cap
    head = b"GET /echo/c HTTP/1.1\r\nHost: localhost\r\n" + b"".join(f"{n}: v\r\n".encode() for n in names)
    head += ("X-Connection-List: " + ", ".join(names) + "\r\n").encode()
    # nginx reads Connection itself, but passes the client's field on as HTTP_CONNECTION.
    with socket.create_connection(("127.0.0.1", plain.port), timeout=10) as s:
        s.sendall(head + ("Connection: close, " + ", ".join(names) + "\r\n\r\n").encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data[:300]
    seen = json.loads(data.partition(b"\r\n\r\n")[2])["headers"]
    assert not any(n in seen for n in names), seen
    assert "x-connection-list" in seen


def test_connection_tokens_above_the_cap_are_400_problem(plain: Gateway) -> None:
    names = ", ".join(f"x-t{i}" for i in range(7000))
    with socket.create_connection(("127.0.0.1", plain.port), timeout=10) as s:
        s.sendall(f"GET /echo/c HTTP/1.1\r\nHost: localhost\r\nConnection: close, {names[:7000]}\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    headers = {k.lower(): v for k, _, v in (line.decode("latin-1").partition(": ") for line in head.split(b"\r\n")[1:])}
    assert_raw_problem(int(head.split()[1]), headers, body, 400, "too-many-connection-tokens")


def test_a_client_proxy_header_never_reaches_the_upstream(plain: Gateway) -> None:
    """httpoxy (nginx.md): the snippet blanks HTTP_PROXY, so neither the client's `Proxy:` value
    nor an empty `Proxy` field is forwarded."""
    for extra in ({"Proxy": "http://evil.example:3128"}, {}):
        seen = echo_of(plain.get("/echo/proxy", headers=extra))["headers"]
        assert "proxy" not in seen, seen


def test_client_forwarding_fields_are_replaced_or_dropped(plain: Gateway) -> None:
    """configuration.md, Header hygiene: a client's `Forwarded`, `X-Real-IP` and every
    `X-Forwarded-*` field (any case) are dropped; the gateway sets -For, -Proto and -Host from
    nginx's facts. Other fields pass as sent."""
    sent = {"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "gopher", "X-Forwarded-Host": "evil.example",
            "X-Forwarded-Port": "1", "Forwarded": "for=6.6.6.6", "X-Real-IP": "6.6.6.6", "X-Forwarded-Prefix": "/p",
            "x-forwarded-ssl": "on", "X-FORWARDED-SCHEME": "https", "X-Forwarded-": "x", "X-Forwardedness": "kept"}
    seen = echo_of(plain.get("/echo/fwd", headers=sent))["headers"]
    assert seen["x-forwarded-for"] == "127.0.0.1" and seen["x-forwarded-proto"] == "http", seen
    assert seen["x-forwarded-host"] != "evil.example", seen
    for name in ("x-forwarded-port", "forwarded", "x-real-ip", "x-forwarded-prefix", "x-forwarded-ssl",
                 "x-forwarded-scheme", "x-forwarded-"):
        assert name not in seen, seen
    assert seen["x-forwardedness"] == "kept", seen


# -- 3b. server.max_body_bytes: the gateway's 413, decided after routing, before the upstream ----


@pytest.fixture(scope="module")
def small_bodies(gateway_factory: GatewayFactory) -> Iterator[Gateway]:
    gw = gateway_factory.create({"server": {"max_body_bytes": 1000}}, workers=1, threads=1)
    yield gw
    gateway_factory.close([gw])


def test_body_above_max_body_bytes_is_413_after_routing(small_bodies: Gateway) -> None:
    """configuration.md, `server.max_body_bytes`: a Content-Length above it is 413
    payload-too-large (nothing reaches the upstream); at it the body passes; an unmatched path
    is still 404 and a wrong method still 405."""
    assert echo_of(small_bodies.request("POST", "/echo/b", data=b"x" * 1000))["body_length"] == 1000
    problem = assert_problem(small_bodies.request("POST", "/echo/b", data=b"x" * 1001), 413, "payload-too-large")
    assert problem["detail"] == "request body exceeds 1000 bytes", problem
    entry = small_bodies.wait_for_log_entries(lambda e: e.get("request_id") == problem["request_id"])[0]
    assert entry["route"] == "echo" and entry.get("upstream") in (None, ""), entry
    assert_problem(small_bodies.request("POST", "/nowhere", data=b"x" * 5000), 404, "route-not-found")
    assert_problem(small_bodies.request("POST", "/users/1", data=b"x" * 5000,
                                        headers={"Host": "api.example.com", "x-version": "2", "x-debug": "1"},
                                        params={"v": "2"}), 405, "method-not-allowed")


# -- 4. header totals: the gateway's 431 on both sides of nginx's limits, never nginx's 500 ------


def big_headers(count: int, size: int) -> bytes:
    return b"".join(b"X-Big-%d: %s\r\n" % (i, b"v" * size) for i in range(count))


def test_headers_within_nginx_limits_reach_the_upstream(plain: Gateway) -> None:
    status, _, body = raw_request(plain, b"GET /echo/big HTTP/1.1\r\nHost: localhost\r\n" + big_headers(4, 7000))
    assert status == 200, body[:300]
    assert len(json.loads(body)["headers"]["x-big-3"]) == 7000


@pytest.mark.parametrize("count,size", [(5, 7000), (5, 15000), (1, 15000)])
def test_headers_above_nginx_limits_get_431_problem(plain: Gateway, count: int, size: int) -> None:
    """Five 15 000-byte headers used to pass nginx's buffers and fail in its FastCGI module
    (`fastcgi request record is too big`): an HTML 500."""
    status, headers, body = raw_request(plain, b"GET /echo/big HTTP/1.1\r\nHost: localhost\r\n" + big_headers(count, size))
    assert_raw_problem(status, headers, body, 431, "request-header-fields-too-large")


def test_many_small_headers_and_a_long_path_still_fit_one_record(plain: Gateway) -> None:
    """The worst case of the snippet's arithmetic: ~1000 header lines plus a path near 8k.
    The path matches no route, so the gateway's own 404 proves the params reached it whole."""
    head = b"GET /nowhere/" + b"p" * 7000 + b" HTTP/1.1\r\nHost: localhost\r\n"
    head += b"".join(b"a%03d: v\r\n" % i for i in range(990))
    status, headers, body = raw_request(plain, head)
    assert_raw_problem(status, headers, body, 404, "route-not-found")


def test_gateway_max_header_bytes_boundary(make_gateway: Any) -> None:
    gw = make_gateway({"server": {"max_header_bytes": 16384}}, workers=1, threads=2)
    pad = {"X-Pad-1": "v" * 6000, "X-Pad-2": "v" * 6000}
    below = gw.get("/echo/x", headers=pad)
    assert below.status_code == 200, below.text[:300]
    above = gw.get("/echo/x", headers=dict(pad, **{"X-Pad-3": "v" * 5000}))
    assert_problem(above, 431, "request-header-fields-too-large")


# -- 5. no invented Content-Type -----------------------------------------------------------------


@pytest.fixture(scope="module", params=["lean", "curl"])
def both_clients(request: pytest.FixtureRequest, gateway_factory: GatewayFactory) -> Iterator[Gateway]:
    gw = gateway_factory.create(workers=1, threads=2, start=False)
    if request.param == "curl":
        import os
        gw.master_env = dict(os.environ, PORTCULLIS_UPSTREAM_CLIENT="curl")
    gw.start()
    yield gw
    gateway_factory.close([gw])


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_body_without_content_type_is_forwarded_without_one(both_clients: Gateway, method: str) -> None:
    status, _, body = raw_request(both_clients, f"{method} /echo/ct HTTP/1.1\r\nHost: localhost\r\nContent-Length: 7\r\n".encode(), b"a=1&b=2")
    assert status == 200, body[:300]
    seen = json.loads(body)
    assert "content-type" not in seen["headers"], seen["headers"]
    assert seen["body"] == "a=1&b=2"


def test_chunked_upload_without_content_type_is_forwarded_without_one(both_clients: Gateway) -> None:
    status, _, body = raw_request(both_clients, b"POST /echo/ct HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n",
                                  b"3\r\na=1\r\n4\r\n&b=2\r\n0\r\n\r\n")
    assert status == 200, body[:300]
    seen = json.loads(body)
    assert "content-type" not in seen["headers"], seen["headers"]
    assert seen["body"] == "a=1&b=2"


def test_a_content_type_the_client_sent_is_kept(both_clients: Gateway) -> None:
    status, _, body = raw_request(both_clients, b"POST /echo/ct HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/csv\r\nContent-Length: 3\r\n", b"a,b")
    assert json.loads(body)["headers"]["content-type"] == "text/csv"


# -- 6. bytes that are not UTF-8 are kept --------------------------------------------------------


def test_bytes_that_are_not_utf8_reach_the_upstream_as_sent(both_clients: Gateway) -> None:
    status, _, body = raw_request(both_clients, b"GET /echo/caf%E9/%FF?q=%E9 HTTP/1.1\r\nHost: localhost\r\nX-Name: caf\xe9\r\n")
    assert status == 200, body[:300]
    seen = json.loads(body)
    assert seen["path"] == "/echo/caf%E9/%FF", seen["path"]
    assert seen["query"] == "q=%E9", seen["query"]
    # The echo upstream reads header bytes as latin-1: byte 0xE9 is "é", U+FFFD would be "ï¿½".
    assert seen["headers"]["x-name"] == "caf\u00e9", seen["headers"]["x-name"]


def test_distinct_byte_paths_stay_distinct(plain: Gateway) -> None:
    paths = []
    for encoded in (b"%E9", b"%FF", b"%C3%A9", b"%EF%BF%BD"):
        status, _, body = raw_request(plain, b"GET /echo/" + encoded + b" HTTP/1.1\r\nHost: localhost\r\n")
        assert status == 200, body[:300]
        paths.append(json.loads(body)["path"])
    assert paths == ["/echo/%E9", "/echo/%FF", "/echo/%C3%A9", "/echo/%EF%BF%BD"], paths


def test_query_rebuilt_by_a_transform_keeps_its_bytes(demo: Gateway) -> None:
    """path-versioning runs query.set, so the query is parsed and serialised again."""
    status, _, body = raw_request(demo, b"GET /v1/x?q=%E9 HTTP/1.1\r\nHost: localhost\r\n")
    assert status == 200, body[:300]
    seen = json.loads(body)["data"]
    assert seen["query"] == "q=%E9&api_version=1", seen["query"]


# -- 7. the credential key is one credential of one consumer -------------------------------------


SECRET = "hardening-hs256-secret-0123456789abcdef"


def hs256_token(sub: str, kid: str = "shared-kid", iss: str = "hardening") -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    payload = b64(json.dumps({"iss": iss, "sub": sub, "aud": "portcullis", "exp": int(time.time()) + 600}).encode())
    signature = hmac.new(SECRET.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


@pytest.fixture
def credential_limited(make_gateway: Any, echo_upstream: EchoUpstream) -> Gateway:
    def sha(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()
    return make_gateway({
        "upstreams": {"echo": {"targets": [echo_upstream.url]}},
        "consumers": [
            {"id": "alice", "api_keys": [{"id": "k1", "sha256": sha("alice-key-0123456789")}]},
            {"id": "bob", "api_keys": [{"id": "k1", "sha256": sha("bob-key-0123456789ab")}]},
        ],
        "auth": {"api_key": {"header": "X-API-Key"},
                 "jwt": {"issuers": [{"issuer": "hardening", "audiences": ["portcullis"],
                                      "keys": [{"secret": SECRET, "alg": "HS256", "kid": "shared-kid"}]}]}},
        "routes": [
            {"name": "limited", "match": {"prefix": "/limited/"}, "upstream": "echo",
             "auth": {"methods": ["api_key", "jwt"]},
             "limits": [{"name": "per-credential", "algorithm": "fixed_window", "limit": 3, "window_seconds": 60,
                         "key": ["credential"]}]},
        ]}, config={}, workers=1, threads=2)


def test_jwt_users_signed_by_one_key_have_their_own_counters(credential_limited: Gateway) -> None:
    """Every token signed by one key used to share the counter of its `kid`."""
    alice = {"Authorization": "Bearer " + hs256_token("alice")}
    bob = {"Authorization": "Bearer " + hs256_token("bob")}
    codes = [credential_limited.get("/limited/x", headers=alice).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429], codes
    assert credential_limited.get("/limited/x", headers=bob).status_code == 200


def test_api_keys_with_the_same_id_of_two_consumers_have_their_own_counters(credential_limited: Gateway) -> None:
    alice = {"X-API-Key": "alice-key-0123456789"}
    bob = {"X-API-Key": "bob-key-0123456789ab"}
    codes = [credential_limited.get("/limited/x", headers=alice).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429], codes
    assert credential_limited.get("/limited/x", headers=bob).status_code == 200


# -- X-Accel-* and HEAD ----------------------------------------------------------------------------


def test_x_accel_fields_from_the_upstream_never_reach_nginx(plain: Gateway) -> None:
    """nginx acts on X-Accel-Redirect: it used to serve /echo/secret (another route, another
    upstream path) for an answer to /echo/accel."""
    response = plain.get("/echo/accel", params=[("set_header", "X-Accel-Redirect:/echo/secret"),
                                                ("set_header", "X-Accel-Buffering:no")])
    assert response.status_code == 200
    assert response.json()["path"] == "/echo/accel", "nginx did not follow X-Accel-Redirect"
    assert "X-Accel-Redirect" not in response.headers


def test_x_accel_buffering_setting_is_validated(make_gateway: Any, echo_upstream: EchoUpstream) -> None:
    gw = make_gateway({"upstreams": {"echo": {"targets": [echo_upstream.url], "x_accel_buffering": False}}},
                      workers=1, threads=2)
    response = gw.get("/echo/accel", params=[("set_header", "X-Accel-Redirect:/echo/secret"), ("set_header", "X-Accel-Buffering:no")])
    assert response.json()["path"] == "/echo/accel"
    gw.set_config(dict(gw.config, upstreams={"echo": {"targets": [echo_upstream.url], "x_accel_buffering": "no"}}))
    refused = gw.cli("check")
    assert refused.returncode != 0 and "x_accel_buffering" in refused.stdout + refused.stderr, refused.stdout + refused.stderr


def test_head_answers_the_content_length_of_get_on_transformed_routes(demo: Gateway) -> None:
    get = demo.get("/v1/users/7", headers={"X-Request-ID": "head-check"})
    head = demo.request("HEAD", "/v1/users/7", headers={"X-Request-ID": "head-check"})
    assert get.status_code == head.status_code == 200
    assert head.content == b""
    assert head.headers["Content-Length"] == get.headers["Content-Length"] == str(len(get.content))
