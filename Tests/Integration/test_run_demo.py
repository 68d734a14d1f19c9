"""`make run` (scripts/run-demo.sh): the demo stack serves and stops as the README says.

The script runs as `make run` does but without the build (SKIP_BUILD=1, the tested binary),
on free ports and with a copy of the demo config whose socket and runtime directory are this
test's, so it finds the socket only through `portcullis check --field /server/socket`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import socket
import tempfile
from pathlib import Path

import grpc
import requests

from harness import REPO_ROOT, WS_TEXT, ManagedProcess, WebSocketClient, free_port, wait_until

DEMO_KEY = "demo-key-change-me"


class Demo:
    """scripts/run-demo.sh on free ports, in a session of its own (its pid is its process group)."""

    def __init__(self, portcullis_bin: Path, test_root: Path):
        work = Path(tempfile.mkdtemp(prefix="demo-", dir=test_root))
        shutil.copytree(REPO_ROOT / "config", work / "config")
        shutil.copytree(REPO_ROOT / "plugins", work / "plugins")
        echo_port, listen = free_port(), f"127.0.0.1:{free_port()}"
        grpc_port, grpc_listen = free_port(), f"127.0.0.1:{free_port()}"
        config_path = work / "config/portcullis.json"
        config = json.loads(config_path.read_text())
        config["upstreams"]["echo"]["targets"] = [f"http://127.0.0.1:{echo_port}"]
        config["upstreams"]["grpc_echo"]["targets"] = [f"http://127.0.0.1:{grpc_port}"]
        config["server"]["socket"] = "../run/demo.sock"  # not the default name: found, not guessed
        config_path.write_text(json.dumps(config))

        env = {**os.environ, "SKIP_BUILD": "1", "PORTCULLIS_BIN": str(portcullis_bin), "CONFIG": str(config_path),
               "LISTEN": listen, "ECHO_PORT": str(echo_port), "GRPC_LISTEN": grpc_listen, "GRPC_PORT": str(grpc_port)}
        self.work, self.listen, self.echo_port, self.grpc_port, self.grpc_listen = work, listen, echo_port, grpc_port, grpc_listen
        self.process = ManagedProcess("run-demo", [str(REPO_ROOT / "scripts/run-demo.sh")], work, env=env).start()
        wait_until(lambda: self.process.ensure_running("starting") or requests.get(f"http://{listen}/echo/hello", timeout=2).status_code == 200,
                   60, "the demo on " + listen, on_timeout=self.process.output_tail)

    def pid_of(self, marker: str) -> int:
        """The pid of the demo's process whose command line contains ``marker``."""
        return next(int(line.split()[0]) for line in subprocess.run(["ps", "-eo", "pid,pgid,args"], capture_output=True, text=True).stdout.splitlines()[1:]
                    if line.split()[1] == str(self.process.pid) and marker in line)

    def assert_everything_stopped(self) -> None:
        assert not (self.work / "run/portcullis.pid").exists(), "the gateway was not stopped"
        # The echo upstream, the gRPC service and nginx (both listeners) are gone too.
        for port in (self.echo_port, self.grpc_port, int(self.listen.rsplit(":", 1)[1]), int(self.grpc_listen.rsplit(":", 1)[1])):
            with socket.socket() as probe:
                assert probe.connect_ex(("127.0.0.1", port)) != 0, f"something still listens on {port}"


def test_run_demo_serves_the_demo_and_stops_everything_on_sigterm(portcullis_bin: Path, test_root: Path) -> None:
    demo = Demo(portcullis_bin, test_root)
    listen, work, grpc_port, grpc_listen = demo.listen, demo.work, demo.grpc_port, demo.grpc_listen
    try:
        assert requests.get(f"http://{listen}/echo/hello", timeout=5).json()["path"] == "/echo/hello"
        assert (work / "run/demo.sock").is_socket()
        # The WebSocket and gRPC examples (docs/protocols.md): nginx has the generated upstreams
        # and the gRPC listener.
        ws = WebSocketClient(int(listen.rsplit(":", 1)[1]), "/ws/", {"X-API-Key": DEMO_KEY})
        assert ws.accepted and ws.exchange("hi") == (WS_TEXT, b"hi"), (ws.status, ws.headers)
        ws.close()
        wait_until(lambda: socket.create_connection(("127.0.0.1", grpc_port), timeout=1), 30, "the gRPC example service")
        with grpc.insecure_channel(grpc_listen) as channel:
            answer = channel.unary_unary("/portcullis.demo.Echo/Say")(b"hello", metadata=[("x-api-key", DEMO_KEY)], timeout=10)
        assert json.loads(answer)["metadata"]["x-consumer-id"] == "demo"
        demo.process.send(signal.SIGTERM)
        assert demo.process.wait(60) == 0, demo.process.output_tail()
        demo.assert_everything_stopped()
    finally:
        demo.process.stop()


def test_run_demo_stops_everything_and_exits_0_on_ctrl_c(portcullis_bin: Path, test_root: Path) -> None:
    """Ctrl-C signals the terminal's whole process group: the gateway and nginx handle SIGINT
    themselves and may end before the script's trap runs; still a clean stop, exit 0."""
    demo = Demo(portcullis_bin, test_root)
    try:
        os.killpg(demo.process.pid, signal.SIGINT)
        assert demo.process.wait(60) == 0, demo.process.output_tail()
        assert "a process exited" not in demo.process.output_tail()
        demo.assert_everything_stopped()
    finally:
        demo.process.stop()


def test_run_demo_stops_the_others_and_exits_1_when_one_of_them_dies(portcullis_bin: Path, test_root: Path) -> None:
    demo = Demo(portcullis_bin, test_root)
    try:
        os.kill(demo.pid_of("echo_upstream.py"), signal.SIGKILL)
        assert demo.process.wait(60) == 1, demo.process.output_tail()
        assert "a process exited (status 137); stopping the others" in demo.process.output_tail()
        demo.assert_everything_stopped()
    finally:
        demo.process.stop()


def test_run_demo_kills_a_process_that_does_not_stop_within_10_s(portcullis_bin: Path, test_root: Path) -> None:
    """A stop never hangs: a stopped (SIGSTOP) echo upstream cannot act on SIGTERM, so after
    10 s the script kills it, names it, and still exits 0 with everything gone."""
    demo = Demo(portcullis_bin, test_root)
    try:
        os.kill(demo.pid_of("echo_upstream.py"), signal.SIGSTOP)
        demo.process.send(signal.SIGTERM)
        assert demo.process.wait(60) == 0, demo.process.output_tail()
        assert re.search(r"run-demo: python3[.\d]* did not stop within 10 s: killed", demo.process.output_tail()), demo.process.output_tail()
        demo.assert_everything_stopped()
    finally:
        demo.process.stop()
