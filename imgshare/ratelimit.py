"""Token-bucket rate limits per client IP and per API token, in memory; and the
login throttle, which counts failed password checks only."""

from __future__ import annotations

import ipaddress
import math
from typing import Any

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


class RateLimiter:
    """Allows ``limit.count`` requests per ``limit.period`` seconds for each key, in bursts."""

    def __init__(self, limit: RateLimit, clock: Any, what: str):
        self._rate = limit.count / limit.period
        self._burst = float(limit.count)
        self._clock = clock
        self._what = what
        self._buckets: dict[str, tuple[float, float]] = {}

    def _level(self, key: str, now: float) -> float:
        level, stamp = self._buckets.get(key, (self._burst, now))
        return min(self._burst, level + (now - stamp) * self._rate)

    def wait(self, key: str) -> int:
        """Seconds until ``key``'s bucket holds a whole token (0: it does now); takes nothing."""
        level = self._level(key, self._clock.seconds())
        return 0 if level >= 1 else math.ceil((1 - level) / self._rate)

    def check(self, key: str) -> None:
        """Take one request from ``key``'s bucket, or raise RateLimited (429)."""
        now = self._clock.seconds()
        level = self._level(key, now)
        if level < 1:
            wait = math.ceil((1 - level) / self._rate)
            self._buckets[key] = (level, now)
            raise RateLimited(f"too many requests for this {self._what}; retry in {wait} s", wait)
        self._store(key, level - 1, now)

    def spend(self, key: str) -> None:
        """Take one token from ``key``'s bucket without checking (never below empty)."""
        now = self._clock.seconds()
        self._store(key, max(0.0, self._level(key, now) - 1), now)

    def refund(self, key: str) -> None:
        """Give back one token taken from ``key``'s bucket (up to a full bucket)."""
        if key in self._buckets:
            now = self._clock.seconds()
            level = min(self._burst, self._level(key, now) + 1)
            if level >= self._burst:
                del self._buckets[key]
            else:
                self._buckets[key] = (level, now)

    def forget(self, key: str) -> None:
        """Refill ``key``'s bucket at once."""
        self._buckets.pop(key, None)

    def _store(self, key: str, level: float, now: float) -> None:
        if len(self._buckets) >= MAX_KEYS and key not in self._buckets:
            self._prune(now)
        self._buckets[key] = (level, now)

    def _prune(self, now: float) -> None:
        """Forget buckets that have refilled: they hold no information."""
        full = [k for k, (lvl, t) in self._buckets.items() if lvl + (now - t) * self._rate >= self._burst]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= MAX_KEYS:
            self._buckets.clear()


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

    def __init__(self, throttle: LoginThrottle, account: str, group: str, stranger: bool):
        self._throttle = throttle
        self._account = account
        self._group = group
        self._stranger = stranger
        self._open = True

    def failed(self) -> None:
        """The password was wrong: the reserved failures stay spent."""
        self._open = False

    def succeeded(self) -> None:
        """The password was right: the reservations are given back, the failures of
        this (account, address) are forgotten, and the address is known to the account."""
        if self._open:
            self._open = False
            self._throttle._succeeded(self._account, self._group, self._stranger)

    def abandoned(self) -> None:
        """The check could not be made (the database is down, say): nothing is spent."""
        if self._open:
            self._open = False
            self._throttle._give_back(self._account, self._group, self._stranger)


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
    work, then reserves one failure in each bucket: attempts started together
    cannot overrun a limit, and a success or an abandoned attempt gives the
    reservations back, so only failures spend.  Everything is in memory, per
    process, like the API's rate limits.
    """

    def __init__(self, per_address: RateLimit, per_account_address: RateLimit, per_account: RateLimit,
                 clock: Any):
        self._clock = clock
        self.per_address = RateLimiter(per_address, clock, "client address")
        self.per_account_address = RateLimiter(per_account_address, clock, "account from this address")
        self.per_account = RateLimiter(per_account, clock, "account")
        self._known: dict[str, dict[str, float]] = {}

    def knows(self, account: str, group: str) -> bool:
        """Whether ``group`` logged in to ``account`` within ``KNOWN_FOR``."""
        seen = self._known.get(account, {}).get(group)
        return seen is not None and seen + KNOWN_FOR > self._clock.seconds()

    def begin(self, account: str, address: str, *, session: bool = False) -> LoginAttempt:
        """Refuse with RateLimited if a limit bites (nothing spent), else reserve and
        return the attempt.  ``session``: the visitor holds a session of ``account``."""
        group = address_group(address)
        pair = f"{account}\n{group}"
        stranger = not session and not self.knows(account, group)
        wait = max(
            self.per_address.wait(group), self.per_account_address.wait(pair),
            self.per_account.wait(account) if stranger else 0,
        )
        if wait:
            raise RateLimited(f"Too many attempts. Try again in {wait} seconds.", wait)
        self.per_address.spend(group)
        self.per_account_address.spend(pair)
        if stranger:
            self.per_account.spend(account)
        return LoginAttempt(self, account, group, stranger)

    def check_address(self, address: str) -> None:
        """Setup and register submissions: each takes one from the address's bucket."""
        group = address_group(address)
        wait = self.per_address.wait(group)
        if wait:
            raise RateLimited(f"Too many attempts. Try again in {wait} seconds.", wait)
        self.per_address.spend(group)

    def _give_back(self, account: str, group: str, stranger: bool) -> None:
        self.per_address.refund(group)
        self.per_account_address.refund(f"{account}\n{group}")
        if stranger:
            self.per_account.refund(account)

    def remember(self, account: str, address: str) -> None:
        """``address`` logged in to ``account`` (a new account's first session, say)."""
        self._remember(account, address_group(address))

    def _succeeded(self, account: str, group: str, stranger: bool) -> None:
        self._give_back(account, group, stranger)
        self.per_account_address.forget(f"{account}\n{group}")
        self._remember(account, group)

    def _remember(self, account: str, group: str) -> None:
        known = self._known.pop(account, {})
        known.pop(group, None)
        known[group] = self._clock.seconds()
        while len(known) > KNOWN_PER_ACCOUNT:
            del known[next(iter(known))]
        if len(self._known) >= MAX_KEYS:
            del self._known[next(iter(self._known))]
        self._known[account] = known
