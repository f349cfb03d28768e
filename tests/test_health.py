"""/healthz, /readyz and /metrics on the memory fixture: outages, the probe cache, the counters."""

from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial import unittest

from imgshare import options
from imgshare.config import RateLimit
from imgshare.metrics import ROUTES, route_family
from imgshare.testing import image_bytes, make_fixture, multipart

BASE = "http://img.example"
METRIC_NAMES = (
    "imgshare_http_requests_total", "imgshare_http_response_bytes_total", "imgshare_upload_duration_seconds",
    "imgshare_derive_duration_seconds", "imgshare_job_queue_length", "imgshare_storage_errors_total",
    "imgshare_database_errors_total",
)


def scrape(text: bytes) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of a Prometheus text page."""
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


class HealthTests(unittest.TestCase):
    async def setUp(self):
        self.f = await make_fixture(self, switchable=True)
        self.client = self.f.client()

    async def get(self, path, method="GET"):
        response, body = await self.client.request(method, BASE + path)
        return response, body

    async def ready(self):
        self.f.clock.advance(1.5)  # past the cached answer
        response, body = await self.get("/readyz")
        return response.code, json.loads(body)

    async def test_healthz(self):
        """/healthz is 200 {"status":"ok"}, whatever the backends do."""
        self.f.database.available = False
        self.f.storage.available = False
        response, body = await self.get("/healthz")
        self.assertEqual(response.code, 200)
        self.assertEqual(json.loads(body), {"status": "ok"})
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
        self.assertEqual(response.headers.getRawHeaders("cache-control"), ["no-store"])

    async def test_ready_until_a_backend_fails(self):
        """/readyz is 200 while both answer, 503 naming the one that fails (or both), 200 once back."""
        self.assertEqual(await self.ready(), (200, {"status": "ok", "database": "ok", "storage": "ok"}))
        self.f.storage.available = False
        code, data = await self.ready()
        self.assertEqual(code, 503)
        self.assertEqual(data["failed"], ["storage"])
        self.assertEqual(data["storage"], "storage is down (test)")
        self.assertEqual(data["database"], "ok")
        self.f.storage.available = True
        self.f.database.available = False
        code, data = await self.ready()
        self.assertEqual((code, data["failed"], data["database"]), (503, ["database"], "connection refused (test)"))
        self.f.storage.available = False
        code, data = await self.ready()
        self.assertEqual((code, data["failed"]), (503, ["database", "storage"]))
        self.f.database.available = True
        self.f.storage.available = True
        self.assertEqual((await self.ready())[0], 200)

    async def test_readiness_tells_the_truth_when_limits_do_not(self):
        """During a database outage /api/v1/limits still answers 200 (it needs no database);
        /readyz says 503."""
        self.f.database.available = False
        response, _ = await self.get("/api/v1/limits")
        self.assertEqual(response.code, 200)
        self.assertEqual((await self.ready())[0], 503)

    async def test_probe_cached(self):
        """Many /readyz within a second cost one probe of each backend; the next second, one more."""
        readiness = self.f.components.readiness
        for _ in range(20):
            response, _ = await self.get("/readyz")
            self.assertEqual(response.code, 200)
        self.assertEqual(readiness.probes, 1)
        self.assertEqual(self.f.storage.calls.count(("probe", "")), 1)
        self.f.clock.advance(1.0)
        await self.get("/readyz")
        self.assertEqual(readiness.probes, 2)

    async def test_a_hung_backend_fails_its_probe(self):
        """A probe that never answers counts as failed after the probe timeout."""
        from twisted.internet.defer import Deferred

        self.patch(self.f.storage, "probe", lambda: Deferred())
        self.f.clock.advance(1.5)
        response = self.client.http.get(BASE + "/readyz")
        self.client.flush()
        self.f.clock.advance(5)
        self.client.flush()
        response = await response
        import treq

        body = treq.content(response)
        self.client.flush()
        data = json.loads(await body)
        self.assertEqual((response.code, data["storage"]), (503, "no answer within 5 s"))

    async def test_only_exact_paths_and_get(self):
        """/healthz/x is 404; POST is 405 with Allow; HEAD has no body."""
        response, _ = await self.get("/healthz/x")
        self.assertEqual(response.code, 404)
        response, _ = await self.get("/readyz", "POST")
        self.assertEqual(response.code, 405)
        self.assertEqual(response.headers.getRawHeaders("allow"), ["GET, HEAD"])
        response, body = await self.get("/readyz", "HEAD")
        self.assertEqual((response.code, body), (200, b""))

    async def test_not_rate_limited(self):
        """A load balancer asking often from one address is never refused (the API is)."""
        f = await make_fixture(self, rate_ip=RateLimit(2, 60.0))
        client = f.client()
        for path in ("/healthz", "/readyz", "/metrics"):
            for _ in range(10):
                response, _ = await client.request("GET", BASE + path)
                self.assertEqual(response.code, 200, path)
        codes = [(await client.request("POST", BASE + "/api/v1/img_delete.php"))[0].code for _ in range(3)]
        self.assertEqual(codes[-1], 429)


class MetricsTests(unittest.TestCase):
    async def setUp(self):
        self.f = await make_fixture(self, switchable=True)
        await self.f.account("kitten")
        self.token = await self.f.token("kitten")
        self.client = self.f.client()

    async def metrics(self):
        response, body = await self.client.request("GET", BASE + "/metrics")
        self.assertEqual(response.code, 200)
        self.assertTrue(response.headers.getRawHeaders("content-type")[0].startswith("text/plain"))
        return body, scrape(body)

    async def upload(self):
        body, headers = multipart({"token": self.token}, {"file": ("a.png", image_bytes("PNG", (300, 200)))})
        response, out = await self.client.request("POST", BASE + "/api/v1/img_upload.php", data=body, headers=headers)
        self.assertEqual(response.code, 200, out)
        return json.loads(out)

    async def test_documented_names(self):
        """Every documented metric is on the page from the first scrape."""
        text, _ = await self.metrics()
        for name in METRIC_NAMES:
            self.assertIn(f"# TYPE {name} ".encode(), text)

    async def test_counters_move(self):
        """Requests by route family and status, bytes, upload and derive durations, the queue."""
        _, before = await self.metrics()
        record = await self.upload()
        _, after = await self.metrics()
        self.assertEqual(after[("imgshare_job_queue_length", ())], 1)
        self.assertEqual(after[("imgshare_upload_duration_seconds_count", ())], 1)
        key = ("imgshare_http_requests_total", (("route", "api_upload"), ("status", "200")))
        self.assertEqual(after[key] - before.get(key, 0), 1)
        await self.f.derivations.run_one()
        url = record["urls"]["original"].replace("https://img.example", BASE)
        response, body = await self.client.request("GET", url)
        self.assertEqual(response.code, 200)
        await self.client.request("GET", BASE + "/img/kitten/nothing.png")
        _, now = await self.metrics()
        self.assertEqual(now[("imgshare_derive_duration_seconds_count", ())], 1)
        self.assertEqual(now[("imgshare_job_queue_length", ())], 0)
        self.assertEqual(now[("imgshare_http_requests_total", (("route", "img"), ("status", "200")))], 1)
        self.assertEqual(now[("imgshare_http_requests_total", (("route", "img"), ("status", "404")))], 1)
        sent = now[("imgshare_http_response_bytes_total", (("route", "img"),))]
        self.assertGreaterEqual(sent, len(body))
        # Every route family is a label, and nothing else is: no path ever becomes one.
        routes = {dict(labels)["route"] for name, labels in now if name == "imgshare_http_requests_total"}
        self.assertEqual(routes, set(ROUTES))

    async def test_error_counters(self):
        """A storage outage and a database outage each count in their own counter."""
        record = await self.upload()
        await self.metrics()  # the queue length read while the database answers
        url = record["urls"]["original"].replace("https://img.example", BASE)
        self.f.storage.available = False
        response, _ = await self.client.request("GET", url)
        self.assertEqual(response.code, 503)
        self.f.storage.available = True
        self.f.database.available = False
        response, _ = await self.client.request("GET", url)
        self.assertEqual(response.code, 503)
        _, found = await self.metrics()  # the queue length cannot be read: the last value stays
        self.assertEqual(found[("imgshare_storage_errors_total", ())], 1)
        self.assertGreaterEqual(found[("imgshare_database_errors_total", ())], 2)
        self.assertEqual(found[("imgshare_job_queue_length", ())], 1)

    async def test_off_and_own_listener(self):
        """--metrics off: no /metrics; an endpoint: not on the main site, only on its own resource."""
        for setting in ("off", "tcp:0:interface=127.0.0.1"):
            f = await make_fixture(self, metrics=setting)
            response, _ = await f.client().request("GET", BASE + "/metrics")
            self.assertEqual(response.code, 404, setting)
            response, _ = await f.client().request("GET", BASE + "/healthz")
            self.assertEqual(response.code, 200, setting)
        self.assertEqual(f.config.metrics_listen, "tcp:0:interface=127.0.0.1")
        self.assertIn(b"metrics", f.components.health.metrics_only().children)

    def test_option(self):
        """--metrics (or IMGSHARE_METRICS) is on, off or an endpoint description."""
        self.assertEqual(options.build_config({}).metrics, "on")
        for value in ("off", "tcp:9100:interface=127.0.0.1"):
            self.assertEqual(options.build_config(options.resolve({}, {"IMGSHARE_METRICS": value})).metrics, value)
        with self.assertRaises(ValueError) as caught:
            options.build_config({"metrics": "sometimes"})
        self.assertIn("--metrics", str(caught.exception))

    def test_route_families(self):
        """Every path falls in one of a fixed set of families."""
        cases = {
            b"/img/kitten/x.jpg": "img", b"/thumb/kitten/x.jpg": "thumb",
            b"/api/v1/img_upload.php": "api_upload", b"/api/v1/upload": "api_upload",
            b"/api/v1/img_gather.php": "api_upload", b"/api/v1/images": "api_v1", b"/api/v1/limits": "api_v1",
            b"/api/1/upload": "chevereto", b"/sharexapi/1/upload": "chevereto", b"/": "pages",
            b"/images": "pages", b"/delete/kitten/x.jpg/00": "pages", b"/i/kitten/x.jpg": "pages",
            b"/healthz": "health", b"/metrics": "health", b"/wp-login.php": "other", b"/api/v2/x": "other",
            b"/api": "other",
        }
        for path, family in cases.items():
            self.assertEqual(route_family(path), family, path)
            self.assertIn(family, ROUTES)
