"""The lock that lets RTSP cameras choose TCP or UDP although OpenCV's option is process-wide."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from trafficrisk.workers.rtsp_transport import OPTIONS_VARIABLE, Transport, TransportLock, ffmpeg_options


def open_side_by_side(first: Transport, second: Transport) -> tuple[list[str], str]:
    """Two opens, the second starting while the first is under way: their order, and the
    options the second saw."""
    lock, order, seen = TransportLock(), [], []
    first_in = threading.Event()

    def open_first() -> None:
        with lock.opening(first):
            first_in.set()
            time.sleep(0.3)
            order.append("first done")

    def open_second() -> None:
        with lock.opening(second):
            order.append("second in")
            seen.append(os.environ[OPTIONS_VARIABLE])

    threads = [threading.Thread(target=open_first), threading.Thread(target=open_second)]
    threads[0].start()
    first_in.wait(5)
    threads[1].start()
    for thread in threads:
        thread.join(5)
    return order, seen[0]


@pytest.mark.parametrize(
    ("first", "second", "order"),
    [
        ("tcp", "tcp", ["second in", "first done"]),  # usual opens run side by side
        ("tcp", "udp", ["first done", "second in"]),  # the switch waits for usual opens
        ("udp", "tcp", ["first done", "second in"]),  # and usual opens wait for the switch
        ("udp", "udp", ["first done", "second in"]),
    ],
)
def test_opens_with_another_transport_run_alone(
    first: Transport, second: Transport, order: list[str]
) -> None:
    seen_order, options = open_side_by_side(first, second)
    assert seen_order == order
    assert options == ffmpeg_options(second)
    assert os.environ[OPTIONS_VARIABLE] == ffmpeg_options("tcp")


def test_a_waiting_switch_is_not_starved_by_later_usual_opens() -> None:
    lock, order = TransportLock(), []
    usual_in = threading.Event()

    def hold_usual() -> None:
        with lock.opening("tcp"):
            usual_in.set()
            time.sleep(0.3)

    def open_udp() -> None:
        with lock.opening("udp"):
            order.append("udp")

    def open_late_usual() -> None:
        with lock.opening("tcp"):
            order.append("late tcp")

    holder = threading.Thread(target=hold_usual)
    holder.start()
    usual_in.wait(5)
    switch = threading.Thread(target=open_udp)
    switch.start()
    time.sleep(0.1)  # the switch is waiting now
    late = threading.Thread(target=open_late_usual)
    late.start()
    for thread in (holder, switch, late):
        thread.join(5)
    assert order == ["udp", "late tcp"]


SAMPLE = Path(__file__).resolve().parent.parent / "data" / "vtest.avi"
# FFmpeg protocols that reach around the camera URL policy, refused whatever the URL says.
PROTOCOL_ROWS = [
    ("a plain file", str(SAMPLE), True),
    ("subfile: of a file", f"subfile,,start,0,end,0,,:{SAMPLE}", False),
    ("concat: of files", f"concat:{SAMPLE}|{SAMPLE}", False),
    ("a data: URI", "data:video/avi;base64,AAAA", False),
]


@pytest.mark.parametrize(
    ("url", "opens"), [row[1:] for row in PROTOCOL_ROWS], ids=[row[0] for row in PROTOCOL_ROWS]
)
def test_ffmpeg_opens_only_whitelisted_protocols(url: str, opens: bool) -> None:
    import cv2

    assert os.environ[OPTIONS_VARIABLE] == ffmpeg_options("tcp")  # what every capture opens with
    capture = cv2.VideoCapture(url, cv2.CAP_FFMPEG)
    try:
        assert capture.isOpened() == opens
    finally:
        capture.release()
