"""Celery settings, mapped from the one Settings object; every queue is declared here."""

from kombu import Queue

from trafficrisk import broker_guard
from trafficrisk.connections import (
    CONNECT_TIMEOUT_S,
    HEALTH_CHECK_S,
    REDIS_OPTIONS,
    SOCKET_TIMEOUT_S,
    is_tls,
    tls_options,
)
from trafficrisk.queues import AGGREGATE_QUEUE, ALERTS_QUEUE, DETECT_QUEUE, LLM_LOW_QUEUE, QUEUES
from trafficrisk.settings import get_settings

_settings = get_settings()

broker_url = _settings.redis_url
result_backend = _settings.redis_url
broker_connection_retry_on_startup = True
# Redis may be away for any time: retry for ever (kombu's default gives up after 100 tries,
# about 50 minutes, and the worker exits).
broker_connection_retry = True
broker_connection_max_retries = None
broker_guard.install()
if is_tls(_settings.redis_url):
    broker_use_ssl = redis_backend_use_ssl = tls_options(_settings.redis_url)

# JSON only: pickle on the wire would let anyone who can write to Redis run code.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]

task_queues = tuple(Queue(name) for name in QUEUES)
task_default_queue = DETECT_QUEUE
task_routes = {
    "trafficrisk.detect": {"queue": DETECT_QUEUE},
    "trafficrisk.assess": {"queue": LLM_LOW_QUEUE},
    "trafficrisk.assess_many": {"queue": LLM_LOW_QUEUE},
    "trafficrisk.aggregate": {"queue": AGGREGATE_QUEUE},
    "trafficrisk.record_verdicts": {"queue": AGGREGATE_QUEUE},
    "trafficrisk.collect_clip": {"queue": ALERTS_QUEUE},
    "trafficrisk.deliver_webhook": {"queue": ALERTS_QUEUE},
}
# On Redis a message without priority counts as the highest; give every message one.
task_default_priority = 5

task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
result_expires = _settings.result_expires_s
# "sorted": a worker empties its queues in name order, so the assess worker (llm.high,
# llm.low) takes llm.high work whenever there is any; kombu's default rotates between them.
# A killed worker's unacknowledged messages go back to their queue after the visibility
# timeout (60 s, not kombu's hour: docs/reliability.md); any worker looks for them every
# few seconds (kombu's default is every tenth idle poll).
broker_transport_options = {"visibility_timeout": _settings.visibility_timeout_s,
                            "unacked_restore_interval": 5, "unacked_restore_throttle": 1,
                            "queue_order_strategy": "sorted", **REDIS_OPTIONS}
result_backend_transport_options = {"visibility_timeout": _settings.visibility_timeout_s}
redis_socket_timeout = SOCKET_TIMEOUT_S
redis_socket_connect_timeout = CONNECT_TIMEOUT_S
redis_socket_keepalive = True
redis_backend_health_check_interval = HEALTH_CHECK_S
redis_retry_on_timeout = True
# Loading a detector can take a while; don't let the pool kill the child for it.
worker_proc_alive_timeout = 120
worker_send_task_events = True
worker_hijack_root_logger = False
