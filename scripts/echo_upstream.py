#!/usr/bin/env python3
"""Echo upstream: a real HTTP/1.1 service for the Portcullis demo and tests.

Answers every method on every path with the request it received, as JSON:

    {"method", "path", "query", "query_params", "headers", "body_length",
     "body_sha256", "body", "body_base64"}

- ``path`` is the raw request-target path (not decoded), ``query`` the raw query
  string ("" when absent), ``query_params`` the decoded parameters as name -> [values].
- ``headers`` maps lower-case names to values (repeated fields joined with ", ").
- ``body`` is the body as text when it is valid UTF-8, else null, and then
  ``body_base64`` carries it.

Controls (query parameters, combinable):
    status=NNN            answer with that status code (the echo JSON as body, none for 1xx/204/304)
    delay_ms=N            wait N milliseconds before answering
    bytes=N               instead of the echo, stream N bytes of the deterministic pattern
                          (``pattern_bytes``) in 64 KiB chunks, application/octet-stream
    chunked=1             send the body with Transfer-Encoding: chunked instead of Content-Length
    hop=1                 add hop-by-hop response headers a gateway must strip:
                          ``Connection: X-Hop-Secret``, ``X-Hop-Secret: leak``, ``Keep-Alive: timeout=5``
    set_header=Name:Value add a response header (repeatable)

WebSocket: a GET with ``Upgrade: websocket`` and a ``Sec-WebSocket-Key`` is answered 101 (with
the ``set_header`` fields of its query) and
every message (text or binary) is echoed back as it came, pings are answered with pongs, a
close with a close; the text message ``__handshake__`` is answered with the echo document of
the handshake request (what the upstream saw: path, query, headers).

``/__health`` answers 200 ``{"ok":true}``. Request bodies may come with Content-Length or
chunked. SIGTERM and SIGINT stop the server cleanly (exit 0).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

CHUNK_SIZE = 64 * 1024
_PATTERN_PERIOD = 251  # prime, so the pattern never lines up with power-of-two chunk sizes
_PATTERN_BLOCK = bytes(i % _PATTERN_PERIOD for i in range(CHUNK_SIZE + _PATTERN_PERIOD))
MAX_DELAY_MS = 600_000


def pattern_chunks(total: int, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """The deterministic body of ``bytes=N``: byte i is ``i % 251``, yielded in chunks."""
    if chunk_size > CHUNK_SIZE:
        raise ValueError(f"chunk_size must be at most {CHUNK_SIZE}")
    offset = 0
    while offset < total:
        n = min(chunk_size, total - offset)
        start = offset % _PATTERN_PERIOD
        yield _PATTERN_BLOCK[start:start + n]
        offset += n


def pattern_bytes(total: int) -> bytes:
    """The whole pattern of ``total`` bytes (for small sizes in tests)."""
    return b"".join(pattern_chunks(total))


def pattern_sha256(total: int) -> str:
    """Hex SHA-256 of the ``total``-byte pattern, computed without holding it whole."""
    digest = hashlib.sha256()
    for chunk in pattern_chunks(total):
        digest.update(chunk)
    return digest.hexdigest()


# -- WebSocket (RFC 6455), shared with the test harness's client --------------------------------

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WS_TEXT, WS_BINARY, WS_CLOSE, WS_PING, WS_PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def ws_accept(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value for a handshake's ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode("ascii")).digest()).decode("ascii")


def ws_frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """One final frame; clients mask (``mask``: 4 bytes), servers do not."""
    head = bytearray([0x80 | opcode])
    mask_bit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head.append(mask_bit | n)
    elif n < 1 << 16:
        head.append(mask_bit | 126)
        head += n.to_bytes(2, "big")
    else:
        head.append(mask_bit | 127)
        head += n.to_bytes(8, "big")
    if mask:
        head += mask
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes(head) + payload


def ws_read_frame(read: "Callable[[int], bytes]") -> tuple[int, bytes]:
    """Reads one frame with ``read(n)`` (exactly n bytes, b"" at the end); its opcode and
    unmasked payload, or (WS_CLOSE, b"") when the connection ended."""
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            part = read(n - len(data))
            if not part:
                raise EOFError("connection closed inside a frame")
            data += part
        return data
    try:
        b0, b1 = exactly(2)
    except EOFError:
        return WS_CLOSE, b""
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(exactly(2), "big")
    elif n == 127:
        n = int.from_bytes(exactly(8), "big")
    mask = exactly(4) if b1 & 0x80 else None
    payload = exactly(n)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return b0 & 0x0F, payload


class BadControl(ValueError):
    """A control query parameter with an unusable value."""


def _int_control(params: dict[str, list[str]], name: str, low: int, high: int) -> int | None:
    values = params.get(name)
    if not values:
        return None
    try:
        value = int(values[-1])
    except ValueError:
        raise BadControl(f"{name} must be an integer, got {values[-1]!r}") from None
    if not low <= value <= high:
        raise BadControl(f"{name} must be in {low}..{high}, got {value}")
    return value


def _extra_headers(params: dict[str, list[str]]) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for item in params.get("set_header", []):
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise BadControl(f"set_header must be Name:Value, got {item!r}")
        if any(c in item for c in "\r\n\0"):
            raise BadControl("set_header must not contain CR, LF or NUL")
        headers.append((name.strip(), value.strip()))
    if params.get("hop", [""])[-1] == "1":
        headers += [("Connection", "X-Hop-Secret"), ("X-Hop-Secret", "leak"), ("Keep-Alive", "timeout=5")]
    return headers


class EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "portcullis-echo/1"
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle plus delayed ACK
    # would add ~40 ms to every keep-alive response.
    disable_nagle_algorithm = True
    timeout = 120  # idle keep-alive connections are closed after this many seconds
    verbose = False

    # Every method is answered the same way.
    def __getattr__(self, name: str):
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib signature)
        if self.verbose:
            super().log_message(format, *args)

    # -- request -----------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size_line = self.rfile.readline(1024)
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                    pass  # trailers are read and dropped
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline(8)  # CRLF after each chunk

    def _echo_document(self, body: bytes, url_path: str, query: str) -> dict[str, object]:
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        try:
            text: str | None = body.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        document: dict[str, object] = {
            "method": self.command,
            "path": url_path,
            "query": query,
            "query_params": parse_qs(query, keep_blank_values=True),
            "headers": headers,
            "body_length": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "body": text,
        }
        if text is None:
            document["body_base64"] = base64.b64encode(body).decode("ascii")
        return document

    # -- response ----------------------------------------------------------------------------

    def _handle(self) -> None:
        if self.headers.get("Upgrade", "").lower() == "websocket" and self.headers.get("Sec-WebSocket-Key"):
            self._websocket()
            return
        body = self._read_body()
        url = urlsplit(self.path)
        if url.path == "/__health":
            self._send_json(200, {"ok": True}, [])
            return
        params = parse_qs(url.query, keep_blank_values=True)
        try:
            status = _int_control(params, "status", 200, 599) or 200
            delay_ms = _int_control(params, "delay_ms", 0, MAX_DELAY_MS)
            stream_bytes = _int_control(params, "bytes", 0, 1 << 40)
            extra = _extra_headers(params)
        except BadControl as problem:
            self._send_json(400, {"error": str(problem)}, [])
            return
        if delay_ms:
            time.sleep(delay_ms / 1000)
        chunked = params.get("chunked", [""])[-1] == "1"
        if stream_bytes is not None:
            self._send_stream(status, stream_bytes, extra, chunked)
        else:
            self._send_json(status, self._echo_document(body, url.path, url.query), extra, chunked)

    def _websocket(self) -> None:
        """Answers the handshake with 101, then echoes messages until a close or the end."""
        url = urlsplit(self.path)
        handshake = json.dumps(self._echo_document(b"", url.path, url.query)).encode("utf-8")
        try:  # only set_header: hop=1 would replace the handshake's own Connection field
            extra = _extra_headers({"set_header": parse_qs(url.query, keep_blank_values=True).get("set_header", [])})
        except BadControl as problem:
            self._send_json(400, {"error": str(problem)}, [])
            return
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", ws_accept(self.headers["Sec-WebSocket-Key"]))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        # An upgraded connection may idle far longer than a keep-alive one (`timeout` above).
        self.connection.settimeout(3600)
        while True:
            try:
                opcode, payload = ws_read_frame(self.rfile.read)
            except (EOFError, OSError):
                return
            if opcode == WS_CLOSE:
                self.wfile.write(ws_frame(WS_CLOSE, payload[:2]))
                self.wfile.flush()
                return
            if opcode == WS_PING:
                reply = ws_frame(WS_PONG, payload)
            elif opcode == WS_TEXT and payload == b"__handshake__":
                reply = ws_frame(WS_TEXT, handshake)
            else:
                reply = ws_frame(opcode, payload)
            self.wfile.write(reply)
            self.wfile.flush()

    def _start(self, status: int, content_type: str, length: int, extra: list[tuple[str, str]], chunked: bool) -> bool:
        """Sends the status line and headers; returns whether a body may follow."""
        self.send_response(status)
        has_body = self.command != "HEAD" and not (status < 200 or status in (204, 304))
        if status >= 200 and status not in (204, 304):
            self.send_header("Content-Type", content_type)
            if chunked and has_body:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(length))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        return has_body

    def _send_json(self, status: int, document: dict[str, object], extra: list[tuple[str, str]],
                   chunked: bool = False) -> None:
        payload = json.dumps(document).encode("utf-8")
        if self._start(status, "application/json", len(payload), extra, chunked):
            self._write_body([payload], chunked)

    def _send_stream(self, status: int, total: int, extra: list[tuple[str, str]], chunked: bool) -> None:
        if self._start(status, "application/octet-stream", total, extra, chunked):
            self._write_body(pattern_chunks(total), chunked)

    def _write_body(self, chunks: Iterator[bytes] | list[bytes], chunked: bool) -> None:
        for chunk in chunks:
            if not chunk:
                continue
            if chunked:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            else:
                self.wfile.write(chunk)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class EchoServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True


def serve(host: str, port: int, verbose: bool) -> int:
    EchoHandler.verbose = verbose
    server = EchoServer((host, port), EchoHandler)
    stopping = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        if not stopping.is_set():
            stopping.set()
            # shutdown() blocks until serve_forever returns, so it must not run on this thread.
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    bound_host, bound_port = server.server_address[:2]
    print(f"echo upstream listening on http://{bound_host}:{bound_port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    print("echo upstream stopped", file=sys.stderr, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="TCP port (0 picks a free one)")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    return serve(args.host, args.port, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
