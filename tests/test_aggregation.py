"""A conflict's verification: what its verdict does to an alert, the alerts held for it, and
the images the LLM is shown (merging assessments into a frame's result is gone: the LLM
verifies conflict events, not frames)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import DATA
from trafficrisk.messages import (
    Alert,
    AlertState,
    Box,
    RiskLevel,
    Verdict,
    VerdictSource,
    Verification,
)
from trafficrisk.workers.analysis import FrameDecodeError, decode_jpeg
from trafficrisk.workers.evidence import IMAGE_SIDE, MOSAIC_WIDTH, crops, mosaic
from trafficrisk.workers.verification import is_held, verified

DOG = (DATA / "dog.jpg").read_bytes()  # 768 x 576
NOW = 2000.0


def alert(state: AlertState = AlertState.OPEN, verification: Verification | None = Verification.UNVERIFIED,
          verdict: Verdict | None = None, created_at: float = NOW - 1) -> Alert:
    return Alert(alert_id="cam:conflict:1-2-10", camera_id="cam", frame_id="cam:10", created_at=created_at,
                 risk_level=RiskLevel.HIGH, risk_type="vehicle-pedestrian crossing conflict",
                 reason="rules: serious conflict", source=VerdictSource.RULES, pattern="conflict",
                 conflict_id="cam:1-2:10", verification=verification, verdict=verdict, state=state,
                 updated_at=NOW - 5)


def verdict(verification: Verification | None, source: VerdictSource = VerdictSource.LLM) -> Verdict:
    return Verdict(risk_level=RiskLevel.HIGH, risk_type="crossing", confidence=0.8,
                   reason=f"{source}: {verification}", source=source, verification=verification)


CONFIRMED = verdict(Verification.CONFIRMED)
REJECTED = verdict(Verification.REJECTED)
UNCERTAIN = verdict(Verification.UNCERTAIN)
FALLBACK = verdict(Verification.UNVERIFIED, VerdictSource.FALLBACK)  # the LLM did not answer
NO_VERIFICATION = verdict(None, VerdictSource.RULES)  # a verdict that says nothing of it

OPEN, ACKNOWLEDGED, RESOLVED = AlertState.OPEN, AlertState.ACKNOWLEDGED, AlertState.RESOLVED


@pytest.mark.parametrize(
    ("given", "state", "resolve_rejected", "expected_state", "expected"),
    [
        (CONFIRMED, OPEN, True, OPEN, Verification.CONFIRMED),
        (CONFIRMED, ACKNOWLEDGED, True, ACKNOWLEDGED, Verification.CONFIRMED),
        (CONFIRMED, RESOLVED, True, RESOLVED, Verification.CONFIRMED),
        (REJECTED, OPEN, True, RESOLVED, Verification.REJECTED),  # resolved for the operator
        (REJECTED, ACKNOWLEDGED, True, RESOLVED, Verification.REJECTED),
        (REJECTED, RESOLVED, True, RESOLVED, Verification.REJECTED),
        (REJECTED, OPEN, False, OPEN, Verification.REJECTED),  # resolving is off: only marked
        (REJECTED, ACKNOWLEDGED, False, ACKNOWLEDGED, Verification.REJECTED),
        (UNCERTAIN, OPEN, True, OPEN, Verification.UNCERTAIN),
        (UNCERTAIN, ACKNOWLEDGED, True, ACKNOWLEDGED, Verification.UNCERTAIN),
        (UNCERTAIN, RESOLVED, False, RESOLVED, Verification.UNCERTAIN),
        (FALLBACK, OPEN, True, OPEN, Verification.UNVERIFIED),  # no answer: nothing resolved
        (FALLBACK, ACKNOWLEDGED, True, ACKNOWLEDGED, Verification.UNVERIFIED),
        (FALLBACK, RESOLVED, True, RESOLVED, Verification.UNVERIFIED),
        (NO_VERIFICATION, OPEN, True, OPEN, Verification.UNVERIFIED),  # error row: read as unverified
    ],
)
def test_a_verdict_marks_its_alert_and_a_rejected_one_may_resolve_it(
    given: Verdict, state: AlertState, resolve_rejected: bool, expected_state: AlertState,
    expected: Verification
) -> None:
    before = alert(state)
    after = verified(before, given, resolve_rejected, NOW)
    assert (after.state, after.verification) == (expected_state, expected)
    assert after.verdict == given and after.updated_at == NOW
    # What the pattern raised stays as it was: its level, reason and identity.
    assert after.model_dump(exclude={"state", "verification", "verdict", "updated_at"}) == before.model_dump(
        exclude={"state", "verification", "verdict", "updated_at"})


@pytest.mark.parametrize(
    ("verification", "given", "age_s", "wait_s", "held"),
    [
        (Verification.UNVERIFIED, None, 1.0, 10.0, True),  # waiting for its verdict
        (Verification.UNVERIFIED, None, 9.9, 10.0, True),
        (Verification.UNVERIFIED, None, 10.0, 10.0, False),  # waited long enough: opens anyway
        (Verification.UNVERIFIED, None, 30.0, 10.0, False),
        (Verification.UNVERIFIED, None, 1.0, 0.0, False),  # holding is off
        (Verification.UNVERIFIED, FALLBACK, 1.0, 10.0, False),  # the LLM failed: no more waiting
        (Verification.CONFIRMED, CONFIRMED, 1.0, 10.0, False),
        (Verification.REJECTED, REJECTED, 1.0, 10.0, False),
        (None, None, 1.0, 10.0, False),  # not a conflict's alert: nothing to wait for
    ],
)
def test_an_alert_is_held_only_while_its_verdict_may_still_come(
    verification: Verification | None, given: Verdict | None, age_s: float, wait_s: float, held: bool
) -> None:
    waiting = alert(verification=verification, verdict=given, created_at=NOW - age_s)
    assert is_held(waiting, wait_s, NOW) is held


def shape(jpeg: bytes) -> tuple[int, int]:
    height, width = decode_jpeg(jpeg).shape[:2]
    return width, height


@pytest.mark.parametrize(
    ("box", "frames", "sizes", "mosaic_size"),
    [
        # 250 px and 15 % each side: smaller than a tile, never enlarged
        (Box(x1=50, y1=50, x2=300, y2=300), [DOG, DOG], [(326, 326)] * 2, (652, 326)),
        (Box(x1=0, y1=0, x2=768, y2=576), [DOG], [(512, 384)], (512, 384)),  # the longer side to 512
        (Box(x1=0, y1=0, x2=768, y2=576), [DOG, None, DOG], [(512, 384)] * 2, (1024, 384)),  # None: expired
        (Box(x1=0, y1=0, x2=768, y2=576), [DOG] * 3, [(512, 384)] * 3, (1024, 256)),  # mosaic to 1024 wide
        (Box(x1=100, y1=100, x2=700, y2=200), [DOG] * 3, [(512, 88)] * 3, (1024, 59)),
        (Box(x1=50, y1=50, x2=300, y2=300), [None, None], [], None),  # every frame expired
    ],
)
def test_crops_and_their_mosaic_fit_the_tiles(box: Box, frames: list[bytes | None],
                                              sizes: list[tuple[int, int]],
                                              mosaic_size: tuple[int, int] | None) -> None:
    images = crops(frames, box)
    assert [shape(image) for image in images] == sizes
    assert all(max(size) <= IMAGE_SIDE for size in sizes)
    if mosaic_size is None:
        with pytest.raises(ValueError):  # error row: nothing to put side by side
            mosaic(images)
        return
    assert shape(mosaic(images)) == mosaic_size
    assert mosaic_size[0] <= MOSAIC_WIDTH


def test_a_frame_that_is_no_jpeg_is_refused() -> None:
    with pytest.raises(FrameDecodeError):
        crops([DOG, b"not a jpeg"], Box(x1=0, y1=0, x2=100, y2=100))


def test_the_mosaic_keeps_the_time_order_left_to_right() -> None:
    dark, bright = (bytes(cv2.imencode(".jpg", np.full((300, 400, 3), v, np.uint8))[1]) for v in (20, 230))
    row = decode_jpeg(mosaic(crops([dark, None, bright], Box(x1=0, y1=0, x2=400, y2=300))))
    half = row.shape[1] // 2
    assert row[:, : half - 4].mean() < 40 and row[:, half + 4 :].mean() > 210
