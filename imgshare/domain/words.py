"""Sizes, moments and lifetimes in words, for the browser pages.

Pure functions: "1.2 MiB", "in 3 days", "2 hours ago", "never".
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence

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
