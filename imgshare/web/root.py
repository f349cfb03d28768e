"""The root of the web site: mounts the API, the file routes and the browser pages.

A plain resource tree dispatches on the first path segment, so each request goes
through exactly one Klein application (one route match) rather than two: that is
measurable on ``/img/``, the hottest path.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.web.resource import Resource

from imgshare import __version__
from imgshare.web.api import Api
from imgshare.web.files import Files
from imgshare.web.http import respond
from imgshare.web.pages import Pages


class _NotFound(Resource):
    """A JSON 404 for paths under /api/ that are not /api/v1/, and for paths
    with an empty segment under a mounted application."""

    isLeaf = True

    def render(self, request: Any) -> bytes:
        return respond(request, 404, {"status": "error", "error": "no such endpoint"})


class _Home(Resource):
    """Without browser pages: a line of text at / and a JSON 404 elsewhere."""

    isLeaf = True

    def render(self, request: Any) -> bytes:
        if request.postpath not in ([], [b""]):
            return respond(request, 404, {"status": "error", "error": "not found"})
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        return (
            f"IMGSHARE {__version__}: a self-hosted image host.\n"
            "Scripts upload with POST /api/v1/img_upload.php; see GET /api/v1/limits.\n"
        ).encode()


class _Mount(Resource):
    """Dispatch on the first path segment; anything else goes, path intact, to ``rest``."""

    def __init__(self, children: dict[bytes, Any], rest: Any):
        super().__init__()
        for name, child in children.items():
            self.putChild(name, child)
        self._rest = rest

    def getChildWithDefault(self, path: bytes, request: Any) -> Any:  # noqa: N802
        if path in self.children and request.postpath[:1] == [b""] and len(request.postpath) > 1:
            # "/img//kitten/x.jpg": Klein would drop the empty segment and
            # serve /img/kitten/x.jpg; a path with an empty segment names nothing.
            return _NotFound()
        return super().getChildWithDefault(path, request)

    def getChild(self, path: bytes, request: Any) -> Any:  # noqa: N802
        # Put the segment back: the catch-all sees the whole path.
        request.postpath.insert(0, request.prepath.pop())
        return self._rest

    def render(self, request: Any) -> Any:
        return self._rest.render(request)


@attrs.define
class Root:
    """Everything the server answers."""

    api: Api
    files: Files
    #: The browser pages (everything not under /api/v1/, /img/ or /thumb/).
    pages: Pages | None = None

    def resource(self) -> Any:
        apps = [self.api.app, self.files.img, self.files.thumb]
        if self.pages is not None:
            apps.append(self.pages.app)
        for app in apps:
            # werkzeug would answer a path with "//" by a redirect to the merged
            # path, which Klein sends without a Location: such a path names no
            # file (SPEC section 7) and is simply not found.
            app.url_map.merge_slashes = False
        rest = self.pages.app.resource() if self.pages is not None else _Home()
        api = _Mount({b"v1": self.api.app.resource()}, _NotFound())
        return _Mount(
            {b"api": api, b"img": self.files.img.resource(), b"thumb": self.files.thumb.resource()},
            rest,
        )

