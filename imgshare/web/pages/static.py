"""The pages' CSS and JavaScript under ``/static/`` (cached for a day, by ETag)."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
from klein import Klein
from twisted.python.failure import Failure

from imgshare.domain import errors
from imgshare.web.http import header
from imgshare.web.pages.base import PageArea
from imgshare.web.views import static_files


@attrs.define
class StaticFiles(PageArea):
    """The route of /static/<name>."""

    app: ClassVar[Klein] = Klein()

    @app.route("/static/<name>", methods=["GET"])
    def static(self, request: Any, name: str) -> bytes:
        found = static_files().get(name)
        if found is None:
            raise errors.NotFound("No such file.")
        request.setHeader(b"Content-Type", found.mime.encode())
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        request.setHeader(b"Cache-Control", b"public, max-age=86400")
        request.setHeader(b"ETag", f'"{found.etag}"'.encode())
        if header(request, b"if-none-match") == f'"{found.etag}"':
            request.setResponseCode(304)
            return b""
        request.setHeader(b"Content-Length", str(len(found.data)).encode())
        return b"" if request.method == b"HEAD" else found.data

    @app.handle_errors(Exception)
    async def failed(self, request: Any, failure: Failure) -> bytes:
        return await self.render_failure(request, failure)
