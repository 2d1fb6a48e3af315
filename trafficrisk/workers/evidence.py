"""An alert's evidence as images and video: the group's crop and a short clip around it."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from trafficrisk.messages import Box, FrameResult
from trafficrisk.workers.analysis import crop_box, decode_jpeg, encode_jpeg

CLIP_WIDTH = 480  # small enough for hundreds of clips in Redis, big enough to see who did what
CLIP_MAX_FRAMES = 60
# WebM with VP8: Chromium and Firefox play it, and OpenCV's bundled FFmpeg writes it
# (it prints a line that the tag is "not supported" for WebM, then writes the right one).
CLIP_FOURCC = "VP80"


def crop_evidence(frame_jpeg: bytes, box: Box, quality: int = 85) -> bytes:
    """The group's box with a margin, cut out of the frame, as JPEG."""
    return encode_jpeg(crop_box(decode_jpeg(frame_jpeg), box), quality)


def clip_fps(captured_at: Sequence[float]) -> float:
    """The rate that plays the frames back in real time (the camera's sampling rate)."""
    if len(captured_at) < 2 or captured_at[-1] <= captured_at[0]:
        return 1.0
    return min(30.0, max(0.5, (len(captured_at) - 1) / (captured_at[-1] - captured_at[0])))


def _scaled(image: np.ndarray, width: int) -> np.ndarray:
    height = round(image.shape[0] * width / image.shape[1]) // 2 * 2  # VP8 wants even sizes
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def encode_clip(frames_jpeg: Sequence[bytes], fps: float, width: int = CLIP_WIDTH) -> bytes:
    """Frames (JPEG, in order) as a WebM clip; ValueError when there are none."""
    if not frames_jpeg:
        raise ValueError("a clip needs at least one frame")
    images = [_scaled(decode_jpeg(jpeg), width) for jpeg in frames_jpeg[:CLIP_MAX_FRAMES]]
    size = (images[0].shape[1], images[0].shape[0])
    with tempfile.TemporaryDirectory(prefix="trafficrisk-clip-") as folder:
        path = Path(folder) / "clip.webm"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*CLIP_FOURCC), fps, size)
        if not writer.isOpened():
            raise RuntimeError("this OpenCV build cannot write WebM (VP8)")
        for image in images:
            writer.write(image if image.shape[1::-1] == size else cv2.resize(image, size))
        writer.release()
        return path.read_bytes()


def group_box(history: Sequence[FrameResult], frame_id: str, group_id: str) -> Box | None:
    """The box of a frame's group, from the camera's recent results."""
    for result in history:
        if result.frame_id == frame_id:
            return next((g.group.box for g in result.groups if g.group.group_id == group_id), None)
    return None


def clip_results(history: Sequence[FrameResult], around: float, before_s: float,
                 after_s: float) -> list[FrameResult]:
    """The frames captured from `before_s` before `around` to `after_s` after, in order."""
    chosen = {r.seq: r for r in history if around - before_s <= r.captured_at <= around + after_s}
    return [chosen[seq] for seq in sorted(chosen)][:CLIP_MAX_FRAMES]
