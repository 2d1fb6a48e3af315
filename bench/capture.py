"""Capture at scale: N file cameras at 1 fps on one capture process.

    .venv/bin/python bench/capture.py [--cameras 10 50 200] [--seconds 30]

For each N it starts its own redis-server, a real detect worker (with the `none`
detector, so the detect stage costs next to nothing and what is measured is
capture and the plumbing) and aggregate worker, and one capture process reading
N copies of data/vtest.avi at 1 fps. After a warm-up it reports, over the window:
the capture process's CPU per camera (% of one core), its resident memory, frames
published against the N * seconds expected, frames dropped, and frame age from
capture to detect start (FrameResult.timings.queue_wait_s) p50 and p99.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
VIDEO = ROOT / "data" / "vtest.avi"
TICKS = os.sysconf("SC_CLK_TCK")


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


def write_cameras(path: Path, cameras: int) -> None:
    lines = [f"  - {{id: cam{i:03d}, url: '{VIDEO}', sample_fps: 1}}" for i in range(cameras)]
    path.write_text("cameras:\n" + "\n".join(lines) + "\n")


def frame_ages(client: redis.Redis, cameras: int, since: float) -> list[float]:
    ages = []
    for i in range(cameras):
        for _, fields in client.xrange(f"tr:history:cam{i:03d}"):
            result = json.loads(fields[b"result"])
            if result["captured_at"] >= since:
                ages.append(result["timings"]["queue_wait_s"])
    return ages


def measure(cameras: int, seconds: float, warmup: float, workdir: Path) -> dict[str, float]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAFFICRISK_")}
    cameras_file = workdir / f"cameras-{cameras}.yaml"
    write_cameras(cameras_file, cameras)
    env.update({"TRAFFICRISK_REDIS_URL": f"redis://127.0.0.1:{port}/0", "TRAFFICRISK_MODEL": "none",
                "TRAFFICRISK_CAMERAS_FILE": str(cameras_file), "TRAFFICRISK_LOG_LEVEL": "WARNING"})
    cli = [sys.executable, "-m", "trafficrisk.cli"]
    redis_args = [shutil.which("redis-server") or "redis-server", "--port", str(port), "--save", "",
                  "--appendonly", "no"]
    with process(redis_args, env, workdir / "redis.log"):
        wait_for_port(port)
        client = redis.Redis.from_url(env["TRAFFICRISK_REDIS_URL"])
        with process([*cli, "worker", "detect"], env, workdir / f"detect-{cameras}.log"), \
                process([*cli, "worker", "aggregate"], env, workdir / f"aggregate-{cameras}.log"), \
                process([*cli, "capture"], env, workdir / f"capture-{cameras}.log") as capture:
            time.sleep(warmup)
            seq_before = sum(int(client.get(f"tr:seq:cam{i:03d}") or 0) for i in range(cameras))
            cpu_before, started, wall_start = cpu_seconds(capture.pid), time.monotonic(), time.time()
            time.sleep(seconds)
            cpu = cpu_seconds(capture.pid) - cpu_before
            elapsed = time.monotonic() - started
            rss = rss_mib(capture.pid)
            published = sum(int(client.get(f"tr:seq:cam{i:03d}") or 0) for i in range(cameras)) - seq_before
            time.sleep(3)  # let the last frames of the window finish
            ages = sorted(frame_ages(client, cameras, wall_start))
            dropped = sum(int(v) for v in client.hvals("tr:frames_dropped"))
            leased = len(client.keys("tr:lease:*"))
        client.close()
    return {
        "cameras": cameras,
        "cpu_per_camera_pct": 100 * cpu / elapsed / cameras,
        "cpu_total_pct": 100 * cpu / elapsed,
        "rss_mib": rss,
        "published_ratio": published / (cameras * elapsed),
        "dropped": dropped,
        "age_p50_ms": 1000 * statistics.median(ages) if ages else float("nan"),
        "age_p99_ms": 1000 * ages[min(len(ages) - 1, int(0.99 * len(ages)))] if ages else float("nan"),
        "results": len(ages),
        "leased": leased,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", type=int, nargs="+", default=[10, 50, 200])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    args = parser.parse_args()
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; {args.seconds:.0f} s window after {args.warmup:.0f} s warm-up")
    header = (f"{'cameras':>7} {'cpu/cam %':>9} {'cpu total %':>11} {'rss MiB':>8} {'published':>9} "
              f"{'dropped':>7} {'age p50 ms':>10} {'age p99 ms':>10} {'results':>7} {'leased':>6}")
    print(header)
    with tempfile.TemporaryDirectory(prefix="bench-capture-") as tmp:
        for cameras in args.cameras:
            row = measure(cameras, args.seconds, args.warmup, Path(tmp))
            print(f"{row['cameras']:>7} {row['cpu_per_camera_pct']:>9.2f} {row['cpu_total_pct']:>11.1f} "
                  f"{row['rss_mib']:>8.0f} {row['published_ratio']:>9.2f} {row['dropped']:>7.0f} "
                  f"{row['age_p50_ms']:>10.1f} {row['age_p99_ms']:>10.1f} {row['results']:>7} "
                  f"{row['leased']:>6}", flush=True)


if __name__ == "__main__":
    main()
