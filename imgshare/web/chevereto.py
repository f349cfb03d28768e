"""Chevereto API v1/v1.1 uploads (PEERS section 1): ``/api/1/upload`` and seed 001's
``/sharexapi/1/upload``, mounted by ``imgshare.web.root`` under both prefixes.

The source comes as a file part (``source``, or ``image``: the ImgBB flavour), or
as text: an absolute http(s) URL, fetched exactly as img_gather.php fetches, or
base64 (PEERS section 0.7's leniency), decoded in the io pool into a spool file.
Every upload goes through ``ImageLibrary.upload``, as img_upload.php's does.
Answers are Chevereto's JSON (or ``txt``, or a ``redirect`` to the viewer page);
errors keep SPEC section 8's HTTP statuses with Chevereto's body and codes.
"""

from __future__ import annotations

import os
import re
from typing import Any, ClassVar

import attrs
from klein import Klein
from python_multipart.multipart import parse_options_header
from twisted.python.failure import Failure

from imgshare.domain import chevereto, errors, output
from imgshare.domain.records import Image, Token
from imgshare.gather import MAX_URL_LENGTH, Gatherer, discard_spooled
from imgshare.library import ImageLibrary
from imgshare.ratelimit import RateLimiter
from imgshare.spool import remove_if_present
from imgshare.web.credentials import authenticated, credential, header_credential
from imgshare.web.errors import describe_failure, require_method
from imgshare.web.forms import Form, UploadedFile, decode_base64_file, decode_base64_text, read_form
from imgshare.web.http import client_ip, query

#: The path prefixes this application answers under; their bodies may carry base64.
PREFIXES = (b"/api/1/", b"/sharexapi/")
#: The names a source may come as, in the order they are looked at.
SOURCE_FIELDS = ("source", "image")
#: The form types a body may have (or none at all).
FORM_TYPES = (b"multipart/form-data", b"application/x-www-form-urlencoded")

_FORMAT_KEY = "imgshare_chevereto_format"
_URL = re.compile(rb"https?://", re.IGNORECASE)


def _set_format(request: Any, value: str | None) -> None:
    setattr(request, _FORMAT_KEY, chevereto.pick_format(value))


def _format(request: Any) -> str:
    return getattr(request, _FORMAT_KEY, "json")


def _send(request: Any, status: int, body: bytes, content_type: str | None) -> bytes:
    """Send ``body`` with the API's headers (never cached, never sniffed)."""
    request.setResponseCode(status)
    if content_type is not None:
        request.setHeader(b"Content-Type", content_type.encode())
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"Cache-Control", b"no-store")
    request.setHeader(b"Content-Length", str(len(body)).encode())
    return body


@attrs.frozen
class _Source:
    """Where an upload's bytes are: a spooled file (ours to remove) or a URL to gather."""

    field: str
    path: str | None = None
    filename: str = ""
    url: str | None = None


@attrs.define
class Chevereto:
    """The Chevereto upload routes; mounted by ``imgshare.web.root``."""

    library: ImageLibrary
    io: Any  # Runner that parses bodies and decodes base64
    ip_limiter: RateLimiter
    token_limiter: RateLimiter
    #: Fetches URL sources; None answers 501 for them (a test fixture without network).
    gatherer: Gatherer | None

    app: ClassVar[Klein] = Klein()

    @property
    def config(self) -> Any:
        return self.library.config

    @app.route("/upload", endpoint="upload")
    @app.route("/upload/", endpoint="upload_slash")
    async def upload(self, request: Any) -> bytes:
        _set_format(request, query(request, "format"))
        require_method(request, b"GET", b"POST")
        await self.ip_limiter.check(client_ip(request))
        token = None
        outside = header_credential(request)
        if outside:  # checked before a possibly large body is parsed
            token = await authenticated(self.library, request, outside)
        self._check_body_type(request)
        form = await read_form(
            request, self.io, self.config.spool_dir, self.config.max_size, max_files=2,
            file_field=SOURCE_FIELDS, spooled_fields=SOURCE_FIELDS, max_spooled=self.config.max_encoded_body,
        )
        try:
            _set_format(request, form.get("format"))
            if token is None:
                token = await authenticated(self.library, request, credential(request, form))
            await self.token_limiter.check(f"token:{token.id}")
            strip = output.parse_switch("strip_location", form.get("strip_location"))
            await self.library.check_quota(token.account)  # full: nothing decoded or fetched
            source = await self._source(request, form)
            image, filename = await self._store(token, form, source, strip)
        finally:
            form.discard()
        return self._uploaded(request, image, filename, imgbb=source.field == "image")

    @app.route("/", branch=True)
    def unknown(self, request: Any) -> bytes:
        raise errors.NotFound("no such endpoint")

    @app.handle_errors(Exception)
    def failed(self, request: Any, failure: Failure) -> bytes:
        status, message = describe_failure(request, failure, lambda e: e.name.lower(), "internal error")
        error = failure.value
        code = chevereto.error_code(error) if isinstance(error, errors.ApiError) else status
        if _format(request) != "json":
            return _send(request, status, message.encode("utf-8"), output.TEXT_CONTENT_TYPE)
        body, content_type = output.render(chevereto.error_body(status, message, code), "json")
        return _send(request, status, body, content_type)

    # -- the parts of an upload

    @staticmethod
    def _check_body_type(request: Any) -> None:
        """A body must be a form, or absent: anything else is 415."""
        if request.method != b"POST" or request.content is None:
            return
        content = request.content
        content.seek(0, os.SEEK_END)
        size = content.tell()
        content.seek(0)
        if size == 0:
            return
        ctype, _ = parse_options_header(request.getHeader(b"content-type") or b"")
        if ctype not in FORM_TYPES:
            raise errors.UnsupportedType("send the upload as multipart/form-data or "
                                         "application/x-www-form-urlencoded")

    async def _source(self, request: Any, form: Form) -> _Source:
        """The one source of an upload: a file part, else the first non-empty text."""
        if len(form.files) > 1:
            raise errors.BadRequest("two sources: send one file part (source or image)")
        if form.files:
            part = form.files[0]
            return _Source(part.field, path=part.path, filename=part.filename)
        for field in SOURCE_FIELDS:
            spooled = form.spooled.get(field)
            if spooled is not None and spooled.size:
                url = await self.io.run(_url_in, spooled.path)
                if url != "":
                    return await self._text_source(request, field, url, spooled=spooled)
            if field in form.from_query and form.fields[field].strip():
                text = form.fields[field]
                url = text.strip() if _URL.match(text.strip().encode("utf-8")) else None
                return await self._text_source(request, field, url, text=text)
        raise chevereto.NoSource("empty source: send the image as source (a file, base64 or a URL)")

    async def _text_source(
        self, request: Any, field: str, url: str | None, *,
        spooled: UploadedFile | None = None, text: str | None = None,
    ) -> _Source:
        """A text source: ``url`` when it is one, else base64 decoded into a spool file."""
        if url is not None:
            return _Source(field, url=url)
        if request.method != b"POST":
            raise chevereto.NoSource("a GET upload takes a URL source only: POST base64")
        limit = self.config.max_size
        if spooled is not None:
            path = await self.io.run(decode_base64_file, spooled.path, self.config.spool_dir, limit)
        else:
            path = await self.io.run(decode_base64_text, text or "", self.config.spool_dir, limit)
        return _Source(field, path=path)

    async def _store(self, token: Token, form: Form, source: _Source, strip: bool | None) -> tuple[Image, str]:
        """Upload the source for ``token``'s account (``strip``: its ``strip_location``);
        (the image, the client's file name)."""
        options = dict(
            keep_name=output.is_true(form.get("keep_name")), name=form.get("name") or None,
            expire=form.get("expiration") or form.get("expire"), strip_location=strip,
        )
        if source.url is None:
            assert source.path is not None
            try:
                image = await self.library.upload(token.account, source.path, source.filename, **options)
            finally:
                await self.io.run(remove_if_present, source.path)
            return image, source.filename
        if self.gatherer is None:
            raise errors.ApiError("URL sources are not available on this server", 501)
        path, filename = await self.gatherer.fetch(source.url, token.account)
        try:
            image = await self.library.upload(token.account, path, filename, **options)
        except (errors.BadImage, errors.UnsupportedType, errors.TooLarge) as e:
            await self.gatherer.remember_failure(source.url, e)  # the content is at fault: repeat the answer
            raise
        finally:
            await self.io.run(discard_spooled, path)
        return image, filename

    def _uploaded(self, request: Any, image: Image, filename: str, imgbb: bool) -> bytes:
        public_url = self.config.public_url
        request.setHeader(b"Imgshare-Expires", output.expires_header(image).encode())
        fmt = _format(request)
        if fmt == "redirect":
            request.setHeader(b"Location", output.viewer_url(public_url, image.account, image.name).encode())
            return _send(request, 302, b"", None)
        if fmt == "txt":
            url = output.image_urls(public_url, image.account, image.name)["original"]
            return _send(request, 200, url.encode(), output.TEXT_CONTENT_TYPE)
        body, content_type = output.render(chevereto.success_body(image, public_url, filename, imgbb), "json")
        return _send(request, 200, body, content_type)


# -- blocking helpers, run in the io pool


def _url_in(path: str) -> str | None:
    """What a spooled text source holds: its URL; "" when it is blank; None when it is
    something else (base64, or too long for a URL)."""
    with open(path, "rb") as f:
        head = f.read(MAX_URL_LENGTH + 1)
    text = head.strip()
    if len(head) > MAX_URL_LENGTH:
        return None
    if not text:
        return ""
    return text.decode("utf-8", "replace") if _URL.match(text) else None
