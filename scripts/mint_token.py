#!/usr/bin/env python3
"""Mint a demo JWT for the tour and the benchmark (demo keys only).

    scripts/mint_token.py hs256 [--sub alice] [--ttl 3600]
    scripts/mint_token.py rs256 [--key config/demo-rs256-private.pem] [--kid demo-rs256]
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

DEMO_SECRET = b"demo-hs256-secret-change-me-0123456789"
ROOT = Path(__file__).resolve().parents[1]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(alg: str, sub: str, ttl: int, key_path: Path, kid: str, scope: str) -> str:
    now = int(time.time())
    header = {"alg": alg.upper(), "typ": "JWT", "kid": kid if alg == "rs256" else "demo-hs256"}
    claims = {"iss": "portcullis-demo", "aud": "portcullis", "sub": sub, "iat": now, "exp": now + ttl, "scope": scope}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}".encode()
    if alg == "hs256":
        signature = hmac.new(DEMO_SECRET, signing_input, hashlib.sha256).digest()
    else:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input.decode()}.{b64url(signature)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("alg", choices=["hs256", "rs256"])
    parser.add_argument("--sub", default="alice")
    parser.add_argument("--ttl", type=int, default=3600)
    parser.add_argument("--scope", default="read write")
    parser.add_argument("--key", type=Path, default=ROOT / "config" / "demo-rs256-private.pem")
    parser.add_argument("--kid", default="demo-rs256")
    args = parser.parse_args()
    print(mint(args.alg, args.sub, args.ttl, args.key, args.kid, args.scope))


if __name__ == "__main__":
    main()
