"""Per-minute counts by event time: what a camera saw in each minute of capture time.

A result counts in the minute it was captured in, however late it is processed, as
long as it arrives within the allowed lateness: a minute closes once the camera's
newest capture time (its watermark) has passed the minute's end by the lateness.
Later results are still stored, but no longer change a closed minute.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from trafficrisk.messages import FrameResult, MinuteCounts, RiskLevel

MINUTE_S = 60
FRAMES = "frames"
ALERTS = "alerts"
LEVEL_PREFIX = "level:"
CLASS_PREFIX = "class:"


def minute_start(timestamp: float) -> int:
    return int(timestamp // MINUTE_S) * MINUTE_S


def window_counts(result: FrameResult) -> dict[str, int]:
    """What one frame adds to its minute: a frame at its risk level, its road users by class."""
    counts = {FRAMES: 1, LEVEL_PREFIX + result.risk_level: 1}
    for detection in result.detections:
        key = CLASS_PREFIX + detection.label
        counts[key] = counts.get(key, 0) + 1
    return counts


def minute_counts(start: int, fields: Mapping[str, int]) -> MinuteCounts:
    """One minute from its stored fields."""
    counted = sorted(fields.items())
    classes = {k.removeprefix(CLASS_PREFIX): n for k, n in counted if k.startswith(CLASS_PREFIX)}
    return MinuteCounts(
        start=start,
        frames=fields.get(FRAMES, 0),
        levels={level: fields.get(LEVEL_PREFIX + level, 0) for level in RiskLevel},
        classes=classes,
        alerts=fields.get(ALERTS, 0),
    )


def minutes_between(first: float, last: float) -> Iterable[int]:
    return range(minute_start(first), minute_start(last) + 1, MINUTE_S)
