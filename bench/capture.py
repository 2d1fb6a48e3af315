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
import statistics
import tempfile
import time
from pathlib import Path

import redis
from harness import CLI, ROOT, bench_env, cpu_seconds, process, redis_server, rss_mib

VIDEO = ROOT / "data" / "vtest.avi"


def write_cameras(path: Path, cameras: int) -> None:
    lines = [f"  - {{id: cam{i:03d}, url: '{VIDEO}', sample_fps: 1}}" for i in range(cameras)]
    path.write_text("cameras:\n" + "\n".join(lines) + "\n")


def frame_ages(client: redis.Redis, cameras: int, since: float) -> list[float]:
    ages = []
    for i in range(cameras):
        entries: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(f"tr:history:cam{i:03d}")  # type: ignore[assignment]
        for _, fields in entries:
            result = json.loads(fields[b"result"])
            if result["captured_at"] >= since:
                ages.append(result["timings"]["queue_wait_s"])
    return ages


def measure(cameras: int, seconds: float, warmup: float, workdir: Path) -> dict[str, float]:
    cameras_file = workdir / f"cameras-{cameras}.yaml"
    write_cameras(cameras_file, cameras)
    with redis_server(workdir) as redis_url:
        env = bench_env(redis_url=redis_url, model="none", cameras_file=str(cameras_file),
                        log_level="WARNING")
        client = redis.Redis.from_url(redis_url)
        with process([*CLI, "worker", "detect"], env, workdir / f"detect-{cameras}.log"), \
                process([*CLI, "worker", "aggregate"], env, workdir / f"aggregate-{cameras}.log"), \
                process([*CLI, "capture"], env, workdir / f"capture-{cameras}.log") as capture:
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
