"""The real web process (`trafficrisk web`: gunicorn, gevent worker) under a crowd of idle and
unauthenticated sockets: a logged-in dashboard in a real Chromium still loads and goes live.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
from fleet import PASSWORD, TOKEN, chromium, is_answering, require_browser

from conftest import free_port, stop_all, wait_for, worker_env

pytestmark = pytest.mark.slow

IDLE, TRICKLING, UPGRADES = 100, 100, 50


@dataclass
class Web:
    web_url: str
    port: int


@pytest.fixture(scope="module")
def web(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    require_browser()
    folder = tmp_path_factory.mktemp("web-attack")
    (folder / "cameras.yaml").write_text("cameras: []\n")
    port = free_port()
    env = worker_env(
        redis_url=redis_server,
        api_token=TOKEN,
        dashboard_password=PASSWORD,
        secret_key="attack",
        cameras_file=str(folder / "cameras.yaml"),
        login_limit_per_address="1000/minute",
        login_limit_total="1000/minute",
    )
    env["PORT"] = str(port)
    log = folder / "web.log"
    with log.open("wb") as out:
        procs = {
            "web": subprocess.Popen(
                [sys.executable, "-m", "trafficrisk.cli", "web"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        }
    try:
        wait_for(
            lambda: is_answering(f"http://127.0.0.1:{port}/login"),
            60,
            "the web process",
            lambda: log.read_text()[-3000:],
        )
        yield Web(f"http://127.0.0.1:{port}", port)
    finally:
        stop_all(procs)


def crowd(port: int) -> list[socket.socket]:
    """Sockets that say nothing, sockets that trickle a request they never finish, and
    Socket.IO upgrades without a credential (answered 401 and left open)."""
    sockets = []
    for n in range(IDLE + TRICKLING + UPGRADES):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if IDLE <= n < IDLE + TRICKLING:
            sock.sendall(b"GET /api/cameras HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        elif n >= IDLE + TRICKLING:
            sock.sendall(
                b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n"
                b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )
        sockets.append(sock)
    return sockets


def test_a_crowd_of_idle_sockets_does_not_lock_out_the_dashboard(web: Web) -> None:
    sockets = crowd(web.port)
    try:
        refused = [sock.recv(64) for sock in sockets[IDLE + TRICKLING :]]
        assert all(answer.startswith(b"HTTP/1.1 401") for answer in refused), refused[:3]
        started = time.monotonic()
        answer = requests.get(
            web.web_url + "/api/health", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        )
        assert answer.status_code == 200
        with chromium() as browser:
            page = browser.new_page()
            page.goto(web.web_url + "/")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_selector("body[data-ready=true]", timeout=30_000)
            page.wait_for_function(
                "() => document.getElementById('connection').textContent === 'live'", timeout=30_000
            )
        assert time.monotonic() - started < 60
    finally:
        for sock in sockets:
            sock.close()
