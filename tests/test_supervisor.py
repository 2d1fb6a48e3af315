"""`trafficrisk run`'s supervisor: real processes that die, are restarted, or make it give up."""

from __future__ import annotations

import io
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from conftest import free_port, wait_for, worker_env
from trafficrisk.supervisor import ProcfileError, Supervisor, read_procfile, systemd_units
from trafficrisk.workers.store import Store

PROCFILES = [
    (
        "two lines",
        "web: trafficrisk web\ndetect: trafficrisk worker detect\n",
        {"web": "trafficrisk web", "detect": "trafficrisk worker detect"},
    ),
    ("comments and blanks", "# the fleet\n\nweb:   trafficrisk web  \n", {"web": "trafficrisk web"}),
    ("not name: command", "web trafficrisk web\n", "expected 'name: command'"),
    ("a name twice", "web: a\nweb: b\n", "'web' appears twice"),
    ("empty", "# nothing\n", "no processes"),
]


@pytest.mark.parametrize(
    ("text", "expected"), [row[1:] for row in PROCFILES], ids=[row[0] for row in PROCFILES]
)
def test_read_procfile(tmp_path: Path, text: str, expected: dict[str, str] | str) -> None:
    path = tmp_path / "Procfile"
    path.write_text(text)
    if isinstance(expected, str):
        with pytest.raises(ProcfileError, match=expected):
            read_procfile(path)
    else:
        assert read_procfile(path) == expected


def python(code: str) -> str:
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"


def supervise(entries: dict[str, str]) -> tuple[Supervisor, io.StringIO, threading.Thread, list[int]]:
    out = io.StringIO()
    supervisor = Supervisor(entries, {"PATH": "/usr/bin:/bin"}, out, backoff_start_s=0.05)
    status: list[int] = []
    thread = threading.Thread(target=lambda: status.append(supervisor.run()), daemon=True)
    thread.start()
    return supervisor, out, thread, status


def test_a_process_that_dies_is_restarted_and_logged_by_name(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    # Dies with status 3 on its first start, then runs until stopped.
    flaky = python(
        f"import pathlib, sys, time\np = pathlib.Path({str(marker)!r})\n"
        "first = not p.exists()\np.write_text('x')\nprint('up', flush=True)\n"
        "sys.exit(3) if first else time.sleep(60)"
    )
    steady = python("import time; print('steady', flush=True); time.sleep(60)")
    supervisor, out, thread, status = supervise({"flaky": flaky, "steady": steady})
    wait_for(lambda: out.getvalue().count("flaky  | up") == 2, 20, "flaky to start twice", out.getvalue)
    supervisor.stopping.set()
    thread.join(30)
    log = out.getvalue()
    assert "flaky  | exited with status 3; restarting in 0.05 s" in log
    assert log.count("steady | started with pid") == 1  # the others go on untouched
    assert status == [0]


def test_one_that_keeps_dying_makes_the_supervisor_give_up_with_status_1() -> None:
    steady = python("import time; time.sleep(60)")
    supervisor, out, thread, status = supervise({"broken": python("raise SystemExit(5)"), "steady": steady})
    thread.join(60)
    assert status == [1]
    assert "broken | exited with status 5, 5 times in 120 s: giving up, stopping everything" in out.getvalue()
    steady_proc = supervisor.processes[1].proc
    assert steady_proc is not None and steady_proc.poll() is not None  # stopped with it


def test_systemd_units_restart_on_failure() -> None:
    units = systemd_units(
        {"web": "trafficrisk web", "detect": "trafficrisk worker detect"},
        Path("/srv/tr"),
        Path("/srv/tr/.venv/bin"),
        Path("/etc/trafficrisk/env"),
    )
    assert sorted(units) == ["trafficrisk-detect.service", "trafficrisk-web.service", "trafficrisk.target"]
    detect = units["trafficrisk-detect.service"]
    assert "ExecStart=/srv/tr/.venv/bin/trafficrisk worker detect" in detect
    assert "Restart=on-failure" in detect and "EnvironmentFile=/etc/trafficrisk/env" in detect
    assert "Wants=trafficrisk-detect.service trafficrisk-web.service" in units["trafficrisk.target"]


def test_stop_kills_what_ignores_sigterm() -> None:
    stubborn = python(
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\ntime.sleep(120)"
    )
    supervisor, out, thread, status = supervise({"stubborn": stubborn})
    wait_for(lambda: "ready" in out.getvalue(), 20, "the process to start", out.getvalue)
    import trafficrisk.supervisor as module

    module.STOP_TIMEOUT_S, saved = 1.0, module.STOP_TIMEOUT_S
    try:
        started = time.monotonic()
        supervisor.stopping.set()
        thread.join(30)
    finally:
        module.STOP_TIMEOUT_S = saved
    assert status == [0] and time.monotonic() - started < 10
    assert "did not stop in 1 s: killed" in out.getvalue()


def _children(pid: int) -> dict[str, Any]:
    """The run's processes by role: redis-server, or the Procfile name in their command."""
    import psutil

    found: dict[str, Any] = {}
    for child in psutil.Process(pid).children():
        line = " ".join(child.cmdline())
        name = "redis" if "redis-server" in line else next(
            (role for role in ("detect", "aggregate", "alerts", "assess") if f"-n {role}@" in line), line
        )
        found[name] = child
    return found


@pytest.mark.slow
def test_the_main_job_survives_its_redis_and_a_worker_killed(tmp_path: Path) -> None:
    """The issue's reproduction: `trafficrisk run` on the sample, then kill -9 of its
    redis-server and of the detect worker. The supervisor brings both back (Redis from its
    append-only file), results flow again, and Ctrl-C (SIGTERM) ends it with status 0."""
    root = Path(__file__).resolve().parent.parent
    (tmp_path / "data").mkdir()
    shutil.copy(root / "data" / "vtest.avi", tmp_path / "data" / "vtest.avi")
    shutil.copy(root / "Procfile", tmp_path / "Procfile")
    (tmp_path / "cameras.yaml").write_text("cameras:\n  - {id: sample, url: data/vtest.avi, sample_fps: 2}\n")
    env = worker_env(model="ssd", device="cpu", flower_port=str(free_port()))
    env.update(PORT=str(free_port()), PYTHONPATH=str(root))
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        run = subprocess.Popen([sys.executable, "-m", "trafficrisk.cli", "run"], cwd=tmp_path, env=env,
                               stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        found = wait_for(lambda: re.search(r"redis-server on 127.0.0.1:(\d+)", log.read_text()), 60,
                         "the run's Redis", lambda: log.read_text()[-3000:])
        store = Store(redis.Redis(port=int(found.group(1)), socket_timeout=5))

        def results_since(since: float) -> bool:
            try:
                latest = store.latest("sample")
            except redis.RedisError:
                return False
            return latest is not None and latest.captured_at > since

        wait_for(lambda: results_since(0), 120, "results", lambda: log.read_text()[-3000:])
        children = _children(run.pid)
        for role in ("redis", "detect"):
            children[role].kill()
        killed_at = time.time()
        wait_for(lambda: results_since(killed_at + 5), 90, "results after the kills",
                 lambda: log.read_text()[-4000:])
        assert run.poll() is None
        for role in ("redis", "detect"):
            assert re.search(rf"{role} +\| exited with status -9; restarting", log.read_text()), role
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGTERM)
        status = run.wait(60)
    assert status == 0, log.read_text()[-3000:]
