"""The root of the web site: mounts the API, the file routes and the browser pages.

A plain resource tree dispatches on the first path segment, so each request goes
through at most one Klein application (one route match) rather than two, and
``/img/``, the hottest path, through none (a plain resource, ``Files.img_resource``).
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.web.resource import Resource

from imgshare.web.api import Api
from imgshare.web.chevereto import Chevereto
from imgshare.web.files import Files
from imgshare.web.health import HealthRoutes
from imgshare.web.http import respond
from imgshare.web.jsonapi import SEGMENTS as JSONAPI_SEGMENTS
from imgshare.web.jsonapi import JsonApi
from imgshare.web.pages import Pages


class _NotFound(Resource):
    """A JSON 404 for paths under /api/ (or /sharexapi/) that no application serves, and for paths
    with an empty segment under a mounted application."""

    isLeaf = True

    def render(self, request: Any) -> bytes:
        return respond(request, 404, {"status": "error", "error": "no such endpoint"})


class _Mount(Resource):
    """Dispatch on the first path segment.

    ``children`` get the rest of the path (they are mounted there); the
    resources in ``whole`` and, for any other segment, ``rest`` get the path
    intact (their routes name whole paths)."""

    def __init__(self, children: dict[bytes, Any], rest: Any, whole: dict[bytes, Any] | None = None):
        super().__init__()
        for name, child in children.items():
            self.putChild(name, child)
        self._rest = rest
        self._whole = whole or {}

    def getChildWithDefault(self, path: bytes, request: Any) -> Any:  # noqa: N802
        if path in self.children and not request.postpath:
            # "/api/1": werkzeug would redirect to "/api/1/"; no API request is redirected.
            return _NotFound()
        if path in self.children and request.postpath[:1] == [b""] and len(request.postpath) > 1:
            # "/img//kitten/x.jpg": Klein would drop the empty segment and
            # serve /img/kitten/x.jpg; a path with an empty segment names nothing.
            return _NotFound()
        return super().getChildWithDefault(path, request)

    def getChild(self, path: bytes, request: Any) -> Any:  # noqa: N802
        # Put the segment back: the application sees the whole path.
        request.postpath.insert(0, request.prepath.pop())
        return self._whole.get(path, self._rest)

    def render(self, request: Any) -> Any:
        return self._rest.render(request)


@attrs.define
class Root:
    """Everything the server answers: each request goes to at most one Klein
    application, chosen by its first path segment."""

    api: Api
    files: Files
    #: The browser pages (everything not under /api/, /img/, /thumb/ or /sharexapi/).
    pages: Pages
    #: Chevereto uploads, under /api/1/ and /sharexapi/1/.
    chevereto: Chevereto
    #: The Bearer / X-API-Key JSON API: /api/v1/upload, /api/v1/images, /api/v1/image.
    jsonapi: JsonApi
    #: /healthz, /readyz and (unless it has its own listener or is off) /metrics.
    health: HealthRoutes

    def resource(self) -> Any:
        for app in [self.api.app, self.chevereto.app, self.jsonapi.app, self.files.thumb, *self.pages.apps()]:
            # werkzeug would answer a path with "//" by a redirect to the merged
            # path, which Klein sends without a Location: such a path names no
            # file (SPEC section 7) and is simply not found.
            app.url_map.merge_slashes = False
        pages, rest = self.pages.mounts()
        chevereto = self.chevereto.app.resource()
        jsonapi = self.jsonapi.app.resource()
        v1 = _Mount({}, self.api.app.resource(), {segment: jsonapi for segment in JSONAPI_SEGMENTS})
        api = _Mount({b"v1": v1, b"1": chevereto}, _NotFound())
        sharex = _Mount({b"1": chevereto}, _NotFound())
        return _Mount(
            {b"api": api, b"sharexapi": sharex, b"img": self.files.img_resource(),
             b"thumb": self.files.thumb.resource()},
            rest, {**pages, **self.health.mounts()},
        )
