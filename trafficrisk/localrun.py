"""`trafficrisk run`: the whole fleet on one machine, from the Procfile.

Starts its own Redis when TRAFFICRISK_REDIS_URL is unset, makes local credentials
once (kept in var/credentials.env, never printed), validates the configuration,
then runs every Procfile process under honcho until Ctrl-C.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from trafficrisk.settings import SettingsError, load_settings
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


def start_redis(port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SettingsError("redis-server not found: install it, or set TRAFFICRISK_REDIS_URL")
    data = VAR / "redis"
    data.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
                             "--save", "60 1000", "--loglevel", "warning"])
    deadline = time.monotonic() + 10
    while _is_free(port):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SettingsError(f"redis-server did not start on port {port}")
        time.sleep(0.1)
    return proc


def prepare_environment() -> tuple[dict[str, str], subprocess.Popen[bytes] | None]:
    env = dict(os.environ)
    for name, value in local_credentials().items():
        env.setdefault(name, value)
    redis = None
    if not env.get("TRAFFICRISK_REDIS_URL"):
        port = _free_port(6379)
        redis = start_redis(port)
        env["TRAFFICRISK_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        print(f"trafficrisk: started redis-server on 127.0.0.1:{port} (data in {VAR / 'redis'})")
    # The venv's commands (trafficrisk, celery, gunicorn) must be on the Procfile's PATH.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env, redis


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


def run_procfile(env: dict[str, str], port: int) -> None:
    """honcho until Ctrl-C or SIGTERM; either way honcho stops every process gracefully."""
    honcho = subprocess.Popen([str(Path(sys.executable).parent / "honcho"), "start", "-f", "Procfile",
                               "-p", str(port)], env=env)
    signal.signal(signal.SIGTERM, lambda *_: honcho.send_signal(signal.SIGTERM))
    try:
        honcho.wait()
    except KeyboardInterrupt:  # the terminal sent SIGINT to honcho too
        honcho.wait(60)


def main() -> None:
    redis = None
    try:
        env, redis = prepare_environment()
        port = validate(env)
        print(f"trafficrisk: dashboard on http://127.0.0.1:{port}/ (user admin; the password is "
              f"TRAFFICRISK_DASHBOARD_PASSWORD in {CREDENTIALS} unless you set it yourself)", flush=True)
        run_procfile(env, port)
    except SettingsError as error:
        print(f"trafficrisk: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        if redis is not None:
            redis.terminate()
            redis.wait(10)
