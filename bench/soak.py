"""The soak: `trafficrisk run` (every Procfile process under its supervisor, its own Redis)
on 20 looping file cameras for an hour; does any process, or Redis, keep growing?

    .venv/bin/python bench/soak.py                    # 20 cameras at 1 fps, 60 min, baseline at 10 min
    .venv/bin/python bench/soak.py --minutes 5 --warmup 1 --cameras 4   # a quick look

Every `--every` seconds it reads each process's resident memory (a role's whole process
tree: celery's pool children count) and Redis's `used_memory`, and the frame ledger.
The growth it prints compares like with like over stretches of time, not single readings:
the mean of the readings in the ten minutes after the warm-up against the mean of the
last ten minutes, and the least-squares trend over everything after the warm-up (its
rise across the run, as a share of its value at the warm-up's end). Frames in hand move
with detect's lag over a few minutes, so a reading's phase is not growth.

Redis holds capped data only (results per camera, alerts, evidence,
conflicts, per-minute counts): the caps and retentions are lowered here so that they are
all reached inside the warm-up, which is the steady state a deployment reaches in days.
Readings go to var/soak.jsonl as they come, the summary to var/soak.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import redis
from harness import ROOT, free_port

from trafficrisk.scenario import SCENARIOS, write

CLIPS = ("side-by-side", "near-miss", "crossing")  # with the campus video: conflicts and alerts
# Lowered caps and retentions (see the docstring): each is reached within the warm-up.
STEADY = {
    "TRAFFICRISK_HISTORY_LENGTH": "60",
    "TRAFFICRISK_ALERTS_LENGTH": "200",
    "TRAFFICRISK_CONFLICTS_LENGTH": "200",
    "TRAFFICRISK_EVIDENCE_ALERTS": "40",
    "TRAFFICRISK_STATS_RETENTION_S": "300",
    "TRAFFICRISK_CONFLICTS_RETENTION_S": "300",
    "TRAFFICRISK_EVIDENCE_RETENTION_S": "300",
}


def write_cameras(folder: Path, count: int, fps: float) -> Path:
    clips = [folder / "vtest.avi"]
    shutil.copy(ROOT / "data" / "vtest.avi", clips[0])
    clips += [write(SCENARIOS[name], folder)[0] for name in CLIPS]
    lines = [
        f"  - {{id: soak-{n:02d}, url: '{clips[n % len(clips)]}', sample_fps: {fps}}}" for n in range(count)
    ]
    path = folder / "cameras.yaml"
    path.write_text("cameras:\n" + "\n".join(lines) + "\n")
    return path


def roles(run: psutil.Process) -> dict[str, list[psutil.Process]]:
    """The supervisor's children by Procfile name (their command lines say which)."""
    found: dict[str, list[psutil.Process]] = {}
    for child in run.children():
        try:
            line = child.cmdline()
            tree = [child, *child.children(recursive=True)]
        except psutil.Error:
            continue
        name = _role_of(line)
        found.setdefault(name, []).extend(tree)
    return found


def _role_of(line: list[str]) -> str:
    """`trafficrisk worker ROLE` execs celery with `-n ROLE@%h`; web execs gunicorn."""
    if "worker" in line and "-n" in line:
        return line[line.index("-n") + 1].split("@")[0]
    if any(word.endswith("gunicorn") for word in line):
        return "web"
    return next((word for word in ("capture", "flower") if word in line), " ".join(line)[:40])


def redis_by_kind(client: redis.Redis) -> dict[str, float]:
    """MiB held by each kind of key (`tr:frame:cam:1` is of kind `tr:frame`)."""
    kinds: dict[str, int] = {}
    for key in client.scan_iter(count=1000):
        parts = key.decode().split(":")
        kind = ":".join(parts[:2]) if parts[0] == "tr" else parts[0]
        kinds[kind] = kinds.get(kind, 0) + (client.memory_usage(key) or 0)
    return {kind: round(size / 2**20, 2) for kind, size in sorted(kinds.items(), key=lambda kv: -kv[1])}


def rss_mib(processes: list[psutil.Process]) -> float:
    total = 0
    for proc in processes:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return round(total / 2**20, 1)


def reading(
    run: psutil.Process, server: psutil.Process, client: redis.Redis, started: float
) -> dict[str, object]:
    ledger = {k.decode(): int(v) for k, v in client.hgetall("tr:frames").items()}  # type: ignore[union-attr]
    trees = {**roles(run), "redis-server": [server]}
    return {
        "minute": round((time.time() - started) / 60, 2),
        "rss_mib": {name: rss_mib(tree) for name, tree in sorted(trees.items())},
        "redis_used_mib": round(int(client.info("memory")["used_memory"]) / 2**20, 2),
        "redis_keys": client.dbsize(),
        "redis_by_kind": redis_by_kind(client),
        "frames": ledger,
        "dropped": {k.decode(): int(v) for k, v in client.hgetall("tr:frames_dropped").items()},  # type: ignore[union-attr]
    }


def figures_of(reading: dict) -> dict[str, float]:
    """The figures whose growth counts. Frame JPEGs (kept FRAME_TTL_S) follow the frame
    rate, which follows how busy the machine is: Redis is also given without them."""
    figures = {f"rss {name}": mib for name, mib in reading["rss_mib"].items()}
    figures["redis used_memory"] = reading["redis_used_mib"]
    figures["redis without frames"] = reading["redis_used_mib"] - reading["redis_by_kind"].get(
        "tr:frame", 0.0
    )
    figures["redis data kinds"] = sum(
        mib for kind, mib in reading["redis_by_kind"].items() if kind != "tr:frame"
    )
    return figures


WINDOW_MIN = 10.0  # the stretch each end of the run is averaged over


def growth(readings: list[dict], warmup_min: float) -> dict[str, dict[str, float]]:
    """Percent growth of each figure after the warm-up: `window` compares the mean of the
    first and the last WINDOW_MIN minutes, `trend` is the fitted line's rise over the run."""
    after = [r for r in readings if r["minute"] >= warmup_min]
    first = [figures_of(r) for r in after if r["minute"] < warmup_min + WINDOW_MIN]
    last = [figures_of(r) for r in after if r["minute"] > after[-1]["minute"] - WINDOW_MIN]
    minutes = [r["minute"] for r in after]
    percent = {}
    for name in first[0]:
        before = statistics.mean(f.get(name, 0.0) for f in first)
        if not before:
            continue
        values = [figures_of(r).get(name, 0.0) for r in after]
        slope, intercept = statistics.linear_regression(minutes, values)
        start = intercept + slope * minutes[0]
        percent[name] = {
            "window": round(100 * (statistics.mean(f.get(name, 0.0) for f in last) - before) / before, 1),
            "trend": round(100 * slope * (minutes[-1] - minutes[0]) / start, 1) if start else 0.0,
        }
    return percent


def report(readings: list[dict], warmup_min: float) -> dict[str, dict[str, float]]:
    percent = growth(readings, warmup_min)
    print(
        f"growth from minute {warmup_min:g} to minute {readings[-1]['minute']:g} (percent; "
        f"window: last {WINDOW_MIN:g} min against the first {WINDOW_MIN:g}; trend: fitted line):"
    )
    for name, value in percent.items():
        flag = "  over 5 %" if max(value.values()) >= 5 else ""
        print(f"  {name:24s} window {value['window']:+6.1f} %  trend {value['trend']:+6.1f} %{flag}")
    return percent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", type=int, default=20)
    parser.add_argument("--fps", type=float, default=1.0, help="sample rate of each camera")
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--warmup", type=float, default=10, help="minutes before the baseline reading")
    parser.add_argument("--every", type=float, default=30, help="seconds between readings")
    parser.add_argument(
        "--analyse", type=Path, help="only report on the readings of an earlier run (soak.jsonl)"
    )
    args = parser.parse_args()
    if args.analyse:
        report([json.loads(line) for line in args.analyse.read_text().splitlines()], args.warmup)
        return
    out = ROOT / "var"
    out.mkdir(exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="soak-"))
    shutil.copy(ROOT / "Procfile", folder / "Procfile")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAFFICRISK_")}
    env.update(
        STEADY,
        TRAFFICRISK_CAMERAS_FILE=str(write_cameras(folder, args.cameras, args.fps)),
        TRAFFICRISK_MEDIA_FOLDERS=str(folder),
        TRAFFICRISK_MODEL="ssd",
        TRAFFICRISK_DEVICE="cpu",
        TRAFFICRISK_REDIS_URL=f"redis://127.0.0.1:{port}/0",
        PORT=str(free_port()),
        TRAFFICRISK_FLOWER_PORT=str(free_port()),
        PYTHONPATH=str(ROOT),
    )
    redis_server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(folder),
            "--maxmemory-policy",
            "noeviction",
        ],
        stdout=subprocess.DEVNULL,
    )
    log = (folder / "run.log").open("wb")
    run = subprocess.Popen(
        [sys.executable, "-m", "trafficrisk.cli", "run"],
        cwd=folder,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    print(
        f"soak: {args.cameras} cameras at {args.fps} fps for {args.minutes:g} min; log {folder / 'run.log'}",
        flush=True,
    )
    readings: list[dict] = []
    started = time.time()
    try:
        time.sleep(3)
        client = redis.Redis(port=port, socket_timeout=10)
        watched, server = psutil.Process(run.pid), psutil.Process(redis_server.pid)
        with (out / "soak.jsonl").open("w") as jsonl:
            while time.time() - started < args.minutes * 60:
                if run.poll() is not None:
                    raise SystemExit(
                        f"soak: trafficrisk run exited with {run.returncode}: see {folder / 'run.log'}"
                    )
                readings.append(reading(watched, server, client, started))
                jsonl.write(json.dumps(readings[-1]) + "\n")
                jsonl.flush()
                latest = readings[-1]
                print(
                    f"  {latest['minute']:6.1f} min  redis {latest['redis_used_mib']:7.2f} MiB  "
                    f"rss {latest['rss_mib']}  by kind {dict(list(latest['redis_by_kind'].items())[:5])}",
                    flush=True,
                )
                time.sleep(args.every)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGTERM)
            run.wait(60)
        redis_server.terminate()
        redis_server.wait()
    summary = {
        "cameras": args.cameras,
        "fps": args.fps,
        "minutes": args.minutes,
        "warmup": args.warmup,
        "growth_percent": report(readings, args.warmup),
        "first": readings[0],
        "last": readings[-1],
    }
    (out / "soak.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
