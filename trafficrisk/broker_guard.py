"""A guard for a kombu bug that kills a Celery worker when its Redis connection drops.

When Redis goes away, the worker closes its connection, then acks the messages of tasks
that were finishing at that moment. kombu's Redis channel builds a new connection pool
for the ack from its connection's parameters, which closing has already cleared, and
raises AttributeError ('NoneType' object has no attribute 'hostname'); Celery takes that
for an unrecoverable error and the worker exits (known since kombu 3: celery/kombu#582,
#970; still in 5.7). Raised as a connection error instead, the ack is logged as failed,
the message stays unacked in Redis (delivered again after the visibility timeout), and
the worker reconnects like after any other connection loss.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

_connparams = kombu_redis.Channel._connparams


def _connparams_of_open_connection(self: Any, asynchronous: bool = False) -> Any:
    if self.connection is None or self.connection.client is None:
        raise RedisConnectionError("the broker connection is closed")
    return _connparams(self, asynchronous=asynchronous)


def install() -> None:
    """Idempotent: patches kombu's Redis channel once per process."""
    kombu_redis.Channel._connparams = _connparams_of_open_connection  # type: ignore[method-assign]
