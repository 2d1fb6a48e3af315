"""Failed logins, limited per client address and for everyone together.

The `limits` library keeps a moving window of failures in Redis, so every web process (and
a restarted one) counts the same attempts, and a burst at a window's edge buys nothing.
Only failures count: a user who logs in is never held up by their own successes. The
limit for everyone together stops a guesser spread over many addresses; during such an
attack, logins wait for everyone, which is the price of not being guessed.
"""

from __future__ import annotations

import math
import time

import redis
from limits import RateLimitItem, parse
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from trafficrisk.workers.store import PREFIX


class LoginThrottle:
    def __init__(self, client: redis.Redis, per_address: str, total: str) -> None:
        storage = RedisStorage(
            "redis://", connection_pool=client.connection_pool, key_prefix=PREFIX + "login_failures"
        )
        self.limiter = MovingWindowRateLimiter(storage)
        self.rules: tuple[tuple[RateLimitItem, str | None], ...] = (
            (parse(per_address), None),
            (parse(total), "everyone"),
        )

    def _windows(self, address: str) -> list[tuple[RateLimitItem, str]]:
        return [(item, who or f"address:{address}") for item, who in self.rules]

    def retry_after(self, address: str) -> int | None:
        """Seconds until `address` may try again, or None when it may now."""
        for item, who in self._windows(address):
            if not self.limiter.test(item, who):
                reset_at = self.limiter.get_window_stats(item, who).reset_time
                return max(1, math.ceil(reset_at - time.time()))
        return None

    def failed(self, address: str) -> None:
        for item, who in self._windows(address):
            self.limiter.hit(item, who)
