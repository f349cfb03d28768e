"""The Prometheus metrics of one process (``prometheus_client``), in a registry of its own.

Requests are counted by route family, never by path, so the number of series
stays small and fixed: ``ROUTES`` names every family a path can fall in
(``route_family``), and a status is one of the few HTTP codes the server sends.
Counting a request costs a dictionary lookup and one ``inc`` on a child made once
(``Metrics.request_done``): nothing else runs on the ``/img/`` path.

The job queue length is read from the database when the metrics are scraped
(``refresh``: one ``COUNT`` over the jobs table), not kept on every change.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from imgshare import db

# No ``*_created`` series beside every counter and histogram: they double the page for
# nothing a dashboard of one process needs (a process-wide prometheus_client setting).
disable_created_metrics()

#: Every route family a request is counted under.
ROUTES = ("img", "thumb", "api_upload", "api_v1", "chevereto", "pages", "health", "other")

#: The first path segment -> its family, for the families one segment decides.
_FIRST_SEGMENT = {
    b"img": "img", b"thumb": "thumb", b"sharexapi": "chevereto",
    b"healthz": "health", b"readyz": "health", b"metrics": "health",
    b"": "pages", b"i": "pages", b"delete": "pages", b"images": "pages", b"tokens": "pages",
    b"account": "pages", b"login": "pages", b"logout": "pages", b"register": "pages",
    b"setup": "pages", b"static": "pages",
}
#: Under /api/v1/: the upload endpoints (every family's), the rest is "api_v1".
_V1_UPLOADS = (b"upload", b"img_upload.php", b"img_gather.php")

#: Bucket bounds (seconds) of the upload and derive durations.
UPLOAD_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
DERIVE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

CONTENT_TYPE = CONTENT_TYPE_LATEST


def route_family(path: bytes) -> str:
    """The family of a request path (``/img/kitten/x.jpg`` -> ``img``): one of ``ROUTES``."""
    if path.startswith(b"/img/"):  # the hot path first
        return "img"
    first, _, rest = path[1:].partition(b"/")
    family = _FIRST_SEGMENT.get(first)
    if family is not None:
        return family
    if first == b"api":
        second, _, rest = rest.partition(b"/")
        if second == b"1":
            return "chevereto"
        if second == b"v1":
            third = rest.partition(b"/")[0]
            return "api_upload" if third in _V1_UPLOADS else "api_v1"
    return "other"


class Metrics:
    """The metrics of one process; ``render`` gives the text a scrape gets."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("imgshare_http_requests", "HTTP requests answered, by route family and status",
                                ("route", "status"), registry=r)
        self.response_bytes = Counter("imgshare_http_response_bytes", "Response bytes sent (bodies and heads), "
                                      "by route family", ("route",), registry=r)
        self.upload_seconds = Histogram("imgshare_upload_duration_seconds", "Time from a received upload to its "
                                        "committed row (inspect, store, record)", buckets=UPLOAD_BUCKETS, registry=r)
        self.derive_seconds = Histogram("imgshare_derive_duration_seconds", "Time to make one image's derived "
                                        "files (decode, resize, encode)", buckets=DERIVE_BUCKETS, registry=r)
        self.job_queue = Gauge("imgshare_job_queue_length", "Derived-file jobs waiting or running (read from the "
                               "database at each scrape)", registry=r)
        self.storage_errors = Counter("imgshare_storage_errors", "Storage operations that failed because storage "
                                      "was unavailable", registry=r)
        self.database_errors = Counter("imgshare_database_errors", "Database operations that failed because the "
                                       "database was unavailable", registry=r)
        self._request_children: dict[tuple[str, int], Any] = {}
        self._byte_children = {route: self.response_bytes.labels(route) for route in ROUTES}
        for route in ROUTES:  # every family shows up from the first scrape on
            self.requests.labels(route, "200")

    def request_done(self, path: bytes, code: int, sent: int) -> None:
        """Count one answered request to ``path`` with status ``code`` and ``sent`` bytes."""
        route = route_family(path)
        key = (route, code)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(route, str(code))
        child.inc()
        if sent:
            self._byte_children[route].inc(sent)

    async def refresh(self, database: Any) -> None:
        """Read what is kept in the database (the job queue) just before a scrape."""
        self.job_queue.set(await database.run(db.count_jobs))

    def render(self) -> bytes:
        return generate_latest(self.registry)
