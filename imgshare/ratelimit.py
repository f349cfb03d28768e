"""Token-bucket rate limits per client IP and per API token, in memory."""

from __future__ import annotations

import math
from typing import Any

from imgshare.config import RateLimit
from imgshare.domain.errors import RateLimited

MAX_KEYS = 100_000


class RateLimiter:
    """Allows ``limit.count`` requests per ``limit.period`` seconds for each key, in bursts."""

    def __init__(self, limit: RateLimit, clock: Any, what: str):
        self._rate = limit.count / limit.period
        self._burst = float(limit.count)
        self._clock = clock
        self._what = what
        self._buckets: dict[str, tuple[float, float]] = {}

    def check(self, key: str) -> None:
        """Take one request from ``key``'s bucket, or raise RateLimited (429)."""
        now = self._clock.seconds()
        level, stamp = self._buckets.get(key, (self._burst, now))
        level = min(self._burst, level + (now - stamp) * self._rate)
        if level < 1:
            wait = math.ceil((1 - level) / self._rate)
            self._buckets[key] = (level, now)
            raise RateLimited(f"too many requests for this {self._what}; retry in {wait} s", wait)
        if len(self._buckets) >= MAX_KEYS and key not in self._buckets:
            self._prune(now)
        self._buckets[key] = (level - 1, now)

    def _prune(self, now: float) -> None:
        """Forget buckets that have refilled: they hold no information."""
        full = [k for k, (lvl, t) in self._buckets.items() if lvl + (now - t) * self._rate >= self._burst]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= MAX_KEYS:
            self._buckets.clear()
