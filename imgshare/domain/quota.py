"""Storage quotas: parsing a limit, the refusal of an upload past one, usage in words.

Pure functions over ``records.Usage`` (what an account's images hold, schema 010).
"""

from __future__ import annotations

from imgshare.domain import errors, lifetime, words
from imgshare.domain.records import Usage

#: The largest quota accepted (1 PiB): past any disk, well inside a 64-bit column.
MAX_QUOTA_BYTES = 1 << 50
#: The largest image-count quota accepted.
MAX_QUOTA_IMAGES = 1 << 40
#: The words lifting a limit.
UNLIMITED_WORDS = ("none", "unlimited", "off")


class QuotaFull(errors.ApiError):
    """The upload would pass the account's storage or image-count quota (413).

    Not a ``TooLarge``: the file itself is fine (another account could store it), so
    nothing that remembers a refusal for the content (img_gather.php's error cache)
    may keep this one."""

    status = 413


def parse_quota_bytes(text: str) -> int | None:
    """A storage quota: ``500MB``, ``2GiB``, ``1048576`` (bytes), or ``none`` (no limit:
    None).  ValueError saying what is wrong otherwise."""
    value = text.strip()
    if value.lower() in UNLIMITED_WORDS:
        return None
    try:
        size = lifetime.parse_size(value)
    except ValueError:
        raise ValueError(f"invalid quota {text!r}: give a size such as 500MB or 2GiB, or none") from None
    if size > MAX_QUOTA_BYTES:
        raise ValueError(f"invalid quota {text!r}: at most 1 PiB (1024 TiB)")
    return size


def parse_quota_images(text: str) -> int | None:
    """An image-count quota: a whole number of at least 1, or ``none`` (no limit: None)."""
    value = text.strip()
    if value.lower() in UNLIMITED_WORDS:
        return None
    if not value.isascii() or not value.isdigit() or int(value) < 1 or int(value) > MAX_QUOTA_IMAGES:
        raise ValueError(f"invalid image quota {text!r}: give a whole number of images (at least 1), or none")
    return int(value)


def refusal(usage: Usage, size: int | None) -> str | None:
    """Why one more image of ``size`` bytes would pass the account's quota, in words
    ("Storage quota full: 9.8 MiB of 10.0 MiB used; this file is 1.2 MiB."); None if it
    fits.  ``size`` None: a file not seen yet, refused only when not one more byte fits."""
    if usage.quota_images is not None and usage.images + 1 > usage.quota_images:
        return f"Image quota full: {usage.images} of {images_in_words(usage.quota_images)} used."
    if usage.quota_bytes is not None and usage.bytes + (1 if size is None else size) > usage.quota_bytes:
        used = f"Storage quota full: {words.size_in_words(usage.bytes)} of {words.size_in_words(usage.quota_bytes)} used"
        return f"{used}." if size is None else f"{used}; this file is {words.size_in_words(size)}."
    return None


def check(usage: Usage, size: int | None) -> None:
    """QuotaFull unless one more image of ``size`` bytes (None: of any size) fits the
    account's quota."""
    problem = refusal(usage, size)
    if problem is not None:
        raise QuotaFull(problem)


def images_in_words(count: int) -> str:
    """``1 image``, ``24 images``."""
    return f"{count} image" + ("" if count == 1 else "s")


def usage_in_words(usage: Usage) -> str:
    """What the account holds, against its quota when it has one: ``12 images, 3.4 MiB``,
    ``12 images, 3.4 MiB of 10.0 MiB (34%)``, ``12 of 500 images, 3.4 MiB``."""
    count = (f"{usage.images} of {images_in_words(usage.quota_images)}" if usage.quota_images is not None
             else images_in_words(usage.images))
    stored = words.size_in_words(usage.bytes)
    if usage.quota_bytes is not None:
        stored += f" of {words.size_in_words(usage.quota_bytes)} ({percent_used(usage)}%)"
    return f"{count}, {stored}"


def percent_used(usage: Usage) -> int:
    """The share of the storage quota used, in whole percent rounded down (0 without a quota;
    at most 100)."""
    if not usage.quota_bytes:
        return 0
    return min(100, usage.bytes * 100 // usage.quota_bytes)


def quota_in_words(usage: Usage) -> str:
    """The account's limits: ``no limit``, ``10.0 MiB``, ``10.0 MiB, 500 images``, ``500 images``."""
    parts = []
    if usage.quota_bytes is not None:
        parts.append(words.size_in_words(usage.quota_bytes))
    if usage.quota_images is not None:
        parts.append(images_in_words(usage.quota_images))
    return ", ".join(parts) or "no limit"
