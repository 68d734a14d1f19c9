"""pytest fixtures: the gateway binary, an echo upstream, gateway and redis factories.

Environment:
    PORTCULLIS_BIN       gateway binary (default: .build/debug/portcullis)
    PORTCULLIS_KEEP_TMP  1 keeps each run's temporary directory (configs and process logs)
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    REPO_ROOT, EchoUpstream, Gateway, GatewayFactory, RedisServer, free_port, keep_temp_dirs,
)


@pytest.fixture(scope="session")
def portcullis_bin() -> Path:
    binary = Path(os.environ.get("PORTCULLIS_BIN", REPO_ROOT / ".build/debug/portcullis")).resolve()
    if not os.access(binary, os.X_OK):
        pytest.fail(f"gateway binary {binary} is missing: run `swift build` (or set PORTCULLIS_BIN)")
    if shutil.which("nginx") is None:
        pytest.fail("nginx is not installed: run `make deps`")
    return binary


@pytest.fixture(scope="session")
def test_root() -> Iterator[Path]:
    """One private directory for the whole run (short path: unix socket paths are limited)."""
    root = Path(tempfile.mkdtemp(prefix="portcullis-it-", dir="/tmp"))
    yield root
    if keep_temp_dirs():
        print(f"\nintegration test files kept in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def echo_upstream(test_root: Path) -> Iterator[EchoUpstream]:
    echo = EchoUpstream(test_root).start()
    yield echo
    echo.stop()


@pytest.fixture(scope="session")
def dead_upstream_url() -> str:
    """A loopback URL where nothing listens (connections are refused)."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(scope="session")
def gateway_factory(portcullis_bin: Path, echo_upstream: EchoUpstream, dead_upstream_url: str,
                    test_root: Path) -> Iterator[GatewayFactory]:
    """Session-wide factory; module fixtures use it for gateways shared by several tests."""
    factory = GatewayFactory(portcullis_bin, echo_upstream, dead_upstream_url, test_root)
    yield factory
    factory.close()


@pytest.fixture
def make_gateway(gateway_factory: GatewayFactory) -> Iterator[Callable[..., Gateway]]:
    """``make_gateway(overrides=None, *, config=None, workers=2, threads=4, keepalive=None, start=True)``:
    a gateway of this test only, stopped when the test ends."""
    created: list[Gateway] = []

    def make(*args: Any, start: bool = True, **kwargs: Any) -> Gateway:
        gateway = gateway_factory.create(*args, start=False, **kwargs)
        created.append(gateway)  # registered before starting, so a failed start is cleaned up too
        if start:
            gateway.start()
        return gateway

    yield make
    gateway_factory.close(created)


@pytest.fixture
def make_redis(test_root: Path) -> Iterator[Callable[..., RedisServer]]:
    """``make_redis(**options)``: a private redis-server on a free port (``options`` as for
    ``RedisServer``), stopped when the test ends."""
    servers: list[RedisServer] = []

    def make(**options: Any) -> RedisServer:
        workdir = Path(tempfile.mkdtemp(prefix="redis-", dir=test_root))
        server = RedisServer(workdir, **options)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.stop()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "run_last: run after every other test of the session (a long idle wait then "
                                       "overlaps the rest of the run; its fixtures must be session-scoped)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `run_last` go to the end, in their order (a stable sort)."""
    items.sort(key=lambda item: item.get_closest_marker("run_last") is not None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """On failure, attach the tails of every live gateway's and nginx's output to the report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        factory = item.funcargs.get("gateway_factory") if hasattr(item, "funcargs") else None
        if factory is None and hasattr(item, "_request"):
            try:
                factory = item._request.getfixturevalue("gateway_factory")  # noqa: SLF001
            except Exception:  # noqa: BLE001 (best effort: diagnostics only)
                factory = None
        for gateway in getattr(factory, "gateways", []):
            report.sections.append((f"{gateway.name} output", gateway.diagnostics()))
