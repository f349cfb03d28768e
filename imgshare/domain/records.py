"""Frozen records returned by the Database and serialized by the web layer.

Times are POSIX seconds (float) in UTC.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class ImageType:
    """One accepted image type, identified from the bytes."""

    mime: str
    ext: str  # canonical extension with the dot, e.g. ".jpg"
    pil_format: str  # Pillow's format name, e.g. "JPEG"


@attrs.frozen
class ImageInfo:
    """What inspecting an uploaded original found.

    ``width`` and ``height`` are upright (as displayed: the EXIF orientation
    applied); ``orientation`` is that EXIF orientation (1-8, 1 when none).
    """

    type: ImageType
    width: int
    height: int
    size: int
    sha256: str
    orientation: int = 1


@attrs.frozen
class Account:
    id: int
    name: str
    is_admin: bool
    created: float


@attrs.frozen
class Usage:
    """What an account's images hold against its quota (schema 010): ``images``
    reserved or live (expired ones until their purge) and the bytes of their
    originals; the limits, None where there is none."""

    account: str
    images: int
    bytes: int
    quota_bytes: int | None = None
    quota_images: int | None = None


@attrs.frozen
class Token:
    """An API token's row; the secret itself is never stored, only its SHA-256."""

    id: int
    account: str
    label: str
    created: float
    expires: float | None
    last_used: float | None


# Image states: "uploading" while the original is being stored (name reserved,
# never served); "live" once stored and committed; "deleted" once the owner
# deleted it (never served; objects are removed by the expiry service, then the
# row goes).
UPLOADING = "uploading"
LIVE = "live"
DELETED = "deleted"

# Derived-file job states: "pending" while it waits for a worker (due at its
# ``available_at``); "running" while a worker's claim holds it (until ``lease_until``).
PENDING = "pending"
RUNNING = "running"


@attrs.frozen
class Image:
    id: int
    account: str
    name: str  # e.g. "20260214_fountain.jpg"
    mime: str
    size: int
    width: int
    height: int
    sha256: str
    uploaded: float
    expires: float | None  # None: permanent
    state: str
    #: The client's own file name at upload ("" when unknown or not kept).
    original_name: str = ""
    #: The lifetime the upload asked for (``lifetime.format_asked``: ``never``,
    #: seconds, or None when nothing usable was asked).
    asked_expire: str | None = None
    #: The secret of the image's delete link: set only on the record an upload
    #: returns (the database keeps only its SHA-256), else None.
    delete_secret: str | None = None
    #: The stored original carries GPS coordinates (EXIF or XMP; false for images
    #: uploaded before this was recorded).
    has_location: bool = False

    @property
    def stem(self) -> str:
        """The name without its extension: the base of every derived file."""
        return self.name.rsplit(".", 1)[0]

    @property
    def lifetime(self) -> float | None:
        """The seconds from upload to expiry it was given; None: permanent."""
        return None if self.expires is None else self.expires - self.uploaded

    def is_served(self, now: float) -> bool:
        """True while the image is live and not past its expiry."""
        return self.state == LIVE and (self.expires is None or now < self.expires)


@attrs.frozen
class Variant:
    """A derived file that exists in storage."""

    image_id: int
    variant: str  # xga, vga, qvga or thumb
    size: int
    width: int
    height: int
    sha256: str
    created: float


@attrs.frozen
class Job:
    """A claimed derived-file job: the image to derive, how many times it was claimed
    (this claim included), by which claimant, and how many earlier claims ended in an
    outage of storage or the database (those do not count against the attempts cap)."""

    image: Image
    attempts: int
    claimant: str
    outages: int = 0


@attrs.frozen
class Session:
    """A browser session's row (the cookie's id itself is never stored, only its SHA-256),
    with its account's admin flag as it is now."""

    digest: str
    account: str
    is_admin: bool
    created: float
    expires: float


# Presigned-upload grant states (schema 007): "open" until a PUT's bytes are staged
# in storage; "staged" once they are; "completing" while a complete holds its claim;
# "spent" once its image is committed or its bytes were refused (only the staged
# objects and the row remain, for the sweep).
GRANT_OPEN = "open"
GRANT_STAGED = "staged"
GRANT_COMPLETING = "completing"
GRANT_SPENT = "spent"


@attrs.frozen
class Grant:
    """A presigned upload's row: who may complete it, what it may carry, and where its
    bytes are staged once a PUT brought them (the completion token is never stored,
    only its SHA-256)."""

    id: str
    account: str
    filename: str
    size_limit: int
    keep_name: bool
    name: str | None
    expire: str | None
    created: float
    expires: float
    state: str
    put_attempts: int
    staged_attempt: int | None
    staged_size: int | None
    staged_sha256: str | None

