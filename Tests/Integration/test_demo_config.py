"""The shipped demo config (config/portcullis.json, what `make run` serves), run as is.

Only the `echo` upstream is pointed at the test's echo server instead of 127.0.0.1:9000; every
relative path in the file (JWKS file, plugins directory) resolves as it does in the repository.
The issue 2 contract is checked here; the /private/ (issue 3) and /limited/ (issue 4) contracts
are in test_auth.py and test_rate_limit.py.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from harness import EchoUpstream, Gateway, GatewayFactory


@pytest.fixture(scope="module")
def demo(gateway_factory: GatewayFactory, echo_upstream: EchoUpstream) -> Iterator[Gateway]:
    gw = gateway_factory.create_from_repo_config(
        "config/portcullis.json", {"upstreams": {"echo": {"targets": [echo_upstream.url]}}})
    yield gw
    gateway_factory.close([gw])


def test_demo_config_checks_clean(demo: Gateway) -> None:
    result = demo.cli("check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_example_nginx_config_tests_without_warnings(demo: Gateway) -> None:
    """nginx.md: the shipped example (the snippet with its handoff locations included) passes
    `nginx -t` without a warning, variables hash included."""
    result = subprocess.run(["nginx", "-t", "-p", str(demo.nginx_prefix), "-c", str(demo.nginx_prefix / "nginx.conf"),
                             "-e", "stderr"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "[warn]" not in result.stderr and "[emerg]" not in result.stderr, result.stderr


def test_demo_echo_contract(demo: Gateway) -> None:
    """`curl -i http://127.0.0.1:8080/echo/hello`: 200, the echo JSON, and an X-Request-ID
    equal to the one the upstream saw."""
    response = demo.get("/echo/hello")
    assert response.status_code == 200, response.text[:300]
    echo = response.json()
    assert echo["path"] == "/echo/hello"
    assert response.headers["X-Request-ID"] == echo["headers"]["x-request-id"]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_demo_echo_takes_every_method_without_auth(demo: Gateway, method: str) -> None:
    response = demo.request(method, "/echo/m", data=b'{"a": 1}', headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text[:300]
    echo = response.json()
    assert echo["method"] == method
    assert echo["body"] == '{"a": 1}'


def test_demo_unknown_route_is_404_problem(demo: Gateway) -> None:
    response = demo.get("/no-such-route")
    assert response.status_code == 404
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert response.json()["request_id"] == response.headers["X-Request-ID"]
