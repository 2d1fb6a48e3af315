"""What the aggregate stage costs per frame result, and what keeping alerts' evidence costs.

    .venv/bin/python bench/aggregate.py [--results 3000]

Side by side in one run, on a private redis-server, with results like the sample
video's (8 tracked road users, 2 groups, one at high every 10th frame):

    save only       Store.save_result: the stage before windows and patterns
    in order        save + the camera's patterns (record_result), one thread
    out of order    the same, each result up to 8 frames late, 10 % twice
    4 threads, 1    four aggregate threads on one camera (WATCH conflicts retried)
    4 threads, 4    four threads, four cameras

and the evidence of one alert: crop, and the clip (6 s at 5 fps) encoded as WebM.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import redis
from harness import ROOT, redis_server

from trafficrisk.messages import AssessedGroup, Box, Detection, FrameResult, Group, RiskLevel, Verdict
from trafficrisk.workers.aggregation import record_result
from trafficrisk.workers.analysis import encode_jpeg
from trafficrisk.workers.evidence import crop_evidence, encode_clip
from trafficrisk.workers.patterns import PatternEngine, default_patterns
from trafficrisk.workers.store import Store

LATENESS_S = 10.0


def sample_result(camera_id: str, seq: int, fps: float = 5.0) -> FrameResult:
    detections = tuple(Detection(label="person" if n % 2 else "car", confidence=0.8, track_id=n,
                                 box=Box(x1=40.0 * n, y1=300, x2=40.0 * n + 30, y2=380)) for n in range(8))
    level = RiskLevel.HIGH if seq % 10 == 0 else RiskLevel.MEDIUM
    verdict = Verdict(risk_level=level, risk_type="near miss", confidence=0.7, reason="too close")
    groups = tuple(AssessedGroup(group=Group(group_id=f"g{g}", members=(2 * g, 2 * g + 1),
                                             labels=("car", "person"), box=Box(x1=0, y1=0, x2=90, y2=90),
                                             prescore=0.5, rules_verdict=verdict), verdict=verdict)
                   for g in range(2))
    at = 1e9 + seq / fps
    return FrameResult(camera_id=camera_id, frame_id=f"{camera_id}:{seq}", seq=seq, captured_at=at,
                       processed_at=at, width=768, height=576, detector="bench", llm_enabled=True,
                       detections=detections, groups=groups, risk_level=level)


def shuffled(results: list[FrameResult], rng: random.Random) -> list[FrameResult]:
    arrivals = sorted(results, key=lambda r: r.seq + rng.uniform(0, 8))
    return arrivals + rng.sample(arrivals, len(arrivals) // 10)


class Counting:
    """A pattern engine that counts its runs: more runs than results are WATCH retries."""

    def __init__(self, engine: PatternEngine) -> None:
        self.engine, self.runs, self.lock = engine, 0, threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def advance(self, state: Any, frame: Any) -> Any:
        with self.lock:
            self.runs += 1
        return self.engine.advance(state, frame)


def timed(store: Store, work: list[list[FrameResult]], step: Callable[[FrameResult], Any]) -> float:
    store.client.flushdb()
    threads = [threading.Thread(target=lambda batch=batch: [step(r) for r in batch]) for batch in work]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def run_stage(store: Store, results: int, rounds: int) -> None:
    rng = random.Random(1)
    one = [sample_result("cam", seq) for seq in range(1, results + 1)]
    engine = Counting(PatternEngine(default_patterns(), LATENESS_S))

    def record(result: FrameResult) -> Any:
        return record_result(store, engine, result, 2e9)  # type: ignore[arg-type]

    cases: list[tuple[str, list[list[FrameResult]], Callable[[FrameResult], Any]]] = [
        ("save only", [one], store.save_result),
        ("in order", [one], record),
        ("out of order", [shuffled(one, rng)], record),
        ("4 threads, 1 camera", [one[i::4] for i in range(4)], record),
        ("4 threads, 4 cameras", [[sample_result(f"cam{c}", seq) for seq in range(1, results // 4 + 1)]
                                  for c in range(4)], record),
    ]
    rates: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    runs: dict[str, float] = {}
    for _ in range(rounds):  # interleaved, so a noisy moment hits every case alike
        for name, work, step in cases:
            engine.runs = 0
            count = sum(len(batch) for batch in work)
            rates[name].append(count / timed(store, work, step))
            runs[name] = engine.runs / count
    print(f"{'case':<22}{'results':>8}{'results/s':>11}{'ms each':>9}{'vs save':>9}{'pattern runs':>14}"
          f"   (median of {rounds})")
    baseline = statistics.median(rates["save only"])
    for name, work, _ in cases:
        rate = statistics.median(rates[name])
        count = sum(len(batch) for batch in work)
        pattern_runs = f"{runs[name]:.2f}/result" if runs[name] else "-"
        print(f"{name:<22}{count:>8}{rate:>11.0f}{1000 / rate:>9.2f}{rate / baseline:>9.2f}"
              f"{pattern_runs:>14}")


def run_evidence() -> None:
    capture = cv2.VideoCapture(str(ROOT / "data" / "vtest.avi"))
    frames = []
    for _ in range(30):
        _, image = capture.read()
        frames.append(encode_jpeg(image, 85))
    capture.release()
    started = time.perf_counter()
    crop = crop_evidence(frames[15], Box(x1=300, y1=200, x2=420, y2=400))
    cropped = time.perf_counter()
    clip = encode_clip(frames, 5.0)
    encoded = time.perf_counter()
    print(f"\nevidence of one alert: frame {len(frames[15]) / 1024:.0f} KiB, crop {len(crop) / 1024:.0f} KiB "
          f"({(cropped - started) * 1000:.1f} ms), clip of {len(frames)} frames {len(clip) / 1024:.0f} KiB "
          f"({encoded - cropped:.2f} s to encode)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5, help="each case this many times, interleaved")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, redis_server(Path(folder)) as url:
        client = redis.Redis.from_url(url)
        run_stage(Store(client, lateness_s=LATENESS_S), args.results, args.rounds)
        client.close()
    run_evidence()


if __name__ == "__main__":
    main()
