"""deliver_webhook: one alert change POSTed to one receiver, retried with backoff.

The web process imports `queue_webhooks` too: nothing here loads a detector.
"""

from __future__ import annotations

import logging
import time
from functools import cache
from typing import Any

import httpx
from celery import Task
from celery.signals import celeryd_after_setup

from trafficrisk.messages import Alert
from trafficrisk.queues import ALERTS_QUEUE
from trafficrisk.runtime import get_store
from trafficrisk.settings import get_settings
from trafficrisk.tasks.app import app
from trafficrisk.workers.webhook import (
    DeliveryOutcome,
    WebhookEvent,
    backoff_s,
    classify,
    delivery_of,
    loggable_url,
    retry_after_s,
    target_of,
    url_of,
    webhook_body,
    webhook_headers,
)

log = logging.getLogger(__name__)


class _UrlsWithoutQueries(logging.Filter):
    """httpx logs each request's full URL at INFO; a webhook URL's query or user info may
    hold the receiver's token, so its records keep only scheme, host and path."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(loggable_url(str(a)) if isinstance(a, httpx.URL) else a for a in record.args)
        return True


logging.getLogger("httpx").addFilter(_UrlsWithoutQueries())


@cache
def http_client() -> httpx.Client:
    # One per process, shared by the task threads: connections to a receiver are reused.
    # Redirects are not followed: the receiver's URL is the one configured, nothing else.
    return httpx.Client(follow_redirects=False)


@celeryd_after_setup.connect
def _warn_if_unsigned(sender: str, instance: Any, **_: Any) -> None:
    settings = get_settings()
    if (ALERTS_QUEUE in instance.app.amqp.queues.consume_from and settings.webhook_urls
            and settings.webhook_secret is None):
        log.warning("TRAFFICRISK_WEBHOOK_SECRET is not set: webhooks are sent unsigned")


def queue_webhooks(event: str, alert: Alert) -> None:
    """One delivery task per configured URL; nothing when no URLs are set.

    The task names its receiver by a digest of the URL, never the URL itself: a URL may
    hold the receiver's token, and task arguments show in Flower and in the broker."""
    urls = get_settings().webhook_urls
    if not urls:
        return
    checked = WebhookEvent(event)  # an unknown event is the caller's bug: fail here, not in the worker
    for url in urls:
        deliver_webhook.apply_async(args=[target_of(url), checked.value, alert.to_wire()])


def post_once(url: str, event: WebhookEvent, alert: Alert) -> tuple[int | None, float | None]:
    """One try: the receiver's status and Retry-After, or (None, None) without an answer."""
    settings = get_settings()
    secret = settings.webhook_secret.get_secret_value().encode() if settings.webhook_secret else None
    body = webhook_body(event, alert)
    headers = webhook_headers(event, delivery_of(event, alert), body, secret, int(time.time()))
    try:
        response = http_client().post(url, content=body, headers=headers, timeout=settings.webhook_timeout_s)
    except httpx.HTTPError as error:  # connection refused, timeout, reset...
        log.info("webhook %s to %s: %s", event, loggable_url(url), type(error).__name__)
        return None, None
    return response.status_code, retry_after_s(response.headers.get("Retry-After"))


@app.task(name="trafficrisk.deliver_webhook", bind=True, ignore_result=True)
def deliver_webhook(self: Task, target: str, event: str, alert: dict[str, Any]) -> None:
    parsed, checked = Alert.from_wire(alert), WebhookEvent(event)
    settings, store = get_settings(), get_store()
    url = url_of(target, settings.webhook_urls)
    if url is None:  # this worker's settings no longer have that receiver
        store.count_webhook("failed")
        log.warning("webhook %s of alert %s: receiver %s is not in TRAFFICRISK_WEBHOOK_URLS here; dropped",
                    checked, parsed.alert_id, target)
        return
    attempt = self.request.retries + 1
    status, retry_after = post_once(url, checked, parsed)
    outcome = classify(status)
    if outcome is DeliveryOutcome.DELIVERED:
        store.count_webhook("delivered")
        return
    if outcome is DeliveryOutcome.RETRYABLE and attempt < settings.webhook_max_attempts:
        wait = backoff_s(attempt, retry_after, settings.webhook_backoff_max_s)
        log.info("webhook %s of alert %s (camera %s) to %s: try %s answered %s; next in %.2f s",
                 checked, parsed.alert_id, parsed.camera_id, loggable_url(url), attempt, status or "nothing",
                 wait)
        store.count_webhook("retried")
        raise self.retry(countdown=wait, max_retries=settings.webhook_max_attempts - 1)
    store.count_webhook("failed")
    log.warning("webhook %s of alert %s (camera %s) to %s failed after %s tries: last answer %s",
                checked, parsed.alert_id, parsed.camera_id, loggable_url(url), attempt, status or "nothing")
