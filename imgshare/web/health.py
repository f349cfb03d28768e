"""``/healthz``, ``/readyz`` and ``/metrics``: plain leaf resources, no Klein, no rate limit.

- ``GET /healthz``: 200 ``{"status":"ok"}`` while the process runs (it touches nothing).
- ``GET /readyz``: 200 while the database and the storage answer their probes
  (``imgshare.health.Readiness``, cached for a second), else 503 naming each one
  that failed and why.
- ``GET /metrics``: the Prometheus text (``imgshare.metrics``), with the job queue
  read from the database first (if that fails, the last value stays).

They are exempt from the API's rate limits (a load balancer or Prometheus asks
often from one address); the connection limits still apply.  ``HEAD`` is answered
like ``GET``; other methods get 405.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from imgshare.health import Readiness
from imgshare.metrics import CONTENT_TYPE, Metrics
from imgshare.web.http import respond


def _plain(request: Any, status: int, body: bytes, content_type: bytes) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", content_type)
    request.setHeader(b"Cache-Control", b"no-store")
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"Content-Length", b"%d" % len(body))
    return body


class _Endpoint(Resource):
    """A leaf answering exactly one path (``/healthz``, not ``/healthz/x``), GET and HEAD,
    with ``answer(request)``."""

    isLeaf = True

    def __init__(self, path: bytes, answer: Callable[[Any], Any]):
        super().__init__()
        self.path = path
        self._answer = answer

    def render(self, request: Any) -> Any:
        if request.path != self.path:
            return respond(request, 404, {"status": "error", "error": "no such endpoint"})
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"Allow", b"GET, HEAD")
            return respond(request, 405, {"status": "error", "error": "use GET"})
        return self._answer(request)


def _healthy(request: Any) -> bytes:
    return respond(request, 200, {"status": "ok"})


def _ready(readiness: Readiness, request: Any) -> Any:
    def write(check: Any) -> None:
        if check.ready:
            body = respond(request, 200, {"status": "ok", "database": "ok", "storage": "ok"})
        else:
            data = {"status": "unavailable", "failed": sorted(check.failed)}
            for name in ("database", "storage"):
                data[name] = check.failed.get(name, "ok")
            body = respond(request, 503, data)
        _finish(request, body)

    def failed(failure: Any) -> None:  # a bug in the probe itself: still an answer
        _finish(request, respond(request, 503, {"status": "unavailable", "error": failure.getErrorMessage()}))

    readiness.check().addCallbacks(write, failed)
    return NOT_DONE_YET


def _scrape(metrics: Metrics, database: Any, request: Any) -> Any:
    d = Deferred.fromCoroutine(metrics.refresh(database))
    d.addErrback(lambda _: None)  # the database is out: the last queue length stays

    def write(_: Any) -> None:
        _finish(request, _plain(request, 200, metrics.render(), CONTENT_TYPE.encode()))

    d.addCallback(write)
    return NOT_DONE_YET


def _finish(request: Any, body: bytes) -> None:
    if request._disconnected:
        return
    if request.method != b"HEAD":
        request.write(body)
    request.finish()


class HealthRoutes:
    """The resources by first path segment, for ``Root`` (or a metrics-only listener)."""

    def __init__(self, readiness: Readiness, metrics: Metrics, database: Any, serve_metrics: bool = True):
        self.healthz = _Endpoint(b"/healthz", _healthy)
        self.readyz = _Endpoint(b"/readyz", functools.partial(_ready, readiness))
        self.metrics = _Endpoint(b"/metrics", functools.partial(_scrape, metrics, database))
        self.serve_metrics = serve_metrics

    def mounts(self) -> dict[bytes, Any]:
        found: dict[bytes, Any] = {b"healthz": self.healthz, b"readyz": self.readyz}
        if self.serve_metrics:
            found[b"metrics"] = self.metrics
        return found

    def metrics_only(self) -> Resource:
        """A resource tree with ``/metrics`` alone (its own listener)."""
        root = Resource()
        root.putChild(b"metrics", self.metrics)
        return root
