"""`trafficrisk evaluate`: the detect stage's conflicts judged against a clip's ground truth.

A clip is read at a sample rate the way a file camera is; every sampled frame goes,
as a JPEG, through the same analyzer (detector, the camera's scene: tracks, scale,
measures, conflict events; groups) and the same patterns as in the fleet, with the
scene kept in memory instead of in Redis. Calibrated, the camera has the truth's
homography; uncalibrated, it fits its own scale from the pedestrians it sees. A `drop`
share leaves out that many of the sampled frames at random (seeded by the clip), as
backpressure does to a camera the detect queue cannot keep up with.

The conflict events are then scored against the truth (`trafficrisk/scenario.py`):
- recall: a truth conflict is found when an event of the same kind between the same
  two road users overlaps its interval (tracks are mapped to the scripted road users
  by the overlap of their boxes with the truth's);
- false conflicts: events that match no truth conflict; alerts on safe clips;
- errors: an event's minimum TTC against the truth's (relative), its PET against the
  truth's (seconds).
"""

from __future__ import annotations

import json
import math
import random
import statistics
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2

from trafficrisk.messages import Alert, ConflictEvent, FrameRef, FrameResult
from trafficrisk.workers.analysis import FrameAnalyzer, encode_jpeg
from trafficrisk.workers.conflicts import Thresholds
from trafficrisk.workers.ground_plane import GroundPlane
from trafficrisk.workers.patterns import PatternBase, PatternEngine
from trafficrisk.workers.scene import Geometry, SceneKeeper

CAMERA_ID = "evaluate"
# An event may start or end this much off the truth's interval and still overlap it:
# the truth is measured at every frame, the detect stage at the sample rate.
OVERLAP_SLACK_S = 0.5
MATCH_IOU = 0.3


@dataclass
class ClipRun:
    """What the detect stage made of one clip."""

    name: str
    safe: bool
    seconds: float
    truth: list[dict[str, Any]]
    events: dict[str, ConflictEvent]  # the newest version of each, by id
    alerts: list[Alert]
    actor_of: dict[int, str]  # track id -> scripted road user
    frames: int = 0


@dataclass
class ClipScore:
    name: str
    safe: bool
    seconds: float
    truth: int
    found: int
    false_conflicts: int
    alerts: int
    false_alerts: int
    serious_truth: int
    serious_alerted: int  # truth serious conflicts with exactly one alert
    ttc_errors: list[float] = field(default_factory=list)  # relative
    pet_errors: list[float] = field(default_factory=list)  # seconds
    rows: list[dict[str, Any]] = field(default_factory=list)


def _iou(a: list[float], b: tuple[float, float, float, float]) -> float:
    w, h = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    overlap = w * h
    return overlap / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap)


def sampled_frames(clip: Path, fps: float) -> Iterable[tuple[int, float, Any]]:
    """(frame index, capture time, image) of the clip's frames at `fps`, as a camera samples."""
    capture = cv2.VideoCapture(str(clip))
    if not capture.isOpened():
        raise FileNotFoundError(f"{clip}: not a readable video")
    clip_fps = capture.get(cv2.CAP_PROP_FPS) or 10.0
    index, next_at = 0, 0.0
    try:
        while True:
            ok, image = capture.read()
            if not ok:
                return
            t = index / clip_fps
            if t + 1e-6 >= next_at:
                yield index, t, image
                next_at += 1.0 / fps
            index += 1
    finally:
        capture.release()


def _dropped(frames: Iterable[Any], share: float, seed: str) -> Iterable[Any]:
    """The frames less `share` of them, left out at random: the same ones on every run."""
    chance = random.Random(f"{seed}:{share}")
    return (frame for frame in frames if chance.random() >= share)


def run_clip(
    clip: Path,
    truth: dict[str, Any],
    analyzer: FrameAnalyzer,
    *,
    fps: float,
    calibrated: bool,
    limits: Thresholds,
    patterns: list[PatternBase],
    drop: float = 0.0,
    lateness_s: float = 10.0,
    progress: Callable[[int], None] | None = None,
    seen: Callable[[FrameResult], None] | None = None,
) -> ClipRun:
    """The clip through the detect stage and the patterns, frame by frame in order; `seen`
    gets each frame's result."""
    camera = truth["camera"]
    plane = (
        GroundPlane.from_points(truth["calibration"]["image_points"], truth["calibration"]["ground_points"])
        if calibrated
        else None
    )
    keeper = SceneKeeper(CAMERA_ID, Geometry(camera["width"], camera["height"], plane), limits)
    engine, pattern_state = PatternEngine(patterns, lateness_s), None
    events: dict[str, ConflictEvent] = {}
    alerts: list[Alert] = []
    votes: dict[int, Counter[str]] = {}
    count = 0
    for seq, (index, t, image) in enumerate(_dropped(sampled_frames(clip, fps), drop, clip.stem), start=1):
        ref = FrameRef(
            camera_id=CAMERA_ID,
            seq=seq,
            captured_at=t,
            frame_key="",
            width=image.shape[1],
            height=image.shape[0],
        )
        analysis = analyzer.analyze(encode_jpeg(image), scene=keeper.step(seq, t))
        result = analysis.to_result(ref, analyzer.detector.name, False, 0.0)
        if seen:
            seen(result)
        new_alerts, pattern_state = engine.advance(pattern_state, engine.frame_facts(result))
        alerts += new_alerts
        for event in result.conflicts:
            events[event.conflict_id] = event
        _vote(
            votes, result.detections, truth["frames"][index]["boxes"] if index < len(truth["frames"]) else []
        )
        count += 1
        if progress:
            progress(count)
    actor_of = {track: counter.most_common(1)[0][0] for track, counter in votes.items()}
    return ClipRun(
        truth["scenario"],
        truth["safe"],
        truth["seconds"],
        truth["conflicts"],
        events,
        alerts,
        actor_of,
        count,
    )


def _vote(votes: dict[int, Counter[str]], detections: Any, boxes: list[dict[str, Any]]) -> None:
    for detection in detections:
        if detection.track_id is None:
            continue
        box = (detection.box.x1, detection.box.y1, detection.box.x2, detection.box.y2)
        best = max(boxes, key=lambda b: _iou(b["box"], box), default=None)
        if best is not None and _iou(best["box"], box) >= MATCH_IOU:
            votes.setdefault(detection.track_id, Counter())[best["actor"]] += 1


def _overlaps(event: ConflictEvent, conflict: dict[str, Any]) -> bool:
    return (
        event.start_at <= conflict["end"] + OVERLAP_SLACK_S
        and conflict["start"] <= event.end_at + OVERLAP_SLACK_S
    )


def _matches(run: ClipRun, event: ConflictEvent, conflict: dict[str, Any]) -> bool:
    actors = {run.actor_of.get(event.first_track), run.actor_of.get(event.second_track)}
    return (
        actors == {conflict["first"], conflict["second"]}
        and event.kind == conflict["kind"]
        and _overlaps(event, conflict)
    )


def score(run: ClipRun) -> ClipScore:
    matched: set[str] = set()
    result = ClipScore(
        run.name,
        run.safe,
        run.seconds,
        len(run.truth),
        0,
        0,
        len(run.alerts),
        0,
        sum(c["severity"] == "serious" for c in run.truth),
        0,
    )
    alerts_of = Counter(alert.conflict_id for alert in run.alerts)
    for conflict in run.truth:
        found = [e for e in run.events.values() if _matches(run, e, conflict)]
        matched |= {e.conflict_id for e in found}
        best = min(found, key=lambda e: e.min_ttc_s if e.min_ttc_s is not None else math.inf, default=None)
        row = {
            "pair": f"{conflict['first']}-{conflict['second']}",
            "kind": conflict["kind"],
            "severity": conflict["severity"],
            "found": best is not None,
            "found_severity": str(best.severity) if best else None,
            "truth_ttc": conflict["min_ttc_s"],
            "ttc": best.min_ttc_s if best else None,
            "truth_pet": conflict["pet_s"],
            "pet": best.pet_s if best else None,
            "alerts": sum(alerts_of[e.conflict_id] for e in found),
        }
        result.rows.append(row)
        if best is None:
            continue
        result.found += 1
        if conflict["severity"] == "serious" and row["alerts"] == 1:
            result.serious_alerted += 1
        if conflict["min_ttc_s"]:
            measured = best.min_ttc_s
            result.ttc_errors.append(
                1.0 if measured is None else abs(measured - conflict["min_ttc_s"]) / conflict["min_ttc_s"]
            )
        if conflict["pet_s"] is not None:
            result.pet_errors.append(math.inf if best.pet_s is None else abs(best.pet_s - conflict["pet_s"]))
    result.false_conflicts = sum(1 for e in run.events if e not in matched)
    result.false_alerts = sum(1 for a in run.alerts if a.conflict_id not in matched)
    return result


@dataclass(frozen=True)
class Summary:
    clips: int
    recall: float
    safe_minutes: float
    false_conflicts_per_minute: float
    alerts_per_safe_minute: float
    false_alerts: int
    one_alert_per_serious: float  # share of serious truth conflicts with exactly one alert
    median_ttc_error: float | None
    median_pet_error_s: float | None

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def summarize(scores: list[ClipScore]) -> Summary:
    truth = sum(s.truth for s in scores)
    safe = [s for s in scores if s.safe]
    safe_minutes = sum(s.seconds for s in safe) / 60
    serious = sum(s.serious_truth for s in scores)
    ttc = [e for s in scores for e in s.ttc_errors]
    pet = [e for s in scores for e in s.pet_errors]
    return Summary(
        clips=len(scores),
        recall=sum(s.found for s in scores) / truth if truth else 1.0,
        safe_minutes=safe_minutes,
        false_conflicts_per_minute=sum(s.false_conflicts for s in safe) / safe_minutes
        if safe_minutes
        else 0.0,
        alerts_per_safe_minute=sum(s.alerts for s in safe) / safe_minutes if safe_minutes else 0.0,
        false_alerts=sum(s.false_alerts for s in scores),
        one_alert_per_serious=sum(s.serious_alerted for s in scores) / serious if serious else 1.0,
        median_ttc_error=statistics.median(ttc) if ttc else None,
        median_pet_error_s=statistics.median(pet) if pet else None,
    )


def load_truth(path: Path) -> dict[str, Any]:
    try:
        truth: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a truth file ({error})") from None
    missing = [
        key
        for key in ("scenario", "camera", "calibration", "conflicts", "frames", "safe", "seconds")
        if key not in truth
    ]
    if missing:
        raise ValueError(f"{path}: not a scenario truth file (no {', '.join(missing)})")
    return truth


def scenario_clips(folder: Path) -> list[tuple[Path, Path]]:
    """The project's scenario clips and truths in `folder`, written anew when the
    scenario definitions changed since (their digest is in each truth file)."""
    from trafficrisk import scenario

    pairs = []
    for item in scenario.SCENARIOS.values():
        clip, truth_file = folder / f"{item.name}.avi", folder / f"{item.name}.json"
        current = None
        if clip.exists() and truth_file.exists():
            with truth_file.open() as handle:
                current = json.load(handle).get("digest")
        if current != scenario.digest(item):
            clip, truth_file = scenario.write(item, folder)
        pairs.append((clip, truth_file))
    return pairs


def evaluate(
    clips: list[tuple[Path, Path]],
    analyzer: FrameAnalyzer,
    *,
    fps: float,
    calibrated: bool,
    limits: Thresholds,
    patterns: list[PatternBase],
    drop: float = 0.0,
    report: Callable[[str], None] = print,
) -> list[ClipScore]:
    scores = []
    for clip, truth_file in clips:
        truth = load_truth(truth_file)
        run = run_clip(
            clip,
            truth,
            analyzer,
            fps=fps,
            calibrated=calibrated,
            limits=limits,
            patterns=patterns,
            drop=drop,
        )
        scores.append(score(run))
        s = scores[-1]
        report(
            f"  {s.name:<14} {'safe' if s.safe else 'conflict':<8} truth {s.truth}  found {s.found}  "
            f"false {s.false_conflicts}  alerts {s.alerts} ({s.false_alerts} false)  "
            + "  ".join(
                f"[{r['pair']} {r['severity']}: TTC {_fmt(r['truth_ttc'])}->{_fmt(r['ttc'])} "
                f"PET {_fmt(r['truth_pet'])}->{_fmt(r['pet'])} alerts {r['alerts']}]"
                for r in s.rows
            )
        )
    return scores


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def summary_lines(label: str, summary: Summary) -> list[str]:
    ttc = "-" if summary.median_ttc_error is None else f"{100 * summary.median_ttc_error:.0f} %"
    pet = "-" if summary.median_pet_error_s is None else f"{summary.median_pet_error_s:.2f} s"
    return [
        f"{label}: recall {summary.recall:.2f}, false conflicts {summary.false_conflicts_per_minute:.2f} "
        f"and alerts {summary.alerts_per_safe_minute:.2f} per safe clip-minute "
        f"({summary.safe_minutes:.1f} min), one alert per serious conflict "
        f"{summary.one_alert_per_serious:.2f}, "
        f"false alerts {summary.false_alerts}, median TTC error {ttc}, median PET error {pet}"
    ]
