"""/img/ and /thumb/ through StubTreq: headers, conditional and range requests, 404s."""

from __future__ import annotations

import json

from twisted.trial import unittest
from twisted.web.http import datetimeToString

from imgshare.testing import T0, image_bytes, make_fixture, multipart

API = "http://img.example/api/v1/img_upload.php"


class FilesTests(unittest.TestCase):
    async def setUp(self):
        self.f = await make_fixture(self)
        await self.f.account("kitten")
        self.token = await self.f.token("kitten")
        self.client = self.f.client()
        self.data = image_bytes("PNG", (300, 200))
        self.record = await self.upload(self.data, keep_name=1)
        self.url = self.record["urls"]["original"]

    async def upload(self, data, **fields):
        fields = {"token": self.token, **{k: str(v) for k, v in fields.items()}}
        body, headers = multipart(fields, {"file": ("pic.png", data)})
        response, out = await self.client.request("POST", API, data=body, headers=headers)
        self.assertEqual(response.code, 200, out)
        return json.loads(out)

    async def get(self, url=None, method="GET", **headers):
        h = {k.replace("_", "-").encode(): [v.encode()] for k, v in headers.items()}
        return await self.client.request(method, url or self.url, headers=h)

    def header(self, response, name):
        values = response.headers.getRawHeaders(name)
        return values[0] if values else None

    async def test_get_original(self):
        """GET serves the verbatim bytes with type, length, validators and safety headers."""
        response, body = await self.get()
        self.assertEqual(response.code, 200)
        self.assertEqual(body, self.data)
        self.assertEqual(self.header(response, "content-type"), "image/png")
        self.assertEqual(response.length, len(self.data))
        self.assertEqual(self.header(response, "etag"), '"{}"'.format(self.record["sha256"][:32]))
        self.assertEqual(self.header(response, "last-modified"), datetimeToString(int(T0)).decode())
        self.assertEqual(self.header(response, "accept-ranges"), "bytes")
        self.assertEqual(self.header(response, "x-content-type-options"), "nosniff")
        self.assertEqual(self.header(response, "content-security-policy"), "default-src 'none'; sandbox")
        self.assertEqual(self.header(response, "cache-control"), "public, max-age=86400")

    async def test_head(self):
        """HEAD gives the same headers and no body (its Content-Length is checked on a real socket)."""
        response, body = await self.get(method="HEAD")
        self.assertEqual(response.code, 200)
        self.assertEqual(body, b"")
        self.assertEqual(self.header(response, "etag"), '"{}"'.format(self.record["sha256"][:32]))
        self.assertEqual(self.header(response, "content-type"), "image/png")

    async def test_cache_control_bounded_by_expiry(self):
        """A file expiring in 2 hours may be cached for at most its remaining lifetime."""
        record = await self.upload(self.data, expire="2h")
        self.f.clock.advance(600)
        response, _ = await self.get(record["urls"]["original"])
        self.assertEqual(self.header(response, "cache-control"), "public, max-age=6600")

    async def test_conditional(self):
        """If-None-Match (also weak, lists, *) and If-Modified-Since answer 304; stale ones 200."""
        etag = '"{}"'.format(self.record["sha256"][:32])
        for inm in [etag, "W/" + etag, '"x", ' + etag, "*"]:
            response, body = await self.get(if_none_match=inm)
            self.assertEqual((response.code, body), (304, b""), inm)
        response, _ = await self.get(if_none_match='"other"')
        self.assertEqual(response.code, 200)
        response, _ = await self.get(if_modified_since=datetimeToString(int(T0) + 10).decode())
        self.assertEqual(response.code, 304)
        response, _ = await self.get(if_modified_since=datetimeToString(int(T0) - 10).decode())
        self.assertEqual(response.code, 200)
        response, _ = await self.get(if_modified_since="yesterday-ish")
        self.assertEqual(response.code, 200)

    async def test_ranges(self):
        """Single byte ranges answer 206 with Content-Range; suffix and open ranges work."""
        n = len(self.data)
        for value, first, last in [("bytes=0-9", 0, 9), ("bytes=10-", 10, n - 1),
                                   ("bytes=-5", n - 5, n - 1), ("bytes=5-999999", 5, n - 1)]:
            response, body = await self.get(range=value)
            self.assertEqual(response.code, 206, value)
            self.assertEqual(body, self.data[first:last + 1])
            self.assertEqual(self.header(response, "content-range"), f"bytes {first}-{last}/{n}")
            self.assertEqual(response.length, last - first + 1)

    async def test_unsatisfiable_and_ignored_ranges(self):
        """A range past the end is 416; multi-ranges, other units and bad syntax serve the whole file."""
        n = len(self.data)
        response, _ = await self.get(range=f"bytes={n}-")
        self.assertEqual(response.code, 416)
        self.assertEqual(self.header(response, "content-range"), f"bytes */{n}")
        for value in ["bytes=0-1,5-6", "items=0-1", "bytes=9-3", "bytes=abc"]:
            response, body = await self.get(range=value)
            self.assertEqual((response.code, body), (200, self.data), value)

    async def test_if_range(self):
        """If-Range with the current ETag honours Range; with another one serves the whole file."""
        etag = '"{}"'.format(self.record["sha256"][:32])
        response, _ = await self.get(range="bytes=0-0", if_range=etag)
        self.assertEqual(response.code, 206)
        response, _ = await self.get(range="bytes=0-0", if_range='"old"')
        self.assertEqual(response.code, 200)

    async def test_not_found(self):
        """Unknown accounts, names, traversal attempts and hostile paths are 404 with no content."""
        name = self.record["file"]
        for path in [f"/img/bear/{name}", "/img/kitten/20260214_nope.png", "/img/kitten/../kitten/" + name,
                     "/img/kitten/%2e%2e%2fetc%2fpasswd", "/img/kitten/..%2f..%2fimgshare.sqlite3",
                     "/img/../imgshare.sqlite3", "/img/kitten/", "/img/kitten", "/img/", f"/img/KITTEN/{name}",
                     "/img/kitten/a/b/c/d.jpg", f"/img/kitten/{name}%00.png"]:
            response, body = await self.get("http://img.example" + path)
            self.assertEqual(response.code, 404, path)
            self.assertNotIn(self.data[:50], body)

    async def test_paths_as_the_router_read_them(self):
        """/img/ takes no route matching, yet reads paths as a router would: segments are
        percent-decoded (an encoded name is the same file), and a trailing slash, an empty
        segment or a segment that is not UTF-8 names nothing."""
        name = self.record["file"]
        encoded = "".join(f"%{b:02X}" for b in name.encode())
        response, body = await self.get(f"http://img.example/img/%6Bitten/{encoded}")
        self.assertEqual((response.code, body), (200, self.data))
        for path in [f"/img/kitten/{name}/", f"/img/kitten//{name}", f"/img//kitten/{name}",
                     f"/img/kitten/%FF{name}", f"/img/kitten/original/{name}", "/img/kitten/xga/"]:
            response, body = await self.get("http://img.example" + path)
            self.assertEqual(response.code, 404, path)
            self.assertEqual(json.loads(body)["status"], "error", path)
        response, body = await self.get(f"http://img.example/img/kitten/{name}", method="DELETE")
        self.assertEqual((response.code, self.header(response, b"allow")), (405, b"GET, HEAD"))

    async def test_thumb_paths_are_404(self):
        """/img/<user>/thumb/... is always 404; /thumb/ is 404 without the owner's browser
        session, for an API token too (the owner's session is tested in test_pages)."""
        await self.f.derivations.run_one()
        stem = self.record["file"][:-4]
        for path in [f"/img/kitten/thumb/{stem}.jpg", f"/thumb/kitten/{stem}.jpg"]:
            for headers in [{}, {"x_api_key": self.token}, {"authorization": "Bearer " + self.token}]:
                response, _ = await self.get("http://img.example" + path, **headers)
                self.assertEqual(response.code, 404, path)
        response, _ = await self.get(f"http://img.example/thumb/kitten/{stem}.jpg?token={self.token}")
        self.assertEqual(response.code, 404)

    async def test_expired_file_disappears_at_its_instant(self):
        """An expiring file is served until its expiry instant and 404 from then on."""
        record = await self.upload(self.data, expire="1h")
        self.f.clock.advance(3599)
        response, _ = await self.get(record["urls"]["original"])
        self.assertEqual(response.code, 200)
        self.f.clock.advance(1)
        response, _ = await self.get(record["urls"]["original"])
        self.assertEqual(response.code, 404)

    async def test_wrong_method(self):
        """POST on a file: 405."""
        response, _ = await self.client.request("POST", self.url, data=b"x")
        self.assertEqual(response.code, 405)

    async def test_missing_object_is_404(self):
        """A row whose object vanished from storage answers 404, not a broken 200."""
        self.f.storage.objects.clear()
        response, _ = await self.get()
        self.assertEqual(response.code, 404)

    async def test_storage_down_is_503(self):
        """Storage down while serving: 503 before any byte is sent."""
        self.f.storage.available = False
        response, body = await self.get()
        self.assertEqual(response.code, 503)
        self.assertEqual(json.loads(body)["status"], "error")
