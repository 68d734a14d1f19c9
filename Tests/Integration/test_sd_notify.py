"""Issue 11, item 8: `Type=notify` under systemd without libsystemd.

A Python datagram socket stands in for systemd's NOTIFY_SOCKET (a path, or `@name` in the
abstract namespace) and records each message with the sender's pid (SO_PASSCRED), against the
real `portcullis serve`: READY=1 once the first generation is ready, RELOADING=1 / READY=1
around every reload (refused ones too), STOPPING=1 on stop, MAINPID from `serve --daemon`.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

from harness import Gateway, wait_until
from test_generation_bundle import live_workers


class NotifySocket:
    """What systemd listens on: each datagram as (sender pid, {KEY: value})."""

    def __init__(self, address: str):
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[int, dict[str, str]]] = []
        self.lock = threading.Lock()
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._receive, daemon=True)
        self.thread.start()

    def _receive(self) -> None:
        credentials = struct.calcsize("iII")
        while not self.closed.is_set():
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(credentials))
            except TimeoutError:
                continue
            except OSError:
                return
            pid = next(struct.unpack("iII", d[:credentials])[0] for level, kind, d in ancillary
                       if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS)
            fields = dict(line.split("=", 1) for line in data.decode().split("\n"))
            with self.lock:
                self.messages.append((pid, fields))

    def since(self, start: int) -> list[tuple[int, dict[str, str]]]:
        with self.lock:
            return self.messages[start:]

    def wait_for(self, key: str, start: int = 0, timeout: float = 30) -> tuple[int, dict[str, str]]:
        """The first message from index `start` on that sets `key`."""
        return wait_until(lambda: next((m for m in self.since(start) if key in m[1]), None), timeout,
                          f"{key} on {self.address}")

    def close(self) -> None:
        self.closed.set()
        self.sock.close()
        if not self.address.startswith("@"):
            Path(self.address).unlink(missing_ok=True)


def environment_of(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(p.decode(errors="replace").split("=", 1) for p in pairs if b"=" in p)


def test_serve_notifies_ready_reloading_and_stopping_on_a_path_socket(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(workers=2, threads=1, start=False)
    notify = NotifySocket(str(gw.workdir / "notify.sock"))
    try:
        gw.master_env = {**os.environ, "NOTIFY_SOCKET": notify.address}
        gw.start()
        master = gw.master.pid
        sender, ready = notify.wait_for("READY")
        assert sender == master and ready["READY"] == "1" and ready["MAINPID"] == str(master), (sender, ready)
        assert ready["STATUS"] == "generation 1, 2 workers ready", ready
        assert len(notify.since(0)) == 1, notify.since(0)
        # Only the main process may notify: the workers do not inherit the socket.
        for worker in live_workers(gw):
            assert "NOTIFY_SOCKET" not in environment_of(worker["pid"])

        mark = len(notify.since(0))
        assert gw.cli("reload").returncode == 0
        sender, reloading = notify.wait_for("RELOADING", mark)
        assert sender == master and int(reloading["MONOTONIC_USEC"]) > 0, reloading
        _, ready = notify.wait_for("READY", mark)
        assert ready["STATUS"] == "generation 2, 2 workers ready", ready
        assert [list(m) for _, m in notify.since(mark)] == [["RELOADING", "MONOTONIC_USEC"], ["READY", "STATUS", "MAINPID"]]

        # A refused reload ends ready too: the running configuration keeps serving.
        mark = len(notify.since(0))
        gw.write_raw_config("{")
        os.kill(master, signal.SIGHUP)
        notify.wait_for("READY", mark)
        assert [next(iter(m)) for _, m in notify.since(mark)] == ["RELOADING", "READY"]
        assert gw.status()["last_reload"]["ok"] is False

        mark = len(notify.since(0))
        gw.master.send(signal.SIGTERM)
        sender, stopping = notify.wait_for("STOPPING", mark)
        assert sender == master and stopping == {"STOPPING": "1"}
        assert gw.master.wait(30) == 0
    finally:
        notify.close()


def test_serve_daemon_hands_mainpid_to_the_master_on_an_abstract_socket(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(workers=1, threads=1, start=False)
    notify = NotifySocket(f"@portcullis-test-{uuid.uuid4().hex}")
    master = None
    try:
        started = subprocess.run([str(gw.binary), "serve", "--daemon", "--config", str(gw.config_path)],
                                 env={**os.environ, "NOTIFY_SOCKET": notify.address}, capture_output=True, text=True,
                                 timeout=90, stdin=subprocess.DEVNULL)
        assert started.returncode == 0, started.stdout + started.stderr
        master = gw.pid_file()
        # From `serve --daemon` (the unit's main process until then): the master takes over ...
        handover = notify.wait_for("MAINPID")
        assert handover[1] == {"MAINPID": str(master)} and handover[0] != master, handover
        # ... and, once its worker is ready, says so itself.
        sender, ready = notify.wait_for("READY")
        assert sender == master and ready["MAINPID"] == str(master), (sender, ready)
        assert notify.since(0).index((sender, ready)) > notify.since(0).index(handover)
        stopped = gw.cli("stop")
        assert stopped.returncode == 0, stopped.stderr
        sender, _ = notify.wait_for("STOPPING")
        assert sender == master
    finally:
        notify.close()
        if master is not None:
            try:
                os.kill(master, signal.SIGKILL)
            except ProcessLookupError:
                pass
