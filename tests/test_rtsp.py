"""A real RTSP camera on loopback (GStreamer's RTSP server serving vtest.avi).

The reader must follow it through a kill and a restart, and through a hang.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from conftest import RtspServer, StatusLog, frames_after
from trafficrisk.messages import Camera, CameraState
from trafficrisk.workers.capture import CameraReader
from trafficrisk.workers.rtsp_transport import OPTIONS_VARIABLE, ffmpeg_options

# Real processes (workers, servers, a browser): not in the quick loop (pytest -m "not slow").
pytestmark = pytest.mark.slow


def frames_advance(reader: CameraReader, within: float) -> bool:
    first = reader.latest()
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        later = reader.latest()
        if later is not None and (first is None or later.number > first.number):
            return True
        time.sleep(0.05)
    return False


def test_frames_flow_from_rtsp_at_stream_rate(rtsp_server: RtspServer) -> None:
    first, later = frames_after(Camera(id="rtsp", url=rtsp_server.url), 2.0, timeout_s=3)
    assert later.image.shape == (576, 768, 3)
    assert 15 <= later.number - first.number <= 25  # the server sends 10 fps


def udp_sockets_held() -> int:
    """UDP sockets this process has open (RTP over UDP needs two per stream)."""
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    rows = [row for table in ("udp", "udp6") for row in Path("/proc/net", table).read_text().splitlines()[1:]]
    return sum(row.split()[9] in inodes for row in rows)


@pytest.mark.parametrize(("transport", "udp_sockets"), [("tcp", 0), ("udp", 2)])
def test_rtsp_transport_is_chosen_per_camera(
    rtsp_server: RtspServer, transport: str, udp_sockets: int
) -> None:
    camera = Camera.model_validate({"id": "rtsp", "url": rtsp_server.url, "rtsp_transport": transport})
    statuses = StatusLog()
    reader = CameraReader(camera, statuses, timeout_s=3)
    reader.start()
    try:
        statuses.wait_for(CameraState.ONLINE, timeout=10)
        assert frames_advance(reader, within=5)
        held = udp_sockets_held()
    finally:
        reader.stop()
    assert held == udp_sockets
    assert os.environ[OPTIONS_VARIABLE] == ffmpeg_options("tcp")  # the usual transport is back


def test_killed_server_goes_offline_and_a_restart_comes_back(rtsp_server: RtspServer) -> None:
    statuses = StatusLog()
    reader = CameraReader(Camera(id="rtsp", url=rtsp_server.url), statuses, timeout_s=3)
    reader.start()
    try:
        statuses.wait_for(CameraState.ONLINE, timeout=10)
        mark, killed = statuses.mark(), time.monotonic()
        rtsp_server.stop(signal.SIGKILL)
        reason = statuses.wait_for(CameraState.OFFLINE, timeout=10, since=mark)
        offline_after = time.monotonic() - killed
        time.sleep(3)  # down a while: the reader retries against a refusing port
        mark, restarted = statuses.mark(), time.monotonic()
        rtsp_server.start()
        statuses.wait_for(CameraState.ONLINE, timeout=10, since=mark)
        online_after = time.monotonic() - restarted
        assert frames_advance(reader, within=5)
    finally:
        reader.stop()
    assert reason.startswith(("stream stalled or ended", "cannot open rtsp://127.0.0.1")), reason
    assert offline_after < 5
    assert online_after < 10


def test_hung_server_goes_offline_and_recovers(rtsp_server: RtspServer) -> None:
    assert rtsp_server.proc is not None
    statuses = StatusLog()
    reader = CameraReader(Camera(id="rtsp", url=rtsp_server.url), statuses, timeout_s=2)
    reader.start()
    try:
        statuses.wait_for(CameraState.ONLINE, timeout=10)
        mark = statuses.mark()
        os.kill(rtsp_server.proc.pid, signal.SIGSTOP)
        reason = statuses.wait_for(CameraState.OFFLINE, timeout=15, since=mark)
        mark = statuses.mark()
        os.kill(rtsp_server.proc.pid, signal.SIGCONT)
        statuses.wait_for(CameraState.ONLINE, timeout=15, since=mark)
        assert frames_advance(reader, within=5)
    finally:
        os.kill(rtsp_server.proc.pid, signal.SIGCONT)
        reader.stop()
    assert reason == "stream stalled or ended: no frame within 2 s" or reason.startswith("cannot open")
