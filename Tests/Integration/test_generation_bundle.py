"""Issue 11, items 1 and 3: a generation runs on one bundle; reloads and respawns keep JWKS keys.

- Everything a generation runs on (config, plugin rule files, `pem_file`) is read once by the
  master into `runtime_dir/bundle.generation-N.json`; a respawned worker serves exactly that,
  whatever was edited on disk since, and only a reload applies an edit.
- JWKS: the last good key set of an unchanged `jwks_url` survives a reload (inside a worker)
  and a respawn (the runtime directory's cache); fetches never hold up routes that do not need
  them; a reload that adds a URL waits for its first fetch.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from harness import BackgroundClients, Gateway, QuietHTTPServer, answer_json, echo_of, wait_until
from test_auth import bearer, claims, rs256, rsa_public_jwk, sign_jws


def rule(tag: str) -> dict[str, Any]:
    return {"name": "tag", "type": "transform", "phase": "request",
            "operations": [{"op": "header.set", "name": "X-Tag", "value": tag}]}


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def token(key: rsa.RSAPrivateKey, issuer: str, kid: str = "k1") -> str:
    return sign_jws({"alg": "RS256", "kid": kid}, claims(issuer=issuer, audience="api"), rs256(key))


def live_workers(gw: Gateway) -> list[dict[str, Any]]:
    return [w for w in gw.status()["workers"] if not w.get("retiring")]


def kill_worker_and_wait_for_replacement(gw: Gateway) -> int:
    """SIGKILLs the (only) live worker; returns the pid of its ready replacement."""
    (victim,) = [w["pid"] for w in live_workers(gw)]
    os.kill(victim, signal.SIGKILL)
    replacement = gw.wait_for_workers(
        lambda ws: [w for w in ws if w["pid"] != victim and w["ready"] and not w["retiring"]] or None,
        15, "a ready replacement worker")
    return [w["pid"] for w in replacement if w["pid"] != victim][0]


def test_respawn_serves_the_generation_bundle_and_reload_applies_edited_rule_and_key_files(
        make_gateway: Callable[..., Gateway]) -> None:
    issuer = "https://pem.test/"
    key_a = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_b = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    gw = make_gateway({
        "plugins_dir": "plugins",
        "auth": {"jwt": {"issuers": [{"issuer": issuer, "audiences": ["api"],
                                      "keys": [{"pem_file": "key.pem", "alg": "RS256", "kid": "k1"}]}]}},
        "routes": [{"name": "tagged", "match": {"prefix": "/tagged/"}, "upstream": "echo", "plugins": ["tag"]},
                   {"name": "jwt", "match": {"prefix": "/jwt/"}, "upstream": "echo", "auth": {"methods": ["jwt"]}}],
    }, workers=1, threads=2, start=False)
    plugins = gw.workdir / "plugins"
    plugins.mkdir()
    (plugins / "tag.json").write_text(json.dumps(rule("old")))
    (gw.workdir / "key.pem").write_bytes(public_pem(key_a))
    gw.start()
    assert (gw.run_dir / "bundle.generation-1.json").exists()

    def serves(tag: str, good: rsa.RSAPrivateKey, bad: rsa.RSAPrivateKey) -> None:
        for _ in range(4):
            assert echo_of(gw.get("/tagged/x"))["headers"]["x-tag"] == tag
            assert gw.get("/jwt/x", headers=bearer(token(good, issuer))).status_code == 200
            assert gw.get("/jwt/x", headers=bearer(token(bad, issuer))).status_code == 401

    serves("old", key_a, key_b)
    # Edited on disk, not reloaded: a respawned worker still serves generation 1's files.
    (plugins / "tag.json").write_text(json.dumps(rule("new")))
    (gw.workdir / "key.pem").write_bytes(public_pem(key_b))
    kill_worker_and_wait_for_replacement(gw)
    assert gw.status()["generation"] == 1
    serves("old", key_a, key_b)

    result = gw.cli("reload")
    assert result.returncode == 0, result.stderr
    assert gw.status()["generation"] == 2
    serves("new", key_b, key_a)

    # An invalid edit is refused with its reason; a respawn after it serves generation 2 and
    # does not crash-loop.
    (gw.workdir / "key.pem").write_text("not a key")
    refused = gw.cli("reload")
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    assert "/keys/0/pem_file: " in refused.stderr and "key.pem: not a valid RSA public key" in refused.stderr, refused.stderr
    (gw.workdir / "key.pem").write_bytes(public_pem(key_b))
    (plugins / "tag.json").write_text('{"name": "tag", "type": "transform", "phase": "request", "operations": [{"op": "header.sett"}]}')
    refused = gw.cli("reload")
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    assert "tag.json: /operations/0/op: unknown operation" in refused.stderr, refused.stderr
    (gw.workdir / "key.pem").write_text("not a key")
    replacement = kill_worker_and_wait_for_replacement(gw)
    serves("new", key_b, key_a)
    time.sleep(1)
    after = gw.status()
    assert after["generation"] == 2 and [w["pid"] for w in live_workers(gw)] == [replacement], after
    # SIGHUP skips the CLI's own validation: the master refuses it the same way.
    os.kill(gw.pid_file(), signal.SIGHUP)
    refusal = wait_until(lambda: gw.status()["last_reload"] if not gw.status()["last_reload"]["ok"] else None, 10,
                         "the master's refusal")
    assert any("key.pem" in e for e in refusal["errors"]), refusal
    # The text names the reasons too: nobody saw a CLI's output.
    text = gw.cli("status").stdout
    assert f"last reload: refused at {refusal['at']}:\n" in text, text
    assert all(f"\n  {e}" in text for e in refusal["errors"]), text
    serves("new", key_b, key_a)


class IdentityProvider:
    """A JWKS endpoint whose behaviour the test switches: "ok", "hang" (never answers),
    "error" (500) or "slow" (answers after `delay` seconds)."""

    def __init__(self, root: Path):
        self.mode = "ok"
        self.delay = 3.0
        self.keys: list[dict[str, str]] = []
        self.fetches = 0
        self.release = threading.Event()
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                idp.fetches += 1
                if idp.mode == "hang":
                    idp.release.wait(60)
                    return
                if idp.mode == "slow":
                    time.sleep(idp.delay)
                status = 500 if idp.mode == "error" else 200
                body = json.dumps({"keys": idp.keys} if status == 200 else {"error": "down"}).encode()
                answer_json(self, status, body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = QuietHTTPServer.serving(Handler)
        self.url = f"{self.httpd.base_url}/jwks.json"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class Load(BackgroundClients):
    """Client threads sending requests that must all succeed: `/echo/public` and, given
    `make_token` (tokens whose kid the gateway knows), `/jwt/known` on every other thread."""

    def __init__(self, gw: Gateway, make_token: Callable[[], str] | None = None, threads: int = 4):
        super().__init__(threads)
        self.gw = gw
        self.make_token = make_token

    def kind(self, index: int, n: int) -> str:
        return "jwt" if self.make_token is not None and index % 2 == 1 else "public"

    def send(self, kind: str, index: int, n: int) -> str | None:
        if kind == "jwt":
            r = self.gw.get("/jwt/known", headers=bearer(self.make_token()), timeout=15)  # type: ignore[misc]
        else:
            r = self.gw.get("/echo/public", timeout=15)
        return None if r.status_code == 200 else f"{r.status_code} {r.text[:200]}"


def jwks_gateway(make_gateway: Callable[..., Gateway], idp: IdentityProvider, issuer: str, **kwargs: Any) -> Gateway:
    return make_gateway({
        "auth": {"jwt": {"issuers": [{"issuer": issuer, "audiences": ["api"], "jwks_url": idp.url,
                                      "jwks_refresh_seconds": 10}]}},
        "routes": [{"name": "echo", "match": {"prefix": "/echo/"}, "upstream": "echo"},
                   {"name": "jwt", "match": {"prefix": "/jwt/"}, "upstream": "echo", "auth": {"methods": ["jwt"]}}],
    }, **kwargs)


def test_reload_and_respawn_while_the_jwks_url_never_answers_lose_no_request(
        make_gateway: Callable[..., Gateway], test_root: Path) -> None:
    issuer = "https://idp.test/"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    idp = IdentityProvider(test_root)
    idp.keys = [rsa_public_jwk(key, "k1")]
    try:
        gw = jwks_gateway(make_gateway, idp, issuer, workers=2, threads=2)
        assert gw.get("/jwt/x", headers=bearer(token(key, issuer))).status_code == 200
        idp.mode = "hang"
        with Load(gw, lambda: token(key, issuer)) as load:
            load.wait_for(20)
            for _ in range(2):
                result = gw.cli("reload", timeout=60)
                assert result.returncode == 0, result.stderr
                load.wait_for(20)
            victim = live_workers(gw)[0]["pid"]
            os.kill(victim, signal.SIGKILL)
            gw.wait_for_workers(lambda ws: len([w for w in ws if w["ready"] and w["pid"] != victim]) == 2 or None,
                                20, "a ready replacement")
            load.wait_for(40)
        assert load.failures == [], load.failures[:5]
        assert gw.status()["generation"] == 3
        assert idp.fetches > 2, "the hanging URL was never asked again"
    finally:
        idp.close()


def test_known_kid_tokens_keep_working_through_reload_and_respawn_while_the_jwks_url_answers_500(
        make_gateway: Callable[..., Gateway], test_root: Path) -> None:
    issuer = "https://idp500.test/"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    idp = IdentityProvider(test_root)
    idp.keys = [rsa_public_jwk(key, "k1")]
    try:
        gw = jwks_gateway(make_gateway, idp, issuer, workers=1, threads=2)
        assert gw.get("/jwt/x", headers=bearer(token(key, issuer))).status_code == 200
        idp.mode = "error"
        fetches = idp.fetches
        result = gw.cli("reload")
        assert result.returncode == 0, result.stderr
        for _ in range(5):
            assert gw.get("/jwt/x", headers=bearer(token(key, issuer))).status_code == 200
        kill_worker_and_wait_for_replacement(gw)
        for _ in range(5):
            assert gw.get("/jwt/x", headers=bearer(token(key, issuer))).status_code == 200
        assert idp.fetches > fetches, "the new configuration and the respawn did not try to refresh"
        assert "fetch failed (HTTP 500); keeping the last good key set" in gw.master.stderr_path.read_text()
    finally:
        idp.close()


def test_reload_adding_a_slow_jwks_url_waits_for_its_keys_and_loses_no_request(
        make_gateway: Callable[..., Gateway], test_root: Path) -> None:
    """The new issuer's keys arrive after 3 s: the reload reports success only after that, the
    old configuration serves meanwhile, and the new issuer's tokens work from the first one."""
    old_issuer, new_issuer = "https://old.test/", "https://new.test/"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    old_idp, new_idp = IdentityProvider(test_root), IdentityProvider(test_root)
    old_idp.keys = [rsa_public_jwk(key, "k1")]
    new_idp.keys = [rsa_public_jwk(key, "k1")]
    new_idp.mode = "slow"
    try:
        gw = jwks_gateway(make_gateway, old_idp, old_issuer, workers=2, threads=2)
        with Load(gw, lambda: token(key, old_issuer)) as load:
            load.wait_for(20)
            config = json.loads(json.dumps(gw.config))
            config["auth"]["jwt"]["issuers"].append({"issuer": new_issuer, "audiences": ["api"], "jwks_url": new_idp.url})
            gw.set_config(config)
            started = time.monotonic()
            result = gw.cli("reload", timeout=60)
            took = time.monotonic() - started
            assert result.returncode == 0, result.stderr
            assert took >= new_idp.delay, f"the reload did not wait for the new key set ({took:.2f} s)"
            for _ in range(6):
                assert gw.get("/jwt/new", headers=bearer(token(key, new_issuer))).status_code == 200
            load.wait_for(20)
        assert load.failures == [], load.failures[:5]
    finally:
        old_idp.close()
        new_idp.close()
