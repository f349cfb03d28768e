"""The script API under ``/api/v1/`` (SPEC section 8)."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
from klein import Klein
from twisted.python.failure import Failure

from imgshare.domain import errors, lifetime, output, sniff
from imgshare.domain.records import Token
from imgshare.gather import Gatherer, discard_spooled
from imgshare.library import ImageLibrary
from imgshare.ratelimit import RateLimiter
from imgshare.web.credentials import authenticated, header_credential
from imgshare.web.errors import render_failure, require_method
from imgshare.web.forms import Form, read_form
from imgshare.web.http import client_ip, query, respond, response_format, set_format


@attrs.define
class Api:
    """Routes of ``/api/v1/``; mounted by ``imgshare.web.root``."""

    library: ImageLibrary
    io: Any  # Runner that parses bodies
    ip_limiter: RateLimiter
    token_limiter: RateLimiter
    #: Fetches for img_gather.php; None answers 501 (a test fixture without network).
    gatherer: Gatherer | None

    app: ClassVar[Klein] = Klein()

    @property
    def config(self) -> Any:
        return self.library.config

    async def _begin(self, request: Any, *methods: bytes) -> tuple[Form, Token]:
        """Method check, rate limits, form parsing and authentication, in that order."""
        set_format(request, output.pick_format(query(request, "format")))
        require_method(request, *methods)
        await self.ip_limiter.check(client_ip(request))
        token = None
        # A token outside the body (a header, else the query string) is checked
        # before a possibly large body is parsed: a bad one costs no parsing.
        outside = header_credential(request) or query(request, "token")
        if outside:
            token = await authenticated(self.library, request, outside)
        form = await read_form(request, self.io, self.config.spool_dir, self.config.max_size)
        try:
            set_format(request, output.pick_format(form.get("format")))
            if token is None:
                token = await authenticated(self.library, request, form.get("token"))
            await self.token_limiter.check(f"token:{token.id}")
        except BaseException:
            form.discard()
            raise
        return form, token

    @app.route("/img_upload.php")
    async def upload(self, request: Any) -> bytes:
        form, token = await self._begin(request, b"POST")
        try:
            if form.file is None:
                raise errors.BadRequest("missing file: send the image as the multipart field 'file'")
            strip = output.parse_switch("strip_location", form.get("strip_location"))
            image = await self.library.upload(
                token.account, form.file.path, form.file.filename,
                keep_name=output.is_true(form.get("keep_name")),
                name=form.get("name") or None, expire=form.get("expire"), strip_location=strip,
            )
        finally:
            form.discard()
        return self.uploaded(request, image)

    @app.route("/img_delete.php")
    async def delete(self, request: Any) -> bytes:
        form, token = await self._begin(request, b"POST")
        form.discard()
        reference = (form.get("file") or "").strip()
        if not reference:
            raise errors.BadRequest("missing parameter: file")
        image = await self.library.delete(token.account, reference)
        return respond(request, 200, {"status": "ok", "deleted": image.name})

    @app.route("/img_gather.php")
    async def gather(self, request: Any) -> bytes:
        form, token = await self._begin(request, b"POST")
        form.discard()  # a file part, if one was sent, is not used
        url = (form.get("url") or "").strip()
        if not url:
            raise errors.BadRequest("missing parameter: url")
        strip = output.parse_switch("strip_location", form.get("strip_location"))
        if self.gatherer is None:
            raise errors.ApiError("img_gather.php is not available on this server", 501)
        await self.library.check_quota(token.account)  # a full account fetches nothing
        path, filename = await self.gatherer.fetch(url, token.account)
        try:
            image = await self.library.upload(
                token.account, path, filename,
                keep_name=output.is_true(form.get("keep_name")),
                name=form.get("name") or None, expire=form.get("expire"), strip_location=strip,
            )
        except (errors.BadImage, errors.UnsupportedType, errors.TooLarge) as e:
            await self.gatherer.remember_failure(url, e)  # the content is at fault: repeat the answer
            raise
        finally:
            await self.io.run(discard_spooled, path)
        return self.uploaded(request, image)

    def uploaded(self, request: Any, image: Any) -> bytes:
        """The answer to an upload or a gather: the record, and the effective expiry in a header."""
        request.setHeader(b"Imgshare-Expires", output.expires_header(image).encode())
        return respond(request, 200, output.image_record(image, self.config.public_url))

    @app.route("/universe_delete.php")
    async def universe_delete(self, request: Any) -> bytes:
        form, token = await self._begin(request, b"GET")
        raise errors.Forbidden("refusing to delete the universe: you are standing in it")

    @app.route("/limits")
    async def limits(self, request: Any) -> bytes:
        set_format(request, output.pick_format(query(request, "format")))
        require_method(request, b"GET", b"HEAD")
        await self.ip_limiter.check(client_ip(request))
        return respond(request, 200, limits_record(self.config, response_format(request) == "text"))

    @app.route("/", branch=True)
    def unknown(self, request: Any) -> bytes:
        raise errors.NotFound("no such endpoint")

    @app.handle_errors(Exception)
    def failed(self, request: Any, failure: Failure) -> bytes:
        return render_failure(request, failure)


def limits_record(config: Any, flat: bool) -> dict:
    """What ``GET /api/v1/limits`` answers: sizes, types, lifetime tiers, rate limits."""
    tiers = [
        {
            "max_size": t.max_size,
            "permanent": t.permanent,
            "longest": None if t.longest is None else int(t.longest),
            "default": None if t.default is None else int(t.default),
        }
        for t in config.offered_tiers
    ]
    data: dict[str, Any] = {
        "status": "ok",
        "max_size": config.max_size,
        "max_pixels": config.max_pixels,
        "max_side": sniff.MAX_SIDE,
        "max_jpeg_scans": sniff.MAX_JPEG_SCANS,
        "types": [t.mime for t in sniff.TYPES],
        "min_lifetime": int(lifetime.MIN_LIFETIME),
        "max_lifetime": int(lifetime.MAX_LIFETIME),
        "tiers": tiers,
        "rate_limits": {
            "per_ip": {"requests": config.rate_ip.count, "period": config.rate_ip.period},
            "per_token": {"requests": config.rate_token.count, "period": config.rate_token.period},
        },
    }
    if flat:
        data["types"] = ",".join(data["types"])
        data["tiers"] = lifetime.format_tiers(config.offered_tiers)
        data["rate_limits"] = (
            f"ip={config.rate_ip.count}/{config.rate_ip.period:g}s,"
            f"token={config.rate_token.count}/{config.rate_token.period:g}s"
        )
    return data
