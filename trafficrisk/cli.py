"""`trafficrisk` command: one entry point for every process in the Procfile and more."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from trafficrisk.messages import DEFAULT_SAMPLE_FPS
from trafficrisk.settings import Settings, SettingsError, get_settings
from trafficrisk.supervisor import ProcfileError, read_procfile

CELERY_APP = "trafficrisk.tasks.app"

# How each role's worker runs: detect holds a model, so one process, with a task
# thread per frame of a batch; assess waits on HTTP, so many threads; aggregate
# does short Redis writes; alerts encodes clips and waits on webhook receivers.
WORKER_ROLES = {
    "detect": ["-Q", "detect", "-P", "threads"],
    "assess": ["-Q", "llm.high,llm.low", "-P", "threads"],
    "aggregate": ["-Q", "aggregate", "-P", "threads", "-c", "4"],
    "alerts": ["-Q", "alerts", "-P", "threads", "-c", "8"],
}


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s")


FLOWER_MAX_TASKS = 5000


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def run_capture(settings: Settings) -> None:
    from trafficrisk.capture_service import CaptureService

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    service = CaptureService(settings)
    service.seed_from_file()
    with contextlib.suppress(KeyboardInterrupt):
        service.run(stop)


def worker_command(
    role: str, settings: Settings, name: str | None = None, pool: str | None = None
) -> list[str]:
    options = list(WORKER_ROLES[role])
    if pool is not None:  # gevent: greenlets instead of threads, for assess (see docs/benchmarks.md)
        options[options.index("-P") + 1] = pool
    if role == "assess":
        options += ["-c", str(settings.llm_concurrency)]
    if role == "detect":  # two threads per batch slot: one batch fills while the last runs
        options += ["-c", str(2 * settings.detect_batch_size)]
    return [
        _bin("celery"),
        "-A",
        CELERY_APP,
        "worker",
        "-n",
        name or f"{role}@%h",
        "-E",
        "--loglevel",
        settings.log_level,
        *options,
    ]


def run_web(settings: Settings) -> None:
    bind = f"{settings.web_host}:{settings.port}"
    os.execv(
        _bin("gunicorn"),
        [
            _bin("gunicorn"),
            "-w",
            "1",
            # gevent: a connection costs a greenlet, not a thread, so sockets that idle or
            # trickle (a slow-loris) cannot use up the workers and lock the dashboard out.
            "-k",
            "gevent",
            "--worker-connections",
            str(settings.web_connections),
            "-b",
            bind,
            "--log-level",
            settings.log_level.lower(),
            "trafficrisk.web.wsgi:app",
        ],
    )


def run_flower(settings: Settings) -> None:
    if settings.dashboard_password is None:
        raise SettingsError(
            "TRAFFICRISK_DASHBOARD_PASSWORD: must be set; Flower is never served without auth"
        )
    # Through the environment, not argv: argv is visible to every user in `ps`.
    os.environ["FLOWER_BASIC_AUTH"] = "admin:" + settings.dashboard_password.get_secret_value()
    os.execv(
        _bin("celery"),
        [
            _bin("celery"),
            "-A",
            CELERY_APP,
            "flower",
            f"--port={settings.flower_port}",
            f"--address={settings.web_host}",
            # Flower keeps this many tasks in memory (its default, 100,000, is about 2 h of a
            # loaded fleet and grew Flower 72 % in an hour of bench/soak.py): enough to watch live work.
            f"--max_tasks={FLOWER_MAX_TASKS}",
        ],
    )


def check(settings: Settings) -> None:
    from trafficrisk.workers.camera_file import CameraFileError, load_cameras

    try:
        cameras = load_cameras(settings.cameras_file)
    except CameraFileError as error:
        raise SettingsError(str(error)) from None
    print(
        f"ok: {len(cameras)} cameras in {settings.cameras_file}; "
        f"LLM {'on' if settings.is_llm_enabled else 'off (rules only)'}"
    )


def check_patterns(settings: Settings) -> None:
    from trafficrisk.messages import RiskLevel
    from trafficrisk.workers.patterns import PatternsError, load_patterns

    try:
        patterns = load_patterns(settings.patterns_file, RiskLevel(settings.alert_level))
    except PatternsError as error:
        raise SettingsError(f"TRAFFICRISK_PATTERNS_FILE: {error}") from None
    print(f"ok: {len(patterns)} patterns ({', '.join(p.name for p in patterns)})")


def export_model_command(settings: Settings, fmt: str) -> None:
    from trafficrisk.workers.detection import DetectorError, export_model

    try:
        output = export_model(settings.model, fmt, settings.device, settings.detect_batch_size)
    except DetectorError as error:
        raise SettingsError(f"TRAFFICRISK_MODEL: {error}") from None
    print(f"exported {settings.model} to {output}\nuse it with TRAFFICRISK_MODEL={output}")


def evaluate_command(args: argparse.Namespace, settings: Settings) -> None:
    from trafficrisk import evaluation
    from trafficrisk.messages import RiskLevel
    from trafficrisk.runtime import thresholds_from
    from trafficrisk.workers.analysis import FrameAnalyzer
    from trafficrisk.workers.detection import DetectorError, load_detector
    from trafficrisk.workers.patterns import PatternsError, load_patterns

    if args.suite == bool(args.clip):
        raise SettingsError("evaluate: give CLIP and TRUTH, or --suite")
    try:
        patterns = load_patterns(settings.patterns_file, RiskLevel(settings.alert_level))
        detector = load_detector(settings.model, settings.device, settings.detect_confidence)
    except (PatternsError, DetectorError) as error:
        raise SettingsError(str(error)) from None
    analyzer = FrameAnalyzer(detector)
    fps = args.fps or DEFAULT_SAMPLE_FPS
    try:
        clips = evaluation.scenario_clips(args.clips) if args.suite else [(args.clip, args.truth)]
        summaries = {}
        modes = [True, False] if args.suite else [not args.uncalibrated]
        for calibrated in modes:
            label = f"{'calibrated' if calibrated else 'uncalibrated'} at {fps:g} fps ({detector.name})"
            print(label)
            scores = evaluation.evaluate(
                clips,
                analyzer,
                fps=fps,
                calibrated=calibrated,
                limits=thresholds_from(settings),
                patterns=patterns,
            )
            summaries[label] = evaluation.summarize(scores)
            print("\n".join(evaluation.summary_lines(label, summaries[label])))
    except (FileNotFoundError, ValueError) as error:
        raise SettingsError(f"evaluate: {error}") from None
    if args.json:
        args.json.write_text(json.dumps({k: v.to_json() for k, v in summaries.items()}, indent=1))


def write_scenarios(name: str, folder: Path) -> None:
    from trafficrisk.scenario import SCENARIOS, write

    for scenario in SCENARIOS.values() if name == "all" else [SCENARIOS[name]]:
        clip, truth = write(scenario, folder)
        print(f"{scenario.name}: {clip} and {truth}")


def write_systemd_units(out: Path, env_file: Path) -> None:
    from trafficrisk.supervisor import systemd_units

    units = systemd_units(read_procfile(Path("Procfile")), Path.cwd(), Path(sys.executable).parent, env_file)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in units.items():
        (out / name).write_text(text)
        print(out / name)
    print(f"then: systemctl daemon-reload && systemctl enable --now trafficrisk.target "
          f"(settings in {env_file})")


def _scenario_names() -> list[str]:
    from trafficrisk.scenario import SCENARIOS

    return list(SCENARIOS)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trafficrisk", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="run the whole fleet locally (starts Redis when needed)")
    commands.add_parser("check", help="validate the settings and the cameras file")
    units = commands.add_parser("systemd-units", help="a systemd unit per Procfile line (docs/operations.md)")
    units.add_argument("out", type=Path, help="folder to write them to (e.g. /etc/systemd/system)")
    units.add_argument("--env-file", type=Path, default=Path("/etc/trafficrisk/env"),
                       help="the settings, NAME=value a line (default /etc/trafficrisk/env)")
    commands.add_parser("capture", help="the capture process")
    commands.add_parser("web", help="the dashboard and REST API (gunicorn)")
    commands.add_parser("flower", help="Flower, behind basic auth")
    worker = commands.add_parser("worker", help="a Celery worker for one role")
    worker.add_argument("role", choices=sorted(WORKER_ROLES))
    worker.add_argument(
        "--name", help="node name, for several workers of a role on one machine (default ROLE@%%h)"
    )
    worker.add_argument(
        "--pool",
        choices=["threads", "gevent"],
        help="the Celery pool (default threads; gevent needs the gevent package)",
    )
    export = commands.add_parser("export", help="export the YOLO model (TRAFFICRISK_MODEL) to run faster")
    export.add_argument(
        "--format",
        default="onnx",
        choices=["onnx", "openvino", "engine"],
        help="onnx or openvino for CPUs, engine (TensorRT) for NVIDIA GPUs",
    )
    scenario = commands.add_parser("scenario", help="write a scenario clip and its ground truth")
    scenario.add_argument("name", choices=[*_scenario_names(), "all"])
    scenario.add_argument("--out", type=Path, default=Path("var/scenarios"))
    evaluate = commands.add_parser("evaluate", help="judge the conflicts found in a clip against its truth")
    evaluate.add_argument("clip", type=Path, nargs="?", help="a clip (trafficrisk scenario writes them)")
    evaluate.add_argument("truth", type=Path, nargs="?", help="its truth file")
    evaluate.add_argument(
        "--suite", action="store_true", help="every scenario clip, calibrated and uncalibrated"
    )
    evaluate.add_argument("--fps", type=float, help=f"sample rate (default {DEFAULT_SAMPLE_FPS:g})")
    evaluate.add_argument(
        "--uncalibrated",
        action="store_true",
        help="fit the scale from pedestrians instead of the truth's calibration",
    )
    evaluate.add_argument(
        "--clips",
        type=Path,
        default=Path("var/scenarios"),
        help="where the suite's clips are written (default var/scenarios)",
    )
    evaluate.add_argument("--json", type=Path, help="also write the summaries here")
    commands.add_parser("llm-sim", help="the OpenAI-compatible LLM simulator", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["llm-sim"]:
        from trafficrisk import llm_sim

        llm_sim.main(argv[1:])
        return
    args = _parser().parse_args(argv)
    if args.command == "scenario":
        write_scenarios(args.name, args.out)
        return
    if args.command == "run":
        from trafficrisk import localrun

        localrun.main()
        return
    if args.command == "systemd-units":
        try:
            write_systemd_units(args.out, args.env_file)
        except ProcfileError as error:
            raise SystemExit(f"trafficrisk: {error}") from None
        return
    try:
        settings = get_settings()
        configure_logging(settings.log_level)
        _dispatch(args, settings)
    except SettingsError as error:
        print(f"trafficrisk: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def _dispatch(args: argparse.Namespace, settings: Settings) -> None:
    if args.command == "check":
        check(settings)
        check_patterns(settings)
    elif args.command == "capture":
        check(settings)
        run_capture(settings)
    elif args.command == "web":
        run_web(settings)
    elif args.command == "flower":
        run_flower(settings)
    elif args.command == "export":
        export_model_command(settings, args.format)
    elif args.command == "evaluate":
        evaluate_command(args, settings)
    elif args.command == "worker":
        if args.role == "aggregate":
            check_patterns(settings)
        command = worker_command(args.role, settings, args.name, args.pool)
        os.execv(command[0], command)


if __name__ == "__main__":
    main()
