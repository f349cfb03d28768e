"""The root of the web site: mounts the API, the file routes and the browser pages."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
from klein import Klein
from twisted.python.failure import Failure

from imgshare import __version__
from imgshare.domain import errors
from imgshare.web.api import Api
from imgshare.web.errors import render_failure
from imgshare.web.files import Files
from imgshare.web.pages import Pages


@attrs.define
class Root:
    """Everything the server answers, as one Klein application."""

    api: Api
    files: Files
    #: The browser pages (everything not under /api/v1/, /img/ or /thumb/).
    pages: Pages | None = None

    app: ClassVar[Klein] = Klein()

    @app.route("/api/v1/", branch=True)
    def api_v1(self, request: Any) -> Any:
        return self.api.app.resource()

    @app.route("/img/", branch=True)
    def img(self, request: Any) -> Any:
        return self.files.img.resource()

    @app.route("/thumb/", branch=True)
    def thumb(self, request: Any) -> Any:
        return self.files.thumb.resource()

    @app.route("/")
    def home(self, request: Any) -> Any:
        if self.pages is not None:
            return self.pages.app.resource()
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        return (
            f"IMGSHARE {__version__}: a self-hosted image host.\n"
            "Scripts upload with POST /api/v1/img_upload.php; see GET /api/v1/limits.\n"
        ).encode()

    @app.route("/", branch=True)
    def unknown(self, request: Any) -> Any:
        if self.pages is not None:
            return self.pages.app.resource()
        raise errors.NotFound("not found")

    @app.handle_errors(Exception)
    def failed(self, request: Any, failure: Failure) -> bytes:
        return render_failure(request, failure)

    def resource(self) -> Any:
        return self.app.resource()
