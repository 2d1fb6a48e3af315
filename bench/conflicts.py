"""Conflict measures against the scenario truth at several sample rates, side by side.

    .venv/bin/python bench/conflicts.py [--fps 2 5 10] [--drop 0 0.3 0.5] [--clips var/scenarios]

Runs `trafficrisk evaluate --suite` (the detect stage's own code: the configured
detector, the camera's scene, the patterns) at each sample rate, calibrated and
uncalibrated, and prints one row each: conflict recall, false conflicts and alerts per
safe clip-minute, the share of serious conflicts with exactly one alert, the median TTC
and PET errors, and the detect stage's time per frame (detector and the rest: tracks,
scale, measures, conflicts, groups). This is what the default `sample_fps` (5) rests on.
Then, at 5 fps, the same with a share of the frames left out at random, as backpressure
leaves a camera's frames when the detect queue cannot keep up.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from harness import ROOT

from trafficrisk import evaluation
from trafficrisk.runtime import thresholds_from
from trafficrisk.settings import get_settings
from trafficrisk.workers.analysis import FrameAnalysis, FrameAnalyzer
from trafficrisk.workers.detection import load_detector
from trafficrisk.workers.patterns import default_patterns
from trafficrisk.workers.scene import SceneStep


class TimedAnalyzer(FrameAnalyzer):
    """The analyzer, adding up its own per-frame timings."""

    inference_s = postprocess_s = 0.0
    frames = 0

    def analyze(self, jpeg: bytes, *, scene: SceneStep) -> FrameAnalysis:
        analysis = super().analyze(jpeg, scene=scene)
        self.inference_s += analysis.timings["inference_s"]
        self.postprocess_s += analysis.timings["postprocess_s"]
        self.frames += 1
        return analysis


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fps", type=float, nargs="+", default=[2.0, 5.0, 10.0])
    parser.add_argument("--drop", type=float, nargs="+", default=[0.3, 0.5])
    parser.add_argument("--clips", type=Path, default=ROOT / "var" / "scenarios")
    args = parser.parse_args()
    settings = get_settings()
    detector = load_detector(settings.model, settings.device, settings.detect_confidence)
    clips = evaluation.scenario_clips(args.clips)
    print(f"{len(clips)} scenario clips, detector {detector.name}")
    print(
        f"{'fps':>4} {'drop':>4} {'scale':<12} {'recall':>6} {'false/min':>9} {'alerts/min':>10} "
        f"{'1 alert':>7} {'TTC err':>7} {'PET err':>7} {'detect ms':>9} {'rest ms':>7} {'wall s':>6}"
    )
    runs = [(fps, 0.0) for fps in args.fps] + [(5.0, drop) for drop in args.drop]
    for fps, drop in runs:
        for calibrated in (True, False):
            analyzer = TimedAnalyzer(detector)
            started = time.perf_counter()
            scores = evaluation.evaluate(
                clips,
                analyzer,
                fps=fps,
                calibrated=calibrated,
                limits=thresholds_from(settings),
                patterns=default_patterns(),
                drop=drop,
                report=lambda _: None,
            )
            s = evaluation.summarize(scores)
            ttc = "-" if s.median_ttc_error is None else f"{100 * s.median_ttc_error:.0f} %"
            pet = "-" if s.median_pet_error_s is None else f"{s.median_pet_error_s:.2f} s"
            frames = max(analyzer.frames, 1)
            detect_ms, rest_ms = 1000 * analyzer.inference_s / frames, 1000 * analyzer.postprocess_s / frames
            print(
                f"{fps:>4g} {drop:>4.0%} {'calibrated' if calibrated else 'fitted':<12} {s.recall:>6.2f} "
                f"{s.false_conflicts_per_minute:>9.2f} {s.alerts_per_safe_minute:>10.2f} "
                f"{s.one_alert_per_serious:>7.2f} {ttc:>7} {pet:>7} {detect_ms:>9.1f} "
                f"{rest_ms:>7.1f} {time.perf_counter() - started:>6.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
