"""Alert webhooks: the body, its HMAC signature, and when and how long to retry.

Plain Python: the Celery task in `trafficrisk.tasks.webhook` does the sending.
`verify_signature` is written so that a receiver can copy it as it stands.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import random
import uuid
from enum import StrEnum
from urllib.parse import urlsplit, urlunsplit

from trafficrisk.messages import Alert, AlertState

SIGNATURE_HEADER = "X-Trafficrisk-Signature"
TIMESTAMP_HEADER = "X-Trafficrisk-Timestamp"
DELIVERY_HEADER = "X-Trafficrisk-Delivery"
EVENT_HEADER = "X-Trafficrisk-Event"
SIGNATURE_PREFIX = "sha256="

# A delay of 1 s before the second try, doubling for each try after that, up to a cap.
BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 60.0
# A receiver rejects signatures older (or newer) than this: a captured request cannot be
# replayed later, and a few minutes of clock skew between machines still pass.
SIGNATURE_TOLERANCE_S = 300

# Delivery ids are UUIDs derived from (alert, event), in a namespace of our own.
_DELIVERY_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://trafficrisk/webhooks")


class WebhookEvent(StrEnum):
    OPENED = "alert.opened"
    ESCALATED = "alert.escalated"
    ACKNOWLEDGED = "alert.acknowledged"
    RESOLVED = "alert.resolved"
    VERIFIED = "alert.verified"  # the LLM's verdict came (an alert may be verified twice)

    @classmethod
    def from_state(cls, state: AlertState) -> WebhookEvent:
        """The event announcing that an alert entered `state`."""
        return {AlertState.OPEN: cls.OPENED, AlertState.ACKNOWLEDGED: cls.ACKNOWLEDGED,
                AlertState.RESOLVED: cls.RESOLVED}[state]


class DeliveryOutcome(StrEnum):
    DELIVERED = "delivered"
    RETRYABLE = "retryable"
    FINAL = "final"  # refused for good: trying again would get the same answer


def target_of(url: str) -> str:
    """A receiver's name in task messages: a digest of its URL, which may hold a token."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def url_of(target: str, urls: tuple[str, ...]) -> str | None:
    return next((url for url in urls if target_of(url) == target), None)


def delivery_id(alert_id: str, event: WebhookEvent, version: str = "") -> str:
    """The same id on every try of one (alert, event), so a receiver can drop the repeats;
    `version` tells apart changes an alert may go through more than once (verifications)."""
    return str(uuid.uuid5(_DELIVERY_NAMESPACE, f"{alert_id}/{event.value}{'/' + version if version else ''}"))


def delivery_of(event: WebhookEvent, alert: Alert) -> str:
    """The delivery id of this change of this alert."""
    version = f"{alert.verification}@{alert.updated_at!r}" if event is WebhookEvent.VERIFIED else ""
    return delivery_id(alert.alert_id, event, version)


def webhook_body(event: WebhookEvent, alert: Alert) -> bytes:
    """The JSON posted. Built from the alert alone, so every try sends the same bytes."""
    payload = {"event": event.value, "delivery_id": delivery_of(event, alert),
               "alert": alert.to_wire()}
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The signature header's value: the timestamp is signed too, so it cannot be replaced."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


def webhook_headers(event: WebhookEvent, delivery: str, body: bytes, secret: bytes | None,
                    timestamp: int) -> dict[str, str]:
    """The headers of one try; signed when there is a secret. A fresh timestamp each try
    keeps a late retry inside the receiver's tolerance."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "trafficrisk-webhooks/1",
        EVENT_HEADER: event.value,
        DELIVERY_HEADER: delivery,
        TIMESTAMP_HEADER: str(timestamp),
    }
    if secret is not None:
        headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)
    return headers


def verify_signature(secret: bytes | str, timestamp: str | int, body: bytes, header: str, now: float,
                     tolerance_s: float = SIGNATURE_TOLERANCE_S) -> bool:
    """Whether a received webhook is ours and recent: for receivers to copy.

    `timestamp` and `header` are the X-Trafficrisk-Timestamp and X-Trafficrisk-Signature
    headers, `body` the raw request body (before any JSON parsing), `now` time.time().
    """
    try:
        sent_at = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs(now - sent_at) > tolerance_s:
        return False
    if not header.startswith("sha256="):
        return False
    key = secret.encode() if isinstance(secret, str) else secret
    expected = hmac.new(key, f"{sent_at}.".encode() + body, hashlib.sha256).hexdigest()
    # compare_digest takes as long whatever matches, so timing tells an attacker nothing;
    # bytes, because it refuses str with characters beyond ASCII.
    return hmac.compare_digest(expected.encode(), header.removeprefix("sha256=").encode())


def classify(status: int | None) -> DeliveryOutcome:
    """What an HTTP status means for a delivery; None is no answer (connection error, timeout)."""
    if status is None:
        return DeliveryOutcome.RETRYABLE
    if 200 <= status < 300:
        return DeliveryOutcome.DELIVERED
    # 408 and 429 say "not now", 5xx "not working right now": a later try may succeed.
    # Other 4xx (and 3xx: a signed POST is never redirected) would get the same answer again.
    if status in (408, 429) or 500 <= status < 600:
        return DeliveryOutcome.RETRYABLE
    return DeliveryOutcome.FINAL


def retry_after_s(value: str | None) -> float | None:
    """A numeric Retry-After header in seconds; None when absent or an HTTP date (rarely
    sent by webhook receivers, and it would depend on their clock)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    # float() also takes "nan" and "inf"; a negative wait means nothing.
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def backoff_s(attempt: int, retry_after: float | None = None, max_s: float = BACKOFF_MAX_S,
              base_s: float = BACKOFF_BASE_S) -> float:
    """The wait after try number `attempt` (1 for the first) failed.

    Exponential (1, 2, 4 ... s up to `max_s`) with jitter: each wait is drawn between
    half and all of that, so receivers that came back up are not hit by every retry of
    an outage at the same moment. A receiver's Retry-After is honoured up to `max_s`.
    """
    if retry_after is not None:
        return min(retry_after, max_s)
    ceiling = min(max_s, base_s * 2 ** min(attempt - 1, 32))  # the min keeps 2**n a small float
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def loggable_url(url: str) -> str:
    """The URL without user info, query or fragment: those may carry tokens, logs must not."""
    try:
        parts = urlsplit(url)
    except ValueError:  # say, an unclosed IPv6 bracket: nothing of it is safe to show
        return "<unparsable URL>"
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
