"""Process harness for the integration tests: real nginx, a real gateway pool, real upstreams.

Everything runs on free loopback ports inside a private temporary directory, and is stopped
(process group and all) when a test or module is done, even when it failed.

Main pieces:
- ``ManagedProcess``: one child process in its own process group, output captured to files.
- ``EchoUpstream`` / ``RedisServer``: the services a gateway talks to.
- ``Gateway``: ``portcullis serve`` + nginx rendered from ``nginx/example.conf``, with helpers to
  send requests, run the CLI, read ``status --json``, ``state.json`` and the access log.
- ``GatewayFactory``: creates gateways with their own config (``overrides`` deep-merged into a
  base config) and tears them all down.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = REPO_ROOT / "scripts"
RENDER_NGINX = SCRIPTS / "render-nginx.sh"
ECHO_UPSTREAM = SCRIPTS / "echo_upstream.py"

# The pattern served by the echo upstream's `bytes=N` control.
sys.path.insert(0, str(SCRIPTS))
from echo_upstream import (  # noqa: E402
    WS_BINARY, WS_CLOSE, WS_PING, WS_PONG, WS_TEXT, pattern_bytes, pattern_sha256, ws_accept, ws_frame, ws_read_frame,
)

__all__ = [
    "REPO_ROOT", "Gateway", "GatewayFactory", "EchoUpstream", "RedisServer", "ManagedProcess",
    "StartupError", "free_port", "wait_until", "deep_merge", "walking_skeleton_config",
    "pattern_bytes", "pattern_sha256", "peak_rss_bytes", "keep_temp_dirs",
    "PROBLEM_JSON", "PROBLEM_BASE", "assert_problem", "echo_of", "QuietHTTPServer", "answer_json",
    "WebSocketClient", "GrpcEcho", "WS_TEXT", "WS_BINARY", "WS_PING", "WS_PONG", "WS_CLOSE",
]

T = TypeVar("T")

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://portcullis.dev/problems/"

STARTUP_TIMEOUT = float(os.environ.get("PORTCULLIS_TEST_STARTUP_TIMEOUT", "30"))


class StartupError(RuntimeError):
    """A process did not become ready; the message carries the tails of its output."""


# -- small utilities ----------------------------------------------------------------------------


class QuietHTTPServer(ThreadingHTTPServer):
    """A test's small HTTP server: a client that hangs up (the gateway on shutdown, a timeout)
    is normal here, not a traceback on the test output."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)

    @classmethod
    def serving(cls, handler: type[BaseHTTPRequestHandler]) -> "QuietHTTPServer":
        """A server on a free loopback port, already serving `handler` from a daemon thread;
        `shutdown()` and `server_close()` stop it."""
        server = cls(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def answer_json(handler: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
    """Sends `body` as a whole `application/json` answer with `status` from a test server."""
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def assert_problem(response: requests.Response, status: int, problem_type: str | None = None) -> dict[str, Any]:
    """A gateway error: problem+json with the RFC 9457 members, the request id in the body and
    in `X-Request-ID`, a Content-Length that matches, and (if given) the problem type."""
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {response.text[:500]}"
    assert response.headers.get("Content-Type", "").split(";")[0].strip() == PROBLEM_JSON, response.headers
    length = response.headers.get("Content-Length")
    assert length is None or int(length) == len(response.content), (length, len(response.content))
    body = response.json()
    for member in ("type", "title", "status", "detail", "request_id"):
        assert member in body, f"problem body lacks {member!r}: {body}"
    assert body["status"] == status
    assert body["request_id"] and response.headers.get("X-Request-ID") == body["request_id"], (response.headers, body)
    if problem_type is not None:
        assert body["type"] == PROBLEM_BASE + problem_type, body
    return body


def echo_of(response: requests.Response) -> dict[str, Any]:
    """The echo upstream's JSON, after checking the request went through."""
    assert response.status_code == 200, f"{response.status_code}: {response.text[:500]}"
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    return response.json()



def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05,
               on_timeout: Callable[[], str] | None = None) -> T:
    """Calls ``probe`` until it returns something other than None/False, or fails after ``timeout``.

    Exceptions raised by the probe count as "not yet"; the last one is reported on timeout.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = probe()
            if result is not None and result is not False:
                return result
        except StartupError:
            raise
        except Exception as error:  # noqa: BLE001 (any failure means "not ready yet")
            last_error = error
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            extra = f"\n{on_timeout()}" if on_timeout else ""
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}{detail}{extra}")
        time.sleep(interval)


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in: objects merge key by key, anything else replaces.

    A value of None in ``overrides`` deletes the key.
    """
    merged = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def peak_rss_bytes(pid: int) -> int:
    """Peak resident set size (VmHWM) of a live process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            value, unit = line.split()[1:3]
            assert unit == "kB", line
            return int(value) * 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def keep_temp_dirs() -> bool:
    """PORTCULLIS_KEEP_TMP=1 keeps every test's directory (configs, logs) for inspection."""
    return os.environ.get("PORTCULLIS_KEEP_TMP") == "1"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not running anymore.
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0] != "Z"
    except (OSError, IndexError):
        return False


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no output file)"
    kept = text.splitlines()[-lines:]
    return "\n".join(kept) if kept else "(empty)"


# -- processes ----------------------------------------------------------------------------------


@dataclass
class ManagedProcess:
    """A child process in its own process group, stdout/stderr captured in ``log_dir``."""

    name: str
    argv: list[str]
    log_dir: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def stdout_path(self) -> Path:
        return self.log_dir / f"{self.name}.stdout.log"

    @property
    def stderr_path(self) -> Path:
        return self.log_dir / f"{self.name}.stderr.log"

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was never started"
        return self.popen.pid

    def start(self) -> ManagedProcess:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.popen = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                env=self.env, cwd=self.cwd, start_new_session=True,
            )
        return self

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def send(self, sig: int) -> None:
        if self.running():
            self.popen.send_signal(sig)  # type: ignore[union-attr]

    def wait(self, timeout: float) -> int | None:
        """Waits for the process to exit; its exit status, or None if it still runs."""
        if self.popen is None:
            return None
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Signals the process, waits up to ``timeout``, then kills its whole process group."""
        if self.popen is None:
            return None
        if self.running():
            self.send(sig)
            self.wait(timeout)
        code = self.popen.poll()
        self.kill_group()
        if code is None:
            code = self.wait(5)
        return code

    def kill_group(self) -> None:
        """SIGKILL to everything left in the process group this process leads."""
        if self.popen is None:
            return
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def output_tail(self, lines: int = 40) -> str:
        return (f"--- {self.name} stderr (last {lines} lines) ---\n{_tail(self.stderr_path, lines)}\n"
                f"--- {self.name} stdout (last {lines} lines) ---\n{_tail(self.stdout_path, lines)}")

    def ensure_running(self, what: str) -> None:
        if not self.running():
            raise StartupError(f"{self.name} exited with status {self.returncode} while {what}\n"
                               f"command: {' '.join(self.argv)}\n{self.output_tail()}")


class EchoUpstream:
    """scripts/echo_upstream.py on a free loopback port."""

    def __init__(self, workdir: Path, name: str = "echo", port: int | None = None):
        self.port = port or free_port()
        self.process = ManagedProcess(
            name, [sys.executable, str(ECHO_UPSTREAM), "--port", str(self.port)], workdir)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> EchoUpstream:
        self.process.start()
        wait_until(self._healthy, STARTUP_TIMEOUT, f"echo upstream on {self.url}",
                   on_timeout=self.process.output_tail)
        return self

    def _healthy(self) -> bool:
        self.process.ensure_running("starting")
        return requests.get(f"{self.url}/__health", timeout=1).status_code == 200

    def stop(self) -> None:
        self.process.stop()


class GrpcEcho:
    """scripts/grpc_echo.py (the gRPC example service) on a free loopback port."""

    def __init__(self, workdir: Path, name: str = "grpc-echo"):
        self.port = free_port()
        self.process = ManagedProcess(name, [sys.executable, str(SCRIPTS / "grpc_echo.py"), "--port", str(self.port)],
                                      workdir)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GrpcEcho:
        self.process.start()

        def listening() -> bool:
            self.process.ensure_running("starting")
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        wait_until(listening, STARTUP_TIMEOUT, f"grpc echo on port {self.port}", on_timeout=self.process.output_tail)
        return self

    def stop(self) -> None:
        self.process.stop()


class WebSocketClient:
    """A minimal RFC 6455 client over a plain socket: the handshake (its status and headers are
    kept whatever they are), then masked frames out and frames in."""

    def __init__(self, port: int, path: str, headers: Mapping[str, str] | None = None, timeout: float = 10.0):
        self.key = base64.b64encode(os.urandom(16)).decode("ascii")
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket", "Connection: Upgrade",
                 f"Sec-WebSocket-Key: {self.key}", "Sec-WebSocket-Version: 13"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        self.reader = self.sock.makefile("rb")
        status_line = self.reader.readline().decode("latin-1")
        self.status = int(status_line.split()[1])
        self.headers: dict[str, str] = {}
        #: Every header line in order, names lower-cased: shows repeated fields ``headers`` folds.
        self.header_lines: list[tuple[str, str]] = []
        while (line := self.reader.readline().decode("latin-1").rstrip("\r\n")):
            name, _, value = line.partition(":")
            self.header_lines.append((name.strip().lower(), value.strip()))
            self.headers[name.strip().lower()] = value.strip()
        # A refusal's body (problem+json), when it has one.
        length = int(self.headers.get("content-length", "0") or 0)
        self.body = self.reader.read(length) if self.status != 101 and length else b""

    @property
    def accepted(self) -> bool:
        """101 with the Sec-WebSocket-Accept the key calls for."""
        return self.status == 101 and self.headers.get("sec-websocket-accept") == ws_accept(self.key)

    def send(self, payload: bytes | str, opcode: int | None = None) -> None:
        data = payload.encode("utf-8") if isinstance(payload, str) else payload
        kind = opcode if opcode is not None else (WS_TEXT if isinstance(payload, str) else WS_BINARY)
        self.sock.sendall(ws_frame(kind, data, mask=os.urandom(4)))

    def receive(self) -> tuple[int, bytes]:
        return ws_read_frame(self.reader.read)

    def exchange(self, payload: bytes | str) -> tuple[int, bytes]:
        self.send(payload)
        return self.receive()

    def close(self) -> None:
        """A close frame on an upgraded connection (on a refused one it would be a bad HTTP
        request), then the socket."""
        if self.status == 101:
            try:
                self.sock.sendall(ws_frame(WS_CLOSE, b"\x03\xe8", mask=os.urandom(4)))
            except OSError:
                pass
        self.sock.close()


class RedisServer:
    """A private redis-server on a free loopback port, no persistence.

    ``extra_args`` are more redis-server directives (an ACL ``--user``, ``--replicaof``); with
    ``unix_socket`` it listens only on that socket (no TCP port); ``auth`` is the (user,
    password) this helper's own commands authenticate with."""

    def __init__(self, workdir: Path, name: str = "redis", extra_args: Sequence[str] = (),
                 unix_socket: Path | None = None, auth: tuple[str, str] | None = None):
        self.port = 0 if unix_socket else free_port()
        self.unix_socket = unix_socket
        self.auth = auth
        self.workdir = workdir
        listen = (["--port", "0", "--unixsocket", str(unix_socket), "--unixsocketperm", "700"] if unix_socket
                  else ["--port", str(self.port), "--bind", "127.0.0.1"])
        self.process = ManagedProcess(name, [
            "redis-server", *listen, "--save", "",
            "--appendonly", "no", "--dir", str(workdir), "--protected-mode", "yes", *extra_args,
        ], workdir)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> RedisServer:
        if shutil.which("redis-server") is None:
            raise StartupError("redis-server is not installed (make deps installs it)")
        self.process.start()
        wait_until(self.ping, STARTUP_TIMEOUT, f"redis-server on port {self.port}",
                   on_timeout=self.process.output_tail)
        return self

    def command(self, *args: str) -> bytes:
        """Sends one command (RESP) and returns the raw first reply line."""
        def resp(*words: str) -> bytes:
            return f"*{len(words)}\r\n".encode() + b"".join(
                f"${len(w.encode())}\r\n{w}\r\n".encode() for w in words)
        if self.unix_socket:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.settimeout(2)
            conn.connect(str(self.unix_socket))
        else:
            conn = socket.create_connection(("127.0.0.1", self.port), timeout=2)
        with conn:
            reader = conn.makefile("rb")
            if self.auth:
                conn.sendall(resp("AUTH", *self.auth))
                reader.readline()
            conn.sendall(resp(*args))
            return reader.readline().rstrip(b"\r\n")

    def ping(self) -> bool:
        self.process.ensure_running("starting")
        return self.command("PING") == b"+PONG"

    def stop(self) -> None:
        self.process.stop()

    def restart(self) -> None:
        """Stops and starts again on the same port (for failure-policy tests)."""
        self.process.stop()
        self.process = ManagedProcess(self.process.name, self.process.argv, self.workdir)
        self.start()


# -- the gateway --------------------------------------------------------------------------------


def walking_skeleton_config(echo_url: str, dead_url: str) -> dict[str, Any]:
    """Upstreams and routes of issue 2 (server and log sections are filled in by Gateway)."""
    return {
        "upstreams": {
            "echo": {"targets": [echo_url], "connect_timeout_ms": 1000, "timeout_ms": 30000},
            "dead": {"targets": [dead_url], "connect_timeout_ms": 500, "timeout_ms": 2000},
            "slow": {"targets": [echo_url], "connect_timeout_ms": 1000, "timeout_ms": 500},
        },
        "routes": [
            {"name": "echo", "match": {"prefix": "/echo/"}, "upstream": "echo"},
            {"name": "users",
             "match": {"path": "/users/{id}", "methods": ["GET"], "host": "api.example.com",
                       "headers": {"x-version": "2", "x-debug": True}, "query": {"v": "2"}},
             "upstream": "echo", "rewrite": "/internal/users/{id}"},
            {"name": "v1", "match": {"prefix": "/v1/"}, "upstream": "echo", "strip_prefix": True},
            {"name": "dead", "match": {"prefix": "/dead/"}, "upstream": "dead"},
            {"name": "slow", "match": {"prefix": "/slow/"}, "upstream": "slow"},
        ],
    }


class Gateway:
    """``portcullis serve`` plus a private nginx in front of it, in ``workdir``.

    The harness owns ``server.socket``, ``server.runtime_dir`` and ``log.access_log`` (they point
    into ``workdir``); everything else comes from ``config``.
    """

    def __init__(self, binary: Path, workdir: Path, config: Mapping[str, Any], workers: int = 2,
                 threads: int = 4, keepalive: int | None = None, name: str = "gateway",
                 config_path: Path | None = None):
        self.binary = binary
        self.workdir = workdir
        self.name = name
        self.workers = workers
        self.threads = threads
        # Idle kept FastCGI connections nginx may hold (nginx/portcullis.conf: any number).
        self.keepalive = keepalive if keepalive is not None else 32
        self.run_dir = workdir / "run"
        self.socket_path = self.run_dir / "pc.sock"
        self.access_log_path = workdir / "access.log"
        # Relative paths inside the config resolve against this file's directory.
        self.config_path = config_path or workdir / "portcullis.json"
        self.nginx_prefix = workdir / "nginx"
        self.port = free_port()
        # nginx's HTTP/2 cleartext listener (gRPC clients).
        self.grpc_port = free_port()
        self.config: dict[str, Any] = {}
        self.set_config(config)
        # More `portcullis serve` options (e.g. --log-file), set before start.
        self.serve_args: list[str] = []
        # False: `serve` gets no --workers/--threads, so server.workers (and a reload that
        # changes it) sizes the pool.
        self.size_pool_on_command_line = True
        self.master = ManagedProcess(f"{name}-portcullis", self._serve_argv(), workdir)
        self.nginx = ManagedProcess(f"{name}-nginx", self._nginx_argv(), workdir)
        self.session = requests.Session()
        # Environment of `portcullis serve` (None: the test's own), e.g. to set proxy variables.
        self.master_env: dict[str, str] | None = None
        self._seen_worker_pids: set[int] = set()

    # -- configuration ---------------------------------------------------------------------

    def set_config(self, config: Mapping[str, Any]) -> None:
        """Writes ``config`` (with the harness-owned paths) to ``config_path``."""
        defaults = {"server": {"workers": self.workers, "threads": self.threads, "shutdown_grace_seconds": 10}}
        owned = {"server": {"socket": str(self.socket_path), "runtime_dir": str(self.run_dir)},
                 "log": {"access_log": str(self.access_log_path)}}
        self.config = deep_merge(deep_merge(defaults, config), owned)
        self.write_raw_config(json.dumps(self.config, indent=2))

    def write_raw_config(self, text: str) -> None:
        """Writes arbitrary text as the config file (for broken-config tests)."""
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.config_path)

    # -- lifecycle -------------------------------------------------------------------------

    def _serve_argv(self) -> list[str]:
        sizes = ["--workers", str(self.workers), "--threads", str(self.threads)] if self.size_pool_on_command_line else []
        return [str(self.binary), "serve", "--config", str(self.config_path), *sizes, *self.serve_args]

    def _nginx_argv(self) -> list[str]:
        conf = self.nginx_prefix / "nginx.conf"
        return ["nginx", "-p", str(self.nginx_prefix), "-c", str(conf), "-e", "stderr"]

    def start(self) -> Gateway:
        self.start_master()
        self._render_nginx()
        self.nginx.start()
        wait_until(self._answers, STARTUP_TIMEOUT, f"nginx on 127.0.0.1:{self.port} to reach the gateway",
                   on_timeout=self.diagnostics)
        return self

    def start_master(self) -> None:
        """Starts ``portcullis serve`` and waits for its socket and all its workers."""
        self.master = ManagedProcess(self.master.name, self._serve_argv(), self.workdir, env=self.master_env)
        self.master.start()
        wait_until(self._pool_ready, STARTUP_TIMEOUT, f"{self.workers} gateway workers on {self.socket_path}",
                   on_timeout=self.diagnostics)

    def _pool_ready(self) -> bool:
        self.master.ensure_running("starting")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1)
            s.connect(str(self.socket_path))
        # Ready: the worker's JWKS key sets are in (or their first fetch ended).
        return len([w for w in self.status()["workers"] if w.get("ready")]) >= self.workers

    #: Extra environment for scripts/render-nginx.sh (e.g. NGINX_TEMPLATE, TLS_LISTEN).
    render_env: Mapping[str, str] = {}

    def _render_nginx(self) -> None:
        # The http-level part for websocket/grpc routes, generated from this config as an
        # operator would (docs/protocols.md).
        self.nginx_prefix.mkdir(parents=True, exist_ok=True)
        upstreams = self.nginx_prefix / "portcullis-upstreams.conf"
        # The master's environment: the config may name variables only it has (password_env).
        generated = self.cli("nginx-upstreams", "--output", str(upstreams), env=self.master_env)
        if generated.returncode != 0:
            raise StartupError(f"portcullis nginx-upstreams failed: {generated.stderr}")
        env = {**os.environ, "UPSTREAMS_CONF": str(upstreams), "GRPC_LISTEN": f"127.0.0.1:{self.grpc_port}",
               **self.render_env}
        subprocess.run([str(RENDER_NGINX), str(self.nginx_prefix / "nginx.conf"), str(self.nginx_prefix),
                        f"127.0.0.1:{self.port}", str(self.socket_path), str(self.keepalive)],
                       check=True, capture_output=True, text=True, env=env)

    def _answers(self) -> bool:
        self.nginx.ensure_running("starting")
        self.master.ensure_running("waiting for nginx")
        response = requests.get(self.url("/__harness_ready"), timeout=2)
        # nginx answers 502 itself while it cannot reach the socket.
        return response.status_code not in (502, 503, 504)

    def nginx_workers(self) -> set[int]:
        """The nginx master's live children: its worker processes."""
        children = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.nginx.pid and fields[0] != "Z":
                children.add(int(stat.parent.name))
        return children

    def reload_nginx(self) -> None:
        """SIGHUP to nginx (it rereads its configuration), then waits until every worker of the
        old configuration has exited: until then one may still take a new connection."""
        old = self.nginx_workers()
        self.nginx.send(signal.SIGHUP)
        wait_until(lambda: bool((now := self.nginx_workers()) and not now & old) or None, 15,
                   "nginx's workers of the old configuration to exit", on_timeout=self.diagnostics)

    def restart_nginx(self) -> None:
        """Stops nginx and starts it again on the same port with a freshly rendered config."""
        self.nginx.stop(signal.SIGQUIT, timeout=5)
        self._render_nginx()
        self.nginx = ManagedProcess(self.nginx.name, self._nginx_argv(), self.workdir).start()
        wait_until(self._answers, STARTUP_TIMEOUT, f"nginx on 127.0.0.1:{self.port} after restart",
                   on_timeout=self.diagnostics)

    def stop(self) -> None:
        """Stops nginx, then the pool (gracefully, then by force), then any stray worker."""
        self.session.close()
        self.nginx.stop(signal.SIGQUIT, timeout=5)
        self.master.stop(signal.SIGTERM, timeout=15)
        self._kill_stray_workers()

    def _kill_stray_workers(self) -> None:
        for pid in self._seen_worker_pids:
            if _pid_alive(pid) and str(self.binary) in _cmdline(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def diagnostics(self, lines: int = 40) -> str:
        """The tails of the gateway's and nginx's output, for failure messages."""
        return "\n".join([f"=== {self.name} in {self.workdir} ===", self.master.output_tail(lines),
                          self.nginx.output_tail(lines)])

    # -- HTTP ------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One request through nginx (keep-alive session); default timeout 15 s."""
        kwargs.setdefault("timeout", 15)
        return self.session.request(method, self.url(path), **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    # -- CLI and state ---------------------------------------------------------------------

    def cli(self, *args: str, timeout: float = 30, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Runs ``portcullis ARGS --config <this config>`` (with ``env``: in that environment)."""
        return subprocess.run([str(self.binary), *args, "--config", str(self.config_path)],
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=env)

    def cli_background(self, *args: str) -> subprocess.Popen[str]:
        """Starts ``portcullis ARGS --config <this config>`` without waiting for it.

        Needed for commands that wait for the master to exit (``stop``): the master is this
        process's child, so it stays a zombie until the test reaps it with ``master.wait``.
        """
        return subprocess.Popen([str(self.binary), *args, "--config", str(self.config_path)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL)

    def status(self) -> dict[str, Any]:
        result = self.cli("status", "--json")
        if result.returncode != 0:
            raise RuntimeError(f"portcullis status --json exited {result.returncode}: {result.stderr.strip()}")
        status = json.loads(result.stdout)
        self._seen_worker_pids.update(w["pid"] for w in status.get("workers", []))
        return status

    def state(self) -> dict[str, Any]:
        return json.loads((self.run_dir / "state.json").read_text())

    def pid_file(self) -> int:
        return int((self.run_dir / "portcullis.pid").read_text().strip())

    def worker_pids(self) -> list[int]:
        return [w["pid"] for w in self.status()["workers"]]

    def wait_for_workers(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float,
                         what: str) -> list[dict[str, Any]]:
        """Polls ``status --json`` until ``predicate(workers)`` holds; returns the workers."""
        def probe() -> list[dict[str, Any]] | None:
            workers = self.status()["workers"]
            return workers if predicate(workers) else None
        return wait_until(probe, timeout, what, interval=0.1, on_timeout=self.diagnostics)

    # -- access log ------------------------------------------------------------------------

    def access_log(self) -> list[dict[str, Any]]:
        """Every access log line written so far, parsed (a torn last line is skipped)."""
        if not self.access_log_path.exists():
            return []
        entries = []
        for line in self.access_log_path.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return entries

    def nginx_log(self) -> list[dict[str, Any]]:
        """nginx's `portcullis_handoff` log lines so far, parsed (nginx writes a line when a
        request, a handed-off WebSocket connection or gRPC call included, ends)."""
        path = self.nginx_prefix / "logs" / "handoff.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def wait_for_log_entries(self, predicate: Callable[[dict[str, Any]], bool], count: int = 1,
                             timeout: float = 5.0) -> list[dict[str, Any]]:
        """Waits until at least ``count`` access log entries satisfy ``predicate``."""
        def probe() -> list[dict[str, Any]] | None:
            found = [e for e in self.access_log() if predicate(e)]
            return found if len(found) >= count else None
        return wait_until(probe, timeout, f"{count} matching access log line(s) in {self.access_log_path}",
                          interval=0.1)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class GatewayFactory:
    """Creates gateways (each in its own directory) and stops every one of them on ``close``."""

    def __init__(self, binary: Path, echo: EchoUpstream, dead_url: str, root: Path):
        self.binary = binary
        self.echo = echo
        self.dead_url = dead_url
        self.root = root
        self.gateways: list[Gateway] = []
        self._count = 0

    def base_config(self) -> dict[str, Any]:
        return walking_skeleton_config(self.echo.url, self.dead_url)

    def create(self, overrides: Mapping[str, Any] | None = None, *, config: Mapping[str, Any] | None = None,
               workers: int = 2, threads: int = 4, keepalive: int | None = None, start: bool = True) -> Gateway:
        """A gateway whose config is ``config`` (default: the walking-skeleton routes) with
        ``overrides`` deep-merged in; started unless ``start=False``."""
        workdir, name = self._new_workdir()
        merged = deep_merge(config if config is not None else self.base_config(), overrides or {})
        gateway = Gateway(self.binary, workdir, merged, workers=workers, threads=threads,
                          keepalive=keepalive, name=name)
        return self._register(gateway, start)

    def create_from_repo_config(self, relative_path: str = "config/portcullis.json",
                                overrides: Mapping[str, Any] | None = None, *, workers: int = 2,
                                threads: int = 4, keepalive: int | None = None, start: bool = True) -> Gateway:
        """A gateway running one of the repository's config files (e.g. the demo config).

        ``config/`` and ``plugins/`` are copied into the gateway's directory with the repository's
        layout, so the file's relative paths (JWKS files, ``../plugins``) resolve as they do in
        the repository; ``overrides`` are deep-merged (e.g. to point an upstream at the test's
        echo server).
        """
        workdir, name = self._new_workdir()
        for folder in ("config", "plugins"):
            if (REPO_ROOT / folder).is_dir():
                shutil.copytree(REPO_ROOT / folder, workdir / folder)
        source = json.loads((REPO_ROOT / relative_path).read_text())
        gateway = Gateway(self.binary, workdir, deep_merge(source, overrides or {}), workers=workers,
                          threads=threads, keepalive=keepalive, name=name, config_path=workdir / relative_path)
        return self._register(gateway, start)

    def _new_workdir(self) -> tuple[Path, str]:
        self._count += 1
        name = f"gw{self._count}"
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.root)), name

    def _register(self, gateway: Gateway, start: bool) -> Gateway:
        """Registered before starting, so that a gateway that fails to start is still stopped."""
        self.gateways.append(gateway)
        if start:
            gateway.start()
        return gateway

    def close(self, gateways: Iterable[Gateway] | None = None) -> None:
        """Stops the gateways; fails if a worker of one of them crashed meanwhile (a crash is
        a defect even when nginx's retry hid it from the test's requests)."""
        crashed = []
        for gateway in list(gateways if gateways is not None else self.gateways):
            gateway.stop()
            if gateway in self.gateways:
                self.gateways.remove(gateway)
            if "Program crashed" in _tail(gateway.master.stderr_path, 100_000):
                crashed.append(gateway.diagnostics(80))
        assert not crashed, "a gateway process crashed:\n" + "\n".join(crashed)


class BackgroundClients:
    """Client threads sending requests until the ``with`` block ends. Every success is counted
    by kind (``ok``), every failure recorded (``failures``) for the test to assert on.

    Subclasses define ``kind`` (what request ``n`` of thread ``index`` is) and ``send``, which
    sends it and returns None on success or what went wrong; an exception counts as a failure.
    """

    def __init__(self, threads: int, join_timeout: float = 20):
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok: Counter[str] = Counter()
        self.failures: list[str] = []
        self.join_timeout = join_timeout
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def kind(self, index: int, n: int) -> str:
        raise NotImplementedError

    def send(self, kind: str, index: int, n: int) -> str | None:
        raise NotImplementedError

    def __enter__(self) -> BackgroundClients:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=self.join_timeout)

    @property
    def succeeded(self) -> int:
        with self.lock:
            return sum(self.ok.values())

    def _run(self, index: int) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            kind = self.kind(index, n)
            try:
                failure = self.send(kind, index, n)
            except Exception as error:  # noqa: BLE001 - every failure is recorded and asserted
                failure = repr(error)
            with self.lock:
                if failure is None:
                    self.ok[kind] += 1
                else:
                    self.failures.append(f"{kind} → {failure}")

    def wait_for(self, count: int, timeout: float = 30) -> None:
        """Waits for ``count`` more successful requests."""
        target = self.succeeded + count
        wait_until(lambda: self.succeeded >= target, timeout, f"{count} more successful requests")

