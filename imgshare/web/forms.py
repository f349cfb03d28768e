"""Form bodies parsed in a thread of the io pool, never on the reactor.

Multipart bodies are parsed with python-multipart's streaming parser from the
request's spooled body: file parts go straight to a temporary file in the spool
folder, text fields are kept in memory with tight limits.
"""

from __future__ import annotations

import os
import tempfile
from typing import IO, Any
from urllib.parse import parse_qsl

import attrs
from python_multipart.multipart import MultipartParser, parse_options_header

from imgshare.domain.errors import BadRequest, TooLarge
from imgshare.spool import remove_if_present

MAX_FIELDS = 64
#: Parts of any kind (fields, kept and skipped file parts) beyond the fields and
#: files a form may hold: a body of thousands of tiny parts is refused early.
EXTRA_PARTS = 16
MAX_FIELD_BYTES = 64 * 1024
MAX_PART_HEADER_BYTES = 16 * 1024
MAX_URLENCODED_BYTES = 1024 * 1024
CHUNK = 256 * 1024


@attrs.frozen
class UploadedFile:
    """A file part spooled to ``path``; ``filename`` is what the client called it."""

    path: str
    filename: str
    size: int


@attrs.define
class Form:
    """The fields of a request body (plus its query string) and its file parts.

    ``file`` is the first file part; ``files`` holds every one kept (as many as
    the parser's ``max_files`` allowed, in the order they came).
    """

    fields: dict[str, str] = attrs.Factory(dict)
    file: UploadedFile | None = None
    files: list[UploadedFile] = attrs.Factory(list)
    #: Names of the fields that came from the query string, not the body.
    from_query: set[str] = attrs.Factory(set)

    def get(self, name: str) -> str | None:
        return self.fields.get(name)

    def get_from_body(self, name: str) -> str | None:
        """A field only if the body carried it (a CSRF token must never come from the URL)."""
        return None if name in self.from_query else self.fields.get(name)

    def discard(self) -> None:
        """Remove the spooled files that are still there."""
        paths = {f.path for f in self.files}
        if self.file is not None:
            paths.add(self.file.path)
        for path in paths:
            remove_if_present(path)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


class _MultipartCollector:
    """python-multipart callbacks that build a ``Form``."""

    def __init__(self, spool_dir: str, max_file: int, file_field: str, max_files: int = 1):
        self.form = Form()
        self._spool_dir = spool_dir
        self._max_file = max_file
        self._file_field = file_field
        self._max_files = max_files
        self._fields = 0
        self._parts = 0
        self._max_parts = MAX_FIELDS + max_files + EXTRA_PARTS
        self.ended = False
        self._reset_part()

    def _reset_part(self) -> None:
        self._header_name = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._header_bytes = 0
        self._name: str | None = None
        self._value = bytearray()
        self._out: IO[bytes] | None = None
        self._out_path = ""
        self._filename: str | None = None
        self._size = 0
        self._skip = False

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._on_part_begin,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
            "on_end": self._on_end,
        }

    def _on_part_begin(self) -> None:
        self._parts += 1
        if self._parts > self._max_parts:
            raise BadRequest(f"malformed multipart body: too many parts (at most {self._max_parts})")
        self._reset_part()

    def _count_header(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > MAX_PART_HEADER_BYTES:
            raise BadRequest("malformed multipart body: a part's headers are too long")

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        self._headers[self._header_name.strip().lower()] = self._header_value.strip()
        self._header_name = self._header_value = b""

    def _on_headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get(b"content-disposition"))
        if disposition != b"form-data" or b"name" not in options:
            raise BadRequest("malformed multipart body: a part has no form-data name")
        self._name = _text(options[b"name"])
        if b"filename" in options:
            if self._name != self._file_field or len(self.form.files) >= self._max_files:
                self._skip = True  # extra file parts are read past, not kept
                return
            self._filename = _text(options[b"filename"])
            os.makedirs(self._spool_dir, exist_ok=True)
            fd, self._out_path = tempfile.mkstemp(dir=self._spool_dir, prefix="upload-")
            self._out = os.fdopen(fd, "wb")
        else:
            self._fields += 1
            if self._fields > MAX_FIELDS:
                raise BadRequest(f"too many form fields (at most {MAX_FIELDS})")

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._skip:
            return
        n = end - start
        if self._out is not None:
            self._size += n
            if self._size > self._max_file:
                raise TooLarge(f"file too large: the limit is {self._max_file} bytes")
            self._out.write(data[start:end])
        else:
            if len(self._value) + n > MAX_FIELD_BYTES:
                raise BadRequest(f"form field {self._name!r} is too long")
            self._value += data[start:end]

    def _on_part_end(self) -> None:
        if self._skip or self._name is None:
            return
        if self._out is not None:
            self._out.close()
            self._out = None
            uploaded = UploadedFile(self._out_path, self._filename or "", self._size)
            self.form.files.append(uploaded)
            if self.form.file is None:
                self.form.file = uploaded
        else:
            self.form.fields.setdefault(self._name, _text(bytes(self._value)))

    def _on_end(self) -> None:
        self.ended = True

    def abandon(self) -> None:
        """Remove whatever was spooled after a failure."""
        if self._out is not None:
            self._out.close()
            remove_if_present(self._out_path)
            self._out = None
        self.form.discard()


def parse_body(
    body: IO[bytes], content_type: bytes | None, spool_dir: str, max_file: int,
    file_field: str = "file", max_files: int = 1,
) -> Form:
    """Parse a request body (blocking: run it in a thread of the io pool).

    ``multipart/form-data`` and ``application/x-www-form-urlencoded`` are read;
    any other body gives an empty form.  Up to ``max_files`` parts named
    ``file_field`` are spooled, each at most ``max_file`` bytes; other file
    parts are read past.  Raises BadRequest or TooLarge.
    """
    ctype, options = parse_options_header(content_type or b"")
    body.seek(0)
    if ctype == b"multipart/form-data":
        boundary = options.get(b"boundary")
        if not boundary or len(boundary) > 200:
            raise BadRequest("malformed multipart body: no boundary")
        collector = _MultipartCollector(spool_dir, max_file, file_field, max_files)
        parser = MultipartParser(boundary, collector.callbacks())
        try:
            while chunk := body.read(CHUNK):
                parser.write(chunk)
            parser.finalize()
            if not collector.ended:
                raise BadRequest("malformed multipart body: it ends before its closing boundary")
        except BadRequest:
            collector.abandon()
            raise
        except TooLarge:
            collector.abandon()
            raise
        except Exception as e:  # python-multipart's own parse errors
            collector.abandon()
            raise BadRequest(f"malformed multipart body: {e}") from e
        return collector.form
    if ctype == b"application/x-www-form-urlencoded":
        raw = body.read(MAX_URLENCODED_BYTES + 1)
        if len(raw) > MAX_URLENCODED_BYTES:
            raise TooLarge("form body too large")
        try:
            pairs = parse_qsl(
                raw.decode("utf-8", errors="replace"), keep_blank_values=True,
                max_num_fields=MAX_FIELDS,
            )
        except ValueError as e:
            raise BadRequest(f"malformed form body: {e}") from e
        form = Form()
        for key, value in pairs:
            form.fields.setdefault(key, value)
        return form
    return Form()


async def read_form(
    request: Any, runner: Any, spool_dir: str, max_file: int, max_files: int = 1
) -> Form:
    """The request's form: body fields (parsed by ``runner``) over query fields."""
    form = Form()
    if request.method == b"POST" and request.content is not None:
        ctype = request.requestHeaders.getRawHeaders(b"content-type", [None])[0]
        form = await runner.run(
            parse_body, request.content, ctype, spool_dir, max_file, max_files=max_files
        )
    for key, values in (request.args or {}).items():
        if values and _text(key) not in form.fields:
            form.fields[_text(key)] = _text(values[0])
            form.from_query.add(_text(key))
    return form
