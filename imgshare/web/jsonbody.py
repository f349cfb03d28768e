"""JSON request bodies read as they are spooled, in a thread of the io pool.

A JSON upload (PEERS section 2) carries its image as a base64 string that may be
tens of megabytes; ``json.loads`` would hold it (and the interpreter lock) whole.
This reads the top-level object one chunk at a time instead: the string values
of the fields named in ``spooled`` go, unescaped, to spool files; every other
value is small (together at most MAX_SMALL_BYTES) and parsed with ``json``.
The result is a ``Form``, as a form body gives.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from typing import IO, Any

from imgshare.domain.errors import BadRequest, TooLarge
from imgshare.web.forms import CHUNK, MAX_FIELDS, Form, Spooling, UploadedFile

#: The small values of a body together (names, options, anything unknown).
MAX_SMALL_BYTES = 1024 * 1024
_WHITESPACE = b" \t\r\n"
#: What ends a run of plain characters inside a string.
_STRING_STOP = re.compile(rb'["\\\x00-\x1f]')
#: One-character escapes, and what they stand for.
_ESCAPES = {ord('"'): b'"', ord("\\"): b"\\", ord("/"): b"/", ord("b"): b"\b", ord("f"): b"\f",
            ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t"}


def _malformed(what: str) -> BadRequest:
    return BadRequest(f"malformed JSON body: {what}")


class _Reader:
    """The body's bytes, a chunk at a time, with one byte of look-ahead."""

    def __init__(self, body: IO[bytes], chunk: int):
        self._body = body
        self._chunk = chunk
        self.buf = b""
        self.pos = 0

    def fill(self) -> bool:
        """True while there is a byte to read (reading the next chunk when needed)."""
        if self.pos < len(self.buf):
            return True
        self.buf, self.pos = self._body.read(self._chunk), 0
        return bool(self.buf)

    def peek(self) -> int | None:
        return self.buf[self.pos] if self.fill() else None

    def take(self) -> int:
        if not self.fill():
            raise _malformed("it ends too early")
        self.pos += 1
        return self.buf[self.pos - 1]

    def skip_space(self) -> int | None:
        """Skip whitespace; the next byte (not taken), or None at the end."""
        while self.fill():
            byte = self.buf[self.pos]
            if byte not in _WHITESPACE:
                return byte
            self.pos += 1
        return None

    def expect(self, byte: bytes) -> None:
        if self.skip_space() != byte[0]:
            raise _malformed(f"expected {byte.decode()!r}")
        self.pos += 1


class _Sink:
    """Where a string's bytes go: memory (raw, with its escapes) or a spool file (unescaped)."""

    def __init__(self, limit: int, out: IO[bytes] | None = None):
        self.limit = limit
        self.out = out
        self.size = 0
        self.raw = bytearray()

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise TooLarge(f"JSON value too large: the limit is {self.limit} bytes")
        if self.out is not None:
            self.out.write(data)
        else:
            self.raw += data


def _read_string(reader: _Reader, sink: _Sink) -> None:
    """Read a string whose opening quote was taken, up to its closing quote.

    In memory the raw text is kept (``json`` unescapes it later); to a file it is
    unescaped here (a base64 text has no use for more than the simple escapes, but
    ``\\uXXXX`` is decoded too).  Raw control characters are refused, except in a
    spooled value, where a careless client's line breaks are dropped by the decoder."""
    spooled = sink.out is not None
    while True:
        if not reader.fill():
            raise _malformed("a string is not closed")
        found = _STRING_STOP.search(reader.buf, reader.pos)
        end = found.start() if found else len(reader.buf)
        if end > reader.pos:
            sink.write(reader.buf[reader.pos:end])
        reader.pos = end
        if found is None:
            continue
        byte = reader.take()
        if byte == ord('"'):
            return
        if byte != ord("\\"):
            if not spooled:
                raise _malformed("a control character in a string")
            sink.write(bytes([byte]))
            continue
        escape = reader.take()
        if not spooled:
            sink.write(b"\\" + bytes([escape]))
            continue
        if escape == ord("u"):
            digits = bytes(reader.take() for _ in range(4))
            try:
                sink.write(chr(int(digits, 16)).encode("utf-8", "replace"))
            except ValueError:
                raise _malformed("a bad \\u escape") from None
        elif escape in _ESCAPES:
            sink.write(_ESCAPES[escape])
        else:
            raise _malformed("a bad escape in a string")


def _read_other(reader: _Reader, sink: _Sink) -> None:
    """Read a value that is not a string (a number, true, an object…) up to the comma
    or brace that ends it, nested strings and brackets included, raw into ``sink``."""
    depth = 0
    while True:
        byte = reader.peek()
        if byte is None:
            raise _malformed("it ends too early")
        if depth == 0 and byte in b",}":
            return
        reader.pos += 1
        sink.write(bytes([byte]))
        if byte == ord('"'):
            inner = _Sink(sink.limit - sink.size)
            _read_string(reader, inner)
            sink.write(bytes(inner.raw) + b'"')
        elif byte in b"[{":
            depth += 1
        elif byte in b"]}":
            depth -= 1
            if depth < 0:
                raise _malformed("unbalanced brackets")


#: On/off fields whose JSON ``false`` is an explicit off (``0``) rather than no value:
#: ``strip_location: false`` overrides an account default of on.
FALSE_AS_ZERO = frozenset({"strip_location"})


def _field_text(value: Any) -> str | None:
    """A JSON value as a form field's text: strings as they are, true as ``1``,
    numbers in decimal; null, false and structures as no value."""
    if isinstance(value, bool):
        return "1" if value else None
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return None


class _JsonSpooler(Spooling):
    """Reads one JSON object into a ``Form``; see the module's docstring."""

    def __init__(self, spool_dir: str, spooled: tuple[str, ...], max_spooled: int):
        self._begin(spool_dir, spooled, max_spooled)

    def _small_sink(self) -> _Sink:
        return _Sink(MAX_SMALL_BYTES - self._small)

    def read(self, reader: _Reader) -> Form:
        if reader.peek() == 0xEF:  # a UTF-8 byte order mark
            for byte in b"\xef\xbb\xbf":
                if reader.take() != byte:
                    raise _malformed("not UTF-8")
        if reader.skip_space() is None:
            raise BadRequest("empty JSON body: send an object")
        if reader.peek() != ord("{"):
            raise BadRequest("the JSON body must be an object")
        reader.pos += 1
        fields = 0
        if reader.skip_space() == ord("}"):
            reader.pos += 1
        else:
            while True:
                fields += 1
                if fields > MAX_FIELDS:
                    raise BadRequest(f"too many JSON fields (at most {MAX_FIELDS})")
                self._member(reader)
                after = reader.skip_space()
                reader.pos += 1
                if after == ord("}"):
                    break
                if after != ord(","):
                    raise _malformed("expected ',' or '}'")
        if reader.skip_space() is not None:
            raise _malformed("something follows the object")
        return self.form

    def _member(self, reader: _Reader) -> None:
        reader.expect(b'"')
        name_sink = self._small_sink()
        _read_string(reader, name_sink)
        self._small += name_sink.size
        name = self._loads(b'"' + bytes(name_sink.raw) + b'"')
        reader.expect(b":")
        first = reader.skip_space()
        if first == ord('"') and name in self._spooled and name not in self.form.spooled:
            reader.pos += 1
            self._spool(reader, name)
            return
        sink = self._small_sink()
        if first == ord('"'):
            reader.pos += 1
            _read_string(reader, sink)
            raw = b'"' + bytes(sink.raw) + b'"'
        else:
            _read_other(reader, sink)
            raw = bytes(sink.raw)
        self._small += sink.size
        value = self._loads(raw)
        text = "0" if value is False and name in FALSE_AS_ZERO else _field_text(value)
        if text is not None and name not in self.form.spooled:
            self.form.fields.setdefault(name, text)

    def _spool(self, reader: _Reader, name: str) -> None:
        os.makedirs(self._spool_dir, exist_ok=True)
        fd, self._out_path = tempfile.mkstemp(dir=self._spool_dir, prefix="upload-")
        self._out = os.fdopen(fd, "wb")
        sink = _Sink(self._max_spooled, self._out)
        _read_string(reader, sink)
        self._out.close()
        self._out = None
        self.form.spooled[name] = UploadedFile(self._out_path, "", sink.size, name)

    @staticmethod
    def _loads(raw: bytes) -> Any:
        try:
            return json.loads(raw)
        except (ValueError, RecursionError) as e:
            raise _malformed(str(e) if isinstance(e, ValueError) else "nested too deeply") from None


def parse_json_body(
    body: IO[bytes], spool_dir: str, spooled: tuple[str, ...], max_spooled: int, chunk: int = CHUNK,
) -> Form:
    """Read a JSON object body (blocking: run it in the io pool).  The string values
    of the fields in ``spooled`` (each at most ``max_spooled`` bytes) are spooled into
    ``Form.spooled``; the others are in ``Form.fields`` as text.  Raises BadRequest
    (not an object, malformed) or TooLarge, leaving no spool file behind."""
    body.seek(0)
    spooler = _JsonSpooler(spool_dir, spooled, max_spooled)
    try:
        return spooler.read(_Reader(body, chunk))
    except BaseException:
        spooler.abandon()
        raise
