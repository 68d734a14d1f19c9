"""Issue 3: authentication through real nginx and the real gateway.

- The demo contract (config/portcullis.json with the echo upstream swapped in): API key, HS256
  and RS256 tokens on /private/, the 401 answers, and what the upstream sees.
- `jku` / `x5u` / `jwk` token headers pointing at a canary listener that must see no connection.
- API key rotation by `portcullis reload` while clients keep sending requests.
- JWKS rotation: a new `kid` published at `jwks_url` is accepted without a restart.
- mTLS through nginx/example-mtls.conf with certificates made by `openssl` in the test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from harness import REPO_ROOT, Gateway, GatewayFactory, free_port, wait_until, assert_problem, echo_of, PROBLEM_JSON, QuietHTTPServer, answer_json


# The demo credentials of the issue-3 contract (public demo values, config/DEMO-KEYS-README.md).
DEMO_KEY = "demo-key-change-me"
DEMO_HS256_SECRET = b"demo-hs256-secret-change-me-0123456789"
DEMO_ISSUER = "portcullis-demo"
DEMO_AUDIENCE = "portcullis"
DEMO_RS256_KID = "demo-rs256"
DEMO_RS256_PEM = REPO_ROOT / "config" / "demo-rs256-private.pem"

# Identity headers only the gateway may set.
IDENTITY_HEADERS = ("X-Consumer-ID", "X-Consumer-Groups", "X-Credential-ID", "X-Authenticated-Scopes")


# -- JWT minting ----------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_uint(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def sign_jws(header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "."
                     + b64url(json.dumps(claims, separators=(",", ":")).encode()))
    return signing_input + "." + b64url(sign(signing_input.encode("ascii")))


def hs256(secret: bytes) -> Callable[[bytes], bytes]:
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


def rs256(key: rsa.RSAPrivateKey) -> Callable[[bytes], bytes]:
    return lambda data: key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def es256(key: ec.EllipticCurvePrivateKey) -> Callable[[bytes], bytes]:
    def sign(data: bytes) -> bytes:
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")  # JWS wants raw R || S
    return sign


def claims(sub: str = "alice", issuer: str = DEMO_ISSUER, audience: str = DEMO_AUDIENCE,
           lifetime: int = 300, **extra: Any) -> dict[str, Any]:
    """Fresh claims; a unique `jti` keeps every token out of the gateway's verified-token cache."""
    now = int(time.time())
    return {"iss": issuer, "aud": audience, "sub": sub, "iat": now, "exp": now + lifetime,
            "jti": uuid.uuid4().hex, **extra}


def demo_hs256_token(extra_header: dict[str, Any] | None = None, **claim_changes: Any) -> str:
    return sign_jws({"alg": "HS256", "typ": "JWT", "kid": "demo-hs256", **(extra_header or {})},
                    claims(**claim_changes), hs256(DEMO_HS256_SECRET))


def rsa_public_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    return {"kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid,
            "n": b64url_uint(numbers.n), "e": b64url_uint(numbers.e)}


def ec_public_jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    return {"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
            "x": b64url(numbers.x.to_bytes(32, "big")), "y": b64url(numbers.y.to_bytes(32, "big"))}


@pytest.fixture(scope="module")
def demo_rsa_key() -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(DEMO_RS256_PEM.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


@pytest.fixture(scope="module")
def attacker_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


# -- assertions -----------------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}






def assert_unauthorized(response: requests.Response, error: str | None = "invalid_token") -> dict[str, Any]:
    """401 problem+json with an RFC 6750 challenge (`error` absent when no credential was sent)."""
    body = assert_problem(response, 401)
    challenge = response.headers.get("WWW-Authenticate", "")
    assert challenge.startswith('Bearer realm="portcullis"'), response.headers
    if error is None:
        assert "error=" not in challenge, challenge
    else:
        assert f'error="{error}"' in challenge, challenge
        assert 'error_description="' in challenge, challenge
    return body


def assert_no_client_identity(echo: dict[str, Any], allowed: dict[str, str] | None = None) -> None:
    """The upstream saw exactly the gateway-set identity headers in ``allowed``, nothing else."""
    allowed = {k.lower(): v for k, v in (allowed or {}).items()}
    for name in IDENTITY_HEADERS:
        seen = echo["headers"].get(name.lower())
        assert seen == allowed.get(name.lower()), f"upstream saw {name}: {seen!r}, expected {allowed.get(name.lower())!r}"


# -- 1. the demo contract -------------------------------------------------------------------------


def demo_config(echo_url: str) -> dict[str, Any]:
    """config/portcullis.json's consumers, auth and routes, with the echo upstream swapped in and
    relative paths made absolute (the harness writes the config into a temporary directory)."""
    config = json.loads((REPO_ROOT / "config" / "portcullis.json").read_text())
    for owned_by_harness in ("comment", "server", "log"):
        config.pop(owned_by_harness, None)
    config["plugins_dir"] = str((REPO_ROOT / "config" / config["plugins_dir"]).resolve())
    config["upstreams"]["echo"]["targets"] = [echo_url]
    for issuer in config["auth"]["jwt"]["issuers"]:
        if "jwks_file" in issuer:
            issuer["jwks_file"] = str(REPO_ROOT / "config" / issuer["jwks_file"])
    return config


@pytest.fixture(scope="module")
def demo(gateway_factory: GatewayFactory) -> Iterator[Gateway]:
    gw = gateway_factory.create(config=demo_config(gateway_factory.echo.url))
    yield gw
    gateway_factory.close([gw])


def test_demo_api_key(demo: Gateway) -> None:
    response = demo.get("/private/orders?x=1", headers={"X-API-Key": DEMO_KEY})
    echo = echo_of(response)
    assert echo["path"] == "/private/orders"
    assert "x-api-key" not in echo["headers"], echo["headers"]
    assert_no_client_identity(echo, {"X-Consumer-ID": "demo", "X-Consumer-Groups": "demo", "X-Credential-ID": "demo-key"})
    entry = demo.wait_for_log_entries(lambda e: e.get("request_id") == response.headers["X-Request-ID"])[0]
    assert (entry.get("consumer"), entry.get("credential"), entry.get("status")) == ("demo", "demo-key", 200), entry


def test_demo_hs256_token(demo: Gateway) -> None:
    echo = echo_of(demo.get("/private/me", headers=bearer(demo_hs256_token(scope="orders:read orders:write"))))
    assert "authorization" not in echo["headers"], echo["headers"]
    assert_no_client_identity(echo, {"X-Consumer-ID": "alice", "X-Credential-ID": "demo-hs256",
                                     "X-Authenticated-Scopes": "orders:read orders:write"})


def test_demo_rs256_token(demo: Gateway, demo_rsa_key: rsa.RSAPrivateKey) -> None:
    token = sign_jws({"alg": "RS256", "typ": "JWT", "kid": DEMO_RS256_KID}, claims(sub="bob"), rs256(demo_rsa_key))
    for _ in range(2):  # cold, then from the verified-token cache (the same worker or the other)
        echo = echo_of(demo.get("/private/me", headers=bearer(token)))
        assert "authorization" not in echo["headers"], echo["headers"]
        assert_no_client_identity(echo, {"X-Consumer-ID": "bob", "X-Credential-ID": DEMO_RS256_KID})


def test_demo_rs256_public_jwks_matches_the_private_key(demo_rsa_key: rsa.RSAPrivateKey) -> None:
    """config/demo-jwks.json is the public half of config/demo-rs256-private.pem."""
    jwks = json.loads((REPO_ROOT / "config" / "demo-jwks.json").read_text())
    published = {k["kid"]: k for k in jwks["keys"]}
    expected = rsa_public_jwk(demo_rsa_key, DEMO_RS256_KID)
    assert (published[DEMO_RS256_KID]["n"], published[DEMO_RS256_KID]["e"]) == (expected["n"], expected["e"])


def test_no_credential_is_401_challenge(demo: Gateway) -> None:
    body = assert_unauthorized(demo.get("/private/x"), error=None)
    assert body["request_id"]
    # An empty key header or an empty bearer counts as no credential (challenge without error).
    assert_unauthorized(demo.get("/private/x", headers={"X-API-Key": ""}), error=None)


@pytest.mark.parametrize("headers", [
    pytest.param({"X-API-Key": "demo-key-change-me-not"}, id="wrong-api-key"),
    pytest.param(bearer(demo_hs256_token(lifetime=-120)), id="expired-token"),
    pytest.param(bearer(demo_hs256_token(audience="someone-else")), id="wrong-audience"),
    pytest.param(bearer(demo_hs256_token(issuer="portcullis-evil")), id="unknown-issuer"),
    pytest.param(bearer(sign_jws({"alg": "HS256", "kid": "demo-hs256"}, claims(), hs256(b"x" * 40))), id="bad-signature"),
    pytest.param(bearer(sign_jws({"alg": "none"}, claims(), lambda _: b"")), id="alg-none"),
    pytest.param(bearer("not.a.token"), id="garbage-token"),
])
def test_invalid_credential_is_401(demo: Gateway, headers: dict[str, str]) -> None:
    response = demo.get("/private/x", headers=headers)
    assert_unauthorized(response)
    entry = demo.wait_for_log_entries(lambda e: e.get("request_id") == response.headers["X-Request-ID"])[0]
    assert entry.get("status") == 401 and "consumer" not in entry, entry


def test_expired_token_says_so_without_leaking(demo: Gateway) -> None:
    token = demo_hs256_token(lifetime=-120)
    response = demo.get("/private/x", headers=bearer(token))
    assert_unauthorized(response)
    assert "expired" in response.headers["WWW-Authenticate"]
    assert token not in response.text and token.split(".")[1] not in response.headers["WWW-Authenticate"]


def test_client_sent_identity_headers_never_reach_upstream(demo: Gateway) -> None:
    spoofed = {"X-Consumer-ID": "admin", "X-Consumer-Groups": "admins", "X-Credential-ID": "root",
               "X-Authenticated-Scopes": "everything"}
    # Authenticated route: the gateway's values replace the client's.
    echo = echo_of(demo.get("/private/x", headers={**spoofed, "X-API-Key": DEMO_KEY}))
    assert_no_client_identity(echo, {"X-Consumer-ID": "demo", "X-Consumer-Groups": "demo", "X-Credential-ID": "demo-key"})
    # Route without auth: removed, nothing set.
    assert_no_client_identity(echo_of(demo.get("/echo/x", headers=spoofed)))
    # Rejected on /private/ when the only "credential" is the spoofed identity.
    assert_unauthorized(demo.get("/private/x", headers=spoofed), error=None)


def test_credentials_never_logged(demo: Gateway, demo_rsa_key: rsa.RSAPrivateKey) -> None:
    token = sign_jws({"alg": "RS256", "kid": DEMO_RS256_KID}, claims(sub="carol"), rs256(demo_rsa_key))
    secrets_sent = [DEMO_KEY, token, token.split(".")[2]]
    ids = [demo.get("/private/log", headers={"X-API-Key": DEMO_KEY}).headers["X-Request-ID"],
           demo.get("/private/log", headers=bearer(token)).headers["X-Request-ID"],
           demo.get("/private/log", headers={"X-API-Key": "wrong-" + DEMO_KEY}).headers["X-Request-ID"]]
    demo.wait_for_log_entries(lambda e: e.get("request_id") in ids, count=3)
    texts = {"access log": demo.access_log_path.read_text(),
             "gateway output": demo.master.stdout_path.read_text() + demo.master.stderr_path.read_text()}
    for where, text in texts.items():
        for secret in secrets_sent:
            assert secret not in text, f"a credential appears in the {where}"
    assert DEMO_HS256_SECRET.decode() not in texts["gateway output"]


# -- 2. jku / x5u / jwk are never fetched ---------------------------------------------------------


class Canary:
    """A loopback TCP listener that counts every connection made to it (and answers nothing)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture(scope="module")
def canary() -> Iterator[Canary]:
    listener = Canary()
    yield listener
    listener.close()


def key_reference_headers(kind: str, canary: Canary, attacker: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    if kind == "jku":
        return {"jku": canary.url("/jwks.json")}
    if kind == "x5u":
        return {"x5u": canary.url("/cert.pem")}
    if kind == "jwk":  # an embedded key, plus a jku to see whether it would be followed
        return {"jwk": rsa_public_jwk(attacker, kid), "jku": canary.url("/embedded")}
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["jku", "x5u", "jwk"])
def test_key_reference_headers_are_never_fetched(demo: Gateway, canary: Canary, attacker_rsa_key: rsa.RSAPrivateKey,
                                                 demo_rsa_key: rsa.RSAPrivateKey, kind: str) -> None:
    # Properly signed by a configured key: accepted, the extra header is simply ignored.
    valid_hs = demo_hs256_token(key_reference_headers(kind, canary, attacker_rsa_key, "demo-hs256"))
    assert echo_of(demo.get("/private/k", headers=bearer(valid_hs)))["headers"]["x-consumer-id"] == "alice"
    valid_rs = sign_jws({"alg": "RS256", "kid": DEMO_RS256_KID, **key_reference_headers(kind, canary, attacker_rsa_key, DEMO_RS256_KID)},
                        claims(), rs256(demo_rsa_key))
    echo_of(demo.get("/private/k", headers=bearer(valid_rs)))
    # Signed by the attacker's key that the header points to: refused, whether the kid is
    # unknown or names the configured key.
    for kid in ("attacker-key", DEMO_RS256_KID):
        forged = sign_jws({"alg": "RS256", "kid": kid, **key_reference_headers(kind, canary, attacker_rsa_key, kid)},
                          claims(sub="mallory"), rs256(attacker_rsa_key))
        assert_unauthorized(demo.get("/private/k", headers=bearer(forged)))
    time.sleep(0.5)  # room for any background fetch to show up
    assert canary.connections == 0, f"the gateway connected to the {kind} URL {canary.connections} time(s)"


# -- 3. API key rotation by reload under load -------------------------------------------------------


@dataclass
class Sent:
    key: str
    started: float
    ended: float
    status: int
    detail: str = ""


class RotationClient:
    """Client threads sending requests in a loop; ``keys`` (changed by the test) is the list they
    alternate over. Records every request with its start and end time."""

    def __init__(self, gw: Gateway, keys: dict[str, str], threads: int = 3):
        self.gw = gw
        self.keys = keys
        self.use: list[str] = []
        self.sent: list[Sent] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def start(self, use: list[str]) -> None:
        self.use = use
        for t in self._threads:
            t.start()

    def _run(self, index: int) -> None:
        session = requests.Session()
        n = index
        while not self._stop.is_set():
            names = self.use
            name = names[n % len(names)]
            n += 1
            started = time.monotonic()
            detail = ""
            try:
                response = session.get(self.gw.url(f"/rot/{name}"), headers={"X-API-Key": self.keys[name]}, timeout=5)
                status = response.status_code
                if status not in (200, 401):
                    detail = f"{response.headers.get('Content-Type')} {response.text[:300]}"
            except requests.RequestException as error:
                self.errors.append(f"{name}: {error!r}")
                status = 0
            with self._lock:
                self.sent.append(Sent(name, started, time.monotonic(), status, detail))
            time.sleep(0.005)
        session.close()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)


def reload_and_wait(gw: Gateway) -> tuple[float, float]:
    """`portcullis reload`; returns (monotonic time before, time it returned ok)."""
    before = time.monotonic()
    result = gw.cli("reload")
    assert result.returncode == 0, f"reload failed: {result.stdout}{result.stderr}"
    return before, time.monotonic()


def test_api_key_rotation_by_reload_under_load(make_gateway: Callable[..., Gateway]) -> None:
    keys = {"A": secrets.token_urlsafe(32), "B": secrets.token_urlsafe(32)}
    entry = {name: {"id": f"key-{name.lower()}", "sha256": hashlib.sha256(value.encode()).hexdigest()} for name, value in keys.items()}

    def config(*names: str) -> dict[str, Any]:
        return {"consumers": [{"id": "rotator", "api_keys": [entry[n] for n in names]}],
                "routes": [{"name": "rot", "match": {"prefix": "/rot/"}, "upstream": "echo", "auth": {"methods": ["api_key"]}}]}

    gw = make_gateway(config("A"))
    client = RotationClient(gw, keys)
    client.start(["A", "B"])  # B is not configured yet: 401 until the first reload
    try:
        time.sleep(0.7)
        gw.set_config(gw.config | config("A", "B"))  # add B next to A
        add_started, add_done = reload_and_wait(gw)
        time.sleep(1.2)  # both keys in use
        client.use = ["B"]  # move the clients to B
        time.sleep(0.4)
        gw.set_config(gw.config | config("B"))  # remove A
        remove_started, remove_done = reload_and_wait(gw)
        time.sleep(0.8)
    finally:
        client.stop()

    assert not client.errors, client.errors[:5]
    a = [s for s in client.sent if s.key == "A"]
    b = [s for s in client.sent if s.key == "B"]
    a_counted = [s for s in a if s.started < remove_started]
    b_counted = [s for s in b if s.started >= add_done]
    b_before = [s for s in b if s.ended < add_started]
    summary = (f"A: {len(a)} sent, {len(a_counted)} before removal; B: {len(b)} sent, {len(b_counted)} after addition, "
               f"{len(b_before)} before it")
    assert len(a_counted) >= 30 and len(b_counted) >= 30 and len(b_before) >= 5, summary
    failed_a = [s for s in a_counted if s.status != 200]
    failed_b = [s for s in b_counted if s.status != 200]
    assert not failed_a and not failed_b, f"{summary}; failed A: {failed_a[:5]}; failed B: {failed_b[:5]}"
    assert all(s.status == 401 for s in b_before), [s.status for s in b_before]
    # Nothing but 200 and 401 at any moment, reload windows included.
    assert {s.status for s in client.sent} <= {200, 401}, sorted({s.status for s in client.sent})

    # A is gone after its removal, B stays.
    assert_unauthorized(gw.get("/rot/after", headers={"X-API-Key": keys["A"]}))
    assert echo_of(gw.get("/rot/after", headers={"X-API-Key": keys["B"]}))["headers"]["x-credential-id"] == "key-b"
    used = {(e.get("consumer"), e.get("credential")) for e in gw.access_log() if e.get("status") == 200}
    assert used == {("rotator", "key-a"), ("rotator", "key-b")}, used


# -- 4. JWKS rotation via jwks_url ------------------------------------------------------------------


class JWKSServer:
    """A loopback HTTP server answering GET with the current content of one file; counts GETs."""

    def __init__(self, path: Path):
        self.path = path
        self.fetches = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                server.fetches += 1
                body = server.path.read_bytes()
                answer_json(self, 200, body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = QuietHTTPServer.serving(Handler)
        self.url = f"{self.httpd.base_url}/.well-known/jwks.json"

    def publish(self, *keys: dict[str, str]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"keys": list(keys)}))
        tmp.replace(self.path)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_jwks_rotation_new_kid_accepted_without_restart(make_gateway: Callable[..., Gateway], test_root: Path) -> None:
    issuer = "https://idp.test/"
    old_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    new_key = ec.generate_private_key(ec.SECP256R1())
    jwks = JWKSServer(Path(tempfile.mkdtemp(prefix="jwks-", dir=test_root)) / "jwks.json")
    jwks.publish(rsa_public_jwk(old_key, "2026-old"))
    try:
        gw = make_gateway({
            "auth": {"jwt": {"issuers": [{"issuer": issuer, "audiences": ["api"], "jwks_url": jwks.url,
                                          "jwks_refresh_seconds": 86400}]}},
            "routes": [{"name": "idp", "match": {"prefix": "/idp/"}, "upstream": "echo", "auth": {"methods": ["jwt"]}}],
        })
        workers_before = sorted(gw.worker_pids())
        fetches_at_start = jwks.fetches
        assert fetches_at_start >= gw.workers, f"each worker fetches the set at start: {fetches_at_start}"

        def old_token() -> str:
            return sign_jws({"alg": "RS256", "kid": "2026-old"}, claims(sub="olga", issuer=issuer, audience="api"), rs256(old_key))

        def new_token(kid: str = "2026-new") -> str:
            return sign_jws({"alg": "ES256", "kid": kid}, claims(sub="nina", issuer=issuer, audience="api"), es256(new_key))

        assert echo_of(gw.get("/idp/x", headers=bearer(old_token())))["headers"]["x-consumer-id"] == "olga"
        assert_unauthorized(gw.get("/idp/x", headers=bearer(sign_jws({"alg": "ES256", "kid": "2026-old"}, claims(issuer=issuer, audience="api"), es256(new_key)))))

        # The provider publishes a new key next to the old one and starts signing with it.
        jwks.publish(rsa_public_jwk(old_key, "2026-old"), ec_public_jwk(new_key, "2026-new"))
        statuses: list[int] = []

        def accepted_by_every_worker() -> bool:
            # The first token with the unknown kid makes each worker refetch (that token gets 401).
            statuses.append(gw.get("/idp/x", headers=bearer(new_token())).status_code)
            return statuses[-8:] == [200] * 8
        wait_until(accepted_by_every_worker, 8, "tokens with the new kid to be accepted", interval=0.1)
        assert set(statuses) <= {200, 401}, statuses
        echo = echo_of(gw.get("/idp/x", headers=bearer(new_token())))
        assert_no_client_identity(echo, {"X-Consumer-ID": "nina", "X-Credential-ID": "2026-new"})
        echo_of(gw.get("/idp/x", headers=bearer(old_token())))  # the old key still works during the overlap
        refetches = jwks.fetches - fetches_at_start
        assert 1 <= refetches <= gw.workers, f"{refetches} refetches for one new kid ({statuses})"

        # Random unknown kids within the cooldown make no further fetches.
        for _ in range(10):
            assert_unauthorized(gw.get("/idp/x", headers=bearer(new_token(kid=uuid.uuid4().hex))))
        time.sleep(0.8)  # the fetcher thread polls every 0.25 s
        assert jwks.fetches - fetches_at_start == refetches, "unknown kids within the 10 s cooldown caused fetches"

        assert sorted(gw.worker_pids()) == workers_before, "the workers were restarted"
    finally:
        jwks.close()


# -- 5. mTLS through nginx/example-mtls.conf -------------------------------------------------------


def openssl(*args: str, cwd: Path) -> str:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, f"openssl {' '.join(args)}: {result.stderr}"
    return result.stdout


@dataclass
class Certs:
    dir: Path

    def path(self, name: str) -> str:
        return str(self.dir / name)

    def pair(self, name: str) -> tuple[str, str]:
        return self.path(f"{name}.crt"), self.path(f"{name}.key")

    def sha256_fingerprint(self, name: str) -> str:
        """As `openssl x509 -fingerprint -sha256` prints it (upper case, colons), per the docs."""
        out = openssl("x509", "-in", f"{name}.crt", "-noout", "-fingerprint", "-sha256", cwd=self.dir)
        return out.strip().split("=", 1)[1]

    def subject_rfc2253(self, name: str) -> str:
        out = openssl("x509", "-in", f"{name}.crt", "-noout", "-subject", "-nameopt", "RFC2253", cwd=self.dir)
        return out.strip().removeprefix("subject=")


def make_certs(directory: Path) -> Certs:
    """Two CAs (the trusted one and a rogue one), a server certificate for 127.0.0.1 and
    client certificates, all EC P-256 (fast to make)."""
    directory.mkdir(parents=True, exist_ok=True)
    ec_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca, cn in (("ca", "Portcullis Test CA"), ("rogue-ca", "Rogue CA")):
        openssl("req", "-x509", *ec_key, "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "2",
                "-subj", f"/O=Portcullis Tests/CN={cn}", cwd=directory)
    (directory / "server.ext").write_text("basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                          "extendedKeyUsage=serverAuth\n")
    (directory / "client.ext").write_text("basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
    leaves = [("server", "/CN=127.0.0.1", "ca", "server.ext"),
              ("fp-client", "/O=Portcullis Tests/CN=fp-client", "ca", "client.ext"),
              ("dn-client", "/O=Portcullis Tests/OU=CI/CN=dn-client", "ca", "client.ext"),
              ("stranger", "/O=Portcullis Tests/CN=stranger", "ca", "client.ext"),
              # Same subject as the DN-mapped client, but issued by a CA nginx does not trust.
              ("rogue", "/O=Portcullis Tests/OU=CI/CN=dn-client", "rogue-ca", "client.ext")]
    for name, subject, ca, ext in leaves:
        openssl("req", "-new", *ec_key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=directory)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
                "-days", "2", "-out", f"{name}.crt", "-extfile", ext, cwd=directory)
    return Certs(directory)


class MTLSGateway(Gateway):
    """A Gateway whose nginx is rendered from nginx/example-mtls.conf: plain HTTP on ``port``,
    TLS asking for client certificates on ``tls_port``."""

    def __init__(self, *args: Any, certs: Certs, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.certs = certs
        self.tls_port = free_port()
        self.render_env = {"NGINX_TEMPLATE": str(REPO_ROOT / "nginx" / "example-mtls.conf"),
                           "TLS_LISTEN": f"127.0.0.1:{self.tls_port}"}

    def _render_nginx(self) -> None:
        tls = self.nginx_prefix / "tls"
        tls.mkdir(parents=True, exist_ok=True)
        for source, target in (("server.crt", "server.crt"), ("server.key", "server.key"), ("ca.crt", "client-ca.crt")):
            shutil.copy(self.certs.dir / source, tls / target)
        super()._render_nginx()

    def tls_get(self, path: str, cert: str | None = None, **kwargs: Any) -> requests.Response:
        """GET over TLS (server verified against the test CA), with client certificate ``cert``."""
        return requests.get(f"https://127.0.0.1:{self.tls_port}{path}", verify=self.certs.path("ca.crt"),
                            cert=self.certs.pair(cert) if cert else None, timeout=15, **kwargs)


@pytest.fixture(scope="module")
def mtls(gateway_factory: GatewayFactory, test_root: Path) -> Iterator[MTLSGateway]:
    workdir = Path(tempfile.mkdtemp(prefix="mtls-", dir=test_root))
    certs = make_certs(workdir / "certs")
    config = gateway_factory.base_config() | {
        "consumers": [
            {"id": "fp-consumer", "groups": ["partners"],
             "certificates": [{"id": "fp-cert", "sha256_fingerprint": certs.sha256_fingerprint("fp-client")}]},
            {"id": "dn-consumer", "certificates": [{"id": "dn-cert", "subject_dn": certs.subject_rfc2253("dn-client")}]},
        ],
    }
    config["routes"] = [*config["routes"],
                        {"name": "mtls", "match": {"prefix": "/mtls/"}, "upstream": "echo", "auth": {"methods": ["mtls"]}}]
    gw = MTLSGateway(gateway_factory.binary, workdir / "gw", config, certs=certs, name="mtls")
    gateway_factory.gateways.append(gw)  # stopped (and its output attached on failure) like the others
    gw.start()
    yield gw
    gateway_factory.close([gw])


def test_mtls_example_renders_as_documented(mtls: MTLSGateway) -> None:
    rendered = (mtls.nginx_prefix / "nginx.conf").read_text()
    assert f"listen 127.0.0.1:{mtls.tls_port} ssl;" in rendered
    assert "ssl_verify_client optional;" in rendered
    assert not re.search(r"@[A-Z_]+@", rendered), "unrendered placeholder"
    snippet = (mtls.nginx_prefix / "portcullis.conf").read_text()
    for param, variable in (("PORTCULLIS_SSL_CLIENT_VERIFY", "$ssl_client_verify"), ("PORTCULLIS_SSL_CLIENT_S_DN", "$ssl_client_s_dn"),
                            ("PORTCULLIS_SSL_CLIENT_CERT", "$ssl_client_escaped_cert")):
        assert re.search(rf"fastcgi_param\s+{param}\s+{re.escape(variable)}\s+if_not_empty;", snippet), param


def test_mtls_no_certificate_is_401(mtls: MTLSGateway) -> None:
    assert_unauthorized(mtls.tls_get("/mtls/x"), error=None)


def test_mtls_certificate_from_another_ca_is_refused_by_nginx(mtls: MTLSGateway) -> None:
    """`ssl_verify_client optional` makes nginx itself answer 400 ("The SSL certificate error")
    for a certificate that does not verify; the gateway never sees the request."""
    marker = f"/mtls/rogue-{uuid.uuid4().hex}"
    response = mtls.tls_get(marker, cert="rogue")
    assert response.status_code == 400, f"{response.status_code}: {response.text[:300]}"
    assert "SSL certificate error" in response.text
    assert not response.headers.get("Content-Type", "").startswith(PROBLEM_JSON)
    mtls.get("/echo/flush")  # a later request: its log line proves the log is written up to here
    mtls.wait_for_log_entries(lambda e: e.get("path") == "/echo/flush")
    assert not [e for e in mtls.access_log() if e.get("path") == marker], "nginx forwarded an unverified certificate"


def test_mtls_verified_certificate_of_unknown_consumer_is_401(mtls: MTLSGateway) -> None:
    body = assert_unauthorized(mtls.tls_get("/mtls/x", cert="stranger"))
    assert "not assigned" in body["detail"], body


def test_mtls_known_certificate_by_fingerprint(mtls: MTLSGateway) -> None:
    echo = echo_of(mtls.tls_get("/mtls/x", cert="fp-client"))
    assert_no_client_identity(echo, {"X-Consumer-ID": "fp-consumer", "X-Consumer-Groups": "partners", "X-Credential-ID": "fp-cert"})
    assert echo["headers"].get("x-forwarded-proto") == "https"


def test_mtls_known_certificate_by_subject_dn(mtls: MTLSGateway) -> None:
    # The DN as docs/authentication.md says to obtain it (RFC 2253 order, as nginx reports it).
    assert mtls.certs.subject_rfc2253("dn-client") == "CN=dn-client,OU=CI,O=Portcullis Tests"
    echo = echo_of(mtls.tls_get("/mtls/x", cert="dn-client"))
    assert_no_client_identity(echo, {"X-Consumer-ID": "dn-consumer", "X-Credential-ID": "dn-cert"})


SPOOFED_CERT_HEADERS = {
    "X-SSL-Client-Verify": "SUCCESS", "Ssl-Client-Verify": "SUCCESS",
    "X-SSL-Client-S-DN": "CN=dn-client,OU=CI,O=Portcullis Tests", "Ssl-Client-S-Dn": "CN=dn-client,OU=CI,O=Portcullis Tests",
    "Portcullis-Ssl-Client-Verify": "SUCCESS", "Portcullis-Ssl-Client-S-Dn": "CN=dn-client,OU=CI,O=Portcullis Tests",
    "PORTCULLIS_SSL_CLIENT_VERIFY": "SUCCESS",  # nginx drops names with underscores by default
}


def test_mtls_spoofed_headers_on_plain_http_are_401(mtls: MTLSGateway) -> None:
    fp_pem = (mtls.certs.dir / "fp-client.crt").read_text()
    headers = {**SPOOFED_CERT_HEADERS, "X-SSL-Client-Cert": requests.utils.quote(fp_pem),
               "Portcullis-Ssl-Client-Cert": requests.utils.quote(fp_pem),
               "X-SSL-Client-Fingerprint": mtls.certs.sha256_fingerprint("fp-client")}
    assert_unauthorized(mtls.get("/mtls/x", headers=headers), error=None)
    # The same over TLS without a certificate, and with a verified certificate of nobody.
    assert_unauthorized(mtls.tls_get("/mtls/x", headers=headers), error=None)
    assert_unauthorized(mtls.tls_get("/mtls/x", cert="stranger", headers=headers))


def test_keys_generate_entry_authenticates_after_reload(make_gateway: Callable[..., Gateway]) -> None:
    """`portcullis keys generate` prints a key once and the config entry holding only its
    digest; that entry, added to a consumer and reloaded, authenticates the key."""
    gw = make_gateway()
    out = subprocess.run([str(gw.binary), "keys", "generate", "--consumer", "ops", "--key-id", "ops-1"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    key = out.split("\n")[1].strip()
    entry = json.loads(out[out.index("{"):])
    assert len(key) >= 43 and key not in json.dumps(entry)
    assert entry == {"id": "ops-1", "sha256": hashlib.sha256(key.encode()).hexdigest()}
    hashed = subprocess.run([str(gw.binary), "keys", "hash"], input=key, capture_output=True, text=True,
                            timeout=30, check=True).stdout.strip()
    assert hashed == entry["sha256"]

    config = json.loads(json.dumps(gw.config))
    config["consumers"] = [{"id": "ops", "api_keys": [entry]}]
    config["routes"].insert(0, {"name": "ops", "match": {"prefix": "/ops/"}, "upstream": "echo",
                                "auth": {"methods": ["api_key"]}})
    gw.set_config(config)
    result = gw.cli("reload")
    assert result.returncode == 0, result.stderr
    ok = gw.get("/ops/x", headers={"X-API-Key": key})
    assert ok.status_code == 200
    assert ok.json()["headers"]["x-consumer-id"] == "ops"
    assert ok.json()["headers"]["x-credential-id"] == "ops-1"
    assert gw.get("/ops/x", headers={"X-API-Key": key[:-1] + ("A" if key[-1] != "A" else "B")}).status_code == 401
