"""API response bodies: the image record, errors, and JSON/text rendering."""

from __future__ import annotations

import datetime
import json
import math
import re
from typing import Any

from imgshare.domain import errors, ids, naming, records

FORMATS = ("json", "text")
_FORMAT_ALIASES = {"txt": "text"}

#: The values that set a flag parameter.
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})

JSON_CONTENT_TYPE = "application/json"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"

# Everything str.splitlines() treats as a line boundary.
#: Keys the text format names differently (a page URL reads like the other URLs).
_TEXT_KEYS = {"viewer": "url_viewer"}

_LINE_BREAKS = re.compile(r"[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def iso_time(ts: float) -> str:
    """Format POSIX seconds as UTC ISO 8601 to the second: ``2026-02-14T09:30:00Z``."""
    moment = datetime.datetime.fromtimestamp(math.floor(ts), tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def image_urls(public_url: str, account: str, name: str) -> dict[str, str]:
    """The public URLs of an original and its three resized versions."""
    base = public_url.rstrip("/")
    urls = {"original": f"{base}/img/{naming.storage_key(account, name)}"}
    for variant in naming.VARIANTS:
        urls[variant] = f"{base}/img/{naming.storage_key(account, name, variant)}"
    return urls


def viewer_url(public_url: str, account: str, name: str) -> str:
    """The image's public viewer page (SPEC section 9)."""
    return f"{public_url.rstrip('/')}/i/{account}/{name}"


def delete_url(public_url: str, account: str, name: str, secret: str) -> str:
    """The image's secret delete link (PEERS section 3)."""
    return f"{public_url.rstrip('/')}/delete/{account}/{name}/{secret}"


def image_record(image: records.Image, public_url: str) -> dict[str, Any]:
    """The API's image record for ``image``, keys in the documented order;
    ``delete_url`` only on the record an upload returns (the only one with the secret)."""
    record: dict[str, Any] = {
        "status": "ok",
        "user": image.account,
        "file": image.name,
        "mime": image.mime,
        "size": image.size,
        "width": image.width,
        "height": image.height,
        "sha256": image.sha256,
        "uploaded": iso_time(image.uploaded),
        "expires": None if image.expires is None else iso_time(image.expires),
        "urls": image_urls(public_url, image.account, image.name),
        "id": ids.public_id(image.account, image.name),
        "viewer": viewer_url(public_url, image.account, image.name),
        "has_location": image.has_location,
    }
    if image.delete_secret:
        record["delete_url"] = delete_url(public_url, image.account, image.name, image.delete_secret)
    return record


def expires_header(image: records.Image) -> str:
    """The ``Imgshare-Expires`` value of an upload answer: the effective expiry
    (ISO 8601 UTC) or ``never``."""
    return "never" if image.expires is None else iso_time(image.expires)


def error_body(message: str) -> dict[str, str]:
    """The body of an error response."""
    return {"status": "error", "error": message}


def pick_format(value: str | None) -> str:
    """The response format a ``format`` parameter asks for (``json`` by default)."""
    if value is None:
        return "json"
    value = value.strip().lower()
    value = _FORMAT_ALIASES.get(value, value)
    return value if value in FORMATS else "json"


def is_true(value: str | None) -> bool:
    """Whether a form or query flag (``keep_name=1``) is set: 1, true, yes or on, in any case."""
    return (value or "").strip().lower() in TRUE_WORDS


def parse_switch(name: str, value: str | None) -> bool | None:
    """A strict on/off parameter (``strip_location``): ``1`` is on, ``0`` off, absent or
    empty None (the account's default); anything else BadRequest (400), the request
    doing nothing, as a wrong ``admin=`` is refused on the account page."""
    text = (value or "").strip()
    if not text:
        return None
    if text in ("0", "1"):
        return text == "1"
    raise errors.BadRequest(f"{name} must be 1 or 0")


def render(data: dict[str, Any], fmt: str) -> tuple[bytes, str]:
    """Serialize ``data`` as ``fmt``; return the body and its Content-Type.

    ``json``: compact JSON plus a newline. ``text``: one ``Key=Value`` line
    per key (nested dicts flattened, e.g. ``urls`` as ``url_original``...),
    line breaks inside values replaced by spaces. Unknown formats give JSON.
    """
    if fmt == "text":
        lines = [f"{key}={value}" for key, value in _text_items(data)]
        return ("\n".join(lines) + "\n").encode("utf-8"), TEXT_CONTENT_TYPE
    body = json.dumps(data, separators=(",", ":"), allow_nan=False) + "\n"
    return body.encode("utf-8"), JSON_CONTENT_TYPE


def _text_items(data: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Flatten ``data`` into (key, value) pairs for the text format.

    A nested dict under ``urls`` yields ``url_<key>`` (a trailing ``s`` is
    dropped from the parent key).
    """
    items: list[tuple[str, str]] = []
    for key, value in data.items():
        name = str(key) if prefix else _TEXT_KEYS.get(str(key), str(key))
        full_key = _one_line(prefix + name)
        if isinstance(value, dict):
            items.extend(_text_items(value, full_key.removesuffix("s") + "_"))
        else:
            items.append((full_key, _text_value(full_key, value)))
    return items


def _text_value(key: str, value: Any) -> str:
    """One value in the text format."""
    if value is None:
        return "never" if key == "expires" else ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(_text_value(key, item) for item in value)
    return _one_line(str(value))


def _one_line(text: str) -> str:
    """Replace every line break in ``text`` with a space."""
    return _LINE_BREAKS.sub(" ", text)
