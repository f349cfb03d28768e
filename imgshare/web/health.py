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

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from imgshare.health import Readiness
from imgshare.metrics import CONTENT_TYPE, Metrics


def _plain(request: Any, status: int, body: bytes, content_type: bytes) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", content_type)
    request.setHeader(b"Cache-Control", b"no-store")
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"Content-Length", b"%d" % len(body))
    return body


def _json(request: Any, status: int, data: dict[str, Any]) -> bytes:
    return _plain(request, status, json.dumps(data).encode() + b"\n", b"application/json")


class _Endpoint(Resource):
    """A leaf answering exactly one path (``/healthz``, not ``/healthz/x``), GET and HEAD."""

    isLeaf = True
    path = b""

    def render(self, request: Any) -> Any:
        if request.path != self.path:
            return _json(request, 404, {"status": "error", "error": "no such endpoint"})
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"Allow", b"GET, HEAD")
            return _json(request, 405, {"status": "error", "error": "use GET"})
        return self.answer(request)

    def answer(self, request: Any) -> Any:
        raise NotImplementedError


class Healthz(_Endpoint):
    path = b"/healthz"

    def answer(self, request: Any) -> bytes:
        return _json(request, 200, {"status": "ok"})


class Readyz(_Endpoint):
    path = b"/readyz"

    def __init__(self, readiness: Readiness):
        super().__init__()
        self.readiness = readiness

    def answer(self, request: Any) -> Any:
        def write(check: Any) -> None:
            if check.ready:
                body = _json(request, 200, {"status": "ok", "database": "ok", "storage": "ok"})
            else:
                data = {"status": "unavailable", "failed": sorted(check.failed)}
                for name in ("database", "storage"):
                    data[name] = check.failed.get(name, "ok")
                body = _json(request, 503, data)
            _finish(request, body)

        def failed(failure: Any) -> None:  # a bug in the probe itself: still an answer
            _finish(request, _json(request, 503, {"status": "unavailable", "error": failure.getErrorMessage()}))

        self.readiness.check().addCallbacks(write, failed)
        return NOT_DONE_YET


class MetricsPage(_Endpoint):
    path = b"/metrics"

    def __init__(self, metrics: Metrics, database: Any):
        super().__init__()
        self.metrics = metrics
        self.database = database

    def answer(self, request: Any) -> Any:
        d = Deferred.fromCoroutine(self.metrics.refresh(self.database))
        d.addErrback(lambda _: None)  # the database is out: the last queue length stays

        def write(_: Any) -> None:
            _finish(request, _plain(request, 200, self.metrics.render(), CONTENT_TYPE.encode()))

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
        self.healthz = Healthz()
        self.readyz = Readyz(readiness)
        self.metrics = MetricsPage(metrics, database)
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
