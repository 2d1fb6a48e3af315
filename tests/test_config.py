"""Settings and the cameras file: good values load, bad ones stop with one clear line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from trafficrisk.settings import SettingsError, load_settings
from trafficrisk.workers.camera_file import CameraFile, CameraFileError, load_cameras


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("TRAFFICRISK_") or name == "PORT":
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("env", "attribute", "expected"),
    [
        ({}, "model", "auto"),
        ({"TRAFFICRISK_LLM_RPM_PER_KEY": "120"}, "llm_rpm_per_key", 120),
        ({"PORT": "8080"}, "port", 8080),
        ({"TRAFFICRISK_LLM_BASE_URL": ""}, "is_llm_enabled", False),
        ({"TRAFFICRISK_LLM_BASE_URL": "http://127.0.0.1:9/v1"}, "is_llm_enabled", True),
        # an empty secret is an unset one: nothing is served with an empty password
        ({"TRAFFICRISK_DASHBOARD_PASSWORD": ""}, "dashboard_password", None),
        ({"TRAFFICRISK_API_TOKEN": ""}, "api_token", None),
        ({"TRAFFICRISK_WEBHOOK_SECRET": ""}, "webhook_secret", None),
        ({"TRAFFICRISK_SECRET_KEY": ""}, "secret_key", None),
        ({"TRAFFICRISK_CAMERA_ALLOW_NETWORKS": "127.0.0.0/8, 10.1.0.0/16"}, "camera_allow_networks",
         ("127.0.0.0/8", "10.1.0.0/16")),
        ({"TRAFFICRISK_REDIS_URL": "rediss://:pw@redis.example:6380/0?ssl_ca_certs=/etc/ca.pem"}, "redis_url",
         "rediss://:pw@redis.example:6380/0?ssl_ca_certs=/etc/ca.pem"),
    ],
)
def test_settings_read_from_environment(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                        attribute: str, expected: object) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert getattr(load_settings(), attribute) == expected


def test_api_keys_are_comma_separated_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAFFICRISK_LLM_API_KEYS", " sk-one, sk-two ,")
    keys = load_settings().llm_api_keys
    assert [k.get_secret_value() for k in keys] == ["sk-one", "sk-two"]
    assert "sk-one" not in repr(keys)


@pytest.mark.parametrize(
    ("name", "value", "message_start"),
    [
        ("TRAFFICRISK_LLM_RPM_PER_KEY", "lots", "TRAFFICRISK_LLM_RPM_PER_KEY: Input should be a valid"),
        ("TRAFFICRISK_LLM_RPM_PER_KEY", "0", "TRAFFICRISK_LLM_RPM_PER_KEY: Input should be greater than 0"),
        ("TRAFFICRISK_JPEG_QUALITY", "101", "TRAFFICRISK_JPEG_QUALITY: Input should be less than"),
        ("TRAFFICRISK_ALERT_LEVEL", "extreme", "TRAFFICRISK_ALERT_LEVEL: String should match pattern"),
        ("TRAFFICRISK_MODLE", "yolo11n.pt", "TRAFFICRISK_MODLE: unknown setting"),
        ("PORT", "http", "PORT: Input should be a valid integer"),
        ("TRAFFICRISK_DASHBOARD_PASSWORD", "hunter2", "TRAFFICRISK_DASHBOARD_PASSWORD: must be at least 8"),
        ("TRAFFICRISK_API_TOKEN", "short-token", "TRAFFICRISK_API_TOKEN: must be at least 12 characters"),
        ("TRAFFICRISK_CAMERA_ALLOW_NETWORKS", "10.0.0.0/33", "TRAFFICRISK_CAMERA_ALLOW_NETWORKS: not a"),
        # shorter than a webhook retry's wait (30 s) plus its timeout: delivered twice
        ("TRAFFICRISK_VISIBILITY_TIMEOUT_S", "40", "TRAFFICRISK_VISIBILITY_TIMEOUT_S: must be at least 45"),
        ("TRAFFICRISK_REDIS_URL", "http://:hunter2@127.0.0.1", "TRAFFICRISK_REDIS_URL: must start with redis://"),
    ],
)
def test_bad_setting_stops_with_one_line(monkeypatch: pytest.MonkeyPatch, name: str, value: str,
                                         message_start: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert message.startswith(message_start)
    assert "\n" not in message
    assert "hunter2" not in message and "short-token" not in message  # never echoed back


CAMERA_FILES = [
    ("cameras: []\n", None),
    ("cameras:\n  - {id: a, url: rtsp://h/x, sample_fps: 2}\n", None),
    ("cameras:\n  - {id: a, url: rtsp://h/x, fps: 2}\n", "cameras.0.fps: Extra inputs are not permitted"),
    ("cameras:\n  - {id: a, url: rtsp://h/x, sample_fps: 99}\n", "cameras.0.sample_fps: Input should be"),
    ("cameras:\n  - {id: 'bad id', url: x}\n", "cameras.0.id: String should match pattern"),
    ("cameras:\n  - {id: a, url: x}\n  - {id: a, url: y}\n", "camera id 'a' appears more than once"),
    ("camera: []\n", "camera: Extra inputs are not permitted"),
    ("cameras: [\n", "not valid YAML"),
]


@pytest.mark.parametrize(("text", "error"), CAMERA_FILES)
def test_cameras_file(tmp_path: Path, text: str, error: str | None) -> None:
    path = tmp_path / "cameras.yaml"
    path.write_text(text)
    if error is None:
        load_cameras(path)
        return
    with pytest.raises(CameraFileError, match=error.replace("(", r"\(")) as raised:
        load_cameras(path)
    assert str(raised.value).startswith(str(path))


def test_relative_file_urls_resolve_next_to_the_yaml(tmp_path: Path) -> None:
    path = tmp_path / "cameras.yaml"
    path.write_text("cameras:\n  - {id: a, url: clips/x.avi}\n  - {id: b, url: 'rtsp://h/s'}\n")
    a, b = load_cameras(path)
    assert a.url == str(tmp_path / "clips" / "x.avi")
    assert b.url == "rtsp://h/s"


def test_wrong_field_in_yaml_stops_start_up(tmp_path: Path) -> None:
    path = tmp_path / "cameras.yaml"
    path.write_text("cameras:\n  - {id: a, url: x, colour: red}\n")
    done = subprocess.run([sys.executable, "-m", "trafficrisk.cli", "check"], capture_output=True, text=True,
                          env={"TRAFFICRISK_CAMERAS_FILE": str(path), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"trafficrisk: {path}: cameras.0.colour: Extra inputs are not permitted"]


def test_the_readme_cameras_example_is_valid() -> None:
    """The cameras file shown in the README loads as it stands, zones and calibration too."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = re.search(r"```yaml\n(cameras:.*?)```", readme, re.S)
    assert block is not None
    cameras = CameraFile.model_validate(yaml.safe_load(block.group(1))).cameras
    assert [c.id for c in cameras] == ["main-street", "gate", "lobby", "desk", "replay"]
    assert cameras[0].calibration is not None and [z.kind for z in cameras[0].zones] == ["polygon", "line"]
