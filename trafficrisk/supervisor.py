"""`trafficrisk run`'s supervisor: every Procfile line as a process, restarted when it dies.

honcho (used before) stops every process when one exits and then exits 0, so one worker
that died took the whole fleet with it and nothing said so. supervisord restarts, but
runs as a daemon of its own and never exits when it gives up on a process. This keeps
honcho's Procfile and prefixed output and adds the rest: a process that exits is logged
by name with its status and started again after a backoff (1 s, doubling to 30 s; back
to 1 s once it has run a minute); one that dies GIVE_UP_AFTER times within GIVE_UP_WINDOW_S
makes the supervisor stop everything and exit 1. Ctrl-C or SIGTERM stops every process
gracefully (SIGTERM, then SIGKILL after STOP_TIMEOUT_S) and exits 0.

In production each Procfile line is a systemd unit instead (`systemd_units`, and
docs/operations.md): systemd restarts them the same way.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 30.0
HEALTHY_AFTER_S = 60.0  # a process that ran this long starts its backoff afresh
GIVE_UP_AFTER = 5
GIVE_UP_WINDOW_S = 120.0
STOP_TIMEOUT_S = 20.0
_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")


class ProcfileError(ValueError):
    pass


def read_procfile(path: Path) -> dict[str, str]:
    """Process name to command line; comments and blank lines skipped."""
    entries: dict[str, str] = {}
    try:
        text = path.read_text()
    except OSError as error:
        raise ProcfileError(f"{path}: {error.strerror} (run this where the Procfile is)") from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE.match(line.strip())
        if match is None:
            raise ProcfileError(f"{path}:{number}: expected 'name: command', got {line!r}")
        if match[1] in entries:
            raise ProcfileError(f"{path}:{number}: {match[1]!r} appears twice")
        entries[match[1]] = match[2]
    if not entries:
        raise ProcfileError(f"{path}: no processes")
    return entries


@dataclass
class Supervised:
    name: str
    command: str
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff_s: float = BACKOFF_START_S
    restart_at: float | None = None
    deaths: list[float] = field(default_factory=list)
    relay: threading.Thread | None = None  # copies its output, prefixed with its name


class Supervisor:
    def __init__(
        self,
        entries: dict[str, str],
        env: dict[str, str],
        out: IO[str] = sys.stdout,
        backoff_start_s: float = BACKOFF_START_S,
    ) -> None:
        self.env = env
        self.backoff_start_s = backoff_start_s
        self.out = out
        self.processes = [
            Supervised(name, command, backoff_s=backoff_start_s) for name, command in entries.items()
        ]
        self.width = max(len(name) for name in entries)
        self.stopping = threading.Event()
        self.lock = threading.Lock()

    def say(self, name: str, line: str) -> None:
        with self.lock:
            self.out.write(f"{time.strftime('%H:%M:%S')} {name:<{self.width}} | {line}\n")
            self.out.flush()

    def start(self, process: Supervised) -> None:
        command = os.path.expandvars(process.command) if "$" in process.command else process.command
        # A session of its own: the process and its children are stopped as one group.
        process.proc = subprocess.Popen(
            shlex.split(command),
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        process.started_at, process.restart_at = time.monotonic(), None
        self.say(process.name, f"started with pid {process.proc.pid}")
        process.relay = threading.Thread(target=self._relay, args=(process.name, process.proc), daemon=True)
        process.relay.start()

    def _relay(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        with proc.stdout:
            for raw in proc.stdout:
                self.say(name, raw.decode(errors="replace").rstrip())

    def run(self) -> int:
        """Until stopped (0) or until a process keeps dying (1)."""
        for process in self.processes:
            if process.proc is None:  # some may have been started (and waited for) already
                self.start(process)
        while not self.stopping.wait(0.2):
            now = time.monotonic()
            for process in self.processes:
                if self.check(process, now) is False:
                    self.stop()
                    return 1
        self.stop()
        return 0

    def check(self, process: Supervised, now: float) -> bool:
        """Restart what died once its backoff has passed; False when giving up on it."""
        if process.restart_at is not None:
            if now >= process.restart_at:
                self.start(process)
            return True
        assert process.proc is not None
        status = process.proc.poll()
        if status is None:
            return True
        if now - process.started_at >= HEALTHY_AFTER_S:
            process.backoff_s = self.backoff_start_s
        process.deaths = [t for t in process.deaths if now - t < GIVE_UP_WINDOW_S] + [now]
        if len(process.deaths) >= GIVE_UP_AFTER:
            self.say(
                process.name,
                f"exited with status {status}, {len(process.deaths)} times in "
                f"{GIVE_UP_WINDOW_S:.0f} s: giving up, stopping everything",
            )
            return False
        self.say(process.name, f"exited with status {status}; restarting in {process.backoff_s:g} s")
        process.restart_at = now + process.backoff_s
        process.backoff_s = min(process.backoff_s * 2, BACKOFF_MAX_S)
        return True

    def stop(self) -> None:
        self.stopping.set()
        running = [p for p in self.processes if p.proc is not None and p.proc.poll() is None]
        for process in running:
            assert process.proc is not None
            _signal_group(process.proc, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in running:
            assert process.proc is not None
            try:
                process.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(process.name, f"did not stop in {STOP_TIMEOUT_S:.0f} s: killed")
                _signal_group(process.proc, signal.SIGKILL)
                process.proc.wait()
        for process in self.processes:  # the last of their output
            if process.relay is not None:
                process.relay.join(5)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


SYSTEMD_UNIT = """\
[Unit]
Description=trafficrisk {name} ({command})
After=network-online.target redis-server.service
Wants=network-online.target
PartOf=trafficrisk.target

[Service]
Type=simple
WorkingDirectory={workdir}
EnvironmentFile={env_file}
Environment=PATH={bin}:/usr/bin:/bin
ExecStart={bin}/{command}
Restart=on-failure
RestartSec=2
# Give up (and let an alert fire) after 5 failures in 2 minutes, like `trafficrisk run`.
StartLimitIntervalSec=120
StartLimitBurst=5
KillMode=control-group
TimeoutStopSec=30
NoNewPrivileges=true
PrivateTmp=true

[Install]
WantedBy=trafficrisk.target
"""

SYSTEMD_TARGET = """\
[Unit]
Description=trafficrisk: every process of the Procfile
Wants={units}

[Install]
WantedBy=multi-user.target
"""


def systemd_units(entries: dict[str, str], workdir: Path, bin_dir: Path, env_file: Path) -> dict[str, str]:
    """A unit per Procfile line, and trafficrisk.target that starts them all."""
    units = {
        f"trafficrisk-{name}.service": SYSTEMD_UNIT.format(
            name=name,
            command=command.replace("$PORT", "${PORT}"),
            workdir=workdir,
            env_file=env_file,
            bin=bin_dir,
        )
        for name, command in entries.items()
    }
    units["trafficrisk.target"] = SYSTEMD_TARGET.format(units=" ".join(sorted(units)))
    return units
