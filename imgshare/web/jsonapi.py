"""The Bearer / X-API-Key JSON API (PEERS section 2): the routes imgtree's and
ImgLink's clients use, under ``/api/v1/upload``, ``/api/v1/images`` and
``/api/v1/image`` (``imgshare.web.root`` mounts them beside the native API).

Uploads (one file, a batch, or JSON with base64), presigned uploads, discovery,
and the caller's list, get and delete.  Errors keep SPEC section 8's statuses
with this family's body ``{"success": false, "status": "error", "error": …}``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
from klein import Klein
from python_multipart.multipart import parse_options_header
from twisted.python.failure import Failure

from imgshare.domain import errors, ids, jsonapi, output
from imgshare.domain.records import Token
from imgshare.library import ImageLibrary
from imgshare.ratelimit import RateLimiter
from imgshare.web.credentials import header_credential
from imgshare.web.errors import describe_failure, require_method, routing_error
from imgshare.web.http import client_ip, query, respond

#: The first path segments under /api/v1/ this application answers.
SEGMENTS = (b"upload", b"images", b"image")
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

    async def _token(self, request: Any, *, body_credential: str | None = None) -> Token:
        """The caller's token (PEERS section 0.1), counted against its rate limit."""
        found = header_credential(request) or body_credential or query(request, "key") or query(request, "token")
        token = await self.library.authenticate(found)
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
        raise errors.ApiError("not yet", 501)  # filled in below

    # ---------------------------------------------------- presigned uploads
    # (section owned by the presigned-uploads work)

    # ------------------------------------------------- list, get and delete
    # (section owned by the list/get/delete work)

    @app.route("/images", endpoint="images")
    @app.route("/images/", endpoint="images_slash")
    async def images(self, request: Any) -> bytes:
        """The caller's served images, newest first, one page of them."""
        self._start(request, b"GET", b"HEAD")
        token = await self._token(request)
        page, limit = jsonapi.paging(query(request, "page"), query(request, "limit"))
        found, total = await self.library.image_page(token.account, page, limit)
        objects = [jsonapi.image_object(image, self.config.public_url) for image in found]
        return self._answer(request, 200, jsonapi.list_body(objects, page, limit, total))

    @app.route("/image/<image_id>", endpoint="image")
    @app.route("/images/<image_id>", endpoint="images_one")
    async def image(self, request: Any, image_id: str) -> bytes:
        """One image: GET (and HEAD) reads it, DELETE deletes it; one handler for
        both paths, as ImgLink and imgtree each use one of them."""
        self._start(request, b"GET", b"HEAD", b"DELETE")
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
        return self._answer(request, 200, jsonapi.get_body(image, self.config.public_url))

    async def _delete(self, request: Any, image_id: str) -> bytes:
        """Delete one of the caller's images: 403 for another account's id, 404 for
        one that names nothing served; every version is 404 from this answer on."""
        token = await self._token(request)
        named = _named(image_id, token.account)
        image = await self.library.delete_named(token.account, named.account, named.name)
        return self._answer(request, 200, jsonapi.deleted_body(image))

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
    "images": "GET /api/v1/images?page=&limit=",
    "image": "GET /api/v1/image/<id> (alias /api/v1/images/<id>)",
    "delete": "DELETE /api/v1/image/<id> (alias /api/v1/images/<id>)",
}

_ = output  # used by the upload answers
