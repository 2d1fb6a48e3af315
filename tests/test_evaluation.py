"""`trafficrisk evaluate`: the scenario suite through the detect stage's own code (SSD on the
rendered frames, the scene, the patterns), calibrated and uncalibrated, at the default
sample rate, scored against the truth; and the command's errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trafficrisk import evaluation
from trafficrisk.messages import DEFAULT_SAMPLE_FPS
from trafficrisk.scenario import SCENARIOS, write
from trafficrisk.workers.analysis import FrameAnalyzer
from trafficrisk.workers.conflicts import Thresholds
from trafficrisk.workers.detection import load_detector
from trafficrisk.workers.patterns import default_patterns

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, Path]]:
    return evaluation.scenario_clips(tmp_path_factory.mktemp("scenarios"))


@pytest.mark.slow
@pytest.mark.parametrize("calibrated", [True, False], ids=["calibrated", "uncalibrated"])
def test_the_suite_meets_its_targets(clips: list[tuple[Path, Path]], calibrated: bool) -> None:
    analyzer = FrameAnalyzer(load_detector("ssd", "cpu", 0.35))
    scores = evaluation.evaluate(
        clips,
        analyzer,
        fps=DEFAULT_SAMPLE_FPS,
        calibrated=calibrated,
        limits=Thresholds(),
        patterns=default_patterns(),
        report=lambda _: None,
    )
    summary = evaluation.summarize(scores)
    by_clip = {s.name: s for s in scores}
    assert summary.clips == len(SCENARIOS) and summary.safe_minutes > 0.5
    assert summary.recall >= 0.95, by_clip
    assert summary.alerts_per_safe_minute <= 0.05, by_clip
    assert summary.one_alert_per_serious == 1.0, by_clip  # exactly one alert per serious truth conflict
    assert summary.false_alerts == 0, by_clip
    assert summary.median_ttc_error is not None and summary.median_ttc_error <= 0.2, by_clip
    assert summary.median_pet_error_s is not None and summary.median_pet_error_s <= 0.3, by_clip


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAFFICRISK_")}
    env.update({"TRAFFICRISK_MODEL": "ssd", "TRAFFICRISK_DEVICE": "cpu"})
    return subprocess.run(
        [sys.executable, "-m", "trafficrisk.cli", "evaluate", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )


@pytest.mark.slow
def test_one_clip_from_the_command_line(tmp_path: Path) -> None:
    clip, truth = write(SCENARIOS["braking"], tmp_path)
    summary = tmp_path / "summary.json"
    done = run_cli(str(clip), str(truth), "--uncalibrated", "--json", str(summary))
    assert done.returncode == 0, done.stderr
    assert "braking" in done.stdout and "uncalibrated at 5 fps" in done.stdout
    (figures,) = json.loads(summary.read_text()).values()
    assert figures["recall"] == 1.0 and figures["one_alert_per_serious"] == 1.0


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ([], "evaluate: give CLIP and TRUTH, or --suite"),
        (["missing.avi", "missing.json"], "evaluate: missing.json: not a truth file"),
        (["--suite", "x.avi"], "evaluate: give CLIP and TRUTH, or --suite"),
    ],
)
def test_bad_arguments_are_one_line(args: list[str], error: str) -> None:
    done = run_cli(*args)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith(f"trafficrisk: {error}"), done.stderr


def test_a_file_that_is_not_a_truth_file_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text('{"cameras": []}')
    with pytest.raises(ValueError, match="not a scenario truth file"):
        evaluation.load_truth(other)
