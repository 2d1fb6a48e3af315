"""What the bench scripts share: processes of their own, a private redis-server, /proc readings."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")
CLI = [sys.executable, "-m", "trafficrisk.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def wait_for_port(port: int) -> None:
    for _ in range(100):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port}")


def bench_env(**settings: str) -> dict[str, str]:
    """The environment without the caller's TRAFFICRISK_ settings, plus these."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAFFICRISK_")}
    env.update({f"TRAFFICRISK_{name.upper()}": value for name, value in settings.items()})
    return env


@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A private redis-server without persistence; yields its URL."""
    port = free_port()
    args = [shutil.which("redis-server") or "redis-server", "--port", str(port), "--save", "",
            "--appendonly", "no"]
    with process(args, dict(os.environ), workdir / "redis.log"):
        wait_for_port(port)
        yield f"redis://127.0.0.1:{port}/0"
