"""Images and video of what was seen: an alert's crop and clip, and the crops of a
conflict's frames that the LLM is shown."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from trafficrisk.messages import Box, FrameResult
from trafficrisk.workers.analysis import crop_box, decode_jpeg, encode_jpeg

IMAGE_SIDE = 512  # px, the longer side of each crop the LLM sees: a 512 px tile in OpenAI's accounting
MOSAIC_WIDTH = 1024  # px at most, for backends that take one image
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


def clip_results(
    history: Sequence[FrameResult], around: float, before_s: float, after_s: float
) -> list[FrameResult]:
    """The frames captured from `before_s` before `around` to `after_s` after, in order."""
    chosen = {r.seq: r for r in history if around - before_s <= r.captured_at <= around + after_s}
    return [chosen[seq] for seq in sorted(chosen)][:CLIP_MAX_FRAMES]


def crops(frames: Sequence[bytes | None], box: Box, quality: int = 85) -> list[bytes]:
    """Each frame that is still there, cut to the box (with a margin), longer side IMAGE_SIDE at most."""
    return [
        encode_jpeg(_fit(crop_box(decode_jpeg(jpeg), box), IMAGE_SIDE), quality) for jpeg in frames if jpeg
    ]


def mosaic(images: Sequence[bytes], quality: int = 85) -> bytes:
    """The crops side by side in time order, as one image for single-image backends."""
    decoded = [decode_jpeg(jpeg) for jpeg in images]
    height = min(image.shape[0] for image in decoded)
    row = np.hstack(
        [cv2.resize(i, (max(1, round(i.shape[1] * height / i.shape[0])), height)) for i in decoded]
    )
    return encode_jpeg(_fit(row, MOSAIC_WIDTH), quality)


def _fit(image: np.ndarray, side: int) -> np.ndarray:
    if image.size == 0:
        raise ValueError("the box is outside the frame")
    scale = side / max(image.shape[:2])
    if scale >= 1:
        return image
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)
