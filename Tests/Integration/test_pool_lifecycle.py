"""Issue 2, worker pool: reloads and scaling under load lose no request, whatever the method.

nginx keeps its FastCGI connections (the shipped `fastcgi_keep_conn on`): a reload swaps the
configuration inside the running workers, and a retiring worker serves what it accepted and
hands its idle kept connections to a surviving one, so POSTs, which nginx never retries, must
see zero failures too.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from typing import Callable

from harness import BackgroundClients, Gateway, wait_until


class MixedClients(BackgroundClients):
    """Client threads alternating GET and POST (with a body whose digest the echo checks)."""

    def __init__(self, gateway: Gateway, threads: int = 6):
        super().__init__(threads, join_timeout=10)
        self.gateway = gateway

    def kind(self, index: int, n: int) -> str:
        return "POST" if n % 2 else "GET"

    def send(self, kind: str, index: int, n: int) -> str | None:
        if kind == "POST":
            body = f"client {index} request {n} ".encode() * 50
            r = self.gateway.request("POST", "/echo/lifecycle", data=body, timeout=10,
                                     headers={"Content-Type": "application/octet-stream"})
            good = r.status_code == 200 and r.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
        else:
            r = self.gateway.get("/echo/lifecycle", timeout=10)
            good = r.status_code == 200
        return None if good else f"{r.status_code} {r.text[:200]}"


def live_worker_pids(gw: Gateway) -> set[int]:
    return {w["pid"] for w in gw.status()["workers"] if not w.get("retiring")}


def run_under_load(gw: Gateway, action: Callable[[int], None], rounds: int) -> MixedClients:
    with MixedClients(gw) as clients:
        clients.wait_for(30)
        for i in range(rounds):
            action(i)
            clients.wait_for(30)
    return clients


def test_reloads_under_mixed_load_lose_no_request(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(workers=2, threads=4)
    generation = gw.status()["generation"]

    def reload(_: int) -> None:
        result = gw.cli("reload")
        assert result.returncode == 0, result.stderr

    clients = run_under_load(gw, reload, rounds=5)
    assert clients.failures == [], clients.failures[:5]
    assert clients.ok["POST"] > 50 and clients.ok["GET"] > 50, clients.ok
    wait_until(lambda: gw.status()["generation"] == generation + 5 and
               all(w["generation"] == generation + 5 for w in gw.status()["workers"]), 30, "old generations gone")


def test_scaling_under_mixed_load_loses_no_request(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(workers=2, threads=4)

    def scale(i: int) -> None:
        target = 3 if i % 2 == 0 else 1
        result = gw.cli("scale", str(target))
        assert result.returncode == 0, result.stderr
        assert f"scaled to {target} workers" in result.stdout
        wait_until(lambda: len(live_worker_pids(gw)) == target, 10, f"{target} live workers")

    clients = run_under_load(gw, scale, rounds=4)
    assert clients.failures == [], clients.failures[:5]
    assert clients.ok["POST"] > 40, clients.ok


def test_scale_refuses_out_of_range_and_stopped_gateway(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(workers=1, threads=2)
    bad = gw.cli("scale", "0")
    assert bad.returncode != 0
    assert "1...256" in bad.stderr
    gw.stop()
    stopped = gw.cli("scale", "2")
    assert stopped.returncode == 3
    assert "not running" in stopped.stderr


def test_reload_whose_workers_cannot_load_it_keeps_the_running_generation(make_gateway: Callable[..., Gateway]) -> None:
    """A config the master accepts but its workers cannot run (an access log in a directory that
    does not exist) must not take the gateway down: every worker prepares the new configuration
    beside the running one, one failure aborts the switch everywhere, the reload reports the
    workers' reason and the same workers keep serving the old configuration."""
    gw = make_gateway(workers=2, threads=2)
    before = gw.status()
    config = json.loads(json.dumps(gw.config))
    config["log"] = {"access_log": str(gw.workdir / "no-such-dir" / "access.log")}
    gw.write_raw_config(json.dumps(config))  # bypasses the harness's own access-log path
    result = gw.cli("reload")
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "the workers could not load the new configuration" in result.stderr
    assert "cannot open access log" in result.stderr and "no-such-dir" in result.stderr
    after = gw.status()
    assert after["generation"] == before["generation"]
    live = {w["pid"] for w in after["workers"] if not w.get("retiring")}
    assert live == {w["pid"] for w in before["workers"]}
    for _ in range(5):
        assert gw.get("/echo/still-serving").status_code == 200


def test_reload_that_changes_server_workers_grows_and_shrinks_the_pool_under_load(
        make_gateway: Callable[..., Gateway]) -> None:
    """Without `serve --workers`, `server.workers` sizes the pool: a reload that changes it
    grows (judged like `scale`: `last_scale`) and shrinks the pool, losing no request."""
    gw = make_gateway(workers=1, threads=1, start=False)
    gw.size_pool_on_command_line = False
    gw.start()
    config = json.loads(json.dumps(gw.config))
    with MixedClients(gw) as clients:
        clients.wait_for(20)
        config["server"]["workers"] = 3
        gw.set_config(config)
        grown = gw.cli("reload")
        assert grown.returncode == 0, grown.stderr
        gw.wait_for_workers(lambda ws: len([w for w in ws if w["ready"] and not w.get("retiring")]) == 3 or None,
                            30, "three ready workers after the reload")
        judged = wait_until(lambda: gw.status().get("last_scale"), 10, "the growth judged")
        assert (judged["ok"], judged["workers"], judged["asked"]) == (True, 3, 3), judged
        clients.wait_for(20)
        config["server"]["workers"] = 1
        gw.set_config(config)
        shrunk = gw.cli("reload")
        assert shrunk.returncode == 0, shrunk.stderr
        gw.wait_for_workers(lambda ws: len(ws) == 1 and ws[0]["ready"] or None, 30, "one worker after the second reload")
        clients.wait_for(20)
    assert clients.failures == [], clients.failures[:5]
    status = gw.status()
    assert status["desired_workers"] == 1 and status["generation"] == 3, status


def test_respawned_worker_runs_its_generation_config_not_the_edited_file(make_gateway: Callable[..., Gateway]) -> None:
    """The config file is edited (not reloaded) and a worker is killed: its replacement serves
    the configuration its generation was validated with, like its siblings."""
    gw = make_gateway(workers=1, threads=2)
    config = json.loads(json.dumps(gw.config))
    config["routes"] = [{"name": "fresh", "match": {"prefix": "/fresh/"}, "upstream": "echo"}]
    gw.set_config(config)  # on disk only
    (victim,) = live_worker_pids(gw)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: (live_worker_pids(gw) - {victim}) or None, 10, "a replacement worker")
    assert gw.status()["generation"] == 1
    for _ in range(4):
        assert gw.get("/echo/old-config").status_code == 200
        assert gw.get("/fresh/x").status_code == 404
