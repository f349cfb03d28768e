"""Durations, the ``expire`` parameter, lifetime tiers and token lifetimes.

Durations are seconds (float). Accepted spellings:

- plain seconds: ``3600`` (a decimal fraction is allowed);
- a number and a unit, case-insensitive, optionally repeated: ``90m``,
  ``12h``, ``30d``, ``2w``, ``45s``, ``1h30m``; the units also have long
  forms (``min``, ``hours``, ``days``, ...);
- ISO 8601: ``PT5M``, ``P3D``, ``P1W``, ``P1DT2H30M``, ``PT1.5H``. Years and
  months have no fixed length, so ``P1Y`` counts as 365 days and ``P1M``
  (an M before the T) as 30 days.

Zero, negative, non-finite and longer-than-100-years durations are invalid.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Sequence
from typing import Final, Literal

import attrs

from imgshare.domain import errors

MINUTE = 60
HOUR = 3600
DAY = 86400
WEEK = 7 * DAY
YEAR = 365 * DAY
MONTH = 30 * DAY

#: Shortest and longest lifetime of an ephemeral file.
MIN_LIFETIME = HOUR
MAX_LIFETIME = 365 * DAY
#: Longest duration :func:`parse_duration` accepts.
MAX_DURATION = 100 * YEAR
#: Shortest lifetime of an API token.
MIN_TOKEN_LIFETIME = MINUTE

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

_UNITS = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": MINUTE, "min": MINUTE, "mins": MINUTE, "minute": MINUTE, "minutes": MINUTE,
    "h": HOUR, "hr": HOUR, "hrs": HOUR, "hour": HOUR, "hours": HOUR,
    "d": DAY, "day": DAY, "days": DAY,
    "w": WEEK, "week": WEEK, "weeks": WEEK,
}  # fmt: skip
_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
_PLAIN_RE = re.compile(_NUMBER)
_UNIT_TERM = rf"({_NUMBER})\s*([a-z]+)"
_UNITS_RE = re.compile(rf"(?:{_UNIT_TERM}\s*)+")
_UNIT_TERM_RE = re.compile(_UNIT_TERM)
_ISO_NUMBER = r"([0-9]+(?:[.,][0-9]+)?)"
_ISO_RE = re.compile(
    rf"P(?:{_ISO_NUMBER}Y)?(?:{_ISO_NUMBER}M)?(?:{_ISO_NUMBER}W)?(?:{_ISO_NUMBER}D)?"
    rf"(?:T(?:{_ISO_NUMBER}H)?(?:{_ISO_NUMBER}M)?(?:{_ISO_NUMBER}S)?)?"
)
_ISO_FACTORS = (YEAR, MONTH, WEEK, DAY, HOUR, MINUTE, 1)

_SIZE_UNITS = {
    "b": 1, "kib": KIB, "mib": MIB, "gib": GIB, "kb": 1000, "mb": 1000**2, "gb": 1000**3,
}  # fmt: skip
_SIZE_RE = re.compile(r"([0-9]+)\s*([a-z]*)")
_PERMANENT_WORDS = frozenset({"never", "permanent"})


class _Sentinel(enum.Enum):
    """Holder of the :data:`PERMANENT` singleton."""

    PERMANENT = "permanent"

    def __repr__(self) -> str:
        """Show the singleton by its module-level name."""
        return "PERMANENT"


#: The requested lifetime "never expire".
PERMANENT: Final = _Sentinel.PERMANENT
Permanent = Literal[_Sentinel.PERMANENT]
#: What a client asked for: permanent, a duration, or nothing usable (None).
Requested = Permanent | float | None


def _in_range(seconds: float, allow_zero: bool = False) -> float | None:
    """Return ``seconds`` if it is a valid duration, else None."""
    lowest_ok = seconds >= 0 if allow_zero else seconds > 0
    if math.isfinite(seconds) and lowest_ok and seconds <= MAX_DURATION:
        return float(seconds)
    return None


def parse_duration(text: str, allow_zero: bool = False) -> float | None:
    """Parse a duration in one of the module's spellings into seconds.

    Returns None for anything unparseable, negative, non-finite or longer
    than 100 years, and for zero unless ``allow_zero``.
    """
    text = text.strip().lower()
    if not text:
        return None
    if _PLAIN_RE.fullmatch(text):
        seconds: float | None = float(text)
    elif _UNITS_RE.fullmatch(text):
        seconds = _sum_unit_terms(text)
    elif text.startswith("p"):
        seconds = _sum_iso(text.upper())
    else:
        seconds = None
    return None if seconds is None else _in_range(seconds, allow_zero)


def _sum_unit_terms(text: str) -> float | None:
    """Sum ``<number><unit>`` terms; None when a unit is unknown."""
    total = 0.0
    for number, unit in _UNIT_TERM_RE.findall(text):
        factor = _UNITS.get(unit)
        if factor is None:
            return None
        total += float(number) * factor
    return total


def _sum_iso(text: str) -> float | None:
    """Parse an ISO 8601 duration (``PnYnMnWnDTnHnMnS``); None if invalid."""
    match = _ISO_RE.fullmatch(text)
    if match is None or text.endswith("T"):
        return None
    values = match.groups()
    if all(value is None for value in values):
        return None
    total = 0.0
    for value, factor in zip(values, _ISO_FACTORS, strict=True):
        if value is not None:
            total += float(value.replace(",", ".")) * factor
    return total


def parse_expire(text: str | None) -> Requested:
    """Parse the ``expire`` parameter.

    ``never`` and ``permanent`` (any case) give :data:`PERMANENT`; a valid
    duration gives its seconds, zero included (``0``, ``PT0S``: a duration
    under the minimum, which :func:`effective_lifetime` raises to it);
    anything else, including an absent or empty value, gives None (use the
    tier's default).
    """
    if text is None:
        return None
    text = text.strip()
    if text.lower() in _PERMANENT_WORDS:
        return PERMANENT
    return parse_duration(text, allow_zero=True)


@attrs.frozen
class Tier:
    """What files up to ``max_size`` bytes may choose as lifetime.

    ``longest`` is the longest lifetime in seconds (None: no limit but
    :data:`MAX_LIFETIME`); ``default`` is used when nothing allowed was
    asked for (None: permanent).
    """

    max_size: int
    permanent: bool
    longest: float | None
    default: float | None


DEFAULT_TIERS: tuple[Tier, ...] = (
    Tier(max_size=2 * MIB, permanent=True, longest=None, default=None),
    Tier(max_size=8 * MIB, permanent=False, longest=90 * DAY, default=90 * DAY),
    Tier(max_size=32 * MIB, permanent=False, longest=7 * DAY, default=7 * DAY),
)


def parse_size(text: str) -> int:
    """Parse a byte size such as ``2MiB``, ``500KB`` or ``1024`` (bytes).

    Units: B, KiB, MiB, GiB (powers of 1024) and KB, MB, GB (powers of
    1000), case-insensitive. Raises ValueError when invalid or zero.
    """
    match = _SIZE_RE.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"invalid size: {text!r}")
    number, unit = match.groups()
    factor = _SIZE_UNITS.get(unit or "b")
    if factor is None:
        raise ValueError(f"invalid size unit in {text!r}")
    size = int(number) * factor
    if size <= 0:
        raise ValueError(f"size must be positive: {text!r}")
    return size


def parse_tiers(spec: str) -> tuple[Tier, ...]:
    """Parse a tier table such as ``2MiB:permanent,8MiB:90d,32MiB:7d``.

    Each entry is ``SIZE:LIFETIME``; the lifetime is the tier's longest and
    default one, or ``permanent``/``never`` (permanent allowed and default).
    Sizes must increase and lifetimes lie between :data:`MIN_LIFETIME` and
    :data:`MAX_LIFETIME`. Raises ValueError on a bad spec.
    """
    entries = [entry.strip() for entry in spec.split(",")]
    if not any(entries):
        raise ValueError("empty tier list")
    tiers = tuple(_parse_tier(entry) for entry in entries)
    for smaller, larger in zip(tiers, tiers[1:], strict=False):
        if larger.max_size <= smaller.max_size:
            raise ValueError(f"tier sizes must increase: {spec!r}")
    return tiers


def _parse_tier(entry: str) -> Tier:
    """Parse one ``SIZE:LIFETIME`` entry of a tier table."""
    size_text, sep, lifetime_text = entry.partition(":")
    if not sep:
        raise ValueError(f"tier needs SIZE:LIFETIME: {entry!r}")
    size = parse_size(size_text)
    if lifetime_text.strip().lower() in _PERMANENT_WORDS:
        return Tier(max_size=size, permanent=True, longest=None, default=None)
    seconds = parse_duration(lifetime_text)
    if seconds is None or not MIN_LIFETIME <= seconds <= MAX_LIFETIME:
        raise ValueError(f"tier lifetime must be permanent or 1h..365d: {entry!r}")
    return Tier(max_size=size, permanent=False, longest=seconds, default=seconds)


def format_size(size: int) -> str:
    """Format a byte count with the largest binary unit dividing it exactly."""
    for unit, factor in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


def format_duration(seconds: float) -> str:
    """Format seconds with the largest of d, h, m, s dividing them exactly."""
    if seconds == int(seconds):
        whole = int(seconds)
        for unit, factor in (("d", DAY), ("h", HOUR), ("m", MINUTE)):
            if whole % factor == 0:
                return f"{whole // factor}{unit}"
        return f"{whole}s"
    return f"{seconds!r}s"


def format_tiers(tiers: Sequence[Tier]) -> str:
    """Format tiers in the syntax :func:`parse_tiers` reads."""
    return ",".join(
        f"{format_size(tier.max_size)}:"
        + ("permanent" if tier.default is None else format_duration(tier.default))
        for tier in tiers
    )


def tier_for(size: int, tiers: Sequence[Tier]) -> Tier:
    """The first tier holding ``size`` bytes; TooLarge above every tier."""
    for tier in tiers:
        if size <= tier.max_size:
            return tier
    largest = max(tier.max_size for tier in tiers) if tiers else 0
    raise errors.TooLarge(f"file is {size} bytes, above the limit of {largest} bytes")


class Change(enum.Enum):
    """Why a file got another lifetime than it asked for (:class:`Decision`)."""

    #: Permanent asked for, in a tier that does not allow it: the tier's default.
    NOT_PERMANENT = "not permanent"
    #: Longer than the tier's longest: the tier's default.
    OVER_TIER = "over tier"
    #: Longer than :data:`MAX_LIFETIME`: the tier's default (which may be permanent).
    OVER_MAXIMUM = "over maximum"
    #: Shorter than :data:`MIN_LIFETIME`: raised to it.
    UNDER_MINIMUM = "under minimum"


@attrs.frozen
class Decision:
    """The lifetime a file gets (seconds; None: permanent), what it asked for (None:
    nothing usable, so the tier's default, which is no change) and why they differ
    (None: as asked)."""

    lifetime: float | None
    asked: Requested
    change: Change | None
    tier: Tier


def decide(size: int, requested: Requested | str, tiers: Sequence[Tier] = DEFAULT_TIERS) -> Decision:
    """The lifetime a file of ``size`` bytes gets for ``requested``, and why.

    ``requested`` is what :func:`parse_expire` returned (a raw string is parsed
    first). Unset or unparseable gives the tier's default; not allowed (permanent
    in a tier without it, longer than the tier's longest or than
    :data:`MAX_LIFETIME`) gives the tier's default too; a duration under
    :data:`MIN_LIFETIME` gives :data:`MIN_LIFETIME`. Raises
    :class:`errors.TooLarge` above every tier.
    """
    tier = tier_for(size, tiers)
    if isinstance(requested, str):
        requested = parse_expire(requested)
    if requested is PERMANENT:
        if tier.permanent:
            return Decision(None, PERMANENT, None, tier)
        return Decision(tier.default, PERMANENT, Change.NOT_PERMANENT, tier)
    if not _is_duration(requested):
        return Decision(tier.default, None, None, tier)
    asked = float(requested)
    if asked > MAX_LIFETIME:
        return Decision(tier.default, asked, Change.OVER_MAXIMUM, tier)
    if tier.longest is not None and asked > tier.longest:
        return Decision(tier.default, asked, Change.OVER_TIER, tier)
    if asked < MIN_LIFETIME:
        return Decision(float(MIN_LIFETIME), asked, Change.UNDER_MINIMUM, tier)
    return Decision(asked, asked, None, tier)


def effective_lifetime(
    size: int, requested: Requested | str, tiers: Sequence[Tier] = DEFAULT_TIERS
) -> float | None:
    """The lifetime in seconds a file of ``size`` bytes gets, None if permanent
    (:func:`decide`'s lifetime)."""
    return decide(size, requested, tiers).lifetime


def format_asked(asked: Requested) -> str | None:
    """What a file asked for, as stored with it: ``never``, seconds, or None (nothing usable)."""
    if asked is PERMANENT:
        return "never"
    return None if asked is None else repr(float(asked))


def tier_below(tier: Tier, tiers: Sequence[Tier]) -> Tier | None:
    """The tier of the next smaller files, None for the smallest."""
    smaller = [t for t in tiers if t.max_size < tier.max_size]
    return max(smaller, key=lambda t: t.max_size) if smaller else None


def _is_duration(value: object) -> bool:
    """True for a finite, non-negative number of seconds (bool excluded)."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def parse_token_lifetime(text: str | None) -> float | None:
    """Parse an API token's lifetime: seconds, or None for no expiry.

    Absent, empty, ``never`` or ``permanent`` mean no expiry. Raises
    :class:`errors.BadRequest` for an unparseable value or one under a minute.
    """
    if text is None or not text.strip() or text.strip().lower() in _PERMANENT_WORDS:
        return None
    seconds = parse_duration(text)
    if seconds is None:
        raise errors.BadRequest(
            f"invalid token lifetime {text.strip()[:40]!r}: use e.g. 3600, 90m, 12h, "
            "30d, 2w, an ISO 8601 duration such as P30D, or never"
        )
    if seconds < MIN_TOKEN_LIFETIME:
        raise errors.BadRequest("a token lifetime must be at least 1 minute")
    return seconds
