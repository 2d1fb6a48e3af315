"""Detect-stage throughput against a plain ultralytics predict loop, side by side.

    .venv/bin/python bench/detect.py [--weights var/weights/smartrail-yolov8n.pt]
        [--device auto] [--frames 240] [--batch 1 8 16] [--rounds 3]

Both sides get the same frames of data/vtest.avi, the same checkpoint, confidence,
classes and precision (fp16 on a GPU), on the same machine, in one run:

- plain: `model.predict(image)` one decoded frame at a time, the loop every
  ultralytics tutorial shows;
- stage: what a detect task runs, minus the broker: JPEG bytes in (as the frame
  waits in Redis), decode, detect, group, score, on as many threads as the worker's
  pool has (the batch size), sharing the model through the micro-batcher.

The two alternate for `--rounds` rounds; each side's best round counts (the machines
are shared, and the best round is the least disturbed). The ratio is stage / plain.
"""

from __future__ import annotations

import argparse
import os
import platform
import queue
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trafficrisk.workers.analysis import FrameAnalyzer, encode_jpeg  # noqa: E402
from trafficrisk.workers.batching import BatchedDetector  # noqa: E402
from trafficrisk.workers.conflicts import Thresholds  # noqa: E402
from trafficrisk.workers.detection import YoloDetector, fp16_args, warm_up  # noqa: E402
from trafficrisk.workers.scene import Geometry, SceneKeeper  # noqa: E402

VIDEO = ROOT / "data" / "vtest.avi"
DEFAULT_WEIGHTS = ROOT / "var" / "weights" / "smartrail-yolov8n.pt"


def read_frames(count: int) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(VIDEO))
    frames: list[np.ndarray] = []
    while len(frames) < count:
        ok, image = capture.read()
        if not ok:
            capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        frames.append(image)
    capture.release()
    return frames


def plain_loop(weights: str, detector: YoloDetector, images: list[np.ndarray]) -> Callable[[], None]:
    """The ultralytics loop on its own copy of the model, with the arguments the project
    passes (so fp16 on a GPU)."""
    from ultralytics import YOLO

    model = YOLO(weights)
    options = {"conf": detector.confidence, "device": detector.device, "classes": detector.class_ids,
               "verbose": False, **(fp16_args() if detector.device != "cpu" else {})}
    for _ in range(3):
        model.predict(images[0], **options)

    def run() -> None:
        for image in images:
            model.predict(image, **options)
    return run


def stage_threads(analyzer: FrameAnalyzer, jpegs: list[bytes], threads: int) -> Callable[[], None]:
    """`threads` task threads, each taking the next JPEG, as the detect worker's pool does."""

    def run() -> None:
        work: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        for jpeg in jpegs:
            work.put(jpeg)
        for _ in range(threads):
            work.put(None)

        def task() -> None:
            while (jpeg := work.get()) is not None:
                # Each frame its own scene: the bench measures detection, not tracking.
                scene = SceneKeeper("bench", Geometry(768, 576), Thresholds()).step(1, 0.0)
                analyzer.analyze(jpeg, scene=scene)

        pool = [threading.Thread(target=task) for _ in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
    return run


def best_fps(run: Callable[[], None], frames: int, rounds: list[float]) -> None:
    started = time.perf_counter()
    run()
    rounds.append(frames / (time.perf_counter() - started))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--wait-ms", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads-per-batch", type=int, nargs="+", default=[1, 2],
                        help="task threads per batch slot (the worker runs 2)")
    args = parser.parse_args()

    images = read_frames(args.frames)
    jpegs = [encode_jpeg(image) for image in images]
    detector = YoloDetector(args.weights, args.device)
    warm_up(detector, max(args.batch))
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, device {detector.device}"
          f"{' ' + gpu_name() if detector.device != 'cpu' else ''}; {detector.name}; "
          f"{args.frames} frames of vtest.avi (768x576); best of {args.rounds} rounds")
    print(f"{'batch':>5} {'threads':>7} {'plain fps':>10} {'stage fps':>10} {'ratio':>6} {'mean batch':>10}")
    for batch, factor in [(b, f) for b in args.batch for f in args.threads_per_batch]:
        # As the worker does (tasks/detect.py): always through the batcher, batches of one
        # too, whose one model thread keeps the task threads out of the model together.
        batched = BatchedDetector(detector, batch, args.wait_ms / 1000)
        analyzer = FrameAnalyzer(batched)
        plain = plain_loop(args.weights, detector, images)
        stage = stage_threads(analyzer, jpegs, batch * factor)
        plain_rounds: list[float] = []
        stage_rounds: list[float] = []
        for _ in range(args.rounds):
            best_fps(plain, len(images), plain_rounds)
            best_fps(stage, len(images), stage_rounds)
        sizes = batched.batch_sizes or [1]
        batched.close()
        plain_fps, stage_fps = max(plain_rounds), max(stage_rounds)
        print(f"{batch:>5} {batch * factor:>7} {plain_fps:>10.1f} {stage_fps:>10.1f} "
              f"{stage_fps / plain_fps:>6.2f} "
              f"{sum(sizes) / len(sizes):>10.1f}", flush=True)


def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""


if __name__ == "__main__":
    main()
