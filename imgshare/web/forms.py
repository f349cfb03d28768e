"""Form bodies parsed in a thread of the io pool, never on the reactor.

Multipart bodies are parsed with python-multipart's streaming parser from the
request's spooled body: file parts go straight to a temporary file in the spool
folder, text fields are kept in memory with tight limits.
"""

from __future__ import annotations

import os
import tempfile
from typing import IO, Any
from urllib.parse import parse_qsl, unquote_plus, unquote_to_bytes

import attrs
from python_multipart.multipart import MultipartParser, parse_options_header

from imgshare.domain import errors
from imgshare.domain.base64text import Base64Decoder
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
    """A file part spooled to ``path``; ``filename`` is what the client called it,
    ``field`` the form field it came in."""

    path: str
    filename: str
    size: int
    field: str = ""
    #: Set (and nothing spooled) for a file part past the limit, when the parser keeps
    #: such parts as entries rather than refusing the body (``oversize_entries``).
    too_large: bool = False


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
    #: Text fields of the body that may be large (a base64 image), spooled to files
    #: (their values, decoded from the form's encoding) instead of kept in ``fields``.
    spooled: dict[str, UploadedFile] = attrs.Factory(dict)
    #: Every value of each body field, in order (``fields`` keeps the first only).
    repeated: dict[str, list[str]] = attrs.Factory(dict)

    def get(self, name: str) -> str | None:
        return self.fields.get(name)

    def get_all(self, name: str) -> list[str]:
        """Every value the body gave the field ``name`` (a group of checkboxes)."""
        return list(self.repeated.get(name, ()))

    def add(self, name: str, value: str) -> None:
        """A text field of the body: the first value of a name is its ``get``."""
        self.fields.setdefault(name, value)
        self.repeated.setdefault(name, []).append(value)

    def get_from_body(self, name: str) -> str | None:
        """A field only if the body carried it (a CSRF token must never come from the URL)."""
        return None if name in self.from_query else self.fields.get(name)

    def discard(self) -> None:
        """Remove the spooled files that are still there."""
        paths = {f.path for f in self.files} | {f.path for f in self.spooled.values()}
        if self.file is not None:
            paths.add(self.file.path)
        for path in paths - {""}:
            remove_if_present(path)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


class Spooling:
    """What the body parsers share: the form being built and the part being spooled."""

    form: Form
    _out: IO[bytes] | None = None
    _out_path: str = ""

    def _begin(self, spool_dir: str, spooled: tuple[str, ...], max_spooled: int) -> None:
        """Start an empty form whose fields named in ``spooled`` go to spool files."""
        self.form = Form()
        self._spool_dir = spool_dir
        self._spooled = spooled
        self._max_spooled = max_spooled
        self._small = 0

    def abandon(self) -> None:
        """Remove whatever was spooled after a failure."""
        if self._out is not None:
            self._out.close()
            remove_if_present(self._out_path)
            self._out = None
        self.form.discard()


class _MultipartCollector(Spooling):
    """python-multipart callbacks that build a ``Form``."""

    def __init__(
        self, spool_dir: str, max_file: int, file_field: str | tuple[str, ...] | None, max_files: int = 1,
        spooled_fields: tuple[str, ...] = (), max_spooled: int = 0, refuse_extra: bool = False,
        oversize_entries: bool = False,
    ):
        self.form = Form()
        self._spool_dir = spool_dir
        self._max_file = max_file
        self._file_fields = (file_field,) if isinstance(file_field, str) else file_field
        self._refuse_extra = refuse_extra
        self._oversize_entries = oversize_entries
        self._max_files = max_files
        self._spooled_fields = spooled_fields
        self._max_spooled = max_spooled
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
        self._limit = 0
        self._skip = False
        self._spooling = False

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
            if self._file_fields is not None and self._name not in self._file_fields:
                self._skip = True  # file parts of other names are read past, not kept
                return
            if len(self.form.files) >= self._max_files:
                if self._refuse_extra:
                    raise BadRequest(f"too many files: at most {self._max_files} in one request")
                self._skip = True  # extra file parts are read past, not kept
                return
            self._filename = _text(options[b"filename"])
            self._open_spool(self._max_file)
        elif self._name in self._spooled_fields:
            if self._name in self.form.spooled:
                self._skip = True  # the first one counts, as for any field
                return
            self._spooling = True
            self._open_spool(self._max_spooled)
        else:
            self._fields += 1
            if self._fields > MAX_FIELDS:
                raise BadRequest(f"too many form fields (at most {MAX_FIELDS})")

    def _open_spool(self, limit: int) -> None:
        os.makedirs(self._spool_dir, exist_ok=True)
        fd, self._out_path = tempfile.mkstemp(dir=self._spool_dir, prefix="upload-")
        self._out = os.fdopen(fd, "wb")
        self._limit = limit

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._skip:
            return
        n = end - start
        if self._out is not None:
            self._size += n
            if self._size > self._limit:
                if self._oversize_entries and not self._spooling:
                    self._drop_oversize()
                    return
                what = f"form field {self._name!r}" if self._spooling else "file"
                raise TooLarge(f"{what} too large: the limit is {self._limit} bytes")
            self._out.write(data[start:end])
        else:
            if len(self._value) + n > MAX_FIELD_BYTES:
                raise BadRequest(f"form field {self._name!r} is too long")
            self._value += data[start:end]

    def _drop_oversize(self) -> None:
        """Stop spooling a file part past the limit: it becomes an entry saying so."""
        assert self._out is not None
        self._out.close()
        remove_if_present(self._out_path)
        self._out = None
        self._skip = True
        entry = UploadedFile("", self._filename or "", self._size, self._name or "", too_large=True)
        self.form.files.append(entry)
        if self.form.file is None:
            self.form.file = entry

    def _on_part_end(self) -> None:
        if self._skip or self._name is None:
            return
        if self._out is not None:
            self._out.close()
            self._out = None
            uploaded = UploadedFile(self._out_path, self._filename or "", self._size, self._name)
            if self._spooling:
                self.form.spooled[self._name] = uploaded
                return
            self.form.files.append(uploaded)
            if self.form.file is None:
                self.form.file = uploaded
        else:
            self.form.add(self._name, _text(bytes(self._value)))

    def _on_end(self) -> None:
        self.ended = True



def parse_body(
    body: IO[bytes], content_type: bytes | None, spool_dir: str, max_file: int,
    file_field: str | tuple[str, ...] | None = "file", max_files: int = 1,
    spooled_fields: tuple[str, ...] = (), max_spooled: int = 0, refuse_extra: bool = False,
    oversize_entries: bool = False,
) -> Form:
    """Parse a request body (blocking: run it in a thread of the io pool).

    ``multipart/form-data`` and ``application/x-www-form-urlencoded`` are read;
    any other body gives an empty form.  Up to ``max_files`` parts named
    ``file_field`` (a name or several; None: any name) are spooled, each at most
    ``max_file`` bytes; other file parts are read past, and so are those beyond
    ``max_files`` unless ``refuse_extra`` makes them a BadRequest.  A file part
    past ``max_file`` is TooLarge, or with ``oversize_entries`` an entry of
    ``Form.files`` marked ``too_large`` (its bytes read past), so a batch keeps
    the other files.  Text fields named in
    ``spooled_fields`` (a base64 image may come in one) are spooled too, each at
    most ``max_spooled`` bytes, into ``Form.spooled``.  Raises BadRequest or TooLarge.
    """
    ctype, options = parse_options_header(content_type or b"")
    body.seek(0)
    if ctype == b"multipart/form-data":
        boundary = options.get(b"boundary")
        if not boundary or len(boundary) > 200:
            raise BadRequest("malformed multipart body: no boundary")
        collector = _MultipartCollector(
            spool_dir, max_file, file_field, max_files, spooled_fields, max_spooled, refuse_extra,
            oversize_entries)
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
    if ctype == b"application/x-www-form-urlencoded" and spooled_fields:
        urlencoded = _UrlencodedSpooler(spool_dir, spooled_fields, max_spooled)
        try:
            while chunk := body.read(CHUNK):
                urlencoded.feed(chunk)
            return urlencoded.finish()
        except BaseException:
            urlencoded.abandon()
            raise
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
            form.add(key, value)
        return form
    return Form()


class _UrlencodedSpooler(Spooling):
    """A streaming ``application/x-www-form-urlencoded`` parser: the fields named in
    ``spooled`` go, percent-decoded, to spool files; the others are kept in memory
    (together at most MAX_URLENCODED_BYTES, at most MAX_FIELDS of them)."""

    def __init__(self, spool_dir: str, spooled: tuple[str, ...], max_spooled: int):
        self._begin(spool_dir, spooled, max_spooled)
        self._fields = 0
        self._start_pair()

    def _start_pair(self) -> None:
        self._name = bytearray()
        self._in_value = False
        self._value = bytearray()
        self._out: IO[bytes] | None = None
        self._out_path = ""
        self._carry = b""
        self._size = 0
        self._skip = False

    def feed(self, chunk: bytes) -> None:
        *whole, last = chunk.split(b"&")
        for piece in whole:
            self._piece(piece)
            self._end_pair()
        self._piece(last)

    def finish(self) -> Form:
        self._end_pair()
        return self.form


    def _count_small(self, n: int) -> None:
        self._small += n
        if self._small > MAX_URLENCODED_BYTES:
            raise TooLarge("form body too large")

    def _piece(self, data: bytes) -> None:
        if not self._in_value:
            name, equals, data = data.partition(b"=")
            self._count_small(len(name))
            self._name += name
            if not equals:
                return
            self._in_value = True
            self._begin_value()
        if not data or self._skip:
            return
        if self._out is None:
            self._count_small(len(data))
            self._value += data
            return
        data = self._carry + data
        cut = data.rfind(b"%", max(len(data) - 2, 0))
        self._carry, data = (data[cut:], data[:cut]) if cut >= 0 else (b"", data)
        self._write(data)

    def _write(self, data: bytes) -> None:
        decoded = unquote_to_bytes(data.replace(b"+", b" "))
        self._size += len(decoded)
        if self._size > self._max_spooled:
            raise TooLarge(f"form field {self._decoded_name()!r} too large: the limit is "
                           f"{self._max_spooled} bytes")
        assert self._out is not None
        self._out.write(decoded)

    def _decoded_name(self) -> str:
        return unquote_plus(bytes(self._name).decode("utf-8", "replace"))

    def _begin_value(self) -> None:
        name = self._decoded_name()
        if name not in self._spooled:
            return
        if name in self.form.spooled:
            self._skip = True  # the first one counts
            return
        os.makedirs(self._spool_dir, exist_ok=True)
        fd, self._out_path = tempfile.mkstemp(dir=self._spool_dir, prefix="upload-")
        self._out = os.fdopen(fd, "wb")

    def _end_pair(self) -> None:
        if not self._name and not self._in_value:
            self._start_pair()
            return  # an empty piece ("a=1&&b=2")
        name = self._decoded_name()
        if self._out is not None:
            if self._carry:
                self._write(self._carry)
            self._out.close()
            self.form.spooled[name] = UploadedFile(self._out_path, "", self._size, name)
        elif not self._skip:
            self._fields += 1
            if self._fields > MAX_FIELDS:
                raise BadRequest(f"malformed form body: too many fields (at most {MAX_FIELDS})")
            value = unquote_plus(bytes(self._value).decode("utf-8", "replace"))
            self.form.add(name, value)
        self._start_pair()


async def read_form(
    request: Any, runner: Any, spool_dir: str, max_file: int, max_files: int = 1, *,
    file_field: str | tuple[str, ...] | None = "file", spooled_fields: tuple[str, ...] = (),
    max_spooled: int = 0, refuse_extra: bool = False, oversize_entries: bool = False,
) -> Form:
    """The request's form: body fields (parsed by ``runner``) over query fields."""
    form = Form()
    if request.method == b"POST" and request.content is not None:
        ctype = request.requestHeaders.getRawHeaders(b"content-type", [None])[0]
        form = await runner.run(
            parse_body, request.content, ctype, spool_dir, max_file, max_files=max_files,
            file_field=file_field, spooled_fields=spooled_fields, max_spooled=max_spooled,
            refuse_extra=refuse_extra, oversize_entries=oversize_entries,
        )
    for key, values in (request.args or {}).items():
        if values and _text(key) not in form.fields:
            form.fields[_text(key)] = _text(values[0])
            form.from_query.add(_text(key))
    return form


# -- base64 text decoded into spool files (blocking: run them in the io pool)


def _decode_into_spool(chunks: Any, spool_dir: str, limit: int) -> str:
    """Decode base64 ``chunks`` into a new spool file; TooLarge past ``limit`` bytes."""
    os.makedirs(spool_dir, exist_ok=True)
    fd, path = tempfile.mkstemp(dir=spool_dir, prefix="upload-")
    decoder = Base64Decoder()
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(decoder.feed(chunk))
                if decoder.decoded > limit:
                    raise errors.TooLarge(f"file too large: the limit is {limit} bytes")
            out.write(decoder.finish())
            if decoder.decoded > limit:
                raise errors.TooLarge(f"file too large: the limit is {limit} bytes")
    except BaseException:
        remove_if_present(path)
        raise
    return path


def decode_base64_file(source: str, spool_dir: str, limit: int) -> str:
    """Decode the base64 text spooled at ``source`` into a new spool file (its path)."""
    with open(source, "rb") as f:
        return _decode_into_spool(iter(lambda: f.read(CHUNK), b""), spool_dir, limit)


def decode_base64_text(text: str, spool_dir: str, limit: int) -> str:
    """Decode base64 ``text`` (a query parameter) into a new spool file (its path)."""
    return _decode_into_spool([text.encode("utf-8", "replace")], spool_dir, limit)
