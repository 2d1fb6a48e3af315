"""Camera URLs that cannot be turned against the host: the policy, the API's answer and a
real capture process's."""

from __future__ import annotations

import contextlib
import ipaddress
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import DATA, SAMPLE_VIDEO
from trafficrisk.settings import Settings
from trafficrisk.workers.camera_url import CameraUrlError, UrlPolicy


@pytest.fixture
def media(tmp_path: Path) -> Path:
    folder = tmp_path / "media"
    folder.mkdir()
    (folder / "clip.avi").write_bytes(b"")
    (tmp_path / "secret.avi").write_bytes(b"")
    (folder / "link.avi").symlink_to(tmp_path / "secret.avi")  # inside, pointing out
    return folder


@pytest.mark.parametrize(
    ("url", "refused", "options"),
    [
        ("rtsp://10.0.0.5:554/stream", None, {}),  # a camera on a private network: the normal case
        ("rtsps://cam.example/stream", None, {}),
        ("http://192.168.1.20/snap.jpg", None, {}),
        ("https://u:hunter2@203.0.113.7/mjpeg", None, {}),
        ("{media}/clip.avi", None, {}),
        ("{media}/../media/clip.avi", None, {}),
        ("{media}/../secret.avi", "a video file must be under the media folders", {}),
        ("{media}/link.avi", "a video file must be under the media folders", {}),  # where it really is
        ("/etc/passwd", "a video file must be under the media folders", {}),
        ("file:///etc/passwd", "the scheme must be one of rtsp, rtsps, http, https", {}),
        ("ftp://10.0.0.5/clip", "the scheme must be one of", {}),
        ("gopher://10.0.0.5/", "the scheme must be one of", {}),
        ("rtsp://127.0.0.1:6379/", "127.0.0.1 is this machine", {}),  # loopback Redis
        ("rtsp://127.0.0.1:8554/cam", None, {"networks": ["127.0.0.0/8"]}),  # allowed on purpose
        ("http://localhost:6379/", "localhost is this machine", {}),
        ("http://[::1]/x", "::1 is this machine", {}),
        ("http://[::ffff:127.0.0.1]/x", "is this machine", {}),
        ("http://0.0.0.0/x", "0.0.0.0 is this machine", {}),
        ("http://169.254.169.254/latest/meta-data/", "a link-local or cloud metadata address", {}),
        ("http://[fd00:ec2::254]/latest/", "a link-local or cloud metadata address", {}),
        ("http://[fe80::1]/x", "a link-local or cloud metadata address", {}),
        ("rtsp://u:p@cam.example:99999/x", "rtsp://u:***@cam.example:99999/x: invalid port", {}),
        ("rtsp:///nohost", "no host", {}),
        ("/dev/video0", "local devices are off", {}),
        ("device:0", "local devices are off", {}),
        ("/dev/video0", None, {"devices": True}),
        # Found by fuzzing the API (tests/test_api_fuzz.py, this file's property test): each was a 500.
        ("~no-such-user/clip.avi", "no such home directory", {}),  # RuntimeError from expanduser
        ("clip\x00.avi", "contains a NUL character", {}),  # ValueError from the file system
        ("http://cam.example\x00/x", "contains a NUL character", {}),
        ("rtsp://[::1", "rtsp://[::1: not a valid URL", {}),  # ValueError from urlsplit
        ("rtsp://u:hunter2@[cam]/s", "rtsp://u:***@[cam]/s: not a valid URL", {}),  # bracketed, no IP
        ("http://[]/x", "not a valid URL", {}),
    ],
)
def test_the_policy(media: Path, url: str, refused: str | None, options: dict[str, object]) -> None:
    networks = tuple(ipaddress.ip_network(n) for n in options.get("networks", []))  # type: ignore[attr-defined]
    policy = UrlPolicy((media.resolve(),), bool(options.get("devices")), networks)
    url = url.replace("{media}", str(media))
    if refused is None:
        policy.check(url)
        return
    with pytest.raises(CameraUrlError, match=None) as error:
        policy.check(url)
    assert refused in str(error.value)
    assert "hunter2" not in str(error.value)


@pytest.mark.parametrize(
    ("environment", "allowed", "refused"),
    [
        # the default: data/ and the cameras file's folder
        ({}, [str(SAMPLE_VIDEO), str(DATA / "dog.jpg")], ["/etc/hosts"]),
        ({"media_folders": ("/etc",)}, ["/etc/hosts"], [str(SAMPLE_VIDEO)]),
        ({"allow_devices": True}, ["device:0"], []),
        ({"camera_allow_networks": ("127.0.0.0/8",)}, ["rtsp://127.0.0.1/x"], ["http://169.254.169.254/"]),
    ],
)
def test_the_policy_from_the_settings(
    environment: dict[str, object], allowed: list[str], refused: list[str]
) -> None:
    policy = Settings(cameras_file=Path("cameras.yaml"), **environment).url_policy()  # type: ignore[arg-type]
    for url in allowed:
        policy.check(url)
    for url in refused:
        with pytest.raises(CameraUrlError):
            policy.check(url)


@pytest.mark.parametrize("network", ["not-a-network", "10.0.0.0/33"])
def test_a_bad_allowed_network_stops_start_up(network: str) -> None:
    with pytest.raises(ValueError, match="not a network"):
        Settings(camera_allow_networks=(network,))


# What people paste: anything, and anything after a scheme, a `~`, a path or a bracket.
PREFIXES = ["rtsp://", "http://", "https://u:p@", "rtsp://[", "http://u:p@[", "~", "/"]
TYPED = st.one_of(st.text(), st.builds(str.__add__, st.sampled_from(PREFIXES), st.text()))


@settings(max_examples=500, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(url=TYPED)
def test_the_policy_refuses_or_allows_whatever_is_typed(url: str) -> None:
    """Any string: allowed, or refused with a CameraUrlError; never another error (a 500)."""
    policy = Settings(cameras_file=Path("cameras.yaml")).url_policy()
    with contextlib.suppress(CameraUrlError):
        policy.check(url)
