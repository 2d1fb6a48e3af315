"""A password-protected Redis and a TLS one, reached by the store's client and by Celery's
broker with the settings' URL alone (trafficrisk/connections.py)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

from conftest import free_port, wait_for_port
from trafficrisk.connections import is_tls, redis_client, tls_options

PASSWORD = "redis-test-password"


def make_certificates(folder: Path) -> None:
    """A CA, and a server certificate for 127.0.0.1 signed by it; another CA that signed nothing."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    for ca in ("ca", "other-ca"):
        openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={ca}",
            "-keyout",
            f"{ca}.key",
            "-out",
            f"{ca}.pem",
        )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    )
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    )


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """URLs by name: a Redis that wants a password, and a TLS one that wants it too."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (needed to make the TLS test certificates)")
    folder = tmp_path_factory.mktemp("redis-auth")
    make_certificates(folder)
    plain, tls = free_port(), free_port()
    common = [
        "redis-server",
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--requirepass",
        PASSWORD,
        "--dir",
        str(folder),
    ]
    procs = [
        subprocess.Popen([*common, "--port", str(plain)], stdout=subprocess.DEVNULL),
        subprocess.Popen(
            [
                *common,
                "--port",
                "0",
                "--tls-port",
                str(tls),
                "--tls-cert-file",
                "server.pem",
                "--tls-key-file",
                "server.key",
                "--tls-ca-cert-file",
                "ca.pem",
                "--tls-auth-clients",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            cwd=folder,
        ),
    ]
    try:
        wait_for_port(plain)
        wait_for_port(tls)
        secure = f"rediss://:{PASSWORD}@127.0.0.1:{tls}/0"
        yield {
            "password": f"redis://:{PASSWORD}@127.0.0.1:{plain}/0",
            "wrong password": f"redis://:not-{PASSWORD}@127.0.0.1:{plain}/0",
            "tls": f"{secure}?ssl_ca_certs={folder / 'ca.pem'}",
            "tls, another CA": f"{secure}?ssl_ca_certs={folder / 'other-ca.pem'}",
            "tls, not checked": f"{secure}?ssl_cert_reqs=none",
        }
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


ROWS = [
    ("password", None),
    ("tls", None),
    ("tls, not checked", None),
    ("wrong password", redis.AuthenticationError),
    ("tls, another CA", redis.ConnectionError),  # the server's certificate is checked
]


@pytest.mark.parametrize(("server", "refused"), ROWS, ids=[row[0] for row in ROWS])
def test_store_client_and_celery_broker_reach_redis(
    servers: dict[str, str], server: str, refused: type[Exception] | None
) -> None:
    url = servers[server]
    client = redis_client(url)
    if refused is not None:
        with pytest.raises(refused):
            client.ping()
        return
    assert client.set("tr:probe", "ok") and client.get("tr:probe") == b"ok"
    # The broker as celeryconfig sets it up: TLS options from the URL's query.
    app = Celery("probe", broker=url, set_as_current=False)
    if is_tls(url):
        app.conf.broker_use_ssl = tls_options(url)
    app.send_task("trafficrisk.probe", queue="probe", retries=0)
    assert client.llen("probe") == 1
    app.close()
    client.delete("probe", "tr:probe")
    client.close()
