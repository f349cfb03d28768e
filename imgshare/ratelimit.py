"""Token-bucket rate limits per client IP and per API token; and the login
throttle, which counts failed password checks only.

The buckets live in a *limits store*: ``MemoryLimits`` keeps them in this
process's memory (SQLite, tests); ``imgshare.sharedlimits`` keeps them in the
database, where every process of a PostgreSQL deployment sees the same counts.
Both do the same sums (the generic cell rate algorithm: a bucket is the time at
which it is full again), and every check is a coroutine: ``await limiter.check(key)``.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Sequence
from typing import Any, Protocol

from imgshare.config import RateLimit
from imgshare.domain.errors import RateLimited

MAX_KEYS = 100_000
#: An address that logged in to an account stays known to it this long.
KNOWN_FOR = 30 * 86400.0
#: Known addresses remembered per account (the most recent ones).
KNOWN_PER_ACCOUNT = 32

#: Failed password checks (login and password-change forms) that may be made in
#: bursts of COUNT, refilling over PERIOD (see ``LoginThrottle``):
#: per client address (an IPv6 one by its /64), whatever the account names, also
#: spent by every setup and register submission;
LOGIN_PER_ADDRESS = RateLimit(30, 600.0)
#: per account and client address (a success from there forgets them);
LOGIN_PER_ACCOUNT_ADDRESS = RateLimit(10, 600.0)
#: per account, from addresses that never logged in to it (only those wait).
LOGIN_PER_ACCOUNT = RateLimit(50, 600.0)


def bucket_params(limit: RateLimit) -> tuple[float, float]:
    """``(interval, tolerance)`` of a bucket of ``limit``: a request is admitted while
    the bucket's full-again time is at most ``now + tolerance``, and pushes that
    time on by ``interval`` (from ``now`` at the latest)."""
    interval = limit.period / limit.count
    return interval, (limit.count - 1) * interval


def whole_seconds(wait: float) -> int:
    """A wait as the whole seconds of ``Retry-After`` (at least 1)."""
    return max(1, math.ceil(round(wait, 6)))


class Limits(Protocol):
    """Where buckets and known logins are kept.  Keys name the limit and the client
    (``api:192.0.2.1``, ``api:token:12``), never a secret."""

    async def take(self, key: str, limit: RateLimit) -> float:
        """Take one request from ``key``'s bucket: 0 when taken, else the seconds
        until it holds one (nothing taken)."""
        ...

    async def take_all(self, buckets: Sequence[tuple[str, RateLimit]]) -> float:
        """Take one request from each bucket, all or nothing; 0 or the longest wait."""
        ...

    async def give_back(self, buckets: Sequence[tuple[str, RateLimit]]) -> None:
        """Give one request back to each bucket (up to a full bucket)."""
        ...

    async def forget(self, key: str) -> None:
        """Refill ``key``'s bucket at once."""
        ...

    async def knows(self, account: str, group: str) -> bool:
        """Whether the address group ``group`` logged in to ``account`` within ``KNOWN_FOR``."""
        ...

    async def remember(self, account: str, group: str) -> None:
        """``group`` logged in to ``account`` now (the ``KNOWN_PER_ACCOUNT`` latest are kept)."""
        ...


class MemoryLimits:
    """A limits store in this process's memory: each process counts on its own."""

    def __init__(self, clock: Any):
        self._clock = clock
        self._full_at: dict[str, float] = {}
        self._known: dict[str, dict[str, float]] = {}

    async def take(self, key: str, limit: RateLimit) -> float:
        return self._take_all([(key, limit)])

    async def take_all(self, buckets: Sequence[tuple[str, RateLimit]]) -> float:
        return self._take_all(buckets)

    def _take_all(self, buckets: Sequence[tuple[str, RateLimit]]) -> float:
        now = self._clock.seconds()
        found = []
        for key, limit in buckets:
            interval, tolerance = bucket_params(limit)
            found.append((key, max(self._full_at.get(key, now), now), interval, tolerance))
        wait = max((full_at - now - tolerance for _, full_at, _, tolerance in found), default=0.0)
        if wait > 0:
            return wait
        for key, full_at, interval, _ in found:
            self._store(key, full_at + interval, now)
        return 0.0

    async def give_back(self, buckets: Sequence[tuple[str, RateLimit]]) -> None:
        now = self._clock.seconds()
        for key, limit in buckets:
            if key in self._full_at:
                full_at = self._full_at[key] - bucket_params(limit)[0]
                if full_at <= now:
                    del self._full_at[key]
                else:
                    self._full_at[key] = full_at

    async def forget(self, key: str) -> None:
        self._full_at.pop(key, None)

    def _store(self, key: str, full_at: float, now: float) -> None:
        if len(self._full_at) >= MAX_KEYS and key not in self._full_at:
            # Forget buckets that have refilled: they hold no information.
            self._full_at = {k: t for k, t in self._full_at.items() if t > now}
            if len(self._full_at) >= MAX_KEYS:
                self._full_at.clear()
        self._full_at[key] = full_at

    async def knows(self, account: str, group: str) -> bool:
        seen = self._known.get(account, {}).get(group)
        return seen is not None and seen + KNOWN_FOR > self._clock.seconds()

    async def remember(self, account: str, group: str) -> None:
        known = self._known.pop(account, {})
        known.pop(group, None)
        known[group] = self._clock.seconds()
        while len(known) > KNOWN_PER_ACCOUNT:
            del known[next(iter(known))]
        if len(self._known) >= MAX_KEYS:
            del self._known[next(iter(self._known))]
        self._known[account] = known


class RateLimiter:
    """Allows ``limit.count`` requests per ``limit.period`` seconds for each key, in
    bursts, counted in ``limits`` under ``name`` (so limiters sharing a store keep
    apart); ``what`` names the key in the 429 message."""

    def __init__(self, limit: RateLimit, limits: Limits, name: str, what: str):
        self._limit = limit
        self._limits = limits
        self._name = name
        self._what = what

    async def check(self, key: str) -> None:
        """Take one request from ``key``'s bucket, or raise RateLimited (429)."""
        wait = await self._limits.take(f"{self._name}:{key}", self._limit)
        if wait:
            seconds = whole_seconds(wait)
            raise RateLimited(f"too many requests for this {self._what}; retry in {seconds} s", seconds)


def ip_group(host: str) -> str | None:
    """The key a client IP is counted under: an IPv4 address as it is, an IPv6
    address by its /64 (one host usually holds a whole /64), an IPv4-mapped IPv6
    address as its IPv4 address; None when ``host`` is not an IP address."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def address_group(host: str) -> str:
    """The key a client address is throttled under: its ``ip_group``, or the
    address as given when it is not an IP (a UNIX socket)."""
    return ip_group(host) or host


class LoginAttempt:
    """One password check under way: it holds one failure reserved in each bucket
    ``LoginThrottle.begin`` checked, until it is known how the check went."""

    def __init__(self, throttle: LoginThrottle, account: str, group: str,
                 buckets: Sequence[tuple[str, RateLimit]]):
        self._throttle = throttle
        self._account = account
        self._group = group
        self._buckets = buckets
        self._open = True

    def failed(self) -> None:
        """The password was wrong: the reserved failures stay spent."""
        self._open = False

    async def succeeded(self) -> None:
        """The password was right: the reservations are given back, the failures of
        this (account, address) are forgotten, and the address is known to the account."""
        if self._open:
            self._open = False
            await self._throttle._succeeded(self._account, self._group, self._buckets)

    async def abandoned(self) -> None:
        """The check could not be made (the database is down, say): nothing is spent."""
        if self._open:
            self._open = False
            await self._throttle.limits.give_back(self._buckets)


class LoginThrottle:
    """Failed password checks (login and password-change forms), counted so that
    nobody can lock an account's owner out.

    - per (account, address group): ``per_account_address`` failures; a success
      from that group forgets them;
    - per address group, whatever the account names: ``per_address`` failures
      (a success does not refill it, or one's own account would buy guesses);
    - per account, from address groups that never logged in to it (strangers):
      ``per_account`` failures, the safeguard against guessing spread over many
      addresses.  When it is spent only strangers wait: a group that logged in to
      the account before (``KNOWN_FOR``), or a visitor with a session of it,
      is never held back by it, and its failures do not count there.

    ``begin`` refuses (RateLimited, with the longest wait) before any password
    work, else reserves one failure in each bucket, all in one step of ``limits``
    (one transaction when they are in the database): attempts started together,
    in any process sharing the store, cannot overrun a limit, and a success or an
    abandoned attempt gives the reservations back, so only failures spend.
    """

    def __init__(self, per_address: RateLimit, per_account_address: RateLimit, per_account: RateLimit,
                 limits: Limits):
        self.limits = limits
        self.per_address = per_address
        self.per_account_address = per_account_address
        self.per_account = per_account

    def _buckets(self, account: str, group: str, stranger: bool) -> list[tuple[str, RateLimit]]:
        buckets = [(f"login-address:{group}", self.per_address),
                   (f"login-pair:{account}/{group}", self.per_account_address)]
        if stranger:
            buckets.append((f"login-account:{account}", self.per_account))
        return buckets

    async def knows(self, account: str, group: str) -> bool:
        """Whether ``group`` logged in to ``account`` within ``KNOWN_FOR``."""
        return await self.limits.knows(account, group)

    async def begin(self, account: str, address: str, *, session: bool = False) -> LoginAttempt:
        """Refuse with RateLimited if a limit bites (nothing spent), else reserve and
        return the attempt.  ``session``: the visitor holds a session of ``account``."""
        group = address_group(address)
        stranger = not session and not await self.knows(account, group)
        buckets = self._buckets(account, group, stranger)
        wait = await self.limits.take_all(buckets)
        if wait:
            seconds = whole_seconds(wait)
            raise RateLimited(f"Too many attempts. Try again in {seconds} seconds.", seconds)
        return LoginAttempt(self, account, group, buckets)

    async def check_address(self, address: str) -> None:
        """Setup and register submissions: each takes one from the address's bucket."""
        wait = await self.limits.take(f"login-address:{address_group(address)}", self.per_address)
        if wait:
            seconds = whole_seconds(wait)
            raise RateLimited(f"Too many attempts. Try again in {seconds} seconds.", seconds)

    async def remember(self, account: str, address: str) -> None:
        """``address`` logged in to ``account`` (a new account's first session, say)."""
        await self.limits.remember(account, address_group(address))

    async def _succeeded(self, account: str, group: str, buckets: Sequence[tuple[str, RateLimit]]) -> None:
        await self.limits.give_back(buckets)
        await self.limits.forget(f"login-pair:{account}/{group}")
        await self.limits.remember(account, group)
