"""Live events to the dashboard, from any process, through the Redis message queue."""

from __future__ import annotations

import logging
from typing import Any

import socketio

from trafficrisk.messages import Message

log = logging.getLogger(__name__)

# Flask-SocketIO listens on this pub/sub channel when given a message_queue.
SOCKETIO_CHANNEL = "flask-socketio"

FRAME_RESULT = "frame_result"
ALERT = "alert"
CAMERA_STATUS = "camera_status"
STATS = "stats"
CONFLICT = "conflict"


class EventBus:
    """Write-only side of the Socket.IO message queue."""

    def __init__(self, redis_url: str, redis_options: dict[str, Any] | None = None) -> None:
        self._manager = socketio.RedisManager(redis_url, channel=SOCKETIO_CHANNEL, write_only=True,
                                              redis_options=redis_options)

    def emit(self, event: str, message: Message) -> None:
        try:
            self._manager.emit(event, message.to_wire(), namespace="/")
        except Exception:  # a missed live update must never fail a task
            log.exception("could not emit %s", event)
