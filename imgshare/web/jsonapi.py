"""The Bearer / X-API-Key JSON API (PEERS section 2): the routes imgtree's and
ImgLink's clients use, under ``/api/v1/upload``, ``/api/v1/images`` and
``/api/v1/image`` (``imgshare.web.root`` mounts them beside the native API).

Uploads (one file, a batch, or JSON with base64), presigned uploads, discovery,
and the caller's list, get and delete.  Errors keep SPEC section 8's statuses
with this family's body ``{"success": false, "status": "error", "error": …}``.
"""

from __future__ import annotations

import json
import os
from typing import Any, BinaryIO, ClassVar

import attrs
from klein import Klein
from python_multipart.multipart import parse_options_header
from twisted.python.failure import Failure

from imgshare.domain import errors, ids, jsonapi, output, presign
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
#: The small JSON bodies of presign and complete (20 entries fit many times over).
SMALL_JSON_BODY = 64 * 1024
SMALL_JSON_PATHS = (b"/api/v1/upload/presign", b"/api/v1/upload/presign/batch",
                    b"/api/v1/upload/complete", b"/api/v1/upload/complete/batch")


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

    async def _token(self, request: Any, form: Form | None = None, *, body_credential: str | None = None) -> Token:
        """The caller's token (PEERS section 0.1: headers, then ``key`` and ``token`` in
        ``form``'s body, or ``body_credential`` from a JSON body, then in the query),
        counted against its rate limit."""
        found = credential(request, form if form is not None else Form())
        if form is None and body_credential and not header_credential(request):
            found = body_credential
        token = await authenticated(self.library, request, found)
        await self.token_limiter.check(f"token:{token.id}")
        return token

    async def _start(self, request: Any, *methods: bytes) -> None:
        """The method check and the address's rate limit, before anything else."""
        require_method(request, *methods)
        await self.ip_limiter.check(client_ip(request))

    # ------------------------------------------------------------- uploads

    @app.route("/upload", endpoint="upload")
    @app.route("/upload/", endpoint="upload_slash")
    async def upload(self, request: Any) -> bytes:
        await self._start(request, b"GET", b"HEAD", b"POST")
        if request.method != b"POST":
            return respond(request, 200, discovery_record(self.config))
        token = None
        if credential(request, Form()):
            token = await self._token(request)  # checked before a possibly large body is parsed
            await self.library.check_quota(token.account)  # as is a full quota
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
            return respond(request, status, jsonapi.failed_upload_body(entries))
        request.setHeader(b"Imgshare-Expires", output.expires_header(stored[0]).encode())
        return respond(request, 200, jsonapi.upload_body(entries))

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
        strip = output.parse_switch("strip_location", form.get("strip_location"))
        return dict(keep_name=output.is_true(form.get("keep_name")), name=name, expire=expire,
                    strip_location=strip)

    # ---------------------------------------------------- presigned uploads
    # presign -> PUT -> complete (imgshare.presign): the grant is a database row
    # and the PUT's bytes are staged in storage, so any process can take any step.

    async def _json_request(self, request: Any, credential_fields: tuple[str, ...]) -> tuple[dict[str, Any], Token]:
        """Method and address checks, then the JSON body (read in the io pool) and the
        caller's token: from a header first (checked before the body is read), else
        from ``credential_fields`` of the body, else from the query."""
        await self._start(request, b"POST")
        token = await self._token(request) if header_credential(request) else None
        ctype, _ = parse_options_header(request.getHeader(b"content-type") or b"")
        if ctype != b"application/json":
            raise errors.UnsupportedType("send a JSON body (Content-Type: application/json)")
        body = await self.io.run(_read_json, request.content)
        if token is None:
            found = next((body[f].strip() for f in credential_fields
                          if isinstance(body.get(f), str) and body[f].strip()), None)
            token = await self._token(request, body_credential=found)
        return body, token

    @app.route("/upload/presign", endpoint="presign")
    async def presign(self, request: Any) -> bytes:
        body, token = await self._json_request(request, ("key", "token"))
        entry = presign.parse_presign(body, self.config.max_size)
        answer = await self.presigned.presign(token.account, entry)
        return respond(request, 200, {**jsonapi.OK, **answer})

    @app.route("/upload/presign/batch", endpoint="presign_batch")
    async def presign_batch(self, request: Any) -> bytes:
        body, token = await self._json_request(request, ("key", "token"))
        entries = presign.batch_list(body, "files")
        uploads = []
        for entry in entries:  # each grant on its own: a bad entry loses no good one
            try:
                wanted = presign.parse_presign(entry, self.config.max_size, defaults=body)
                uploads.append(await self.presigned.presign(token.account, wanted))
            except errors.ApiError as e:
                uploads.append(presign.entry_error(e))
        return self._batch_answer(request, "uploads", uploads)

    @app.route("/upload/put/<opaque>", endpoint="presigned_put")
    async def presigned_put(self, request: Any, opaque: str) -> bytes:
        # No token: the signed URL is the credential, as an S3 presigned URL is.
        await self._start(request, b"PUT")
        answer = await self.presigned.receive(opaque, request.content)
        return respond(request, 200, answer)

    @app.route("/upload/complete", endpoint="complete")
    async def complete(self, request: Any) -> bytes:
        # The body's "token" is the completion token here (imgtree's alias), so the
        # API token comes from a header, the body's "key", or the query.
        body, token = await self._json_request(request, ("key",))
        completion = body.get("completion_token", body.get("token"))
        strip = json_switch("strip_location", body.get("strip_location"))
        image = await self.presigned.complete(token.account, completion, strip)
        request.setHeader(b"Imgshare-Expires", output.expires_header(image).encode())
        obj = jsonapi.image_object(image, self.config.public_url)
        return respond(request, 200, jsonapi.upload_body([obj]))

    @app.route("/upload/complete/batch", endpoint="complete_batch")
    async def complete_batch(self, request: Any) -> bytes:
        body, token = await self._json_request(request, ("key",))
        tokens = presign.batch_list(body, "completion_tokens", "tokens")
        strip = json_switch("strip_location", body.get("strip_location"))
        images = []
        for completion in tokens:  # each committed on its own
            try:
                image = await self.presigned.complete(token.account, completion, strip)
                images.append(jsonapi.image_object(image, self.config.public_url))
            except errors.ApiError as e:
                images.append(presign.entry_error(e))
        return self._batch_answer(request, "images", images)

    def _batch_answer(self, request: Any, name: str, entries: list[dict[str, Any]]) -> bytes:
        """A batch's answer in input order; when every entry failed, the first one's
        status and message, as an upload batch answers (PEERS section 2)."""
        if all("error" in e for e in entries):
            first = entries[0]
            return respond(request, first["status"], {**jsonapi.error_body(first["error"]), name: entries})
        return respond(request, 200, {**jsonapi.OK, name: entries})

    # ------------------------------------------------- list, get and delete
    # (section owned by the list/get/delete work)

    @app.route("/images", endpoint="images")
    @app.route("/images/", endpoint="images_slash")
    async def images(self, request: Any) -> bytes:
        """The caller's served images, newest first (or ``sort=oldest|largest``), one
        page of them; with ``q`` only those whose file name or original name contains
        it (any case), ``total`` then counting the matches."""
        await self._start(request, b"GET", b"HEAD")
        token = await self._token(request)
        page, limit = jsonapi.paging(query(request, "page"), query(request, "limit"))
        at = jsonapi.cursor_choice(query(request, "page"), query(request, "after"), query(request, "before"))
        sort, search = query(request, "sort") or "newest", query(request, "q") or ""
        if at is None:
            found, total, capped = await self.library.image_page(token.account, page, limit, sort=sort, search=search)
            following, preceding = page * limit < total, page > 1
            cursor = None
        else:
            cursor, before = at
            found, more, total, capped = await self.library.image_page_at(
                token.account, cursor, before, limit, sort=sort, search=search)
            following, preceding = (True, more) if before else (more, True)
        after, previous = jsonapi.page_cursors(found, sort, following, preceding, cursor)
        objects = [jsonapi.image_object(image, self.config.public_url) for image in found]
        return respond(request, 200, jsonapi.list_body(
            objects, None if at else page, limit, total, capped, next=after, previous=previous,
            has_more=after is not None))

    @app.route("/image/<image_id>", endpoint="image")
    @app.route("/images/<image_id>", endpoint="images_one")
    async def image(self, request: Any, image_id: str) -> bytes:
        """One image: GET (and HEAD) reads it, DELETE deletes it; one handler for
        both paths, as ImgLink and imgtree each use one of them."""
        await self._start(request, b"GET", b"HEAD", b"DELETE")
        if request.method == b"DELETE":
            return await self._delete(request, image_id)
        return await self._get(request, image_id)

    async def _get(self, request: Any, image_id: str) -> bytes:
        """A composite id needs no token (the file is public anyway) and any credential
        sent with it is not looked at; a bare name needs one (it names a file of the
        caller's account)."""
        caller = None if ids.SEPARATOR in image_id else (await self._token(request)).account
        named = _named(image_id, caller)
        image = await self.library.served_image(named.account, named.name)
        if image is None:
            raise errors.NotFound("no such image")
        return respond(request, 200, jsonapi.get_body(image, self.config.public_url))

    async def _delete(self, request: Any, image_id: str) -> bytes:
        """Delete one of the caller's images: 403 for another account's id, 404 for
        one that names nothing served; every version is 404 from this answer on."""
        token = await self._token(request)
        named = _named(image_id, token.account)
        image = await self.library.delete_named(token.account, named.account, named.name)
        return respond(request, 200, jsonapi.deleted_body(image))

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
        return respond(request, status, jsonapi.error_body(message))


def _named(image_id: str, caller: str | None) -> ids.ImageId:
    """The image an id in the path names.  An id that cannot name any image is
    "no such image" (404), as an unknown one is: ImgLink's ids are opaque, so its
    clients cannot tell a malformed id from an unknown one and only need the 404."""
    try:
        return ids.parse_id(image_id, caller)
    except errors.BadRequest:
        raise errors.NotFound("no such image") from None


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
    elif path in SMALL_JSON_PATHS:
        return SMALL_JSON_BODY
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
    record["presign_lifetime"] = presign.LIFETIME
    record["max_presign_batch"] = presign.MAX_BATCH
    record["routes"] = ROUTES
    return record


#: The endpoints ``GET /api/v1/upload`` names.
ROUTES: dict[str, str] = {
    "upload": "POST /api/v1/upload",
    "presign": "POST /api/v1/upload/presign",
    "presign_batch": "POST /api/v1/upload/presign/batch",
    "put": "PUT /api/v1/upload/put/<opaque>",
    "complete": "POST /api/v1/upload/complete",
    "complete_batch": "POST /api/v1/upload/complete/batch",
    "images": "GET /api/v1/images?page=&limit=&q=&sort=&after=&before=",
    "image": "GET /api/v1/image/<id> (alias /api/v1/images/<id>)",
    "delete": "DELETE /api/v1/image/<id> (alias /api/v1/images/<id>)",
}


def _remove_all(paths: list[str]) -> None:
    for path in paths:
        remove_if_present(path)


def json_switch(name: str, value: Any) -> bool | None:
    """An on/off member of a JSON body: true/false, 1/0 or "1"/"0"; absent or null
    None; anything else BadRequest (``output.parse_switch``)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return value == 1
    return output.parse_switch(name, value if isinstance(value, str) else "?")


def _read_json(content: BinaryIO) -> dict[str, Any]:
    """A spooled JSON body as an object (blocking: run it in the io pool); 400 if it
    is empty, malformed, or not an object."""
    content.seek(0)
    raw = content.read()
    if not raw.strip():
        raise errors.BadRequest("empty body: send a JSON object")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise errors.BadRequest("malformed JSON body") from None
    if not isinstance(body, dict):
        raise errors.BadRequest("the JSON body must be an object")
    return body
