"""Listing cursors: a position in one order of an account's images, opaque to clients.

A cursor names the sort it belongs to and one image's place in it: the order key
(upload time for ``newest`` and ``oldest``, size in bytes for ``largest``) and the
image id that breaks ties.  A page "after" a cursor lists the images following that
place in the sort's order, a page "before" it those preceding it; the image at the
place itself (if it still exists) is on neither.  A cursor only positions: the
listing it is used in is always of the caller's own account, so a cursor made from
any other position (another account's, an invented one) lists the caller's images
from there and reveals nothing else.

On the wire a cursor is ``<sort letter>.<key>.<id>`` in URL-safe base64 without
padding: clients pass it back as given and need not read it.  ``decode`` refuses
(BadRequest) anything ``encode`` cannot have made: not that shape, too long, an
unknown or other sort than the listing's, a key or id out of range.
"""

from __future__ import annotations

import base64
import binascii
import math
import re

import attrs

from imgshare.domain import errors

#: The sorts a cursor may belong to, each with its letter on the wire.
SORT_LETTERS = {"newest": "n", "oldest": "o", "largest": "l"}
_LETTER_SORTS = {letter: sort for sort, letter in SORT_LETTERS.items()}
#: The longest cursor ``decode`` reads (an encoded one is at most about 60 characters).
MAX_CURSOR_CHARACTERS = 100
#: Ids and sizes are SQL BIGINTs.
_LARGEST_INTEGER = 2**63 - 1
_INTEGER = re.compile(r"(0|[1-9][0-9]{0,18})\Z")
#: ``repr`` of a finite float (what ``encode`` writes for an upload time).
_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?(e[-+]?[0-9]+)?\Z")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+\Z")


@attrs.frozen
class Position:
    """One place in the order ``sort``: the order key there and the image id."""

    sort: str
    key: float | int
    id: int


def encode(position: Position) -> str:
    """The cursor of ``position``, as clients see it."""
    key = repr(float(position.key)) if position.sort in ("newest", "oldest") else str(int(position.key))
    text = f"{SORT_LETTERS[position.sort]}.{key}.{position.id}"
    return base64.urlsafe_b64encode(text.encode("ascii")).rstrip(b"=").decode("ascii")


def decode(cursor: str, sort: str) -> Position:
    """The position a cursor of the listing in order ``sort`` names; BadRequest for a
    cursor that is not one, or belongs to another sort."""
    if not cursor or len(cursor) > MAX_CURSOR_CHARACTERS or not _BASE64URL.match(cursor):
        raise errors.BadRequest("cursor: not a cursor of this listing (pass back one a listing gave)")
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise errors.BadRequest("cursor: not a cursor of this listing (pass back one a listing gave)") from None
    parts = text.split(".", 1)
    letter, rest = (parts[0], parts[1]) if len(parts) == 2 else ("", "")
    key_text, _, id_text = rest.rpartition(".")
    found = _LETTER_SORTS.get(letter)
    if found is None or not _INTEGER.match(id_text) or not 1 <= int(id_text) <= _LARGEST_INTEGER:
        raise errors.BadRequest("cursor: not a cursor of this listing (pass back one a listing gave)")
    if found != sort:
        raise errors.BadRequest(f"cursor: it belongs to sort={found}, not sort={sort}")
    if sort == "largest":
        if not _INTEGER.match(key_text) or int(key_text) > _LARGEST_INTEGER:
            raise errors.BadRequest("cursor: not a cursor of this listing (pass back one a listing gave)")
        key: float | int = int(key_text)
    else:
        if not _DECIMAL.match(key_text) or not math.isfinite(float(key_text)):
            raise errors.BadRequest("cursor: not a cursor of this listing (pass back one a listing gave)")
        key = float(key_text)
    return Position(sort, key, int(id_text))


def position_of(sort: str, image: object) -> Position:
    """The place of ``image`` (a records.Image) in the order ``sort``."""
    key = image.size if sort == "largest" else image.uploaded  # type: ignore[attr-defined]
    return Position(sort, key, image.id)  # type: ignore[attr-defined]
