"""Issue 9, item 7: Redis as production runs it, through real nginx, real gateway pools and real
redis-server / sentinel processes: AUTH with an ACL user (password from a file or the
environment), a unix socket, TLS refused with the reason, and Sentinel (discovery, rotation,
following a demoted master and a real failover under load).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socketserver
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from harness import Gateway, ManagedProcess, RedisServer, assert_problem, free_port, wait_until
from test_rate_limit import (CLIENT_HEADER, SLOW_REQUEST_SECONDS, fresh_key, limit, limited_route,
                             wait_for_redis_decisions, window_with_headroom)

PASSWORD = "Gw-" + uuid.uuid4().hex  # unique, so finding it anywhere means it leaked
USER = "gateway"


ADMIN = ("admin", "admin-" + uuid.uuid4().hex)  # what the test's own commands authenticate as


def acl_args(namespace: str) -> list[str]:
    """redis-server directives: the default user off, the gateway's ACL user with ``PASSWORD``
    and only what docs/rate-limiting.md says it needs, and an admin user for the test."""
    return ["--user", "default", "off",
            "--user", USER, "on", f">{PASSWORD}", f"~{namespace}:rl:*", "+eval", "+evalsha", "+script|load",
            "+get", "+set", "+hmget", "+hset", "+pexpire",
            "--user", ADMIN[0], "on", f">{ADMIN[1]}", "~*", "&*", "+@all"]


def redis_cli(port: int, *args: str, auth: tuple[str, str] | None = None) -> list[str]:
    """One command through redis-cli (raw output, one word per element)."""
    login = ["--user", auth[0], "--pass", auth[1], "--no-auth-warning"] if auth else []
    result = subprocess.run(["redis-cli", "-p", str(port), *login, "--raw", *args], capture_output=True, text=True, timeout=5)
    return result.stdout.split()


def redis_int(redis: RedisServer, *command: str) -> int:
    reply = redis.command(*command)
    assert reply[:1] in (b":", b"*"), reply
    return int(reply[1:])


def decided_by(gw: Gateway, request_ids: list[str]) -> list[str]:
    """The access log's `limits` field of each request, in order."""
    entries = {e["request_id"]: e for e in gw.wait_for_log_entries(lambda e: e.get("request_id") in request_ids,
                                                                   count=len(request_ids))}
    return [entries[rid].get("limits", "") for rid in request_ids]


def send(gw: Gateway, path: str, key: str, count: int) -> tuple[list[int], list[str]]:
    """``count`` requests on ``key``; their statuses and request ids."""
    ids = [f"{key}-{i}" for i in range(count)]
    statuses = [gw.get(path, headers={CLIENT_HEADER: key, "X-Request-ID": rid}, timeout=10).status_code for rid in ids]
    return statuses, ids


def assert_no_secret(gw: Gateway, secret: str) -> None:
    """The password is in none of the gateway's logs, CLI output or worker command lines."""
    texts = {
        "master stderr": gw.master.stderr_path.read_text(),
        "master stdout": gw.master.stdout_path.read_text(),
        "access log": gw.access_log_path.read_text() if gw.access_log_path.exists() else "",
    }
    for args in (("status",), ("status", "--json"), ("check",), ("check", "--print-effective")):
        result = gw.cli(*args)
        texts[" ".join(args)] = result.stdout + result.stderr
    for pid in gw.worker_pids():
        texts[f"worker {pid} cmdline"] = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    for where, text in texts.items():
        assert secret not in text, f"the Redis password appears in {where}"


# -- 1. AUTH with an ACL user ---------------------------------------------------------------------


def test_acl_user_with_password_file(make_gateway: Callable[..., Gateway], make_redis: Callable[..., RedisServer]) -> None:
    """Redis with the default user off and an ACL user: the gateway authenticates with the
    password from a file, its counters land in Redis, and the password shows nowhere."""
    redis = make_redis(extra_args=acl_args("pc-acl"), auth=ADMIN)
    window = window_with_headroom(20)
    gw = make_gateway({"rate_limit": {"redis": {"host": "127.0.0.1", "port": redis.port, "namespace": "pc-acl",
                                                "username": USER, "password_file": "redis.pass"}},
                       "routes": [limited_route("acl", limit("acl", "fixed_window", 3, window, store="redis",
                                                             on_store_failure="closed"))]},
                      workers=2, threads=2, start=False)
    # Relative to the config file; the trailing line break is not part of the password.
    (gw.config_path.parent / "redis.pass").write_text(PASSWORD + "\n")
    os.chmod(gw.config_path.parent / "redis.pass", 0o600)
    gw.start()

    statuses, ids = send(gw, "/acl/x", fresh_key("acl"), 4)
    assert statuses == [200, 200, 200, 429], statuses
    assert decided_by(gw, ids) == ["acl:allowed:2", "acl:allowed:1", "acl:allowed:0", "acl:denied:0"]
    assert redis_int(redis, "KEYS", "pc-acl:rl:*") == 1, "the counter is in the ACL-protected Redis"
    assert "redis unavailable" not in gw.master.stderr_path.read_text()
    assert_no_secret(gw, PASSWORD)


def test_wrong_password_is_a_store_failure(make_gateway: Callable[..., Gateway], make_redis: Callable[..., RedisServer]) -> None:
    """A wrong password (from the environment): `open` admits uncounted, `closed` answers 503
    problem+json; the log says authentication failed, once per reconnect, without the password."""
    redis = make_redis(extra_args=acl_args("pc-wrong"), auth=ADMIN)
    wrong = "Wrong-" + uuid.uuid4().hex
    window = window_with_headroom(20)
    retry_ms = 2000
    gw = make_gateway({"rate_limit": {"redis": {"host": "127.0.0.1", "port": redis.port, "namespace": "pc-wrong",
                                                "username": USER, "password_env": "PC_TEST_REDIS_PASSWORD",
                                                "timeout_ms": 500, "retry_ms": retry_ms}},
                       "routes": [limited_route("open", limit("open", "fixed_window", 1, window, store="redis", on_store_failure="open")),
                                  limited_route("closed", limit("closed", "fixed_window", 1, window, store="redis",
                                                                on_store_failure="closed"))]},
                      workers=1, threads=1, start=False)
    gw.master_env = {**os.environ, "PC_TEST_REDIS_PASSWORD": wrong}
    gw.start()

    def auth_failures() -> int:
        return len(re.findall(r"redis unavailable \(redis: authentication failed: WRONGPASS", gw.master.stderr_path.read_text()))

    # One loop, one connection attempt: its AUTH fails, and for retry_ms nothing calls Redis.
    key = fresh_key("wrong")
    for _ in range(3):
        response = gw.get("/open/x", headers={CLIENT_HEADER: key}, timeout=10)
        assert response.status_code == 200, response.text[:300]
        assert "RateLimit-Remaining" not in response.headers, "open admits without counting"
    response = gw.get("/closed/x", headers={CLIENT_HEADER: key, "X-Request-ID": "closed-wrong-1"}, timeout=10)
    body = assert_problem(response, 503, "rate-limit-store-unavailable")
    assert body["request_id"] == "closed-wrong-1"
    wait_until(lambda: auth_failures() == 1 or None, 5, "the authentication failure to be logged")
    time.sleep(retry_ms / 1000 + 0.3)
    # The retry reconnects, AUTH fails again, and that reconnect is logged once more.
    assert_problem(gw.get("/closed/x", headers={CLIENT_HEADER: key}, timeout=10), 503, "rate-limit-store-unavailable")
    wait_until(lambda: auth_failures() == 2 or None, 5, "the second reconnect's failure to be logged")
    assert redis_int(redis, "DBSIZE") == 0, "nothing was counted by an unauthenticated connection"
    assert_no_secret(gw, wrong)


def test_reload_reads_the_password_file_again(make_gateway: Callable[..., Gateway],
                                              make_redis: Callable[..., RedisServer]) -> None:
    """A wrong password fixed in the file takes effect with `portcullis reload` (new connections
    authenticate with it); a reload whose password file is gone is refused with the reason and
    the running generation keeps counting in Redis."""
    redis = make_redis(extra_args=acl_args("pc-reload"), auth=ADMIN)
    window = window_with_headroom(30)
    gw = make_gateway({"rate_limit": {"redis": {"host": "127.0.0.1", "port": redis.port, "namespace": "pc-reload",
                                                "username": USER, "password_file": "redis.pass", "retry_ms": 60000}},
                       "routes": [limited_route("rl", limit("rl", "fixed_window", 3, window, store="redis",
                                                            on_store_failure="closed"))]},
                      workers=2, threads=1, start=False)
    password_file = gw.config_path.parent / "redis.pass"
    password_file.write_text("not-" + PASSWORD)
    gw.start()
    assert_problem(gw.get("/rl/x", headers={CLIENT_HEADER: fresh_key("before")}, timeout=10), 503,
                   "rate-limit-store-unavailable")

    password_file.write_text(PASSWORD + "\n")
    generation = gw.status()["generation"]
    result = gw.cli("reload")
    assert result.returncode == 0, result.stdout + result.stderr
    gw.wait_for_workers(lambda ws: len(ws) == gw.workers and all(w["generation"] > generation for w in ws),
                        timeout=15, what="the new generation of workers")
    statuses, ids = send(gw, "/rl/x", fresh_key("after"), 4)
    assert statuses == [200, 200, 200, 429], statuses
    assert all(not d.endswith(":closed") for d in decided_by(gw, ids))

    password_file.unlink()
    result = gw.cli("reload")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"/rate_limit/redis/password_file: cannot read {password_file}" in result.stderr, result.stderr
    statuses, _ = send(gw, "/rl/x", fresh_key("kept"), 4)
    assert statuses == [200, 200, 200, 429], "the running generation keeps its connections and password"
    assert redis_int(redis, "KEYS", "pc-reload:rl:*") == 2
    assert_no_secret(gw, PASSWORD)


# -- 2. unix socket --------------------------------------------------------------------------------


def test_unix_socket(make_gateway: Callable[..., Gateway], make_redis: Callable[..., RedisServer], test_root: Path) -> None:
    """Redis listening only on a unix socket (no TCP port): limits are counted there."""
    path = test_root / f"redis-{uuid.uuid4().hex[:8]}.sock"
    redis = make_redis(unix_socket=path)
    window = window_with_headroom(20)
    gw = make_gateway({"rate_limit": {"redis": {"socket": str(path), "namespace": "pc-unix"}},
                       "routes": [limited_route("unix", limit("unix", "token_bucket", 3, window, store="redis",
                                                              on_store_failure="closed"))]},
                      workers=2, threads=2)
    statuses, ids = send(gw, "/unix/x", fresh_key("unix"), 4)
    assert statuses == [200, 200, 200, 429], statuses
    assert all("@local" not in d and not d.endswith(":closed") for d in decided_by(gw, ids))
    assert redis_int(redis, "KEYS", "pc-unix:rl:*") == 1


# -- 3. TLS and bad Redis settings: refused with the reason ----------------------------------------


def test_tls_and_bad_settings_are_refused_with_the_reason(make_gateway: Callable[..., Gateway]) -> None:
    secret = "Leak-" + uuid.uuid4().hex
    gw = make_gateway({"rate_limit": {"redis": {"tls": True, "socket": "relative.sock", "password_file": "two.pass"}}},
                      start=False)
    (gw.config_path.parent / "two.pass").write_text(f"{secret}\nsecond\n")
    result = gw.cli("check")
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "/rate_limit/redis/tls: TLS to Redis is not supported (Debian's hiredis 0.14 has no TLS)" in out, out
    assert "/rate_limit/redis/socket: must be an absolute path" in out, out
    assert "/rate_limit/redis/password_file: " in out and "holds more than one line" in out, out
    assert secret not in out


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def test_tls_redis_through_stunnel(make_gateway: Callable[..., Gateway], make_redis: Callable[..., RedisServer],
                                   test_root: Path) -> None:
    """The documented way to a Redis that only speaks TLS: stunnel in client mode (CA checked,
    client certificate presented) with its plain end on a unix socket, the store on that socket,
    AUTH inside the tunnel. The gateway's connection reaches Redis on its TLS port."""
    pki = test_root / f"tls-{uuid.uuid4().hex[:8]}"
    pki.mkdir()
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=portcullis-test-ca", cwd=pki)
    (pki / "ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, cn in (("server", "localhost"), ("client", "gateway")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=pki)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", *(["-extfile", "ext"] if name == "server" else []), cwd=pki)
    tls_port = free_port()
    # The plain port stays for the test's own commands; the gateway only reaches the TLS one.
    redis = make_redis(extra_args=[*acl_args("pc-tls"), "--tls-port", str(tls_port), "--tls-cert-file", str(pki / "server.pem"),
                                   "--tls-key-file", str(pki / "server.key"), "--tls-ca-cert-file", str(pki / "ca.pem"),
                                   "--tls-auth-clients", "yes"], auth=ADMIN)
    plain_end = pki / "redis.sock"
    (pki / "stunnel.conf").write_text(f"""foreground = yes
pid =
[redis]
client = yes
accept = {plain_end}
connect = 127.0.0.1:{tls_port}
verifyChain = yes
CAfile = {pki / "ca.pem"}
checkHost = localhost
cert = {pki / "client.pem"}
key = {pki / "client.key"}
""")
    tunnel = ManagedProcess("stunnel", ["stunnel", str(pki / "stunnel.conf")], pki).start()
    try:
        wait_until(lambda: plain_end.exists() or None, 10, "stunnel to listen", on_timeout=tunnel.output_tail)
        window = window_with_headroom(20)
        gw = make_gateway({"rate_limit": {"redis": {"socket": str(plain_end), "namespace": "pc-tls", "timeout_ms": 1000,
                                                    "username": USER, "password_file": "redis.pass"}},
                           "routes": [limited_route("tls", limit("tls", "fixed_window", 3, window, store="redis",
                                                                 on_store_failure="closed"))]},
                          workers=1, threads=2, start=False)
        (gw.config_path.parent / "redis.pass").write_text(PASSWORD)
        gw.start()
        statuses, ids = send(gw, "/tls/x", fresh_key("tls"), 4)
        assert statuses == [200, 200, 200, 429], statuses
        assert all(not d.endswith(":closed") for d in decided_by(gw, ids)), decided_by(gw, ids)
        assert redis_int(redis, "KEYS", "pc-tls:rl:*") == 1
        clients = subprocess.run(["redis-cli", "-p", str(redis.port), "--user", ADMIN[0], "--pass", ADMIN[1], "--no-auth-warning",
                                  "CLIENT", "LIST"], capture_output=True, text=True, timeout=5).stdout
        assert re.search(rf"laddr=127\.0\.0\.1:{tls_port} .*user={USER}\b", clients), clients
        assert "Certificate accepted" in tunnel.stderr_path.read_text() + tunnel.stdout_path.read_text()
    finally:
        tunnel.stop()


# -- 4. Sentinel -----------------------------------------------------------------------------------


class FakeSentinel:
    """Answers ``SENTINEL get-master-addr-by-name`` with whatever the test sets (so a test can
    name a master that is not one), counting the questions."""

    def __init__(self, master_name: str) -> None:
        self.master_name = master_name
        self.master: tuple[str, int] | None = None
        self.questions = 0
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                while True:
                    header = self.rfile.readline()
                    if not header.startswith(b"*"):
                        return
                    words = []
                    for _ in range(int(header[1:])):
                        length = int(self.rfile.readline()[1:])
                        words.append(self.rfile.read(length + 2)[:-2].decode())
                    self.wfile.write(outer.answer(words))

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, words: list[str]) -> bytes:
        if [w.lower() for w in words[:2]] != ["sentinel", "get-master-addr-by-name"]:
            return b"-ERR unknown command\r\n"
        self.questions += 1
        if words[2] != self.master_name or self.master is None:
            return b"*-1\r\n"
        host, port = self.master[0], str(self.master[1])
        return f"*2\r\n${len(host)}\r\n{host}\r\n${len(port)}\r\n{port}\r\n".encode()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_sentinel_rotation_and_a_demoted_master(make_gateway: Callable[..., Gateway],
                                                make_redis: Callable[..., RedisServer]) -> None:
    """The first sentinel is down: the next one is asked. Its master is then demoted to a replica
    while the gateway's connections stay open (`REPLICAOF`, no client killed): the `READONLY`
    answer gives the connection up, the failure policy decides meanwhile, and the store follows
    the master the sentinel names now."""
    first, second = make_redis(), make_redis()
    fake = FakeSentinel("pcmaster")
    try:
        fake.master = ("127.0.0.1", first.port)
        window = window_with_headroom(30)
        gw = make_gateway({"rate_limit": {"redis": {"sentinels": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{fake.port}"],
                                                    "master_name": "pcmaster", "namespace": "pc-ro",
                                                    "timeout_ms": 500, "retry_ms": 300}},
                           "routes": [limited_route("ro", limit("ro", "fixed_window", 3, window, store="redis",
                                                                on_store_failure="local"))]},
                          workers=1, threads=2)
        workers_before = sorted(gw.worker_pids())
        statuses, ids = send(gw, "/ro/x", fresh_key("first"), 4)
        assert statuses == [200, 200, 200, 429], statuses
        assert all("@local" not in d for d in decided_by(gw, ids)), decided_by(gw, ids)
        assert redis_int(first, "DBSIZE") == 1 and redis_int(second, "DBSIZE") == 0
        assert fake.questions >= 1

        # The failover, done by hand: `second` becomes the master, `first` its replica.
        fake.master = ("127.0.0.1", second.port)
        assert first.command("REPLICAOF", "127.0.0.1", str(second.port)) == b"+OK"
        wait_until(lambda: b"master_link_status:up" in subprocess.run(
            ["redis-cli", "-p", str(first.port), "INFO", "replication"], capture_output=True, timeout=5).stdout or None,
            10, "the demoted master to replicate")
        statuses = wait_for_redis_decisions(gw, "/ro/y", 4, send=lambda key, rid: gw.get(
            "/ro/y", headers={CLIENT_HEADER: key, "X-Request-ID": rid}, timeout=10))
        assert statuses == [200, 200, 200, 429], statuses
        assert redis_int(second, "DBSIZE") >= 1, "counted on the master the sentinel names now"
        stderr = gw.master.stderr_path.read_text()
        assert "READONLY" in stderr, stderr[-2000:]
        assert sorted(gw.worker_pids()) == workers_before
    finally:
        fake.close()


def test_sentinel_given_by_host_name(make_gateway: Callable[..., Gateway], make_redis: Callable[..., RedisServer]) -> None:
    """A sentinel written as `localhost:port` is resolved when the configuration is loaded and
    asked like an address; a name that does not resolve refuses the reload, and the running
    configuration keeps counting."""
    master = make_redis()
    fake = FakeSentinel("pcmaster")
    try:
        fake.master = ("127.0.0.1", master.port)
        gw = make_gateway({"rate_limit": {"redis": {"sentinels": [f"localhost:{fake.port}"], "master_name": "pcmaster",
                                                    "namespace": "pc-name", "timeout_ms": 500}},
                           "routes": [limited_route("nm", limit("nm", "fixed_window", 3, 60, store="redis",
                                                                on_store_failure="closed"))]},
                          workers=1, threads=1)
        statuses, ids = send(gw, "/nm/x", fresh_key("named"), 4)
        assert statuses == [200, 200, 200, 429], statuses
        assert all("@local" not in d for d in decided_by(gw, ids)), decided_by(gw, ids)
        assert fake.questions >= 1 and redis_int(master, "DBSIZE") == 1

        config = json.loads(gw.config_path.read_text())
        config["rate_limit"]["redis"]["sentinels"] = [f"localhost:{fake.port}", "no-such-sentinel.invalid:26379"]
        gw.set_config(config)
        refused = gw.cli("reload")
        assert refused.returncode == 1, refused.stdout
        assert '/rate_limit/redis/sentinels/1: cannot resolve "no-such-sentinel.invalid": ' in refused.stderr, refused.stderr
        statuses, _ = send(gw, "/nm/y", fresh_key("after"), 4)
        assert statuses == [200, 200, 200, 429], statuses
    finally:
        fake.close()


def test_sentinel_without_the_master_fails_by_policy(make_gateway: Callable[..., Gateway]) -> None:
    """No sentinel knows the master: each request's failure policy answers, and the log names
    every sentinel asked with its reason."""
    fake = FakeSentinel("other")
    try:
        dead = free_port()
        gw = make_gateway({"rate_limit": {"redis": {"sentinels": [f"127.0.0.1:{dead}", f"127.0.0.1:{fake.port}"],
                                                    "master_name": "pcmaster", "timeout_ms": 500, "retry_ms": 5000}},
                           "routes": [limited_route("nm", limit("nm", "fixed_window", 3, 60, store="redis",
                                                                on_store_failure="closed"))]},
                          workers=1, threads=1)
        response = gw.get("/nm/x", headers={CLIENT_HEADER: "k", "X-Request-ID": "no-master-1"}, timeout=10)
        assert assert_problem(response, 503, "rate-limit-store-unavailable")["request_id"] == "no-master-1"
        line = wait_until(lambda: next((l for l in gw.master.stderr_path.read_text().splitlines()
                                        if "no sentinel named the master" in l), None), 5, "the discovery failure to be logged")
        assert "pcmaster" in line, line
        assert f"127.0.0.1:{dead}: " in line, line
        assert f'127.0.0.1:{fake.port}: does not know the master' in line, line
    finally:
        fake.close()


class Sentinel:
    """A real ``redis-server --sentinel`` watching ``master`` as ``mymaster`` (quorum 1), its
    clients authenticated with ``requirepass``."""

    def __init__(self, workdir: Path, master: RedisServer, requirepass: str) -> None:
        self.port = free_port()
        self.auth = ("default", requirepass)
        conf = workdir / "sentinel.conf"
        conf.write_text(f"port {self.port}\nbind 127.0.0.1\ndir {workdir}\nrequirepass {requirepass}\n"
                        f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
                        "sentinel down-after-milliseconds mymaster 1000\n"
                        "sentinel failover-timeout mymaster 10000\n")
        self.process = ManagedProcess("sentinel", ["redis-server", str(conf), "--sentinel"], workdir)

    def start(self) -> Sentinel:
        self.process.start()
        wait_until(lambda: self.cli("PING") == ["PONG"] or None, 10, "redis sentinel to start",
                   on_timeout=self.process.output_tail)
        return self

    def cli(self, *args: str) -> list[str]:
        return redis_cli(self.port, *args, auth=self.auth)

    def master_port(self) -> int | None:
        reply = self.cli("SENTINEL", "get-master-addr-by-name", "mymaster")
        return int(reply[1]) if len(reply) == 2 else None

    def stop(self) -> None:
        self.process.stop()


@pytest.mark.parametrize("how", ["sentinel-failover", "master-killed"])
def test_sentinel_failover_under_load(make_gateway: Callable[..., Gateway], make_redis: Callable[..., RedisServer],
                                      how: str) -> None:
    """A master, its replica and a real sentinel (clients must AUTH); a failover under load (`SENTINEL FAILOVER`, or
    the master killed and the sentinel promoting the replica on its own): every request is
    answered within its policy (`local`: 200/429, `closed`: 200/429/503), none hangs, a key at
    its limit stays limited (the replica had its counter), no worker is lost, and afterwards the
    limits are counted again in Redis, on the new master."""
    master = make_redis()
    replica = make_redis(extra_args=["--replicaof", "127.0.0.1", str(master.port)])
    wait_until(lambda: "connected" in redis_cli(replica.port, "ROLE") or None, 10, "the replica to sync")
    sentinel_password = "Sentinel-" + uuid.uuid4().hex
    sentinel = Sentinel(Path(master.workdir), master, requirepass=sentinel_password).start()
    try:
        window = window_with_headroom(60)
        L = 5
        gw = make_gateway({"rate_limit": {"redis": {"sentinels": [f"127.0.0.1:{sentinel.port}"], "master_name": "mymaster",
                                                    "sentinel_password_env": "PC_TEST_SENTINEL_PASSWORD",
                                                    "namespace": "pc-fo", "timeout_ms": 200, "retry_ms": 200}},
                           "routes": [limited_route("local", limit("local", "fixed_window", L, window, store="redis",
                                                                   on_store_failure="local")),
                                      limited_route("closed", limit("closed", "fixed_window", 1000, window, store="redis",
                                                                    on_store_failure="closed"))]},
                          workers=2, threads=2, start=False)
        gw.master_env = {**os.environ, "PC_TEST_SENTINEL_PASSWORD": sentinel_password}
        gw.start()
        workers_before = sorted(gw.worker_pids())
        hot = fresh_key("hot")
        statuses, ids = send(gw, "/local/hot", hot, L + 1)
        assert statuses == [200] * L + [429], statuses
        assert all("@local" not in d for d in decided_by(gw, ids))
        assert redis_int(master, "DBSIZE") == 1
        wait_until(lambda: redis_int(replica, "DBSIZE") == 1 or None, 10, "the counter to reach the replica")

        seen: dict[str, list[int | str]] = {"local": [], "closed": [], "hot": []}
        slow: list[float] = []
        stop = threading.Event()

        def load(name: str, path: str, key: str | None) -> None:
            with requests.Session() as session:
                while not stop.is_set():
                    started = time.monotonic()
                    try:
                        status: int | str = session.get(gw.url(path), headers={CLIENT_HEADER: key or fresh_key(name)},
                                                        timeout=10).status_code
                    except requests.RequestException as error:
                        status = type(error).__name__
                    elapsed = time.monotonic() - started
                    if elapsed >= SLOW_REQUEST_SECONDS:
                        slow.append(elapsed)
                    seen[name].append(status)

        clients = [threading.Thread(target=load, args=args) for args in
                   (("local", "/local/load", None), ("closed", "/closed/load", None), ("hot", "/local/hot", hot))]
        for client in clients:
            client.start()
        # The sentinel learns of the replica from the master's INFO; until then it has none to promote.
        wait_until(lambda: len(sentinel.cli("SENTINEL", "REPLICAS", "mymaster")) > 0 or None, 20,
                   "the sentinel to know the replica")
        time.sleep(0.5)
        if how == "sentinel-failover":
            wait_until(lambda: sentinel.cli("SENTINEL", "FAILOVER", "mymaster") == ["OK"] or None, 20,
                       "the sentinel to accept the failover")
        else:
            master.process.send(signal.SIGKILL)
        wait_until(lambda: sentinel.master_port() == replica.port or None, 30, "the sentinel to name the replica")
        if how == "sentinel-failover":
            wait_until(lambda: "slave" in redis_cli(master.port, "ROLE") or None, 20, "the old master to become a replica")
        time.sleep(1.0)
        stop.set()
        for client in clients:
            client.join(timeout=30)
        assert not any(c.is_alive() for c in clients), "a client still waits"

        assert seen["local"] and set(seen["local"]) <= {200, 429}, seen["local"]
        assert seen["closed"] and set(seen["closed"]) <= {200, 429, 503}, seen["closed"]
        # The hot key stayed limited: at most L more from the local fallback's own counter.
        assert set(seen["hot"]) <= {200, 429} and seen["hot"].count(200) <= L, seen["hot"]
        assert not slow, f"requests slower than {SLOW_REQUEST_SECONDS}s during the failover: {slow}"
        assert sorted(gw.worker_pids()) == workers_before, "a worker was lost during the failover"

        before = redis_int(replica, "DBSIZE")
        statuses = wait_for_redis_decisions(gw, "/local/after", L + 1, send=lambda key, rid: gw.get(
            "/local/after", headers={CLIENT_HEADER: key, "X-Request-ID": rid}, timeout=10))
        assert statuses == [200] * L + [429], statuses
        assert redis_int(replica, "DBSIZE") > before, "the new master counts"
        statuses, _ = send(gw, "/local/hot", hot, 1)
        assert statuses == [429], "the hot key's counter survived the failover on the new master"
        assert sorted(gw.worker_pids()) == workers_before
        assert_no_secret(gw, sentinel_password)
    finally:
        sentinel.stop()
