"""Lenient, streaming base64 decoding of an uploaded image (PEERS section 0.7).

Clients of peer hosts send images as base64 text in form fields, not always
cleanly: with a ``data:image/...;base64,`` prefix, wrapped in lines, with ``+``
turned into spaces by a form encoding they forgot, in the URL-safe alphabet,
without padding.  ``Base64Decoder`` takes such text in chunks of any size and
gives back the bytes; anything still invalid raises ``BadBase64`` (400, Chevereto
code 120).  Pure: the caller reads and writes the files.
"""

from __future__ import annotations

import binascii
import re

from imgshare.domain import errors

#: How much of the start is looked at for a ``data:`` prefix.
PREFIX_WINDOW = 512

_DATA_URI = re.compile(rb"data:[^,]*?;base64,", re.IGNORECASE)
_INVALID = re.compile(rb"[^A-Za-z0-9+/]")
#: Spaces are a ``+`` some client left unencoded; ``-`` and ``_`` are the URL-safe alphabet.
_TRANSLATE = bytes.maketrans(b" -_", b"++/")
_DROPPED = b"\r\n\t"


class BadBase64(errors.BadRequest):
    """A source that is neither a URL nor valid base64 (400; Chevereto code 120)."""


class Base64Decoder:
    """Feed text with ``feed``, end with ``finish``; each returns decoded bytes."""

    def __init__(self) -> None:
        self._head: bytes | None = b""  # the start, until the data: prefix is settled
        self._pending = b""  # fewer than 4 characters not decoded yet
        self._padded = False  # an "=" was seen: only more of them may follow
        self.decoded = 0

    def feed(self, text: bytes) -> bytes:
        if self._head is not None:
            self._head += text
            if len(self._head) < PREFIX_WINDOW:
                return b""
            text, self._head = self._strip_prefix(self._head), None
        return self._decode(text)

    def finish(self) -> bytes:
        out = b""
        if self._head is not None:
            out = self._decode(self._strip_prefix(self._head))
            self._head = None
        rest, self._pending = self._pending, b""
        if len(rest) == 1:
            raise BadBase64("source: invalid base64 (its length is impossible)")
        if rest:
            tail = binascii.a2b_base64(rest + b"=" * (4 - len(rest)))
            self.decoded += len(tail)
            out += tail
        if self.decoded == 0:
            raise BadBase64("source: empty base64")
        return out

    @staticmethod
    def _strip_prefix(head: bytes) -> bytes:
        start = head.lstrip(b" \r\n\t")
        if start[:5].lower() != b"data:":
            return start
        match = _DATA_URI.match(start)
        if match is None:
            raise BadBase64("source: a data: URI must be base64 (data:image/...;base64,...)")
        return start[match.end():]

    def _decode(self, text: bytes) -> bytes:
        text = text.translate(_TRANSLATE, _DROPPED)
        if self._padded:
            if text.strip(b"="):
                raise BadBase64("source: invalid base64 (text after its padding)")
            return b""
        pad = text.find(b"=")
        if pad >= 0:
            if text[pad:].strip(b"="):
                raise BadBase64("source: invalid base64 (text after its padding)")
            text = text[:pad]
            self._padded = True
        if _INVALID.search(text):
            raise BadBase64("source: neither an http(s) URL nor valid base64")
        text = self._pending + text
        whole = len(text) - len(text) % 4
        self._pending = text[whole:]
        out = binascii.a2b_base64(text[:whole]) if whole else b""
        self.decoded += len(out)
        return out
