"""LLM calls per frame on the sample video: what the gate and the scene cache save.

    .venv/bin/python bench/llm_calls.py [--video data/vtest.avi] [--fps 2 5] [--cache-ttl 60]

Runs the detect stage's own code (the configured detector, the camera's scene shared in
a private redis-server: tracks, scale, conflicts; groups, rules) over the whole clip at
each sample rate, as a camera at that rate would see it, and counts per frame:

    naive   every group sent to the LLM
    gate    only groups whose rules pre-score reaches LLM_GATE_SCORE
    cache   of those, only the ones the camera's scene cache cannot answer

Each would-be call is answered at once with the simulator's verdict and stored in the
scene cache, as an assess worker stores the LLM's. Frames are taken at their video
time, so a 60 s cache TTL spans 60 s of video.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import redis
from harness import ROOT, redis_server

from trafficrisk import evaluation
from trafficrisk.llm_sim import verdict_for
from trafficrisk.settings import get_settings
from trafficrisk.workers.analysis import FrameAnalyzer, encode_jpeg
from trafficrisk.workers.conflicts import Frame, Thresholds
from trafficrisk.workers.detection import load_detector
from trafficrisk.workers.llm import describe_group
from trafficrisk.workers.rules import LlmGate
from trafficrisk.workers.scene import Geometry, shared_scene
from trafficrisk.workers.scene_cache import SceneCache
from trafficrisk.workers.store import Store


@dataclass
class Counts:
    frames: int = 0
    groups: int = 0  # naive: one call per group
    gated: int = 0  # after the gate
    calls: int = 0  # after the gate and the cache

    def per_frame(self, count: int) -> float:
        return count / max(self.frames, 1)


def sampled_frames(video: Path, fps: float) -> list[tuple[float, bytes]]:
    """(video time, JPEG) of the frames a camera sampling at `fps` would take."""
    try:
        return [(at, encode_jpeg(image)) for _, at, image in evaluation.sampled_frames(video, fps)]
    except FileNotFoundError as error:
        raise SystemExit(str(error)) from None


def count_calls(
    analyzer: FrameAnalyzer,
    client: redis.Redis,
    frames: list[tuple[float, bytes]],
    camera_id: str,
    cache_ttl_s: float,
) -> Counts:
    video_time = [0.0]
    store, counts = Store(client), Counts()
    cache = SceneCache(client, cache_ttl_s, clock=lambda: video_time[0])
    for seq, (at, jpeg) in enumerate(frames, 1):
        video_time[0] = at
        scene = shared_scene(
            store, Frame(camera_id, seq, at, approximate=True), Geometry(768, 576), Thresholds()
        )
        analysis = analyzer.analyze(jpeg, want_crops=True, scene=scene)
        counts.frames += 1
        counts.groups += len(analysis.groups)
        for group in analysis.groups:
            crop = analysis.crops.get(group.group_id)
            if crop is None:
                continue
            counts.gated += 1
            if cache.lookup(camera_id, group, crop) is None:
                counts.calls += 1
                cache.store(camera_id, group, crop, verdict_for(describe_group(group, 768, 576)))
        if seq % 50 == 0 or seq == len(frames):
            print(f"  {camera_id}: frame {seq}/{len(frames)}", file=sys.stderr, flush=True)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--video", type=Path, default=ROOT / "data" / "vtest.avi")
    parser.add_argument("--fps", type=float, nargs="+", default=[2.0, 5.0])
    parser.add_argument("--cache-ttl", type=float, default=get_settings().llm_cache_ttl_s)
    args = parser.parse_args()
    settings = get_settings()
    detector = load_detector(settings.model, settings.device, settings.detect_confidence)
    analyzer = FrameAnalyzer(detector, LlmGate(settings.llm_gate_score, settings.llm_high_priority_score))
    print(
        f"{args.video.name}, detector {detector.name}, gate {settings.llm_gate_score:g}, "
        f"cache TTL {args.cache_ttl:g} s"
    )
    print(
        f"{'fps':>5} {'frames':>6} {'naive/frame':>11} {'gate/frame':>10} {'cache/frame':>11} "
        f"{'gate saves':>10} {'cache saves':>11} {'both save':>9}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-calls-") as tmp, redis_server(Path(tmp)) as url:
        client = redis.Redis.from_url(url)
        for fps in args.fps:
            counts = count_calls(
                analyzer, client, sampled_frames(args.video, fps), f"vtest-{fps:g}fps", args.cache_ttl
            )
            gate_saves = 1 - counts.gated / max(counts.groups, 1)
            cache_saves = 1 - counts.calls / max(counts.gated, 1)
            both_save = 1 - counts.calls / max(counts.groups, 1)
            print(
                f"{fps:>5g} {counts.frames:>6} {counts.per_frame(counts.groups):>11.2f} "
                f"{counts.per_frame(counts.gated):>10.2f} {counts.per_frame(counts.calls):>11.2f} "
                f"{gate_saves:>10.1%} {cache_saves:>11.1%} {both_save:>9.1%}",
                flush=True,
            )


if __name__ == "__main__":
    main()
