"""`trafficrisk run`: the whole fleet on one machine, from the Procfile.

Starts its own Redis when TRAFFICRISK_REDIS_URL is unset, makes local credentials
once (kept in var/credentials.env, never printed), validates the configuration,
then runs every Procfile process (and that Redis) under the supervisor
(trafficrisk/supervisor.py), which restarts what dies, until Ctrl-C.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

from trafficrisk.settings import SettingsError, load_settings
from trafficrisk.supervisor import ProcfileError, Supervisor, read_procfile
from trafficrisk.workers.camera_file import CameraFileError, load_cameras

VAR = Path("var")
CREDENTIALS = VAR / "credentials.env"
GENERATED = ("TRAFFICRISK_DASHBOARD_PASSWORD", "TRAFFICRISK_API_TOKEN", "TRAFFICRISK_SECRET_KEY")


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _free_port(preferred: int) -> int:
    if _is_free(preferred):
        return preferred
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def local_credentials() -> dict[str, str]:
    """Credentials for this checkout: made once, then reused, readable by the owner only."""
    values: dict[str, str] = {}
    if CREDENTIALS.exists():
        for line in CREDENTIALS.read_text().splitlines():
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    missing = [name for name in GENERATED if not values.get(name)]
    if missing:
        values.update({name: secrets.token_urlsafe(18) for name in missing})
        VAR.mkdir(exist_ok=True)
        CREDENTIALS.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        CREDENTIALS.chmod(0o600)
    return values


def redis_command(port: int) -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SettingsError("redis-server not found: install it, or set TRAFFICRISK_REDIS_URL")
    data = VAR / "redis"
    data.mkdir(parents=True, exist_ok=True)
    # noeviction: a full Redis refuses writes (and says so) rather than drop queued tasks.
    return (f"{binary} --port {port} --bind 127.0.0.1 --dir {data} --save '60 1000' "
            "--appendonly yes --maxmemory-policy noeviction --loglevel warning")


def wait_for_redis(port: int) -> None:
    deadline = time.monotonic() + 10
    while _is_free(port):
        if time.monotonic() > deadline:
            raise SettingsError(f"redis-server did not start on port {port}")
        time.sleep(0.1)


def prepare_environment() -> tuple[dict[str, str], int | None]:
    """The processes' environment, and the port of the Redis to start (None: one is set)."""
    env = dict(os.environ)
    for name, value in local_credentials().items():
        env.setdefault(name, value)
    redis_port = None
    if not env.get("TRAFFICRISK_REDIS_URL"):
        redis_port = _free_port(6379)
        env["TRAFFICRISK_REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
    # The venv's commands (trafficrisk, celery, gunicorn) must be on the Procfile's PATH.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env, redis_port


def validate(env: dict[str, str]) -> int:
    """Checks settings and cameras as every process will see them; returns the web port."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        settings = load_settings()
        load_cameras(settings.cameras_file)
        return settings.port
    except CameraFileError as error:
        raise SettingsError(str(error)) from None
    finally:
        os.environ.clear()
        os.environ.update(saved)


def supervise(env: dict[str, str], port: int, redis_port: int | None) -> int:
    """Every Procfile process (after this machine's Redis, if it runs one) until Ctrl-C or
    SIGTERM, restarted when it dies; the exit status: 0, or 1 if one kept dying."""
    entries = read_procfile(Path("Procfile"))
    if redis_port is not None:
        entries = {"redis": redis_command(redis_port), **entries}
    supervisor = Supervisor(entries, {**env, "PORT": str(port)})
    signal.signal(signal.SIGTERM, lambda *_: supervisor.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: supervisor.stopping.set())
    if redis_port is not None:
        supervisor.start(supervisor.processes[0])
        wait_for_redis(redis_port)
        print(f"trafficrisk: redis-server on 127.0.0.1:{redis_port} (data in {VAR / 'redis'})", flush=True)
    return supervisor.run()


def main() -> None:
    try:
        env, redis_port = prepare_environment()
        port = validate(env)
        print(f"trafficrisk: dashboard on http://127.0.0.1:{port}/ (user admin; the password is "
              f"TRAFFICRISK_DASHBOARD_PASSWORD in {CREDENTIALS} unless you set it yourself)", flush=True)
        status = supervise(env, port, redis_port)
    except (SettingsError, ProcfileError) as error:
        print(f"trafficrisk: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    raise SystemExit(status)
