"""How every process talks to Redis: the same timeouts and keepalive for each client.

Without them a Redis that stops answering (frozen, or a connection left half-open by a
network fault) blocks the calling loop for ever; with them a call fails within seconds,
the loop logs it and goes on, and the next call reconnects. Plain redis-py clients,
Socket.IO's message queue, Celery's broker and its result backend all take these.
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis

CONNECT_TIMEOUT_S = 5.0
# Longer than any blocking command the project sends (kombu's BRPOP waits 1 s).
SOCKET_TIMEOUT_S = 10.0
# A connection idle this long is PINGed before it is used again.
HEALTH_CHECK_S = 15

REDIS_OPTIONS: dict[str, Any] = {
    "socket_connect_timeout": CONNECT_TIMEOUT_S,
    "socket_timeout": SOCKET_TIMEOUT_S,
    "socket_keepalive": True,
    "health_check_interval": HEALTH_CHECK_S,
}
_CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}


def redis_client(url: str, timeout_s: float | None = None) -> redis.Redis:
    """A client of `url` (redis://, rediss:// or unix://) with the fleet's timeouts, or
    with `timeout_s` for connecting and for each answer."""
    options: dict[str, Any] = dict(REDIS_OPTIONS)
    if timeout_s is not None:
        options.update(socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    return redis.Redis.from_url(url, **options)


def is_tls(url: str) -> bool:
    return urlsplit(url).scheme == "rediss"


def tls_options(url: str) -> dict[str, Any]:
    """Celery's `broker_use_ssl` for a rediss:// URL, from its query string.

    redis-py reads `ssl_cert_reqs` and `ssl_ca_certs` from the URL itself; kombu does
    not, so the same values are handed to it here. The certificate is checked unless
    the URL says `ssl_cert_reqs=none`.
    """
    query = {name: values[-1] for name, values in parse_qs(urlsplit(url).query).items()}
    options: dict[str, Any] = {
        "ssl_cert_reqs": _CERT_REQS.get(query.get("ssl_cert_reqs", "required").lower(), ssl.CERT_REQUIRED)
    }
    for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        if name in query:
            options[name] = query[name]
    return options
