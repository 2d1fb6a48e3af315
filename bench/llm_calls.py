"""LLM calls per conflict event on the scenario suite: one verification per event against
one call per flagged group per frame (the path before docs/verification.md), both counted
in one run over the same frames.

    .venv/bin/python bench/llm_calls.py [--fps 5] [--clips var/scenarios] [--uncalibrated]

Every scenario clip goes through the detect stage's own code (the configured detector,
the camera's scene, groups, rules) as `trafficrisk evaluate` runs it, and per clip it counts

    events      conflict events (potential and serious)
    per-frame   groups a frame would have sent to the LLM: a rules pre-score of at least
                0.4 (a potential or serious conflict in it), every frame
    verify      conflict versions that ask for verification (`to_verify`: a serious event
                at once, a potential one after VERIFY_POTENTIAL_AFTER_S or at its end)

and prints calls per event for both (the goal: at most 1.5 for verification). The scene
cache could only lower either count; it is left out of both.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from harness import ROOT

from trafficrisk import evaluation
from trafficrisk.messages import DEFAULT_SAMPLE_FPS, FrameResult, RiskLevel
from trafficrisk.runtime import thresholds_from
from trafficrisk.settings import get_settings
from trafficrisk.workers.analysis import FrameAnalyzer
from trafficrisk.workers.detection import load_detector
from trafficrisk.workers.patterns import default_patterns

OLD_GATE_SCORE = 0.4  # the per-frame path's default LLM_GATE_SCORE


@dataclass
class Calls:
    frames: int = 0
    per_frame: int = 0
    verify: int = 0
    events: set[str] = field(default_factory=set)

    def count(self, result: FrameResult) -> None:
        self.frames += 1
        self.per_frame += sum(1 for g in result.groups if g.group.prescore >= OLD_GATE_SCORE)
        self.verify += sum(1 for event in result.conflicts if event.to_verify)
        self.events |= {event.conflict_id for event in result.conflicts}


def per_event(calls: int, events: int) -> str:
    return f"{calls / events:.2f}" if events else "-"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fps", type=float, default=DEFAULT_SAMPLE_FPS)
    parser.add_argument("--clips", type=Path, default=ROOT / "var" / "scenarios")
    parser.add_argument("--uncalibrated", action="store_true", help="scale fitted from pedestrians")
    args = parser.parse_args()
    settings = get_settings()
    args.clips.mkdir(parents=True, exist_ok=True)
    analyzer = FrameAnalyzer(load_detector(settings.model, settings.device, settings.detect_confidence))
    limits = thresholds_from(settings)
    patterns = default_patterns(RiskLevel(settings.alert_level))
    print(
        f"scenario suite at {args.fps:g} fps, {'uncalibrated' if args.uncalibrated else 'calibrated'}, "
        f"{analyzer.detector.name}; potential verified after {limits.verify_potential_after_s:g} s"
    )
    print(
        f"{'clip':<14} {'frames':>6} {'events':>6} {'per-frame':>9} {'verify':>6} "
        f"{'per-frame/event':>15} {'verify/event':>12}"
    )
    total = Calls()
    for clip, truth_file in evaluation.scenario_clips(args.clips):
        calls = Calls()
        evaluation.run_clip(
            clip,
            evaluation.load_truth(truth_file),
            analyzer,
            fps=args.fps,
            calibrated=not args.uncalibrated,
            limits=limits,
            patterns=patterns,
            seen=calls.count,
        )
        events = len(calls.events)
        print(
            f"{clip.stem:<14} {calls.frames:>6} {events:>6} {calls.per_frame:>9} {calls.verify:>6} "
            f"{per_event(calls.per_frame, events):>15} {per_event(calls.verify, events):>12}",
            flush=True,
        )
        total.frames += calls.frames
        total.per_frame += calls.per_frame
        total.verify += calls.verify
        total.events |= {f"{clip.stem}/{event}" for event in calls.events}
    events = len(total.events)
    print(
        f"{'all':<14} {total.frames:>6} {events:>6} {total.per_frame:>9} {total.verify:>6} "
        f"{per_event(total.per_frame, events):>15} {per_event(total.verify, events):>12}"
    )


if __name__ == "__main__":
    main()
