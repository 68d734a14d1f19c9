"""Issue 11: running it in production — supervision, recycling, signals, the control client.

- Exit 78 (a worker cannot boot its generation) is not respawned in a loop and is reported.
- `scale +N` whose new workers fail to boot or are not ready in time is withdrawn, with the reason.
- A worker that stops beating (SIGSTOP) is killed and replaced after `hard_timeout_seconds`.
- Recycling after N requests under load loses no request.
- SIGUSR1 reopens the access log (logrotate): lines after it land in the new file, none lost.
- SIGQUIT stops fast; SIGTTIN / SIGTTOU scale; `scale +N/-N`; `status` table and `--json`;
  `version`; `check --print-effective` and API key expiry warnings.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from harness import Gateway, wait_until
from test_fastcgi_bounds import FCGI_BEGIN_REQUEST, FCGI_PARAMS, FCGI_STDIN, base_params, name_value, record
from test_generation_bundle import IdentityProvider, Load, live_workers
from test_pool_lifecycle import MixedClients


def master_events(gw: Gateway, name: str) -> list[dict]:
    events = []
    for line in gw.master.stderr_path.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict) and event.get("event") == name:
            events.append(event)
    return events


# -- supervision ------------------------------------------------------------------------------------


def test_worker_that_cannot_boot_is_not_respawned_in_a_loop_and_is_reported(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(workers=2, threads=1)
    bundle = gw.run_dir / "bundle.generation-1.json"
    bundle.unlink()  # what generation 1's workers boot from is gone
    victim = live_workers(gw)[0]["pid"]
    os.kill(victim, signal.SIGKILL)

    def reported() -> dict | None:
        failures = gw.status().get("worker_failures")
        return failures if failures and failures["last"].get("exit_code") == 78 else None
    failures = wait_until(reported, 15, "the boot failure in status", on_timeout=gw.diagnostics)
    assert "cannot read the configuration bundle" in failures["last"]["error"], failures
    text = gw.cli("status").stdout
    assert "last worker failure" in text and "exit 78" in text, text
    time.sleep(3)
    boots = [e for e in master_events(gw, "worker_exited") if e.get("exit_code") == 78]
    assert 1 <= len(boots) <= 3, f"{len(boots)} failed boots in ~3 s: respawned in a loop"
    assert gw.status()["worker_failures"]["respawn_delay_ms"] >= 1000
    for _ in range(5):
        assert gw.get("/echo/still-serving").status_code == 200

    # A reload writes a new bundle: the pool is whole again at once.
    assert gw.cli("reload").returncode == 0
    gw.wait_for_workers(lambda ws: len([w for w in ws if w["ready"] and w["generation"] == 2]) == 2 or None,
                        15, "two ready workers of generation 2")


def test_worker_crash_loop_backs_off_is_reported_and_recovers(make_gateway: Callable[..., Gateway]) -> None:
    """A respawn that cannot open the access log (a directory now stands at its path) exits 1
    at once: respawned with growing delays, not in a spin; `status` reports the loop; once the
    path is usable again the pool is whole."""
    gw = make_gateway(workers=2, threads=1)
    gw.access_log_path.rename(gw.access_log_path.with_suffix(".log.1"))
    gw.access_log_path.mkdir()
    (victim, survivor) = [w["pid"] for w in live_workers(gw)]
    os.kill(victim, signal.SIGKILL)

    def looping() -> dict | None:
        failures = gw.status().get("worker_failures")
        return failures if failures and failures["in_a_row"] >= 3 else None
    failures = wait_until(looping, 20, "three failures in a row", interval=0.2, on_timeout=gw.diagnostics)
    assert failures["last"]["exit_code"] == 1 and failures["respawn_delay_ms"] >= 800, failures
    assert re.search(r"crash loop: \d+ failures in a row, respawning after \d+ ms", gw.cli("status").stdout)
    loops = master_events(gw, "worker_crash_loop")
    assert loops and [e["respawn_delay_ms"] for e in loops] == sorted(e["respawn_delay_ms"] for e in loops), loops
    # operations.md: 200 ms after the first quick death, doubling with each one in a row, up to 10 s.
    assert all(e["respawn_delay_ms"] == min(10_000, 200 << (e["failures_in_a_row"] - 1)) for e in loops), loops
    quick = [e for e in master_events(gw, "worker_exited") if e.get("exit_code") == 1]
    assert len(quick) <= 5, f"{len(quick)} failed starts: respawned in a spin"
    for _ in range(5):
        assert gw.get("/echo/survivor").status_code == 200
    assert survivor in [w["pid"] for w in live_workers(gw)]

    gw.access_log_path.rmdir()
    gw.wait_for_workers(lambda ws: len([w for w in ws if w["ready"]]) == 2 or None, 30, "the pool whole again")


def test_reload_that_a_worker_does_not_prepare_in_time_is_refused(make_gateway: Callable[..., Gateway]) -> None:
    """A worker that does not answer `prepare` within `ready_timeout_seconds` (stopped here):
    nobody switches, the CLI exits 1 naming it, and the next reload succeeds."""
    gw = make_gateway({"server": {"ready_timeout_seconds": 2}}, workers=2, threads=1)
    (frozen, _) = [w["pid"] for w in live_workers(gw)]
    os.kill(frozen, signal.SIGSTOP)
    try:
        refused = gw.cli("reload")
    finally:
        os.kill(frozen, signal.SIGCONT)
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    assert refused.stderr == ("reload refused by the master:\nthe workers could not load the new configuration; the running "
                              f"configuration keeps serving\nworkers [{frozen}] did not answer within 2.0 seconds\n"), refused.stderr
    assert gw.status()["generation"] == 1 and all(w["generation"] == 1 for w in live_workers(gw))
    assert gw.get("/echo/after").status_code == 200
    again = gw.cli("reload")
    assert again.returncode == 0 and "reloaded: generation 2" in again.stdout, again.stderr
    assert all(w["generation"] == 2 for w in live_workers(gw))


def test_scale_whose_new_workers_cannot_boot_is_withdrawn_and_the_pool_keeps_serving(
        make_gateway: Callable[..., Gateway]) -> None:
    """New workers exit 78 (their generation's bundle is gone): `scale +2` is withdrawn at
    once, the CLI exits 1 with the reason, the pool keeps its two workers and loses nothing."""
    gw = make_gateway(workers=2, threads=1)
    (gw.run_dir / "bundle.generation-1.json").unlink()
    before = {w["pid"] for w in live_workers(gw)}
    with MixedClients(gw, threads=4) as clients:
        clients.wait_for(20)
        result = gw.cli("scale", "+2")
        clients.wait_for(20)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "scale to 4 workers withdrawn, the pool keeps 2" in result.stderr, result.stderr
    assert "could not start before it was ready" in result.stderr, result.stderr
    assert "cannot read the configuration bundle" in result.stderr, result.stderr
    assert clients.failures == [], clients.failures[:5]

    status = gw.status()
    assert status["desired_workers"] == 2, status
    assert status["last_scale"]["ok"] is False and status["last_scale"]["asked"] == 4, status["last_scale"]
    assert {w["pid"] for w in live_workers(gw)} == before
    (withdrawn,) = master_events(gw, "scale_withdrawn")
    assert withdrawn["from"] == 2 and withdrawn["asked"] == 4, withdrawn
    assert "last scale: to 4 workers withdrawn" in gw.cli("status").stdout
    time.sleep(2)  # not respawned in a loop: only the two new workers ever failed
    assert len([e for e in master_events(gw, "worker_exited") if e.get("exit_code") == 78]) <= 2
    assert {w["pid"] for w in live_workers(gw)} == before

    # With a bundle again (a reload writes one), the same growth succeeds.
    assert gw.cli("reload").returncode == 0
    grown = gw.cli("scale", "+2")
    assert grown.returncode == 0 and "scaled to 4 workers" in grown.stdout, grown.stderr
    assert gw.status()["last_scale"]["ok"] is True


def test_scale_whose_new_workers_are_not_ready_in_time_is_withdrawn(make_gateway: Callable[..., Gateway],
                                                                     test_root: Path) -> None:
    """The JWKS URL never answers and no key set was ever saved: a new worker is ready only
    when its first fetch gives up (about 10 s), beyond `ready_timeout_seconds` (2): withdrawn,
    while the public route keeps answering."""
    idp = IdentityProvider(test_root)
    idp.mode = "hang"
    try:
        gw = make_gateway({"server": {"ready_timeout_seconds": 2},
                           "auth": {"jwt": {"issuers": [{"issuer": "https://idp.test/", "audiences": ["api"],
                                                         "jwks_url": idp.url}]}}}, workers=1, threads=2)
        before = {w["pid"] for w in live_workers(gw)}
        with Load(gw, threads=2) as load:
            load.wait_for(20)
            started = time.monotonic()
            result = gw.cli("scale", "+1")
            took = time.monotonic() - started
            load.wait_for(20)
        assert result.returncode == 1, (result.stdout, result.stderr)
        assert "only 1 of 2 workers ready after 2 s (server.ready_timeout_seconds)" in result.stderr, result.stderr
        assert took >= 2, f"withdrawn after {took:.1f} s, before the timeout"
        assert load.failures == [], load.failures[:5]
        assert gw.status()["desired_workers"] == 1
        # The withdrawn worker leaves once its fetch gave up; the first one stays.
        gw.wait_for_workers(lambda ws: {w["pid"] for w in ws} == before or None, 20, "the withdrawn worker gone")
    finally:
        idp.close()


def test_serve_daemon_whose_workers_are_not_ready_in_time_fails_and_leaves_nothing_running(
        make_gateway: Callable[..., Gateway], test_root: Path) -> None:
    """A worker waits about 10 s for a JWKS URL that never answers; `serve --daemon` allows
    `ready_timeout_seconds` (1) + 5 s and then stops the master, so exit 1 means nothing runs."""
    idp = IdentityProvider(test_root)
    idp.mode = "hang"
    try:
        gw = make_gateway({"server": {"ready_timeout_seconds": 1},
                           "auth": {"jwt": {"issuers": [{"issuer": "https://idp.test/", "audiences": ["api"],
                                                         "jwks_url": idp.url}]}}}, workers=1, threads=1, start=False)
        # Every fetch of the key set hangs; the first worker's start-up takes longer than allowed.
        started = time.monotonic()
        result = subprocess.run([str(gw.binary), "serve", "--daemon", "--config", str(gw.config_path)],
                                capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
        took = time.monotonic() - started
        assert result.returncode == 1, (result.stdout, result.stderr)
        assert "did not get 1 workers ready within 6 s (server.ready_timeout_seconds + 5 s), stopped" in result.stderr, result.stderr
        assert 6 <= took < 30, f"returned after {took:.1f} s"
        status = gw.cli("status")
        assert status.returncode == 3 and status.stdout == "not running\n", (status.stdout, status.stderr)
    finally:
        idp.close()


def test_stopped_worker_is_killed_and_replaced_after_the_hard_timeout(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway({"server": {"hard_timeout_seconds": 2}}, workers=2, threads=1)
    victim = live_workers(gw)[0]["pid"]
    os.kill(victim, signal.SIGSTOP)
    try:
        gw.wait_for_workers(lambda ws: victim not in [w["pid"] for w in ws] and len([w for w in ws if w["ready"]]) == 2 or None,
                            20, "the stopped worker replaced")
    finally:
        try:
            os.kill(victim, signal.SIGCONT)
        except ProcessLookupError:
            pass
    (event,) = [e for e in master_events(gw, "worker_unresponsive") if e["worker_pid"] == victim]
    assert event["heartbeat_age_ms"] > 2000, event
    assert [e for e in master_events(gw, "worker_replaced") if e["worker_pid"] == victim and e["reason"] == "unresponsive"]
    for _ in range(6):
        assert gw.get("/echo/after").status_code == 200


def test_loop_stuck_in_a_request_is_logged_with_its_request_and_the_worker_replaced(
        make_gateway: Callable[..., Gateway]) -> None:
    """A FastCGI client that never reads a large answer keeps the loop's blocking write to it
    waiting (up to the 10 s send timeout): past `hard_timeout_seconds` the worker logs the
    request and the master replaces the worker."""
    gw = make_gateway({"server": {"hard_timeout_seconds": 2}}, workers=1, threads=1)
    (victim,) = [w["pid"] for w in live_workers(gw)]
    params = base_params("/echo/big") | {"QUERY_STRING": "bytes=50000000", "PORTCULLIS_REQUEST_ID": "stuck-request-1"}
    pairs = b"".join(name_value(k.encode(), v.encode()) for k, v in params.items())
    wire = record(FCGI_BEGIN_REQUEST, struct.pack(">HB5x", 1, 0)) + record(FCGI_PARAMS, pairs) + record(FCGI_PARAMS, b"") \
        + record(FCGI_STDIN, b"")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(str(gw.socket_path))
        client.sendall(wire)  # and never read
        gw.wait_for_workers(lambda ws: victim not in [w["pid"] for w in ws] and any(w["ready"] for w in ws) or None,
                            30, "the stuck worker replaced")
    (logged,) = [e for e in master_events(gw, "request_hard_timeout") if e["pid"] == victim]
    assert logged["request_id"] == "stuck-request-1" and logged["route"] == "echo", logged
    assert logged["busy_ms"] > 2000, logged
    (stuck,) = [e for e in master_events(gw, "worker_stuck") if e["worker_pid"] == victim]
    assert stuck["busy_ms"] > 3000, stuck
    assert gw.get("/echo/after").status_code == 200


def test_recycling_every_1000_requests_under_load_loses_no_request(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway({"server": {"recycle_after_requests": 1000}}, workers=2, threads=2)
    first = {w["pid"] for w in gw.status()["workers"]}
    with MixedClients(gw, threads=6) as clients:
        wait_until(lambda: len(master_events(gw, "worker_recycling")) >= 4, 240, "four recyclings",
                   interval=0.5, on_timeout=gw.diagnostics)
        clients.wait_for(50)
    assert clients.failures == [], clients.failures[:5]
    recycled = master_events(gw, "worker_recycling")
    assert all(e["requests"] >= 1000 for e in recycled), recycled
    assert first - {w["pid"] for w in gw.status()["workers"]}, "the first workers are still there"
    assert sum(clients.ok.values()) >= 4000, clients.ok
    status = gw.status()
    assert all(w["requests"] < 1000 + 500 for w in status["workers"] if "requests" in w), status["workers"]


def test_recycling_above_an_rss_limit_under_load_loses_no_request(make_gateway: Callable[..., Gateway]) -> None:
    """`recycle_above_rss_mb` at its minimum (16), below what any worker uses at rest: every
    worker is recycled as soon as it is ready, so the pool churns all the time under mixed
    GET/POST load, and still no request fails."""
    gw = make_gateway({"server": {"recycle_above_rss_mb": 16}}, workers=2, threads=2)
    first = {w["pid"] for w in gw.status()["workers"]}
    with MixedClients(gw, threads=6) as clients:
        wait_until(lambda: len(master_events(gw, "worker_recycling")) >= 6, 120, "six recyclings",
                   interval=0.5, on_timeout=gw.diagnostics)
        clients.wait_for(200, timeout=60)
    assert clients.failures == [], clients.failures[:5]
    recycled = master_events(gw, "worker_recycling")
    assert all(e["rss_bytes"] > 16 << 20 and "requests" not in e for e in recycled), recycled
    assert first <= {e["worker_pid"] for e in recycled}, "a first worker was never recycled"
    status = gw.status()
    assert not first & {w["pid"] for w in status["workers"] if not w["retiring"]}, status["workers"]
    assert status["desired_workers"] == 2
    exits = [e for e in master_events(gw, "worker_exited") if e["worker_pid"] in first]
    assert exits and all(e["expected"] and e["exit_code"] == 0 for e in exits), exits


# -- signals ------------------------------------------------------------------------------------------


def test_usr1_reopens_the_access_log_after_it_was_moved_and_loses_no_line(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(workers=2, threads=2)
    with Load(gw, threads=2) as load:
        load.wait_for(30)
        moved = gw.access_log_path.with_suffix(".log.1")
        gw.access_log_path.rename(moved)
        os.kill(gw.pid_file(), signal.SIGUSR1)
        wait_until(lambda: gw.access_log_path.exists() and gw.access_log_path.stat().st_size > 0, 10,
                   "lines in the new access log")
        load.wait_for(30)
    assert load.failures == [], load.failures[:5]
    sent = load.succeeded
    gw.stop()  # workers flush what they hold
    lines = moved.read_text().splitlines() + gw.access_log_path.read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    public = [e for e in entries if e.get("path") == "/echo/public"]
    assert len(public) == sent, f"{sent} requests answered, {len(public)} logged across both files"
    assert len(master_events(gw, "reopen_logs")) == 1


def events_in(path: Path) -> list[dict]:
    """Every line of an event log file, each of which must be one whole JSON object."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_usr1_reopens_the_master_log_and_the_access_log_after_both_were_moved(make_gateway: Callable[..., Gateway]) -> None:
    """`serve --log-file`: after logrotate moved both files, SIGUSR1 makes the master and every
    worker write their events to the new event log, and the workers their lines to the new
    access log; each line is whole, in one file or the other."""
    gw = make_gateway(workers=2, threads=2, start=False)
    event_log = gw.workdir / "portcullis.log"
    gw.serve_args = ["--log-file", str(event_log)]
    gw.start()
    workers = {w["pid"] for w in live_workers(gw)}
    with Load(gw, threads=2) as load:
        load.wait_for(30)
        moved_access = gw.access_log_path.with_suffix(".log.1")
        moved_events = event_log.with_suffix(".log.1")
        gw.access_log_path.rename(moved_access)
        event_log.rename(moved_events)
        os.kill(gw.pid_file(), signal.SIGUSR1)
        wait_until(lambda: len([e for e in events_in(event_log) if e["event"] == "access_log_reopened"]) == 2, 10,
                   "both workers' reopen events in the new event log", on_timeout=gw.diagnostics)
        wait_until(lambda: gw.access_log_path.exists() and gw.access_log_path.stat().st_size > 0, 10,
                   "lines in the new access log")
        load.wait_for(30)
    assert load.failures == [], load.failures[:5]
    sent = load.succeeded
    gw.stop()

    entries = [json.loads(line) for line in moved_access.read_text().splitlines() + gw.access_log_path.read_text().splitlines()]
    assert len([e for e in entries if e.get("path") == "/echo/public"]) == sent, f"{sent} answered"

    before, after = events_in(moved_events), events_in(event_log)
    names = lambda events, pid=None: [e["event"] for e in events if pid is None or e["pid"] == pid]
    master = gw.master.pid
    assert "master_started" in names(before, master) and "reopen_logs" not in names(before)
    assert names(after, master)[0] == "reopen_logs" and names(after, master)[-1] == "master_stopped", names(after, master)
    for pid in workers:
        assert "worker_started" in names(before, pid), pid
        assert names(after, pid) == ["access_log_reopened", "worker_stopped"], (pid, names(after, pid))
    assert gw.master.stderr_path.read_text() == "", "events bypassed --log-file"


def test_sigint_stops_gracefully_like_sigterm(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(workers=1, threads=1)
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(r=gw.get("/echo/int?delay_ms=1500", timeout=15)))
    thread.start()
    time.sleep(0.4)  # the request is now inside the worker, waiting for the upstream
    os.kill(gw.pid_file(), signal.SIGINT)
    assert gw.master.wait(15) == 0
    thread.join(15)
    assert outcome["r"].status_code == 200 and outcome["r"].json()["path"] == "/echo/int", outcome
    assert master_events(gw, "master_stopping")[-1]["fast"] is False
    # The lifecycle events carry the fields operations.md#event-log lists.
    (started,) = master_events(gw, "master_started")
    assert started["socket"] == str(gw.socket_path) and started["workers"] == 1 and started["config"] == str(gw.config_path)
    (worker,) = master_events(gw, "worker_started")
    assert worker["generation"] == 1 and worker["loops"] == 1 and worker["pid"] != started["pid"], worker
    (stopped,) = master_events(gw, "worker_stopped")
    assert stopped["pid"] == worker["pid"] and stopped["generation"] == 1 and "fast" not in stopped, stopped
    (exited,) = master_events(gw, "worker_exited")
    assert exited == exited | {"pid": started["pid"], "worker_pid": worker["pid"], "generation": 1, "exit_code": 0,
                               "signal": None, "expected": True}, exited
    assert master_events(gw, "master_stopped")[-1]["pid"] == started["pid"]
    for event in (started, worker, stopped, exited):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", event["time"]), event


def test_quit_stops_fast_and_ttin_ttou_scale(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(workers=1, threads=1)
    master = gw.pid_file()
    os.kill(master, signal.SIGTTIN)
    gw.wait_for_workers(lambda ws: len([w for w in ws if w["ready"]]) == 2 or None, 15, "two workers after SIGTTIN")
    os.kill(master, signal.SIGTTOU)
    gw.wait_for_workers(lambda ws: len(ws) == 1 or None, 15, "one worker after SIGTTOU")
    # Never below one worker; a scale file without a number 1...256 is ignored.
    os.kill(master, signal.SIGTTOU)
    for text in ("0\n", "257\n", "many\n"):
        (gw.run_dir / "scale").write_text(text)
        os.kill(master, signal.SIGUSR2)
    time.sleep(1)  # several master loops (250 ms each)
    assert gw.status()["desired_workers"] == 1 and len(live_workers(gw)) == 1, gw.status()
    os.kill(master, signal.SIGQUIT)
    assert gw.master.wait(10) == 0
    assert master_events(gw, "master_stopping")[-1]["fast"] is True
    assert not (gw.run_dir / "portcullis.pid").exists()


# -- the control client ---------------------------------------------------------------------------


def test_status_scale_relative_and_version(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(workers=1, threads=1)
    for _ in range(5):
        assert gw.get("/echo/counted").status_code == 200
    status = gw.status()
    (worker,) = status["workers"]
    assert worker["state"] == "ready" and worker["rss_bytes"] > 1 << 20, worker
    wait_until(lambda: gw.status()["workers"][0].get("requests", 0) >= 5, 5, "requests counted")
    assert status["rate_limit_table"]["slots"] > 0
    text = gw.cli("status").stdout
    assert re.search(rf"\b{worker['pid']}\s+1\s+ready\s+\d+\s+\d+\s+[\d.]+ MiB", text), text
    assert 0 <= gw.status()["workers"][0]["busy_threads"] <= 1

    up = gw.cli("scale", "+2")
    assert up.returncode == 0 and "scaled to 3 workers" in up.stdout, up.stderr
    assert len([w for w in gw.status()["workers"] if w["ready"] and not w["retiring"]]) == 3
    down = gw.cli("scale", "-1")
    assert down.returncode == 0 and "scaled to 2 workers" in down.stdout, down.stderr
    too_far = gw.cli("scale", "-5")
    assert too_far.returncode == 1 and "1...256" in too_far.stderr, too_far.stderr
    assert gw.cli("scale", "x").returncode == 64

    for spelling in (["version"], ["--version"]):
        version = subprocess.run([str(gw.binary), *spelling], capture_output=True, text=True, timeout=30)
        assert version.returncode == 0 and re.fullmatch(r"portcullis \d+\.\d+\.\d+\n", version.stdout), (spelling, version.stdout)

    stopped = gw.cli("stop")
    assert stopped.returncode == 0 and stopped.stdout == f"stopped master {status['master_pid']}\n", (stopped.stdout, stopped.stderr)
    assert gw.cli("status").stdout == "not running\n"


def test_workers_allocate_with_mimalloc(make_gateway: Callable[..., Gateway]) -> None:
    """docs/dependencies.md: mimalloc is linked ahead of libc and serves the whole process."""
    gw = make_gateway(workers=1, threads=1)
    verbose = subprocess.run([str(gw.binary), "--version"], capture_output=True, text=True, timeout=30,
                             env={**os.environ, "MIMALLOC_VERBOSE": "1"})
    assert verbose.returncode == 0 and "mimalloc: process init" in verbose.stderr, verbose.stderr
    worker = gw.status()["workers"][0]["pid"]
    maps = Path(f"/proc/{worker}/maps").read_text()
    assert "libmimalloc.so" in maps, "the worker has no mimalloc mapped"
    assert gw.get("/echo/x").status_code == 200


def test_check_prints_the_effective_configuration_and_warns_about_expiring_keys(make_gateway: Callable[..., Gateway]) -> None:
    now = int(time.time())
    key = lambda name, expires: {"id": name, "sha256": hashlib.sha256(name.encode()).hexdigest(), "expires": expires}
    gw = make_gateway({"consumers": [{"id": "c", "api_keys": [key("gone", now - 60), key("soon", now + 3 * 86400 - 3600),
                                                              key("later", now + 90 * 86400)]}]}, workers=1, threads=1)
    result = gw.cli("check", "--print-effective")
    assert result.returncode == 0, result.stderr
    effective = json.loads(result.stdout)
    assert effective["server"]["socket"] == str(gw.socket_path)
    assert effective["server"]["workers"] == gw.workers and effective["server"]["hard_timeout_seconds"] == 60
    assert effective["upstreams"]["echo"]["connect_timeout_ms"] == 1000
    # Resilience defaults are shown as resolved (docs/upstreams.md).
    assert effective["upstreams"]["echo"]["retries"]["attempts"] == 2
    assert effective["upstreams"]["echo"]["circuit_breaker"]["consecutive_failures"] == 5
    assert effective["upstreams"]["echo"]["balancer"] == "round_robin" and effective["upstreams"]["echo"]["max_in_flight"] is None
    # One value for scripts: a string as is, anything else as JSON.
    assert gw.cli("check", "--field", "/server/socket").stdout == f"{gw.socket_path}\n"
    assert gw.cli("check", "--field", "/server/workers").stdout == f"{gw.workers}\n"
    assert json.loads(gw.cli("check", "--field", "/upstreams/echo").stdout)["connect_timeout_ms"] == 1000
    missing = gw.cli("check", "--field", "/server/nope")
    assert missing.returncode == 1 and "no /server/nope in the effective configuration" in missing.stderr, missing.stderr
    assert gw.cli("check", "--field", "server").returncode == 64
    assert 'consumer "c" API key "gone" expired at' in result.stderr, result.stderr
    assert 'consumer "c" API key "soon" expires at' in result.stderr and "(in 2 days)" in result.stderr, result.stderr
    assert "later" not in result.stderr
    assert "later" in gw.cli("check", "--expiry-warning-days", "100").stderr

    listed = gw.status()["api_keys_expiring"]
    assert [(k["key_id"], k["expired"]) for k in listed] == [("gone", True), ("soon", False)], listed
    # status --field: one value of the --json report, as check --field does for the configuration.
    report = gw.status()
    assert gw.cli("status", "--field", "/workers/0/pid").stdout == f"{report['workers'][0]['pid']}\n"
    assert json.loads(gw.cli("status", "--field", "/api_keys_expiring/1").stdout)["key_id"] == "soon"
    missing = gw.cli("status", "--field", "/workers/9")
    assert missing.returncode == 1 and "no /workers/9 in the status report" in missing.stderr, missing.stderr
    assert gw.cli("status", "--field", "workers").returncode == 64
    assert "api key c/gone expired" in gw.cli("status").stdout

    keys = [str(gw.binary), "keys", "generate", "--consumer", "c", "--key-id", "k", "--expires"]
    past = subprocess.run(keys + ["2020-01-01T00:00:00Z"], capture_output=True, text=True, timeout=30)
    assert past.returncode == 64 and "in the past" in past.stderr, past.stderr
    future = subprocess.run(keys + [str(now + 86400)], capture_output=True, text=True, timeout=30)
    assert future.returncode == 0 and f'"expires": {now + 86400}' in future.stdout, future.stdout


def test_cli_exit_codes_when_nothing_runs(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(workers=1, threads=1, start=False)
    for command in (["status"], ["reload"], ["scale", "+1"], ["stop"], ["metrics"]):
        result = gw.cli(*command)
        assert result.returncode == 3, (command, result.returncode, result.stdout, result.stderr)
    assert gw.cli("status").stdout == "not running\n"
    assert json.loads(gw.cli("status", "--json").stdout) == {"running": False}
    field = gw.cli("status", "--field", "/workers/0/pid")
    assert (field.returncode, field.stdout) == (3, "") and "not running" in field.stderr, field
    checked = gw.cli("check")
    assert checked.returncode == 0, checked.stderr
    assert re.fullmatch(rf"{re.escape(str(gw.config_path))}: ok \(\d+ routes, \d+ upstreams\)\n", checked.stdout), checked.stdout

    # Usage errors: 64, before anything is looked up.
    for command in (["scale", "x"], ["scale", "0"], ["scale", "257"], ["scale"], ["scale", "1", "2"],
                    ["serve", "--workers", "0"], ["serve", "--threads", "1025"], ["stop", "--nope"]):
        result = gw.cli(*command)
        assert result.returncode == 64, (command, result.returncode, result.stdout, result.stderr)
    keys = lambda *args, stdin="": subprocess.run([str(gw.binary), "keys", *args], input=stdin, capture_output=True,
                                                  text=True, timeout=30)
    assert keys("generate", "--consumer", "c", "--key-id", "k", "--expires", "tomorrow").returncode == 64
    assert keys("generate", "--consumer", "", "--key-id", "k").returncode == 64
    assert keys("hash", stdin="\n").returncode == 64
    assert keys("hash", "--config", str(gw.config_path), stdin="k").returncode == 64, "keys takes no --config"
    hashed = keys("hash", stdin="demo-key-change-me\r\n")
    assert hashed.returncode == 0 and hashed.stdout == hashlib.sha256(b"demo-key-change-me").hexdigest() + "\n", hashed.stdout

    bad = Path(gw.config_path)
    bad.write_text("{")
    assert gw.cli("check").returncode == 1
    # The configuration is validated before the master is looked for.
    refused = gw.cli("reload")
    assert refused.returncode == 1 and refused.stderr.startswith("reload refused, the running configuration keeps serving:\n"), refused.stderr
