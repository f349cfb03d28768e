"""Chevereto API v1/v1.1 uploads (PEERS section 1) through StubTreq, replaying what real
clients send: ShareX's built-in uploader, Node and bot clients, ImgBB clients."""

from __future__ import annotations

import base64
import json
import os
from urllib.parse import quote

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from imgshare.config import RateLimit
from imgshare.testing import image_bytes, make_fixture
from imgshare.web.forms import decode_base64_text
from tests.test_gather import fixture_with_source

B = "http://img.example"
UPLOAD = B + "/api/1/upload"
PUBLIC = "https://img.example"
FOUR_BY_THREE = image_bytes("JPEG", (400, 300))


def sharex_body(key: str, filename: str, data: bytes, fmt: str = "json", field: str = "source") -> tuple[bytes, dict]:
    """ShareX's built-in Chevereto uploader: a 20-dash boundary, ``key`` and ``format`` before
    the file part, the file name as raw UTF-8, no Accept header."""
    boundary = "-" * 20 + "8de4a5b2d3c1f0e"
    out = b""
    for name, value in (("key", key), ("format", fmt)):
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    out += (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    headers = {b"Content-Type": [f"multipart/form-data; boundary={boundary}".encode()],
               b"User-Agent": [b"ShareX/17.0.0"]}
    return out, headers


def text_part_body(fields: dict[str, str]) -> tuple[bytes, dict]:
    """A multipart body of text parts only (a data: URI in ``source``, say)."""
    boundary = "----bot" + "0" * 16
    out = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                   for k, v in fields.items()) + f"--{boundary}--\r\n".encode()
    return out, {b"Content-Type": [f"multipart/form-data; boundary={boundary}".encode()]}


def urlencoded(pairs: list[tuple[str, str]], plus_as_space: bool = False) -> tuple[bytes, dict]:
    """An urlencoded body; ``plus_as_space`` is the client that forgot to encode ``+``."""
    safe = "+/=" if plus_as_space else ""
    body = "&".join(f"{quote(k)}={quote(v, safe=safe)}" for k, v in pairs).encode()
    return body, {b"Content-Type": [b"application/x-www-form-urlencoded"]}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class CheveretoTestCase(unittest.TestCase):
    async def setUp(self):
        self.f = await make_fixture(self)
        await self.f.account("kitten")
        self.token = await self.f.token("kitten")
        self.client = self.f.client()

    async def post(self, url=UPLOAD, body=b"", headers=None, **kwargs):
        return await self.client.request("POST", url, data=body, headers=headers or {}, **kwargs)

    def ok(self, response, body, key="image"):
        self.assertEqual(response.code, 200, body)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
        self.assertEqual(response.headers.getRawHeaders("cache-control"), ["no-store"])
        answer = json.loads(body)
        self.assertEqual(answer["status_code"], 200)
        self.assertNotIn("error", answer)
        return answer[key]

    def error(self, response, body, status, code):
        self.assertEqual(response.code, status, body)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
        answer = json.loads(body)
        self.assertEqual(list(answer), ["status_code", "error", "status_txt"])
        self.assertEqual((answer["status_code"], answer["error"]["code"]), (status, code), body)
        self.assertIsInstance(answer["error"]["message"], str)
        return answer

    def stored(self, image) -> bytes:
        return self.f.storage.objects[f"kitten/{image['filename']}"]

    def spool_left(self) -> list[str]:
        spool = self.f.config.spool_dir
        return [n for n in os.listdir(spool) if not n.endswith(".original")] if os.path.isdir(spool) else []


class ShareXTests(CheveretoTestCase):
    async def test_sharex_builtin_uploader(self):
        """ShareX's exact request gets the Chevereto answer with real values: the original's URL,
        a QVGA thumbnail whose size is computed from the original's, the viewer page."""
        body, headers = sharex_body(self.token, "Ünïcode shot.jpg", FOUR_BY_THREE)
        response, out = await self.post(body=body, headers=headers)
        self.assertEqual(response.headers.getRawHeaders("imgshare-expires"), ["never"])
        image = self.ok(response, out)
        answer = json.loads(out)
        self.assertEqual(answer["success"], {"message": "image uploaded", "code": 200})
        self.assertEqual(answer["status_txt"], "OK")
        name = image["filename"]
        self.assertRegex(name, r"^20260214_[a-z0-9]{8}\.jpg$")
        stem = name[:-4]
        self.assertEqual(image["url"], f"{PUBLIC}/img/kitten/{name}")
        self.assertEqual(image["image"]["url"], image["url"])
        self.assertEqual(image["thumb"], {"filename": f"{stem}.jpg", "name": stem, "mime": "image/jpeg",
                                          "extension": "jpg", "url": f"{PUBLIC}/img/kitten/qvga/{stem}.jpg",
                                          "width": 320, "height": 240})
        self.assertEqual((image["medium"]["width"], image["medium"]["height"]), (400, 300))  # never upscaled
        self.assertEqual((image["display_url"], image["display_width"]), (f"{PUBLIC}/img/kitten/vga/{stem}.jpg", 400))
        self.assertEqual(image["url_viewer"], f"{PUBLIC}/i/kitten/{name}")
        self.assertEqual(image["url_short"], image["url_viewer"])
        self.assertEqual(image["path_viewer"], f"/i/kitten/{name}")
        self.assertEqual(image["id_encoded"], f"kitten~{name}")
        self.assertEqual(image["original_filename"], "Ünïcode shot.jpg")
        self.assertEqual((image["width"], image["height"], image["size"], image["mime"]),
                         (400, 300, len(FOUR_BY_THREE), "image/jpeg"))
        self.assertEqual((image["ratio"], image["date_gmt"], image["expiration_date_gmt"]),
                         (400 / 300, "2026-02-14 09:30:00", None))
        self.assertEqual(image["urls"]["qvga"], image["thumb"]["url"])
        self.assertEqual(self.stored(image), FOUR_BY_THREE)
        self.assertEqual(self.spool_left(), [])

    async def test_paths_answer_directly(self):
        """/api/1/upload, /api/1/upload/ and /sharexapi/1/upload[/] all answer 200: no redirect."""
        for path in ["/api/1/upload", "/api/1/upload/", "/sharexapi/1/upload", "/sharexapi/1/upload/"]:
            body, headers = sharex_body(self.token, "a.jpg", image_bytes())
            response, out = await self.post(B + path, body, headers, allow_redirects=False)
            self.ok(response, out)

    async def test_formats(self):
        """txt answers the original's URL alone; redirect is a 302 to the viewer page; unknown is json."""
        for fmt in ["txt", "TEXT"]:
            body, headers = sharex_body(self.token, "a.jpg", image_bytes(), fmt=fmt)
            response, out = await self.post(body=body, headers=headers)
            self.assertEqual(response.code, 200)
            self.assertEqual(response.headers.getRawHeaders("content-type"), ["text/plain; charset=utf-8"])
            self.assertRegex(out.decode(), r"^https://img\.example/img/kitten/20260214_[a-z0-9]{8}\.jpg$")
            self.assertEqual(response.headers.getRawHeaders("imgshare-expires"), ["never"])
        body, headers = sharex_body(self.token, "a.jpg", image_bytes(), fmt="redirect")
        response, out = await self.post(body=body, headers=headers, allow_redirects=False)
        self.assertEqual((response.code, out), (302, b""))
        [location] = response.headers.getRawHeaders("location")
        self.assertRegex(location, r"^https://img\.example/i/kitten/20260214_[a-z0-9]{8}\.jpg$")
        self.assertEqual(response.headers.getRawHeaders("imgshare-expires"), ["never"])
        body, headers = sharex_body(self.token, "a.jpg", image_bytes(), fmt="xml")
        self.ok(*await self.post(body=body, headers=headers))

    async def test_expiration(self):
        """expiration (Chevereto) and expire (ours) take SPEC section 4's grammar."""
        body, headers = urlencoded([("key", self.token), ("source", b64(image_bytes())), ("expiration", "PT2H")])
        response, out = await self.post(body=body, headers=headers)
        image = self.ok(response, out)
        self.assertEqual(image["expiration_date_gmt"], "2026-02-14 11:30:00")
        self.assertEqual(response.headers.getRawHeaders("imgshare-expires"), ["2026-02-14T11:30:00Z"])
        body, headers = urlencoded([("key", self.token), ("source", b64(image_bytes())), ("expire", "1d")])
        response, out = await self.post(body=body, headers=headers)
        self.assertEqual(self.ok(response, out)["expiration_date_gmt"], "2026-02-15 09:30:00")

    async def test_ignored_fields_and_keep_name(self):
        """Peer fields we do not use are ignored; keep_name keeps the client's name."""
        body, headers = urlencoded([("key", self.token), ("source", b64(image_bytes())), ("title", "x"),
                                    ("album_id", "9"), ("nsfw", "1"), ("whatever", "y"), ("name", "my shot")])
        image = self.ok(*await self.post(body=body, headers=headers))
        self.assertEqual(image["filename"], "20260214_my_shot.jpg")


class SourceTests(CheveretoTestCase):
    async def test_urlencoded_base64_plus_encoded_and_as_space(self):
        """Node clients' urlencoded base64, with + encoded, and with + left to become a space."""
        data = image_bytes("PNG", (90, 70), (10, 250, 3))
        encoded = b64(data)
        self.assertIn("+", encoded + b64(FOUR_BY_THREE))
        for payload in (data, FOUR_BY_THREE):
            for plus_as_space in (False, True):
                body, headers = urlencoded([("key", self.token), ("source", b64(payload))], plus_as_space)
                image = self.ok(*await self.post(body=body, headers=headers))
                self.assertEqual(self.stored(image), payload)
        self.assertEqual(self.spool_left(), [])

    async def test_data_uri_in_a_multipart_text_field(self):
        """A data: URI in a multipart text part, wrapped in lines, URL-safe and unpadded."""
        data = image_bytes("WEBP", (50, 50))
        text = base64.urlsafe_b64encode(data).decode().rstrip("=")
        wrapped = "\r\n".join(text[i:i + 76] for i in range(0, len(text), 76))
        body, headers = text_part_body({"key": self.token, "source": "data:image/webp;base64," + wrapped})
        image = self.ok(*await self.post(body=body, headers=headers))
        self.assertEqual((self.stored(image), image["mime"], image["extension"]), (data, "image/webp", "webp"))

    async def test_imgbb_flavour(self):
        """A source sent as image answers under data, with id, time and expiration."""
        for body, headers in [
            sharex_body(self.token, "b.png", image_bytes("PNG"), field="image"),
            urlencoded([("key", self.token), ("image", b64(image_bytes())), ("expiration", "3600")]),
        ]:
            response, out = await self.post(body=body, headers=headers)
            data = self.ok(response, out, key="data")
            answer = json.loads(out)
            self.assertEqual((answer["success"], answer["status"]), (True, 200))
            self.assertNotIn("image", answer)
            self.assertEqual(data["id"], data["id_encoded"])
            self.assertEqual(data["time"], "1771061400")
            self.assertIn(data["expiration"], ("0", "3600"))
            self.assertEqual(data["url"], f"{PUBLIC}/img/kitten/{data['filename']}")

    async def test_key_in_query_and_headers(self):
        """key in the query, X-API-Key and Authorization: Bearer each authenticate."""
        body, headers = urlencoded([("source", b64(image_bytes()))])
        self.ok(*await self.post(f"{UPLOAD}?key={self.token}&format=json", body, headers))
        self.ok(*await self.post(f"{UPLOAD}?token={self.token}", body, headers))
        for header in ({b"X-API-Key": [self.token.encode()]}, {b"Authorization": [b"bearer " + self.token.encode()]}):
            self.ok(*await self.post(body=body, headers={**headers, **header}))

    async def test_credential_order(self):
        """The first non-empty credential wins: a header over the body's key, the body's key over
        the query's, key over token."""
        body, headers = urlencoded([("key", "0" * 32), ("source", b64(image_bytes()))])
        self.ok(*await self.post(body=body, headers={**headers, b"X-API-Key": [self.token.encode()]}))
        self.error(*await self.post(f"{UPLOAD}?key={self.token}", body, headers), 401, 100)
        body, headers = urlencoded([("key", ""), ("token", "0" * 32), ("source", b64(image_bytes()))])
        self.ok(*await self.post(f"{UPLOAD}?key={self.token}", body, headers))

    async def test_source_in_the_query(self):
        """A small base64 source may come in the query of a POST."""
        data = image_bytes("BMP", (8, 8))
        response, out = await self.post(f"{UPLOAD}?key={self.token}&source={quote(b64(data))}")
        self.assertEqual(self.stored(self.ok(response, out)), data)

    def test_decoding_helper_limit(self):
        """Decoded bytes over --max-size stop the decoding (413) and leave nothing spooled."""
        from imgshare.domain.errors import TooLarge

        spool = self.mktemp()
        with self.assertRaises(TooLarge):
            decode_base64_text(b64(b"x" * 1000), spool, 999)
        self.assertEqual(os.listdir(spool), [])


class ErrorTests(CheveretoTestCase):
    async def test_key_missing_unknown(self):
        """No key, an unknown one, or one of the wrong shape: 401, code 100."""
        for fields in [[], [("key", "f" * 32)], [("key", "nope")], [("token", "")]]:
            body, headers = urlencoded(fields + [("source", b64(image_bytes()))])
            answer = self.error(*await self.post(body=body, headers=headers), 401, 100)
            self.assertEqual(answer["status_txt"], "Unauthorized")

    async def test_empty_source(self):
        """No source, or an empty one: 400, code 130."""
        for fields in [[], [("source", "")], [("image", "")], [("source", "  ")]]:
            body, headers = urlencoded([("key", self.token)] + fields)
            self.error(*await self.post(body=body, headers=headers), 400, 130)

    async def test_bad_base64(self):
        """Text that is neither a URL nor base64: 400, code 120; nothing left in the spool."""
        for text in ["not base64!", "QQ==QQ", "A", "data:image/png,plain", "ftp://example.com/a.jpg"]:
            body, headers = urlencoded([("key", self.token), ("source", text)])
            self.error(*await self.post(body=body, headers=headers), 400, 120)
        self.assertEqual(self.spool_left(), [])

    async def test_decoded_bytes_pass_spec_4(self):
        """Decoded bytes are checked as any upload: 415 for another type, 400 unreadable."""
        body, headers = urlencoded([("key", self.token), ("source", b64(b"GIF89a" + b"\0" * 100))])
        self.error(*await self.post(body=body, headers=headers), 415, 415)
        body, headers = urlencoded([("key", self.token), ("source", b64(b"\x89PNG\r\n\x1a\n" + b"\0" * 40))])
        self.error(*await self.post(body=body, headers=headers), 400, 400)
        self.assertEqual(self.f.storage.objects, {})
        self.assertEqual(self.spool_left(), [])

    async def test_two_file_sources(self):
        """Two file parts (source and image, or source twice): 400."""
        boundary = "-" * 20 + "two"
        parts = b"".join(
            (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="a.jpg"\r\n\r\n'.encode()
             + image_bytes() + b"\r\n") for name in ("source", "image"))
        body = f'--{boundary}\r\nContent-Disposition: form-data; name="key"\r\n\r\n{self.token}\r\n'.encode() \
            + parts + f"--{boundary}--\r\n".encode()
        headers = {b"Content-Type": [f"multipart/form-data; boundary={boundary}".encode()]}
        self.error(*await self.post(body=body, headers=headers), 400, 400)
        self.assertEqual(self.f.storage.objects, {})

    async def test_other_body_types_415(self):
        """A body that is not a form is 415 (JSON, raw bytes); an empty body is fine."""
        for ctype, body in [(b"application/json", b'{"key": "x"}'), (b"image/jpeg", image_bytes()), (None, b"xx")]:
            headers = {b"Content-Type": [ctype]} if ctype else {}
            self.error(*await self.post(f"{UPLOAD}?key={self.token}", body, headers), 415, 415)
        self.error(*await self.post(f"{UPLOAD}?key={self.token}"), 400, 130)

    async def test_wrong_methods_and_unknown_paths_answer_json(self):
        """Other methods: 405 with Allow: GET, POST; unknown /api/ paths: a JSON 404, never HTML."""
        for method in ["PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"]:
            response, out = await self.client.request(method, UPLOAD)
            self.assertEqual(response.code, 405, method)
            self.assertEqual(response.headers.getRawHeaders("allow"), ["GET, POST"])
            if method != "HEAD":
                self.error(response, out, 405, 405)
        for path in ["/api/1/", "/api/1", "/api/1/uploads", "/api/1/upload/x", "/sharexapi/1/nope",
                     "/sharexapi/", "/sharexapi/2/upload", "/api/2/upload", "/api/1//upload"]:
            response, out = await self.client.request("POST", B + path, allow_redirects=False)
            self.assertEqual(response.code, 404, path)
            self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"], path)
            self.assertIsInstance(json.loads(out), dict)

    async def test_text_format_errors(self):
        """With txt or redirect, an error is the same status in text/plain: the message."""
        for fmt in ["txt", "redirect"]:
            body, headers = urlencoded([("key", "f" * 32), ("source", b64(image_bytes())), ("format", fmt)])
            response, out = await self.post(body=body, headers=headers, allow_redirects=False)
            self.assertEqual(response.code, 401)
            self.assertEqual(response.headers.getRawHeaders("content-type"), ["text/plain; charset=utf-8"])
            self.assertEqual(out, b"unknown or expired token")

    async def test_storage_down_503(self):
        """A storage outage is 503 in Chevereto's shape, and nothing is left."""
        self.f.storage.available = False
        body, headers = sharex_body(self.token, "a.jpg", image_bytes())
        self.error(*await self.post(body=body, headers=headers), 503, 503)
        self.assertEqual(self.spool_left(), [])

    async def test_rate_limit_429(self):
        """Over the per-address limit: 429 with Retry-After, in Chevereto's shape."""
        f = await make_fixture(self, rate_ip=RateLimit(1, 60.0))
        client = f.client()
        await client.request("POST", UPLOAD)
        response, out = await client.request("POST", UPLOAD)
        self.error(response, out, 429, 429)
        self.assertTrue(response.headers.getRawHeaders("retry-after"))


class BodyLimitTests(unittest.TestCase):
    """Bodies that may carry base64 may be up to ceil(4/3 * max-size) + 64 KiB while they arrive."""

    MAX = 512 * 1024

    async def setUp(self):
        self.f = await make_fixture(self, max_size=self.MAX)
        await self.f.account("kitten")
        self.token = await self.f.token("kitten")
        self.site = self.f.components.site

    def test_limits_by_path(self):
        """The Chevereto prefixes get the base64 limit; every other path keeps max-size + 64 KiB."""
        encoded = -(-4 * self.MAX // 3) + 64 * 1024
        self.assertEqual(self.f.config.max_encoded_body, encoded)
        for path in [b"/api/1/upload", b"/api/1/upload/?key=x", b"/sharexapi/1/upload"]:
            self.assertEqual(self.site.max_body_for(path), encoded, path)
        for path in [b"/api/v1/img_upload.php", b"/images/upload", b"/api/1", b"/"]:
            self.assertEqual(self.site.max_body_for(path), self.MAX + 64 * 1024, path)

    def answer(self, path: bytes, length: int) -> bytes:
        """What the server says to a request head announcing ``length`` bytes of body."""
        channel = self.site.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.1", 40000))
        channel.makeConnection(transport)
        self.addCleanup(channel.connectionLost, None)
        channel.dataReceived(b"POST %s HTTP/1.1\r\nHost: img.example\r\nContent-Length: %d\r\n"
                             b"Content-Type: application/x-www-form-urlencoded\r\n\r\n" % (path, length))
        return transport.value()

    def test_refused_while_arriving(self):
        """A Content-Length over the path's limit is 413 before the body; under it, the server waits."""
        encoded = self.f.config.max_encoded_body
        self.assertEqual(self.answer(b"/api/1/upload", encoded), b"")
        self.assertTrue(self.answer(b"/api/1/upload", encoded + 1).startswith(b"HTTP/1.1 413 "))
        self.assertEqual(self.answer(b"/sharexapi/1/upload/", encoded), b"")
        self.assertTrue(self.answer(b"/api/v1/img_upload.php", self.MAX + 64 * 1024 + 1).startswith(b"HTTP/1.1 413 "))

    async def test_largest_base64_image_is_accepted(self):
        """A base64 image of nearly max-size, in a body above img_upload.php's limit, is stored;
        one byte over max-size decoded is 413."""
        data = image_bytes("BMP", (150, 200))
        data += b"\0" * (self.MAX - len(data))  # BMP readers ignore trailing bytes
        client = self.f.client()  # the fixture's own site: its per-path body limits
        body, headers = urlencoded([("key", self.token), ("source", b64(data))])
        self.assertGreater(len(body), self.MAX + 64 * 1024)
        response, out = await client.request("POST", UPLOAD, data=body, headers=headers)
        self.assertEqual(response.code, 200, out[:300])
        self.assertEqual(json.loads(out)["image"]["size"], self.MAX)
        body, headers = urlencoded([("key", self.token), ("source", b64(data + b"\0"))])
        response, out = await client.request("POST", UPLOAD, data=body, headers=headers)
        self.assertEqual(response.code, 413, out[:300])
        self.assertEqual(json.loads(out)["error"]["code"], 413)


class UrlSourceTests(unittest.TestCase):
    """A URL source goes through img_gather.php's vetted fetch (loopback only, a widened policy)."""

    async def setUp(self):
        await fixture_with_source(self)

    async def test_get_with_a_url_source(self):
        """Seed 001's GET ?key=…&source=<url> uploads the fetched image."""
        url = self.source.url("/img.jpg")
        response, out = await self.client.request("GET", f"{UPLOAD}?key={self.token}&source={quote(url)}&format=json")
        self.assertEqual(response.code, 200, out)
        image = json.loads(out)["image"]
        self.assertEqual(self.f.storage.objects[f"kitten/{image['filename']}"], self.source.image)
        self.assertEqual(image["original_filename"], "img.jpg")

    async def test_post_with_a_url_source(self):
        """A URL in a POST's source field is fetched too (the same answer as an upload)."""
        body, headers = urlencoded([("key", self.token), ("source", self.source.url("/img.jpg"))])
        response, out = await self.client.request("POST", UPLOAD, data=body, headers=headers)
        self.assertEqual(response.code, 200, out)

    async def test_get_with_base64_is_130(self):
        """A GET with base64 is 400, code 130, and fetches nothing."""
        response, out = await self.client.request("GET", f"{UPLOAD}?key={self.token}&source={quote(b64(image_bytes()))}")
        self.assertEqual((response.code, json.loads(out)["error"]["code"]), (400, 130))
        self.assertEqual(self.source.requests, [])

    async def test_gather_errors(self):
        """Forbidden addresses 403, a failing source 502, not an image 415: SPEC section 8's statuses."""
        for url, status in [("http://127.1/a.jpg", 403), (self.source.url("/missing"), 502),
                            (self.source.url("/page.html"), 415)]:
            response, out = await self.client.request("GET", f"{UPLOAD}?key={self.token}&source={quote(url)}")
            self.assertEqual((response.code, json.loads(out)["error"]["code"]), (status, status), url)

    async def test_without_gatherer_501(self):
        """A server built without a gatherer answers 501 for URL sources."""
        f = await make_fixture(self)
        await f.account("kitten")
        token = await f.token("kitten")
        response, out = await f.client().request("GET", f"{UPLOAD}?key={token}&source=https://example.com/a.jpg")
        self.assertEqual(response.code, 501)


class ShapeTests(unittest.SynchronousTestCase):
    """imgshare.domain.chevereto: the answers as pure data."""

    def image(self, **changes):
        from tests.test_output import make_image

        return make_image(**changes)

    def test_example_image(self):
        """PEERS section 1's example: 4000x3000, sizes of the copies, the delete link when known."""
        from imgshare.domain import chevereto

        body = chevereto.success_body(self.image(delete_secret="0f" * 16), PUBLIC, "fountain.jpg")
        image = body["image"]
        self.assertEqual(list(body), ["status_code", "success", "image", "status_txt"])
        self.assertEqual((image["display_width"], image["display_height"]), (640, 480))
        self.assertEqual((image["thumb"]["width"], image["thumb"]["height"]), (320, 240))
        self.assertEqual((image["size_formatted"], image["original_filename"]), ("1.2 MB", "fountain.jpg"))
        self.assertEqual(image["delete_url"], f"{PUBLIC}/delete/kitten/20260214_fountain.jpg/" + "0f" * 16)
        self.assertNotIn("delete_url", chevereto.success_body(self.image(), PUBLIC)["image"])
        stored_name = chevereto.success_body(self.image(original_name="mine.jpg"), PUBLIC, "x.jpg")
        self.assertEqual(stored_name["image"]["original_filename"], "mine.jpg")

    def test_imgbb(self):
        """The ImgBB flavour: data, id, time and expiration as strings."""
        from imgshare.domain import chevereto

        body = chevereto.success_body(self.image(expires=1771061400.0 + 7200), PUBLIC, imgbb=True)
        self.assertEqual((body["success"], body["status"], body["status_code"]), (True, 200, 200))
        self.assertEqual((body["data"]["id"], body["data"]["time"], body["data"]["expiration"]),
                         ("kitten~20260214_fountain.jpg", "1771061400", "7200"))
        self.assertEqual(body["data"]["expiration_date_gmt"], "2026-02-14 11:30:00")

    def test_formats_codes_and_sizes(self):
        """pick_format, error codes and size_formatted."""
        from imgshare.domain import chevereto, errors
        from imgshare.domain.base64text import BadBase64

        self.assertEqual([chevereto.pick_format(v) for v in (None, "TXT", "text", "Redirect", "xml")],
                         ["json", "txt", "txt", "redirect", "json"])
        self.assertEqual([chevereto.error_code(e) for e in (
            errors.Unauthorized("x"), BadBase64("x"), chevereto.NoSource("x"), errors.BadImage("x"),
            errors.TooLarge("x"), errors.GatherFailed("x"))], [100, 120, 130, 400, 413, 502])
        self.assertEqual([chevereto.size_formatted(n) for n in (532, 12700, 1234567)],
                         ["532 B", "12.4 KB", "1.2 MB"])
