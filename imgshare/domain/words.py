"""Sizes, moments and lifetimes in words, for the browser pages.

Pure functions: "1.2 MiB", "in 3 days", "2 hours ago", "never".
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence

from imgshare.domain import errors, lifetime
from imgshare.domain.lifetime import DAY, HOUR, MINUTE, YEAR, Tier

# No weeks or months: "90 days" reads better than "12 weeks".
_UNITS = (("year", YEAR), ("day", DAY), ("hour", HOUR), ("minute", MINUTE))


def size_in_words(size: int) -> str:
    """``532 bytes``, ``12.4 KiB``, ``3.1 MiB``, ``1.0 GiB``."""
    if size < 1024:
        return "1 byte" if size == 1 else f"{size} bytes"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


def span_in_words(seconds: float) -> str:
    """A duration in its largest whole unit, rounded to the nearest: ``3 days``, ``1 hour``,
    ``less than a minute`` (30 days less a few seconds is still "30 days")."""
    for index, (unit, length) in enumerate(_UNITS):
        if seconds >= length:
            count = round(seconds / length)
            if index and count * length >= _UNITS[index - 1][1]:
                unit, count = _UNITS[index - 1][0], 1  # 23.6 hours: "1 day", not "24 hours"
            return f"{count} {unit}" + ("" if count == 1 else "s")
    return "less than a minute"


def until_in_words(moment: float | None, now: float) -> str:
    """When something expires: ``never``, ``in 3 days``, ``in less than a minute``, ``expired``."""
    if moment is None:
        return "never"
    if moment <= now:
        return "expired"
    return "in " + span_in_words(moment - now)


def date_in_words(moment: float | None) -> str:
    """A moment as a date anyone reads the same: ``14 Feb 2026, 09:30 UTC``; "" for none."""
    if moment is None:
        return ""
    when = datetime.datetime.fromtimestamp(math.floor(moment), tz=datetime.UTC)
    return when.strftime("%-d %b %Y, %H:%M UTC")


def since_in_words(moment: float | None, now: float) -> str:
    """When something happened: ``never``, ``just now``, ``2 hours ago``."""
    if moment is None:
        return "never"
    if now - moment < MINUTE:
        return "just now"
    return span_in_words(now - moment) + " ago"


def lifetime_in_words(seconds: float | None) -> str:
    """A lifetime: ``forever`` or ``90 days``."""
    return "forever" if seconds is None else span_in_words(seconds)


def tiers_in_words(tiers: Sequence[Tier]) -> list[str]:
    """One sentence per size tier, e.g. ``Up to 8.0 MiB: kept at most 90 days (default 90 days).``"""
    sentences = []
    for tier in tiers:
        size = size_in_words(tier.max_size)
        if tier.permanent:
            sentences.append(f"Up to {size}: kept as long as you like, forever by default.")
        else:
            longest = lifetime_in_words(tier.longest)
            default = lifetime_in_words(tier.default)
            tail = "" if default == longest else f" ({default} by default)"
            sentences.append(f"Up to {size}: kept at most {longest}{tail}.")
    return sentences


def sizes_of_tier(tier: Tier, tiers: Sequence[Tier]) -> str:
    """The files a tier holds: ``files up to 2.0 MiB``, ``files over 2.0 MiB and up to
    8.0 MiB``, ``files over 8.0 MiB`` (the largest), ``all files`` (the only one)."""
    below = lifetime.tier_below(tier, tiers)
    largest = tier.max_size >= max(t.max_size for t in tiers)
    if below is None:
        return "all files" if largest else f"files up to {size_in_words(tier.max_size)}"
    if largest:
        return f"files over {size_in_words(below.max_size)}"
    return f"files over {size_in_words(below.max_size)} and up to {size_in_words(tier.max_size)}"


def exact_span_in_words(seconds: float) -> str:
    """A duration asked for, in the largest unit that holds it whole (``400 days``, not
    the rounded ``1 year``); the nearest whole unit otherwise."""
    for unit, length in _UNITS:
        if seconds >= length and seconds % length == 0:
            count = int(seconds // length)
            return f"{count} {unit}" + ("" if count == 1 else "s")
    return span_in_words(seconds)


def asked_in_words(asked: lifetime.Requested) -> str:
    """What an upload asked for: ``forever``, ``400 days``."""
    return "forever" if asked is lifetime.PERMANENT else exact_span_in_words(float(asked or 0))


def change_in_words(decision: lifetime.Decision, tiers: Sequence[Tier]) -> str:
    """Why a file got another lifetime than it asked for, as a sentence; "" when it got
    what it asked for (or asked for nothing, so its size's default)."""
    change, tier = decision.change, decision.tier
    if change is None:
        return ""
    got = lifetime_in_words(decision.lifetime)
    asked = asked_in_words(decision.asked)
    if change is lifetime.Change.UNDER_MINIMUM:
        return f"Lengthened from {asked} to {got}: the shortest lifetime is {got}."
    verb = "Shortened" if decision.lifetime is not None else "Lengthened"
    sizes = sizes_of_tier(tier, tiers)
    if change is lifetime.Change.OVER_MAXIMUM:
        why = f"no lifetime may be longer than {exact_span_in_words(lifetime.MAX_LIFETIME)}, " \
              f"so it gets the default of {sizes}"
    elif tier.longest is None:
        why = f"{sizes} cannot be kept forever"
    else:
        why = f"{sizes} are kept at most {lifetime_in_words(tier.longest)}"
        if decision.lifetime != tier.longest:
            why += f", and {got} when asked for more"
    return f"{verb} from {asked} to {got}: {why}."


def kept_in_words(expires: float | None, lifetime_seconds: float | None) -> str:
    """A fresh upload's lifetime: ``Kept forever.``, ``Kept 90 days, until 1 Mar 2027, 06:30 UTC.``"""
    if expires is None or lifetime_seconds is None:
        return "Kept forever."
    return f"Kept {span_in_words(lifetime_seconds)}, until {date_in_words(expires)}."


def stored_change_in_words(size: int, asked: str | None, kept: float | None, tiers: Sequence[Tier]) -> str:
    """:func:`change_in_words` for a stored image: ``asked`` as the row keeps it
    (``lifetime.format_asked``), ``kept`` the lifetime it got (None: permanent).  If
    today's tiers would give another lifetime (they changed since the upload), the
    sentence says only what was asked and what was given."""
    if asked is None:
        return ""
    try:
        decision = lifetime.decide(size, asked, tiers)
    except errors.TooLarge:  # larger than today's largest tier
        decision = None
    if decision is not None and _same_lifetime(decision.lifetime, kept):
        return change_in_words(decision, tiers)
    asked_value = lifetime.parse_expire(asked)
    if asked_value is None or _same_lifetime(None if asked_value is lifetime.PERMANENT else float(asked_value), kept):
        return ""
    return (f"You chose {asked_in_words(asked_value)}; the size limits in force at the upload gave "
            f"{lifetime_in_words(kept)}.")


def _same_lifetime(a: float | None, b: float | None) -> bool:
    return (a is None) == (b is None) and (a is None or abs(a - b) < 1)
