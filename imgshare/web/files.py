"""``/img/`` and ``/thumb/``: files streamed from storage (SPEC section 7).

Status and headers come from the database row (size, digest, upload time,
expiry), so conditional and range requests are answered before storage is
touched; storage then streams exactly the bytes the response needs.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar
from urllib.parse import unquote_to_bytes

import attrs
from klein import Klein
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import datetimeToString, stringToDatetime
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from imgshare.domain import errors, naming
from imgshare.domain.records import Image, Variant
from imgshare.library import ImageLibrary
from imgshare.storage import ObjectMissing, StorageUnavailable
from imgshare.web.errors import render_failure, require_method
from imgshare.web.http import header

log = Logger()

CSP = b"default-src 'none'; sandbox"
#: Longest time a cache may keep a file (never beyond its expiry).
MAX_CACHE_SECONDS = 86400
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


@attrs.frozen
class Representation:
    """One servable object: what its headers say and where its bytes are."""

    key: str
    mime: str
    size: int
    etag: str
    modified: float
    expires: float | None
    #: The recorded SHA-256 (hex): the version a storage cache keys the bytes by.
    digest: str = ""


def original(image: Image) -> Representation:
    return Representation(
        key=naming.storage_key(image.account, image.name), mime=image.mime, size=image.size,
        etag=f'"{image.sha256[:32]}"', modified=image.uploaded, expires=image.expires, digest=image.sha256,
    )


def derived(image: Image, variant: Variant) -> Representation:
    return Representation(
        key=naming.storage_key(image.account, image.name, variant.variant), mime="image/jpeg",
        size=variant.size, etag=f'"{variant.sha256[:32]}"', modified=variant.created,
        expires=image.expires, digest=variant.sha256,
    )


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """The (first, last) byte of a single ``bytes=`` range, or None to ignore it.

    Raises ValueError when the range cannot be satisfied (416).
    """
    m = _RANGE_RE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None  # multiple ranges or another unit: serve the whole file
    if not m.group(1):
        suffix = int(m.group(2))
        if suffix == 0:
            raise ValueError("empty suffix range")
        return max(0, size - suffix), size - 1
    first = int(m.group(1))
    last = int(m.group(2)) if m.group(2) else size - 1
    if first > last and m.group(2):
        return None  # syntactically invalid: ignored, per RFC 9110
    if first >= size:
        raise ValueError("range starts past the end")
    return first, min(last, size - 1)


def _etag_matches(header: str, etag: str) -> bool:
    tags = [t.strip() for t in header.split(",")]
    return "*" in tags or any(t.removeprefix("W/") == etag for t in tags)


def _not_modified(request: Any, rep: Representation) -> bool:
    inm = header(request, b"if-none-match")
    if inm is not None:
        return _etag_matches(inm, rep.etag)
    ims = header(request, b"if-modified-since")
    if ims:
        try:
            return int(rep.modified) <= stringToDatetime(ims.encode("latin-1"))
        except (ValueError, UnicodeEncodeError):
            return False
    return False


def _if_range_holds(request: Any, rep: Representation) -> bool:
    value = header(request, b"if-range")
    if value is None:
        return True
    if value.startswith(('"', "W/")):
        return value == rep.etag
    try:
        return int(rep.modified) == stringToDatetime(value.encode("latin-1"))
    except (ValueError, UnicodeEncodeError):
        return False


@attrs.define
class Files:
    """Routes of ``/img/`` and ``/thumb/``; mounted by ``imgshare.web.root``: ``/img/``
    as a plain resource (``ImgResource``: the hottest path takes no route matching),
    ``/thumb/`` as a Klein application."""

    library: ImageLibrary
    storage: Any  # IStorage
    #: The account whose browser session makes a request, or None; without it
    #: nobody is a thumbnail's owner.  API tokens never count.
    viewer: Callable[[Any], Awaitable[str | None]] | None = None

    thumb: ClassVar[Klein] = Klein()

    def img_resource(self) -> ImgResource:
        """The resource of ``/img/``: ``/img/<account>/<name>`` and ``/img/<account>/<variant>/<name>``."""
        return ImgResource(self)

    async def original(self, request: Any, account: str, name: str) -> bytes | None:
        require_method(request, b"GET", b"HEAD")
        image = await self.library.served_image(account, name)
        if image is None:
            raise errors.NotFound("no such file")
        return await self.send(request, original(image))

    async def variant(self, request: Any, account: str, variant: str, name: str) -> bytes | None:
        require_method(request, b"GET", b"HEAD")
        stem, dot, ext = name.rpartition(".")
        if variant not in naming.VARIANTS or not dot or ext != "jpg":
            raise errors.NotFound("no such file")  # /img/<user>/thumb/... included
        image = await self.library.served_by_stem(account, stem)
        if image is None:
            raise errors.NotFound("no such file")
        record = await self.library.derived_file(image, variant)
        return await self.send(request, derived(image, record))

    @thumb.route("/<account>/<name>")
    async def thumbnail(self, request: Any, account: str, name: str) -> bytes | None:
        """The private thumbnail: for the owner's browser session only, 404 for anyone else."""
        require_method(request, b"GET", b"HEAD")
        viewer = await self.viewer(request) if self.viewer is not None else None
        stem, dot, ext = name.rpartition(".")
        if viewer is None or viewer != account or not dot or ext != "jpg":
            raise errors.NotFound("no such file")
        image = await self.library.served_by_stem(account, stem)
        if image is None:
            raise errors.NotFound("no such file")
        record = await self.library.derived_file(image, naming.THUMB)
        request.setHeader(b"Vary", b"Cookie")
        return await self.send(request, derived(image, record), private=True)

    @thumb.handle_errors(Exception)
    def failed(self, request: Any, failure: Failure) -> bytes:
        return render_failure(request, failure)

    async def send(self, request: Any, rep: Representation, private: bool = False) -> bytes | None:
        """Answer with ``rep``: 200, 206, 304 or 416, streaming the body from storage.

        ``private`` keeps it out of shared caches (the thumbnails)."""
        now = self.library.now()
        request.setHeader(b"Content-Type", rep.mime.encode())
        request.setHeader(b"ETag", rep.etag.encode())
        request.setHeader(b"Last-Modified", datetimeToString(int(rep.modified)))
        request.setHeader(b"Accept-Ranges", b"bytes")
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        request.setHeader(b"Content-Security-Policy", CSP)
        max_age = MAX_CACHE_SECONDS
        if rep.expires is not None:
            max_age = max(0, min(max_age, int(rep.expires - now)))
        scope = "private" if private else "public"
        request.setHeader(b"Cache-Control", f"{scope}, max-age={max_age}".encode())
        if _not_modified(request, rep):
            request.setResponseCode(304)
            return b""
        first, last = 0, rep.size - 1
        range_header = header(request, b"range")
        if range_header and _if_range_holds(request, rep):
            try:
                wanted = parse_range(range_header, rep.size)
            except ValueError:
                request.setResponseCode(416)
                request.setHeader(b"Content-Range", f"bytes */{rep.size}".encode())
                request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
                return b"range not satisfiable\n"
            if wanted is not None:
                first, last = wanted
                request.setResponseCode(206)
                request.setHeader(b"Content-Range", f"bytes {first}-{last}/{rep.size}".encode())
        length = last - first + 1
        request.setHeader(b"Content-Length", str(length).encode())
        if request.method == b"HEAD" or length == 0:
            return b""
        try:
            await self.storage.stream(rep.key, request, first, length, version=rep.digest or None)
        except ObjectMissing as e:
            if not request.startedWriting:
                log.error("{key} is recorded but missing from storage", key=rep.key)
                raise errors.NotFound("no such file") from e
            _abort(request)
        except (ConnectionDone, ConnectionLost, ConnectionError):
            return None
        except Exception as e:
            if not isinstance(e, StorageUnavailable) or request.startedWriting:
                # An outage before the first byte is logged once, by itself (imgshare.outage).
                log.warn("streaming {key} failed: {error}", key=rep.key, error=e)
            if not request.startedWriting:
                raise errors.Unavailable("storage is unavailable") from e
            _abort(request)  # never let a short body pass for a whole one
        return None


def _segment(raw: bytes) -> str | None:
    """One path segment, percent-decoded, as text; None if empty or not UTF-8."""
    if not raw:
        return None
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return None


class ImgResource(Resource):
    """``/img/`` without route matching: the path after ``/img/`` is two segments (an
    original) or three (a derived file); anything else (an empty segment, a trailing
    slash, more segments, a segment that is not UTF-8) names no file.  Errors are
    answered as ``Files.failed`` answers them; a client that goes away cancels the work."""

    isLeaf = True

    def __init__(self, files: Files):
        super().__init__()
        self.files = files

    def render(self, request: Any) -> Any:
        segments = [_segment(raw) for raw in request.postpath]
        finished = [False]
        if len(segments) == 2 and None not in segments:
            work = Deferred.fromCoroutine(self.files.original(request, *segments))
        elif len(segments) == 3 and None not in segments:
            work = Deferred.fromCoroutine(self.files.variant(request, *segments))
        else:
            work = Deferred.fromCoroutine(_not_found())

        def gone(reason: Failure) -> None:
            finished[0] = True
            work.cancel()

        request.notifyFinish().addErrback(gone)

        def answered(body: bytes | None) -> None:
            if finished[0]:
                return
            if body:
                request.write(body)
            request.finish()

        def failed(failure: Failure) -> None:
            if finished[0] or failure.check(CancelledError):
                return
            answered(render_failure(request, failure))

        work.addCallbacks(answered, failed)
        return NOT_DONE_YET


async def _not_found() -> None:
    raise errors.NotFound("no such file")


def _abort(request: Any) -> None:
    transport = getattr(request.channel, "transport", None) if request.channel else None
    if transport is not None:
        transport.abortConnection()
