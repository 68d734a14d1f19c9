"""The test services themselves: the echo upstream's controls and the redis fixture."""

from __future__ import annotations

import hashlib
import http.client
import time
from collections.abc import Callable

import requests

from harness import EchoUpstream, RedisServer, pattern_bytes, pattern_sha256


def test_echo_reports_the_request(echo_upstream: EchoUpstream) -> None:
    response = requests.post(f"{echo_upstream.url}/a/b%20c?x=1&x=2&y=", data="héllo".encode(),
                             headers={"X-Test": "1"}, timeout=5)
    assert response.status_code == 200
    echo = response.json()
    assert echo["method"] == "POST"
    assert echo["path"] == "/a/b%20c"
    assert echo["query"] == "x=1&x=2&y="
    assert echo["query_params"] == {"x": ["1", "2"], "y": [""]}
    assert echo["headers"]["x-test"] == "1"
    assert echo["body"] == "héllo"
    assert echo["body_length"] == len("héllo".encode())
    assert echo["body_sha256"] == hashlib.sha256("héllo".encode()).hexdigest()
    assert "body_base64" not in echo


def test_echo_binary_body_as_base64(echo_upstream: EchoUpstream) -> None:
    echo = requests.put(f"{echo_upstream.url}/bin", data=b"\xff\x00\xfe", timeout=5).json()
    assert echo["body"] is None
    assert echo["body_base64"] == "/wD+"


def test_echo_chunked_request_body(echo_upstream: EchoUpstream) -> None:
    parts = [b"a" * 1000, b"b" * 70_000, b"c"]
    echo = requests.post(f"{echo_upstream.url}/chunked", data=iter(parts), timeout=5).json()
    assert echo["headers"]["transfer-encoding"] == "chunked"
    assert echo["body_length"] == 71_001
    assert echo["body_sha256"] == hashlib.sha256(b"".join(parts)).hexdigest()


def test_echo_status_delay_and_headers(echo_upstream: EchoUpstream) -> None:
    started = time.monotonic()
    response = requests.get(f"{echo_upstream.url}/s?status=503&delay_ms=200&set_header=X-A:1&set_header=X-B:two",
                            timeout=5)
    assert time.monotonic() - started >= 0.2
    assert response.status_code == 503
    assert response.headers["X-A"] == "1"
    assert response.headers["X-B"] == "two"
    assert response.json()["path"] == "/s"


def test_echo_hop_headers(echo_upstream: EchoUpstream) -> None:
    response = requests.get(f"{echo_upstream.url}/h?hop=1", timeout=5)
    assert response.headers["Connection"] == "X-Hop-Secret"
    assert response.headers["X-Hop-Secret"] == "leak"
    assert response.headers["Keep-Alive"] == "timeout=5"


def test_echo_streams_the_pattern(echo_upstream: EchoUpstream) -> None:
    size = 1_000_003
    for chunked in ("0", "1"):
        response = requests.get(f"{echo_upstream.url}/big?bytes={size}&chunked={chunked}", timeout=10)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/octet-stream"
        assert ("Content-Length" in response.headers) == (chunked == "0")
        assert hashlib.sha256(response.content).hexdigest() == pattern_sha256(size)
    assert pattern_bytes(300)[250:253] == bytes([250, 0, 1])


def test_echo_head_has_length_but_no_body(echo_upstream: EchoUpstream) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", echo_upstream.port, timeout=5)
    try:
        conn.request("HEAD", "/head?bytes=12345")
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Length") == "12345"
        assert response.read() == b""
        conn.request("GET", "/after-head")  # the keep-alive connection is still in sync
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def test_echo_rejects_bad_controls(echo_upstream: EchoUpstream) -> None:
    for query in ("status=abc", "status=99", "delay_ms=-1", "set_header=NoColon"):
        response = requests.get(f"{echo_upstream.url}/bad?{query}", timeout=5)
        assert response.status_code == 400, query
        assert "error" in response.json()


def test_echo_health(echo_upstream: EchoUpstream) -> None:
    response = requests.get(f"{echo_upstream.url}/__health", timeout=5)
    assert response.status_code == 200
    assert response.json() == {"ok": True}


def test_redis_fixture(make_redis: Callable[[], RedisServer]) -> None:
    redis = make_redis()
    assert redis.command("SET", "k", "v") == b"+OK"
    assert redis.command("GET", "k") == b"$1"
    redis.restart()
    assert redis.ping()
    assert redis.command("GET", "k") == b"$-1"  # no persistence across restarts
