"""RTSP over TCP or UDP, chosen per camera, although OpenCV's option is process-wide.

OpenCV's FFmpeg backend takes its demuxer options only from the environment variable
OPENCV_FFMPEG_CAPTURE_OPTIONS, read when a capture opens (a `?udp` in the URL does not
override it). So an open holds this module's lock for as long as it runs: opens with
the usual transport share it and run side by side; an open with the other transport
takes it alone, with the variable switched, and opens that arrive meanwhile wait.
UDP cameras are few, and their opens rare, so the waiting is rare too.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

Transport = Literal["tcp", "udp"]

OPTIONS_VARIABLE = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
USUAL: Transport = "tcp"  # UDP loses packets on busy networks and smears frames


# What FFmpeg may open, even when a URL or a stream inside it asks for more: a camera URL
# passed the UrlPolicy (workers/camera_url.py), but FFmpeg also follows what a stream
# names (a playlist's entries, a concat: or subfile: list, a data: URI), and its other
# protocols (ftp, gopher, pipes...) would let a stream reach what the policy refused.
PROTOCOLS = "file,rtp,rtsp,rtsps,srtp,tcp,udp,tls,http,https,httpproxy,crypto"


def ffmpeg_options(transport: Transport) -> str:
    # A short analyzeduration makes opening take 0.4 s instead of about 3 s.
    return f"rtsp_transport;{transport}|analyzeduration;100000|protocol_whitelist;{PROTOCOLS}"


class TransportLock:
    """A shared lock for opens with the usual transport, an exclusive one for the other.

    Writer-preferring: once an unusual open waits, new usual opens wait behind it, so a
    fleet of cameras reconnecting all the time cannot starve it.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._sharing = 0
        self._exclusive_waiting = 0
        self._exclusive = False

    @contextmanager
    def opening(self, transport: Transport) -> Iterator[None]:
        if transport == USUAL:
            with self._shared():
                yield
        else:
            with self._alone():
                os.environ[OPTIONS_VARIABLE] = ffmpeg_options(transport)
                try:
                    yield
                finally:
                    os.environ[OPTIONS_VARIABLE] = ffmpeg_options(USUAL)

    @contextmanager
    def _shared(self) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: not self._exclusive and not self._exclusive_waiting)
            self._sharing += 1
        try:
            yield
        finally:
            with self._changed:
                self._sharing -= 1
                self._changed.notify_all()

    @contextmanager
    def _alone(self) -> Iterator[None]:
        with self._changed:
            self._exclusive_waiting += 1
            self._changed.wait_for(lambda: not self._exclusive and not self._sharing)
            self._exclusive_waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._changed:
                self._exclusive = False
                self._changed.notify_all()


os.environ[OPTIONS_VARIABLE] = ffmpeg_options(USUAL)
transport_lock = TransportLock()
