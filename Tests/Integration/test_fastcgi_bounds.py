"""The worker's own bounds on what arrives over FastCGI (docs/architecture.md: libfcgi accepts params
of any size), tested by speaking FastCGI to the pool's socket directly, as a hostile or broken
client of the socket would, without nginx in between."""

from __future__ import annotations

import json
import socket
import struct
from typing import Callable

from harness import Gateway, PROBLEM_JSON

FCGI_BEGIN_REQUEST, FCGI_END_REQUEST, FCGI_PARAMS, FCGI_STDIN, FCGI_STDOUT = 1, 3, 4, 5, 6


def record(kind: int, content: bytes, request_id: int = 1) -> bytes:
    return struct.pack(">BBHHBx", 1, kind, request_id, len(content), 0) + content


def name_value(name: bytes, value: bytes) -> bytes:
    def length(n: int) -> bytes:
        return bytes([n]) if n < 128 else struct.pack(">I", n | 0x80000000)
    return length(len(name)) + length(len(value)) + name + value


def fastcgi_request(socket_path: str, params: dict[str, str]) -> tuple[str, bytes]:
    """Sends one FastCGI request; returns the response head and body (STDOUT) as sent."""
    pairs = b"".join(name_value(k.encode(), v.encode()) for k, v in params.items())
    wire = record(FCGI_BEGIN_REQUEST, struct.pack(">HB5x", 1, 0))
    for i in range(0, len(pairs), 65535):
        wire += record(FCGI_PARAMS, pairs[i:i + 65535])
    wire += record(FCGI_PARAMS, b"") + record(FCGI_STDIN, b"")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(socket_path)
        s.sendall(wire)
        stdout = b""
        buffer = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buffer += chunk
            while len(buffer) >= 8:
                _, kind, _, length, padding = struct.unpack(">BBHHBx", buffer[:8])
                if len(buffer) < 8 + length + padding:
                    break
                if kind == FCGI_STDOUT:
                    stdout += buffer[8:8 + length]
                buffer = buffer[8 + length + padding:]
                if kind == FCGI_END_REQUEST:
                    head, _, body = stdout.partition(b"\r\n\r\n")
                    return head.decode(), body
    raise AssertionError(f"no END_REQUEST; got {stdout[:200]!r}")


def base_params(path: str) -> dict[str, str]:
    return {"REQUEST_METHOD": "GET", "DOCUMENT_URI": path, "REQUEST_URI": path, "QUERY_STRING": "",
            "REMOTE_ADDR": "127.0.0.1", "PORTCULLIS_REQUEST_ID": "fcgi-direct", "HTTP_HOST": "localhost"}


def test_direct_fastcgi_request_is_served(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(workers=1, threads=2)
    head, body = fastcgi_request(str(gw.socket_path), base_params("/echo/direct"))
    assert head.startswith("Status: 200"), head
    assert json.loads(body)["path"] == "/echo/direct"


def test_oversized_params_get_431_and_the_worker_keeps_serving(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway({"server": {"max_header_bytes": 65536}}, workers=1, threads=2)
    pids = {w["pid"] for w in gw.status()["workers"]}
    params = base_params("/echo/huge")
    for i in range(40):
        params[f"HTTP_X_FILLER_{i}"] = "x" * 4000
    head, body = fastcgi_request(str(gw.socket_path), params)
    assert head.startswith("Status: 431"), head
    assert f"Content-Type: {PROBLEM_JSON}" in head
    problem = json.loads(body)
    assert problem["status"] == 431 and problem["request_id"] == "fcgi-direct"
    assert problem["type"].endswith("/request-header-fields-too-large")
    # Nothing crashed: the same worker answers through nginx.
    assert gw.get("/echo/after").status_code == 200
    assert {w["pid"] for w in gw.status()["workers"]} == pids


def test_garbage_on_the_socket_is_dropped_and_the_pool_keeps_serving(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(workers=1, threads=2)
    pids = {w["pid"] for w in gw.status()["workers"]}
    for junk in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x01\x01\x00\x01\xff\xff\x00\x00" + b"\x00" * 64, b"\x00" * 7):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(gw.socket_path))
            s.sendall(junk)
            s.shutdown(socket.SHUT_WR)
            try:
                while s.recv(4096):
                    pass
            except (ConnectionResetError, socket.timeout):
                pass
    for _ in range(4):
        assert gw.get("/echo/still-fine").status_code == 200
    assert {w["pid"] for w in gw.status()["workers"]} == pids
