"""The Bearer / X-API-Key JSON API (PEERS section 2): the routes imgtree's and
ImgLink's clients use, under ``/api/v1/upload``, ``/api/v1/images`` and
``/api/v1/image`` (``imgshare.web.root`` mounts them beside the native API).

Uploads (one file, a batch, or JSON with base64), presigned uploads, discovery,
and the caller's list, get and delete.  Errors keep SPEC section 8's statuses
with this family's body ``{"success": false, "status": "error", "error": …}``.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import attrs
from klein import Klein
from python_multipart.multipart import parse_options_header
from twisted.python.failure import Failure

from imgshare.domain import errors, jsonapi, output
from imgshare.domain.records import Token
from imgshare.library import ImageLibrary
from imgshare.ratelimit import RateLimiter
from imgshare.spool import remove_if_present
from imgshare.web.credentials import authenticated, credential, header_credential
from imgshare.web.errors import describe_failure, require_method, routing_error
from imgshare.web.forms import Form, UploadedFile, decode_base64_file, read_form
from imgshare.web.http import client_ip, query, respond
from imgshare.web.jsonbody import parse_json_body

#: The first path segments under /api/v1/ this application answers.
SEGMENTS = (b"upload", b"images", b"image")
#: The JSON fields an image in base64 may come in (the first one present counts).
BASE64_FIELDS = ("file_base64", "base64")
#: Where a presigned upload's bytes are PUT (``<PUT_PREFIX><opaque>``).
PUT_PREFIX = b"/api/v1/upload/put/"


@attrs.define
class JsonApi:
    """The routes of PEERS section 2; mounted by ``imgshare.web.root``."""

    library: ImageLibrary
    io: Any  # Runner that parses bodies and decodes base64
    ip_limiter: RateLimiter
    token_limiter: RateLimiter
    #: Presigned uploads (``imgshare.presign.PresignedUploads``).
    presigned: Any

    app: ClassVar[Klein] = Klein()

    @property
    def config(self) -> Any:
        return self.library.config

    def _answer(self, request: Any, status: int, data: dict[str, Any]) -> bytes:
        return respond(request, status, data)

    async def _token(self, request: Any, form: Form | None = None) -> Token:
        """The caller's token (PEERS section 0.1: headers, then ``key`` and ``token`` in
        ``form``'s body, then in the query), counted against its rate limit."""
        if form is not None:
            found = credential(request, form)
        else:
            found = header_credential(request) or _first(query(request, "key"), query(request, "token"))
        token = await authenticated(self.library, request, found)
        self.token_limiter.check(f"token:{token.id}")
        return token

    def _start(self, request: Any, *methods: bytes) -> None:
        """The method check and the address's rate limit, before anything else."""
        require_method(request, *methods)
        self.ip_limiter.check(client_ip(request))

    # ------------------------------------------------------------- uploads

    @app.route("/upload", endpoint="upload")
    @app.route("/upload/", endpoint="upload_slash")
    async def upload(self, request: Any) -> bytes:
        self._start(request, b"GET", b"HEAD", b"POST")
        if request.method != b"POST":
            return self._answer(request, 200, discovery_record(self.config))
        token = None
        if header_credential(request) or query(request, "key") or query(request, "token"):
            token = await self._token(request)  # checked before a possibly large body is parsed
        form, files = await self._read_upload(request)
        try:
            if token is None:
                token = await self._token(request, form)
            options = self._upload_options(form, len(files))
            entries, statuses, stored = [], [], []
            for upload in files:
                try:
                    if upload.too_large:
                        raise errors.TooLarge(f"file too large: the limit is {self.config.max_size} bytes")
                    image = await self.library.upload(token.account, upload.path, upload.filename, **options)
                except errors.ApiError as e:
                    entries.append(jsonapi.file_error(e.message, upload.filename))
                    statuses.append(e.status)
                else:
                    stored.append(image)
                    entries.append(jsonapi.image_object(image, self.config.public_url))
        finally:  # a stored file's spool copy was moved on; what is left goes
            await self.io.run(_remove_all, [upload.path for upload in files if upload.path])
            form.discard()
        if not stored:
            status = statuses[0] if len(set(statuses)) == 1 else 400
            return self._answer(request, status, jsonapi.failed_upload_body(entries))
        request.setHeader(b"Imgshare-Expires", output.expires_header(stored[0]).encode())
        return self._answer(request, 200, jsonapi.upload_body(entries))

    async def _read_upload(self, request: Any) -> tuple[Form, list[UploadedFile]]:
        """The body's options and its files, in body order: every multipart file part,
        or the one base64 image of a JSON body (decoded into a spool file)."""
        ctype, _ = parse_options_header(request.getHeader(b"content-type") or b"")
        config = self.config
        if ctype == b"multipart/form-data":
            form = await read_form(request, self.io, config.spool_dir, config.max_size, config.max_files,
                                   file_field=None, refuse_extra=True, oversize_entries=True)
            if not form.files:
                form.discard()
                raise errors.BadRequest("no file: send each image as a multipart file part (file)")
            return form, list(form.files)
        if ctype != b"application/json":
            raise errors.UnsupportedType("send the upload as multipart/form-data or application/json")
        form = await self.io.run(parse_json_body, request.content, config.spool_dir, BASE64_FIELDS,
                                 config.max_encoded_body)
        try:
            encoded = next((form.spooled[f] for f in BASE64_FIELDS if f in form.spooled), None)
            if encoded is None:
                raise errors.BadRequest("no file: send the image in base64 as file_base64")
            path = await self.io.run(decode_base64_file, encoded.path, config.spool_dir, config.max_size)
        except BaseException:
            form.discard()
            raise
        return form, [UploadedFile(path, form.get("filename") or "", os.path.getsize(path), "file_base64")]

    @staticmethod
    def _upload_options(form: Form, files: int) -> dict[str, Any]:
        """``library.upload``'s options from the form (an ``expire`` it cannot read means the
        tier's default, as everywhere); ``name`` with several files fails the whole request
        before any file is stored."""
        name = form.get("name") or None
        if name is not None and files != 1:
            raise errors.BadRequest("name: only with exactly one file")
        expire = form.get("expire") or form.get("expiration")
        return dict(keep_name=output.is_true(form.get("keep_name")), name=name, expire=expire)

    # ---------------------------------------------------- presigned uploads
    # (section owned by the presigned-uploads work)

    # ------------------------------------------------- list, get and delete
    # (section owned by the list/get/delete work)

    # -------------------------------------------------------------- errors

    @app.route("/", branch=True)
    def unknown(self, request: Any) -> bytes:
        raise errors.NotFound("no such endpoint")

    @app.handle_errors(Exception)
    def failed(self, request: Any, failure: Failure) -> bytes:
        error = routing_error(failure.value)
        if error is not failure.value:
            failure = Failure(error)
        status, message = describe_failure(request, failure, lambda e: e.name.lower(), "internal error")
        return self._answer(request, status, jsonapi.error_body(message))


def body_limit(config: Any, presigned: Any, path: bytes, request: Any) -> int:
    """The body limit of a request under ``/api/v1/upload`` (asked by the site while
    the body arrives): a multipart upload may carry ``max_files`` files, a JSON one a
    file in base64; a presigned PUT at most what its grant allows."""
    if path in (b"/api/v1/upload", b"/api/v1/upload/"):
        ctype, _ = parse_options_header(request.getHeader(b"content-type") if request is not None else b"")
        if ctype == b"multipart/form-data":
            return config.max_batch_body
        if ctype == b"application/json":
            return config.max_encoded_body
    elif path.startswith(PUT_PREFIX) and presigned is not None:
        limit = presigned.body_limit(path[len(PUT_PREFIX):].decode("ascii", "replace"))
        if limit is not None:
            return limit
    return config.max_body


def discovery_record(config: Any) -> dict[str, Any]:
    """What ``GET /api/v1/upload`` answers without auth: the limits, and every route."""
    from imgshare.web.api import limits_record

    record = {**jsonapi.OK, **limits_record(config, flat=False)}
    record["status"] = "ok"
    record["max_files_per_request"] = config.max_files
    record["routes"] = ROUTES
    return record


#: The endpoints ``GET /api/v1/upload`` names.
ROUTES: dict[str, str] = {
    "upload": "POST /api/v1/upload",
}


def _remove_all(paths: list[str]) -> None:
    for path in paths:
        remove_if_present(path)


def _first(*values: str | None) -> str | None:
    return next((v.strip() for v in values if v and v.strip()), None)
