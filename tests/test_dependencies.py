"""The dependency set: floors that keep out known-vulnerable or breaking releases, aiohttp
only for the simulator, and the lock scripts/setup installs from (the versions CI tested)."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirements(extra: str | None = None) -> dict[str, Requirement]:
    listed = PROJECT["dependencies"] if extra is None else PROJECT["optional-dependencies"][extra]
    return {str(canonicalize_name(r.name)): r for r in map(Requirement, listed)}


def locked() -> dict[str, str]:  # by canonical name
    lines = (ROOT / "requirements.lock").read_text().splitlines()
    pins = [line.split("==") for line in lines if line and not line.startswith("#")]
    return {str(canonicalize_name(name)): version for name, version in pins}


@pytest.mark.parametrize(
    ("package", "extra", "version", "allowed"),
    [
        ("python-socketio", None, "5.13.0", False),  # unpickles message-queue payloads
        ("python-socketio", None, "5.11.4", False),
        ("python-socketio", None, "5.14.0", True),
        ("gunicorn", None, "22.0.0", False),  # request smuggling
        ("gunicorn", None, "23.0.0", True),
        ("opencv-python-headless", None, "5.1.0.95", False),  # no readNetFromTensorflow: no SSD
        ("opencv-python-headless", None, "4.14.0.94", True),
        ("opencv-python", "yolo", "5.0.0.93", False),  # shares cv2 with the headless build
        ("aiohttp", "simulator", "3.9.5", False),
        ("aiohttp", "simulator", "3.14.5", True),
    ],
)
def test_floors_keep_out_known_bad_releases(
    package: str, extra: str | None, version: str, allowed: bool
) -> None:
    requirement = requirements(extra)[package]
    assert requirement.specifier.contains(version, prereleases=True) is allowed


def test_aiohttp_is_only_the_simulators() -> None:
    assert "aiohttp" not in requirements()
    assert "aiohttp" in requirements("simulator")


def test_the_lock_satisfies_the_requirements() -> None:
    pins = locked()
    wanted = {
        **requirements(),
        **{k: v for e in PROJECT["optional-dependencies"] for k, v in requirements(e).items()},
    }
    for name, requirement in wanted.items():
        assert name in pins, f"{name} is not in requirements.lock: run scripts/lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (requirement, pins[name])


def test_the_tests_run_on_the_locked_versions() -> None:
    """What scripts/setup installed is what the lock says (else the lock is stale)."""
    installed = {str(canonicalize_name(d.metadata["Name"])): d.version for d in metadata.distributions()}
    differ = {
        name: (version, installed[name])
        for name, version in locked().items()
        if name in installed and installed[name] != version
    }
    assert differ == {}, f"installed versions differ from requirements.lock (locked, installed): {differ}"
