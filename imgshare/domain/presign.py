"""Presigned uploads, the pure parts (PEERS section 2): the signed PUT opaque, the
completion token, the staging keys, and the checks of a presign request.

The opaque in ``put_url`` is the PUT's only credential, like an S3 presigned URL.
It carries the grant id, the declared size and the expiry, signed with a server
secret (HMAC-SHA256), so the site can set the PUT's body limit from it while the
request head is being read, synchronously and without the database: a body
longer than the grant allows is refused (413) as it arrives.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from typing import Any

import attrs

from imgshare.domain import errors, output

#: How long a grant may be PUT and completed (seconds).
LIFETIME = 15 * 60
#: Presigns (and completions) one batch request may carry.
MAX_BATCH = 20
#: The longest file name a presign may declare (the image keeps at most 255 characters).
MAX_FILENAME = 1024
#: Where staged bytes live in storage.  An account name starts with [a-z0-9], so no
#: image key (``<account>/…``) can ever be under this prefix, and ``/img/`` serves
#: only keys built from image rows anyway.
STAGING_PREFIX = "_staging"

_OPAQUE = re.compile(r"^([0-9a-f]{32})\.([1-9][0-9]{0,17})\.([1-9][0-9]{0,11})\.([A-Za-z0-9_-]{43})$")
_COMPLETION = re.compile(r"^[A-Za-z0-9_-]{43}$")


@attrs.frozen
class PutGrant:
    """What a verified opaque says: the grant, its declared size, its expiry."""

    grant_id: str
    size: int
    expires: int


@attrs.frozen
class PresignRequest:
    """One validated presign entry."""

    filename: str
    size: int
    keep_name: bool
    name: str | None
    expire: str | None


def new_grant_id() -> str:
    return secrets.token_hex(16)


def new_completion_token() -> str:
    """A fresh completion token: 256 random bits, URL-safe (43 characters)."""
    return secrets.token_urlsafe(32)


def completion_digest(token: str) -> str:
    """The SHA-256 (hex) under which a completion token is stored."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def looks_like_completion_token(value: Any) -> bool:
    return isinstance(value, str) and bool(_COMPLETION.match(value))


def _mac(secret: bytes, grant_id: str, size: int, expires: int) -> str:
    digest = hmac.new(secret, f"put:{grant_id}:{size}:{expires}".encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def sign_put(secret: bytes, grant_id: str, size: int, expires: int) -> str:
    """The opaque of a PUT URL: ``<grant id>.<size>.<expiry>.<signature>``."""
    return f"{grant_id}.{size}.{expires}.{_mac(secret, grant_id, size, expires)}"


def verify_put(secret: bytes | None, opaque: str) -> PutGrant | None:
    """The grant an opaque names if its signature holds (expired or not), else None."""
    m = _OPAQUE.match(opaque) if secret else None
    if m is None:
        return None
    grant_id, size, expires = m.group(1), int(m.group(2)), int(m.group(3))
    if not hmac.compare_digest(m.group(4), _mac(secret, grant_id, size, expires)):
        return None
    return PutGrant(grant_id, size, expires)


def staging_key(grant_id: str, attempt: int) -> str:
    """The storage key of the bytes of one PUT attempt of a grant."""
    return f"{STAGING_PREFIX}/{grant_id}.{attempt}"


def staging_keys(grant_id: str, attempts: int) -> list[str]:
    """Every key a grant's PUT attempts may have left (each attempt has its own)."""
    return [staging_key(grant_id, n) for n in range(1, attempts + 1)]


def _text(entry: dict[str, Any], *names: str) -> str | None:
    for name in names:
        value = entry.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    return None


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value == 1
    return output.is_true(value if isinstance(value, str) else None)


def parse_size(value: Any, max_size: int) -> int:
    """``sizeBytes``: an integer 1..max_size (a JSON number, or a string of digits);
    BadRequest when missing or malformed, TooLarge (413) past ``max_size``."""
    if value is None:
        raise errors.BadRequest("sizeBytes required")
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]{1,19}\s*", value):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise errors.BadRequest("sizeBytes must be a positive integer")
    if value > max_size:
        raise errors.TooLarge(f"file too large: the limit is {max_size} bytes")
    return value


def parse_presign(entry: Any, max_size: int, defaults: dict[str, Any] | None = None) -> PresignRequest:
    """One presign entry (``{"filename", "contentType", "sizeBytes"}`` and the upload
    options ``expire``/``expiration``, ``keep_name``, ``name``), checked; ``defaults``
    are a batch's top level, whose ``expire`` and ``keep_name`` apply to entries
    without their own.  ``contentType`` is ignored: the bytes are
    sniffed at complete (PEERS section 0.9)."""
    if not isinstance(entry, dict):
        raise errors.BadRequest("each file must be a JSON object")
    inherited = {k: v for k, v in (defaults or {}).items() if k in ("keep_name", "expire", "expiration")}
    options = {**inherited, **entry}
    filename = entry.get("filename")
    if not isinstance(filename, str) or not filename.strip():
        raise errors.BadRequest("filename required")
    if len(filename) > MAX_FILENAME:
        raise errors.BadRequest(f"filename too long: at most {MAX_FILENAME} characters")
    size = parse_size(entry.get("sizeBytes"), max_size)
    return PresignRequest(
        filename=filename.strip(), size=size, keep_name=_flag(options.get("keep_name")),
        name=_text(options, "name"), expire=_text(options, "expire", "expiration"),
    )


def batch_list(body: dict[str, Any], *names: str) -> list[Any]:
    """The list a batch request carries under the first of ``names`` present: 1 to
    MAX_BATCH entries, else BadRequest."""
    for name in names:
        if name in body:
            entries = body[name]
            break
    else:
        raise errors.BadRequest(f"{names[0]} required")
    if not isinstance(entries, list) or not entries:
        raise errors.BadRequest(f"{names[0]} must be a non-empty list")
    if len(entries) > MAX_BATCH:
        raise errors.BadRequest(f"too many entries: at most {MAX_BATCH} per request")
    return entries


def entry_error(error: errors.ApiError) -> dict[str, Any]:
    """A batch entry that failed: its message and status."""
    return {"error": error.message, "status": error.status}


def presign_answer(put_url: str, completion_token: str, expires: float) -> dict[str, Any]:
    return {"put_url": put_url, "completion_token": completion_token, "expires": output.iso_time(expires)}
