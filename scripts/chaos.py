#!/usr/bin/env python3
"""make chaos: constant load through nginx and the pool while random faults are injected.

    scripts/chaos.py --seconds 180 [--clients 6] [--seed 1] [--json report.json]

Runs a private stack with the integration harness (Tests/Integration/harness.py): nginx with the
shipped snippet, `portcullis serve` (2 workers), the echo upstream, a faulty upstream this
script serves itself, redis-server, and the access log on a small tmpfs when mounting one is
permitted (else a plain directory, and the full-disk fault is skipped).

Load: client threads send a constant mix of requests (GET and POST with a body checked by
digest on /echo/, a Redis-limited route /limited/ with policy `local`, /faulty/ to the faulty
upstream). Faults, one at a time in random order, each for a few seconds:

    kill_worker       SIGKILL of a worker (the master replaces it)
    stop_worker       SIGSTOP of a worker for 3 s, then SIGCONT
    redis_kill        redis-server stopped, restarted after 4 s
    redis_pause       redis-server SIGSTOPped for 3 s
    upstream_kill     echo upstream stopped, restarted after 3 s on the same port
    upstream_slow     the faulty upstream answers after 2 s (route timeout 1 s)
    upstream_reset    the faulty upstream resets the connection mid-body
    reload_valid      a valid changed config, `portcullis reload`
    reload_invalid    a broken config, `portcullis reload` (must be refused), then restored
    disk_full         the access log's tmpfs filled for 4 s

Every failed request (status other than expected, or an exception) is attributed to the faults
whose window (start to end plus a grace period) covers it and that the failure kind is
documented for; the rest is "unexplained". A hot key kept above its Redis limit checks that no
aligned window admits more than the limit (twice the limit in a window touched by a Redis
fault: the documented `local` fallback). At the end: no worker wedged (status shows every
worker ready, and every worker answers), master and worker RSS at start and end, and the
report table. Exit status 1 when a failure is unexplained or a worker is wedged.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import requests

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "Tests" / "Integration"))
from harness import EchoUpstream, Gateway, RedisServer, free_port  # noqa: E402

GRACE_S = 3.0
# Upstream circuit breakers (docs/upstreams.md), tightened so their effect has a known bound:
# open for 2 s, at most 4 s after reopening.
BREAKER = {"consecutive_failures": 5, "open_ms": 2000, "max_open_ms": 4000}
# After an upstream fault its breaker may stay open up to max_open_ms, plus a probe.
UPSTREAM_GRACE_S = GRACE_S + BREAKER["max_open_ms"] / 1000 + 2
CLIENT_TIMEOUT_S = 15.0

# What each fault may cause, as (route, failure kind) pairs; "*" is any route. Kinds are the
# HTTP status or "timeout"/"error" (client-side exceptions).
EXPECTED: dict[str, set[tuple[str, str]]] = {
    # A request in flight on the killed worker's connection: nginx retries only idempotent
    # requests on a connection error and answers 502 otherwise.
    "kill_worker": {("*", "502")},
    # Requests already on the stopped worker wait until SIGCONT (3 s) or nginx's timeouts.
    "stop_worker": {("*", "timeout"), ("*", "502"), ("*", "504")},
    # Policy `local`: the limit falls back to the shared-memory table, nothing fails.
    "redis_kill": set(),
    "redis_pause": set(),
    # The upstream's breaker opens after 5 failures: 503 upstream-circuit-open until it closes.
    "upstream_kill": {("echo", "502"), ("limited", "502"), ("echo", "503 circuit-open"), ("limited", "503 circuit-open")},
    "upstream_slow": {("faulty", "504"), ("faulty", "503 circuit-open")},
    "upstream_reset": {("faulty", "502"), ("faulty", "error"), ("faulty", "503 circuit-open")},
    "reload_valid": set(),
    "reload_invalid": set(),
    "disk_full": set(),
}


class FaultyUpstream:
    """A tiny HTTP/1.1 upstream whose mode the chaos loop switches: ok, slow, reset."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        body = b"x" * 4096
        try:
            conn.settimeout(30)
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                while len(buf) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                buf = buf[length:]
                mode = self.mode
                if mode == "slow":
                    time.sleep(2.0)
                if mode == "reset":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4096\r\n\r\n" + body[:100])
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    conn.close()
                    return
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4096\r\n\r\n" + body)
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass


class Load:
    """Client threads sending a constant request mix; every outcome is recorded with its time."""

    ROUTES = ("echo_get", "echo_post", "limited", "faulty")

    def __init__(self, gateway: Gateway, clients: int, seed: int) -> None:
        self.gateway = gateway
        self.clients = clients
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.outcomes: list[tuple[float, str, str]] = []  # (time, route, kind) kind "ok" or failure
        self.rng = random.Random(seed)
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]
        # One hot key kept above its limit: (wall start, wall end, status) of each answer.
        self.hot: list[tuple[float, float, int]] = []
        self.threads.append(threading.Thread(target=self._hot, daemon=True))

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=CLIENT_TIMEOUT_S + 5)

    def _run(self, index: int) -> None:
        session = requests.Session()
        rng = random.Random(index)
        n = 0
        while not self.stop.is_set():
            kind = self.ROUTES[n % len(self.ROUTES)] if index % 2 == 0 else rng.choice(self.ROUTES)
            n += 1
            started = time.monotonic()
            route, outcome = self._one(session, kind, n)
            with self.lock:
                self.outcomes.append((started, route, outcome))

    def _hot(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            start = time.time()
            try:
                status = session.get(self.gateway.url("/limited/hot"), headers={"X-Client": "hot"}, timeout=CLIENT_TIMEOUT_S).status_code
            except requests.RequestException:
                continue
            with self.lock:
                self.hot.append((start, time.time(), status))

    @staticmethod
    def _failure(r: requests.Response) -> str:
        """The status, with the problem type for a 503 (the gateway has several)."""
        if r.status_code == 503 and r.headers.get("Content-Type", "").startswith("application/problem+json"):
            kind = str(r.json().get("type", "")).rsplit("/", 1)[-1]
            return "503 " + kind.removeprefix("upstream-")
        return str(r.status_code)

    def _one(self, session: requests.Session, kind: str, n: int) -> tuple[str, str]:
        url = self.gateway.url
        try:
            if kind == "echo_get":
                r = session.get(url(f"/echo/chaos/{n}"), timeout=CLIENT_TIMEOUT_S)
                return "echo", "ok" if r.status_code == 200 and r.json()["path"] == f"/echo/chaos/{n}" else self._failure(r)
            if kind == "echo_post":
                body = os.urandom(2048)
                r = session.post(url("/echo/post"), data=body, headers={"Content-Type": "application/octet-stream"},
                                 timeout=CLIENT_TIMEOUT_S)
                ok = r.status_code == 200 and r.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
                return "echo", "ok" if ok else self._failure(r)
            if kind == "limited":
                r = session.get(url("/limited/x"), headers={"X-Client": str(n % 50)}, timeout=CLIENT_TIMEOUT_S)
                return "limited", "ok" if r.status_code in (200, 429) else self._failure(r)
            r = session.get(url("/faulty/x"), timeout=CLIENT_TIMEOUT_S)
            return "faulty", "ok" if r.status_code == 200 and len(r.content) == 4096 else self._failure(r)
        except requests.Timeout:
            return kind.split("_")[0], "timeout"
        except requests.RequestException:
            return kind.split("_")[0], "error"


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def try_tmpfs(directory: Path) -> bool:
    directory.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(directory)],
                            capture_output=True, text=True)
    return result.returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--json", type=Path, help="write the report as JSON too")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    binary = Path(os.environ.get("PORTCULLIS_BIN", REPO_ROOT / ".build/debug/portcullis")).resolve()

    root = Path(tempfile.mkdtemp(prefix="portcullis-chaos-", dir="/tmp"))
    logdir = root / "logfs"
    tmpfs = try_tmpfs(logdir)
    echo = EchoUpstream(root).start()
    redis = RedisServer(root).start()
    faulty = FaultyUpstream()
    config: dict[str, Any] = {
        "upstreams": {
            "echo": {"targets": [echo.url], "connect_timeout_ms": 500, "timeout_ms": 5000, "circuit_breaker": BREAKER},
            "faulty": {"targets": [faulty.url], "connect_timeout_ms": 500, "timeout_ms": 1000, "circuit_breaker": BREAKER},
        },
        "rate_limit": {"redis": {"host": "127.0.0.1", "port": redis.port, "timeout_ms": 50}},
        "routes": [
            {"name": "echo", "match": {"prefix": "/echo/"}, "upstream": "echo"},
            {"name": "limited", "match": {"prefix": "/limited/"}, "upstream": "echo",
             "limits": [{"name": "per-client", "algorithm": "fixed_window", "limit": 20, "window_seconds": 1,
                         "key": ["header:X-Client"], "store": "redis", "on_store_failure": "local"}]},
            {"name": "faulty", "match": {"prefix": "/faulty/"}, "upstream": "faulty"},
        ],
    }
    gateway = Gateway(binary, root / "gw", config, workers=2, threads=2, name="chaos")
    gateway.access_log_path = logdir / "access.log"
    gateway.set_config(config)
    gateway.start()
    good_config = gateway.config_path.read_text()

    faults: list[tuple[str, float, float, str]] = []  # (name, start, end, note)
    wall_offset = time.time() - time.monotonic()
    rss_start = {"master": rss_kb(gateway.master.pid), "workers": sum(rss_kb(p) for p in gateway.worker_pids())}
    load = Load(gateway, args.clients, args.seed)
    load.start()
    began = time.monotonic()
    names = list(EXPECTED)
    if not tmpfs:
        names.remove("disk_full")
    order: list[str] = []
    print(f"chaos: {args.seconds:.0f} s, {args.clients} clients, seed {args.seed}, tmpfs {'yes' if tmpfs else 'no'}", flush=True)
    try:
        time.sleep(3)
        while time.monotonic() - began < args.seconds - 8:
            if not order:
                order = names[:]
                rng.shuffle(order)
            name = order.pop()
            start = time.monotonic()
            note = inject(name, gateway, echo, redis, faulty, good_config, logdir, rng)
            end = time.monotonic()
            faults.append((name, start, end, note))
            print(f"  {start - began:7.1f} s  {name:15s} {end - start:4.1f} s  {note}", flush=True)
            time.sleep(rng.uniform(2, 4))
    finally:
        faulty.mode = "ok"
        time.sleep(5)
        load.join()

    ended = time.monotonic()
    wedged = wedge_check(gateway)
    rss_end = {"master": rss_kb(gateway.master.pid), "workers": sum(rss_kb(p) for p in gateway.worker_pids())}
    report = classify(load.outcomes, faults)
    redis_failures = logged_redis_failures(gateway.master.stderr_path)
    report["counters"] = counter_check(load.hot, faults, wall_offset, limit=20, logged_failures=redis_failures)
    report.update({
        "seconds": round(ended - began, 1), "clients": args.clients, "seed": args.seed, "tmpfs": tmpfs,
        "faults": Counter(f[0] for f in faults), "wedged": wedged,
        "rss_kb_start": rss_start, "rss_kb_end": rss_end,
        })
    gateway.stop()
    redis.stop()
    echo.stop()
    if tmpfs:
        subprocess.run(["umount", str(logdir)], check=False)
    shutil.rmtree(root, ignore_errors=True)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=list))
    return 0 if not report["unexplained"] and not wedged and not report["counters"]["over"] else 1


def inject(name: str, gateway: Gateway, echo: EchoUpstream, redis: RedisServer, faulty: FaultyUpstream,
           good_config: str, logdir: Path, rng: random.Random) -> str:
    if name == "kill_worker":
        pid = rng.choice(gateway.worker_pids())
        os.kill(pid, signal.SIGKILL)
        time.sleep(1)
        return f"pid {pid}"
    if name == "stop_worker":
        pid = rng.choice(gateway.worker_pids())
        os.kill(pid, signal.SIGSTOP)
        time.sleep(3)
        os.kill(pid, signal.SIGCONT)
        return f"pid {pid}"
    if name == "redis_kill":
        redis.process.stop(signal.SIGKILL)
        time.sleep(4)
        redis.restart()
        return "SIGKILL, restarted"
    if name == "redis_pause":
        redis.process.send(signal.SIGSTOP)
        time.sleep(3)
        redis.process.send(signal.SIGCONT)
        return "SIGSTOP 3 s"
    if name == "upstream_kill":
        echo.process.stop(signal.SIGKILL)
        time.sleep(3)
        echo.process = type(echo.process)(echo.process.name, echo.process.argv, echo.process.log_dir)
        echo.start()
        return "SIGKILL, restarted"
    if name in ("upstream_slow", "upstream_reset"):
        faulty.mode = name.split("_")[1]
        time.sleep(4)
        faulty.mode = "ok"
        return "4 s"
    if name == "reload_valid":
        changed = json.loads(good_config)
        changed["comment"] = f"chaos reload {time.time()}"
        gateway.write_raw_config(json.dumps(changed, indent=2))
        result = gateway.cli("reload")
        gateway.write_raw_config(good_config)
        return f"exit {result.returncode}: {result.stdout.strip()[:60]}"
    if name == "reload_invalid":
        gateway.write_raw_config(good_config.replace('"upstream": "echo"', '"upstream": "nope"', 1))
        result = gateway.cli("reload")
        gateway.write_raw_config(good_config)
        refused = result.returncode != 0
        return f"{'refused' if refused else 'ACCEPTED'} (exit {result.returncode})"
    if name == "disk_full":
        filler = logdir / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k", "count=1000"], capture_output=True)
        time.sleep(4)
        filler.unlink(missing_ok=True)
        return "tmpfs full 4 s"
    raise ValueError(name)


def classify(outcomes: list[tuple[float, str, str]], faults: list[tuple[str, float, float, str]]) -> dict[str, Any]:
    sent = len(outcomes)
    failed = [(t, route, kind) for t, route, kind in outcomes if kind != "ok"]
    by_cause: dict[str, Counter[str]] = defaultdict(Counter)
    unexplained: list[tuple[float, str, str]] = []
    for t, route, kind in failed:
        active = [f for f in faults if f[1] - 0.5 <= t <= f[2] + (UPSTREAM_GRACE_S if f[0].startswith("upstream") else GRACE_S)]
        cause = next((f[0] for f in active if ("*", kind) in EXPECTED[f[0]] or (route, kind) in EXPECTED[f[0]]), None)
        if cause is None:
            unexplained.append((t, route, kind))
            by_cause["unexplained"][f"{route} {kind}"] += 1
        else:
            by_cause[cause][f"{route} {kind}"] += 1
    return {"sent": sent, "ok": sent - len(failed), "failed": len(failed),
            "by_cause": {k: dict(v) for k, v in by_cause.items()}, "unexplained": unexplained}


def logged_redis_failures(stderr: Path) -> list[float]:
    """Wall times of the workers' `rate limit: redis unavailable` events (a Redis call that
    failed or took longer than timeout_ms, injected or not)."""
    times = []
    for line in stderr.read_text(errors="replace").splitlines():
        if "redis unavailable" not in line:
            continue
        try:
            event = json.loads(line)
            stamp = datetime.datetime.strptime(event["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
            times.append(stamp.timestamp())
        except (ValueError, KeyError):
            continue
    return times


def counter_check(hot: list[tuple[float, float, int]], faults: list[tuple[str, float, float, str]],
                  wall_offset: float, limit: int, logged_failures: list[float]) -> dict[str, Any]:
    """The hot key's admitted requests per aligned 1 s window: at most `limit`, or `2 x limit`
    in a window touched by a Redis failure, injected or logged by a worker (documented: the
    `local` fallback counts separately from Redis, and a restarted Redis without persistence
    starts from zero). Answers that straddle a window boundary are not attributed."""
    redis_windows = set()
    spans = [(start + wall_offset, end + wall_offset) for name, start, end, _ in faults if name.startswith("redis")]
    spans += [(t, t) for t in logged_failures]
    for start, end in spans:
        # Plus redis.retry_ms (1 s) before the loops try Redis again.
        for w in range(int(start) - 1, int(end) + 3):
            redis_windows.add(w)
    admitted: Counter[int] = Counter()
    ambiguous = 0
    for start, end, status in hot:
        if status != 200:
            continue
        if int(start) != int(end):
            ambiguous += 1
            continue
        admitted[int(start)] += 1
    over = {w: n for w, n in admitted.items() if n > (2 * limit if w in redis_windows else limit)}
    limited = sum(1 for _, _, status in hot if status == 429)
    return {"windows": len(admitted), "logged_redis_failures": len(logged_failures), "max_admitted": max(admitted.values(), default=0),
            "max_admitted_outside_redis_faults": max((n for w, n in admitted.items() if w not in redis_windows), default=0),
            "answered_429": limited, "straddling": ambiguous, "over": over}


def wedge_check(gateway: Gateway) -> list[str]:
    """Every worker ready in status and the pool answering a burst on fresh connections."""
    problems = []
    deadline = time.monotonic() + 20
    while True:
        workers = gateway.status().get("workers", [])
        if workers and all(w.get("ready") for w in workers) and len(workers) == gateway.workers:
            break
        if time.monotonic() > deadline:
            problems.append(f"workers not all ready: {workers}")
            break
        time.sleep(0.5)
    for i in range(40):
        try:
            r = requests.get(gateway.url(f"/echo/after/{i}"), timeout=5, headers={"Connection": "close"})
            if r.status_code != 200:
                problems.append(f"probe {i}: {r.status_code}")
        except requests.RequestException as error:
            problems.append(f"probe {i}: {error.__class__.__name__}")
    return problems


def print_report(report: dict[str, Any]) -> None:
    print(f"\nrequests sent {report['sent']}, ok {report['ok']}, failed {report['failed']} in {report['seconds']} s")
    print("\n| cause (fault active) | failures (route kind: count) |\n|---|---|")
    for cause, kinds in sorted(report["by_cause"].items()):
        print(f"| {cause} | {', '.join(f'{k}: {n}' for k, n in sorted(kinds.items()))} |")
    print(f"\nfaults injected: {dict(report['faults'])}")
    print(f"wedged workers: {report['wedged'] or 'none'}")
    c = report["counters"]
    print(f"hot key (limit 20 per 1 s window): {c['windows']} windows, at most {c['max_admitted_outside_redis_faults']} admitted "
          f"outside Redis faults, {c['max_admitted']} in any window, {c['answered_429']} answered 429, "
          f"windows over the documented bound: {c['over'] or 'none'} "
          f"(Redis failures the workers logged: {c['logged_redis_failures']})")
    print(f"RSS kB master {report['rss_kb_start']['master']} -> {report['rss_kb_end']['master']}, "
          f"workers (sum) {report['rss_kb_start']['workers']} -> {report['rss_kb_end']['workers']}")
    if report["unexplained"]:
        print(f"UNEXPLAINED failures: {report['unexplained'][:20]}")


if __name__ == "__main__":
    sys.exit(main())
