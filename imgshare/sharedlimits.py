"""Rate limits, login throttles and the img_gather.php error cache in the database,
so that every process on one PostgreSQL database counts against the same limits.

``DatabaseLimits`` is the limits store of ``imgshare.ratelimit`` over the
``rate_buckets`` and ``login_known`` tables (schema 008), ``DatabaseErrorCache``
the gatherer's error cache over ``gather_errors``.  A rate-limit check is one
statement, one round trip (``db.take_token``); the login throttle's steps are
short transactions (logins are rare, and scrypt costs far more).

When the database cannot answer, ``Fallback`` turns to the process's own
in-memory store and says so once per outage (one line when it starts, one when
it ends): during an outage each process limits on its own, as a single process
always did, and nothing becomes a 500.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from twisted.logger import Logger

from imgshare import db
from imgshare.config import RateLimit
from imgshare.domain import errors
from imgshare.ratelimit import KNOWN_FOR, KNOWN_PER_ACCOUNT, bucket_params

log = Logger()


class DatabaseLimits:
    """A ``ratelimit.Limits`` store in the database, shared by its processes.  Times
    are this host's clock (hosts must keep their clocks close, as for the jobs)."""

    def __init__(self, database: Any, clock: Any):
        self._database = database
        self._clock = clock

    async def take(self, key: str, limit: RateLimit) -> float:
        interval, tolerance = bucket_params(limit)
        now = self._clock.seconds()
        taken, full_at = await self._database.run(db.take_token, key, now, interval, tolerance)
        return 0.0 if taken else max(full_at - (now + tolerance), 1e-6)  # refused: positive

    async def take_all(self, buckets: Sequence[tuple[str, RateLimit]]) -> float:
        params = [(key, *bucket_params(limit)) for key, limit in buckets]
        return await self._database.run(db.take_tokens, params, self._clock.seconds())

    async def give_back(self, buckets: Sequence[tuple[str, RateLimit]]) -> None:
        await self._database.run(db.give_back_tokens, [(key, bucket_params(limit)[0]) for key, limit in buckets])

    async def forget(self, key: str) -> None:
        await self._database.run(db.forget_bucket, key)

    async def knows(self, account: str, group: str) -> bool:
        seen = await self._database.run(db.known_since, account, group)
        return seen is not None and seen + KNOWN_FOR > self._clock.seconds()

    async def remember(self, account: str, group: str) -> None:
        await self._database.run(db.remember_login, account, group, self._clock.seconds(), KNOWN_PER_ACCOUNT)


def url_digest(url: str) -> str:
    """The key a URL's failure is kept under: its SHA-256 (a URL may carry a secret)."""
    return hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()


def _error(kind: str, status: int, message: str) -> errors.ApiError:
    cls = getattr(errors, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, errors.ApiError)) or cls is errors.RateLimited:
        cls = errors.GatherFailed
    error = cls(message)
    error.status = status
    return error


class DatabaseErrorCache:
    """The gatherer's error cache (``gather.ErrorCache``'s interface) in the database:
    a URL that failed through one process fails at once through every other."""

    def __init__(self, database: Any, clock: Any, lifetime: float):
        self._database = database
        self._clock = clock
        self.lifetime = lifetime

    async def remember(self, key: str, error: errors.ApiError) -> None:
        await self._database.run(
            db.remember_gather_error, url_digest(key), self._clock.seconds() + self.lifetime,
            type(error).__name__, error.status, error.message,
        )

    async def lookup(self, key: str) -> errors.ApiError | None:
        found = await self._database.run(db.find_gather_error, url_digest(key), self._clock.seconds())
        return _error(*found) if found is not None else None


class Fallback:
    """Calls ``shared``, or ``local`` while the database is unavailable; ``what``
    names the state in the two log lines of an outage."""

    def __init__(self, shared: Any, local: Any, what: str):
        self.shared = shared
        self.local = local
        self._what = what
        self.down = False

    async def _call(self, method: str, *args: Any) -> Any:
        try:
            result = await getattr(self.shared, method)(*args)
        except db.DatabaseUnavailable:
            if not self.down:
                self.down = True
                log.warn("the database is unavailable: {what} are kept in this process only until it is back",
                         what=self._what)
            return await getattr(self.local, method)(*args)
        if self.down:
            self.down = False
            log.info("the database is back: {what} are shared again", what=self._what)
        return result


class FallbackLimits(Fallback):
    """A ``ratelimit.Limits`` store: the database's, or this process's during an outage."""

    def __init__(self, shared: Any, local: Any):
        super().__init__(shared, local, "rate limits and login throttles")

    async def take(self, key: str, limit: RateLimit) -> float:
        return await self._call("take", key, limit)

    async def take_all(self, buckets: Sequence[tuple[str, RateLimit]]) -> float:
        return await self._call("take_all", buckets)

    async def give_back(self, buckets: Sequence[tuple[str, RateLimit]]) -> None:
        await self._call("give_back", buckets)

    async def forget(self, key: str) -> None:
        await self._call("forget", key)

    async def knows(self, account: str, group: str) -> bool:
        return await self._call("knows", account, group)

    async def remember(self, account: str, group: str) -> None:
        await self._call("remember", account, group)


class FallbackErrorCache(Fallback):
    """The gatherer's error cache: the database's, or this process's during an outage."""

    def __init__(self, shared: Any, local: Any):
        super().__init__(shared, local, "img_gather.php failures")

    async def remember(self, key: str, error: errors.ApiError) -> None:
        await self._call("remember", key, error)

    async def lookup(self, key: str) -> errors.ApiError | None:
        return await self._call("lookup", key)
