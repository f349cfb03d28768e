"""The script API through StubTreq: real HTTP parsing in memory, real SQLite, memory storage."""

from __future__ import annotations

import json
import struct
import zlib

from twisted.trial import unittest

from imgshare import db
from imgshare.config import RateLimit
from imgshare.testing import T0, image_bytes, make_fixture, multipart

URL = "http://img.example/api/v1/"


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG signature and IHDR chunk (valid CRC) claiming a size, with no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))


class ApiTestCase(unittest.TestCase):
    async def setUp(self):
        self.f = await make_fixture(self)
        await self.f.account("kitten")
        await self.f.account("bear")
        self.token = await self.f.token("kitten")
        self.bear_token = await self.f.token("bear")
        self.client = self.f.client()

    async def upload(self, data=None, filename="photo.jpg", token=None, headers=None, **fields):
        fields = {k: str(v) for k, v in fields.items()}
        if token is not False:
            fields.setdefault("token", token or self.token)
        body, h = multipart(fields, {"file": (filename, image_bytes() if data is None else data)})
        h.update(headers or {})
        return await self.client.request("POST", URL + "img_upload.php", data=body, headers=h)

    async def post(self, endpoint, **fields):
        return await self.client.request("POST", URL + endpoint, data=fields)

    def error(self, response, body, status):
        self.assertEqual(response.code, status, body)
        self.assertEqual(json.loads(body)["status"], "error")
        return json.loads(body)["error"]


class UploadTests(ApiTestCase):
    async def test_upload_json_record(self):
        """A JPEG upload answers 200 with the SPEC section 8 record and stores the bytes verbatim."""
        data = image_bytes("JPEG", (400, 300))
        response, body = await self.upload(data)
        self.assertEqual(response.code, 200, body)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
        record = json.loads(body)
        self.assertEqual(
            list(record),
            ["status", "user", "file", "mime", "size", "width", "height", "sha256", "uploaded", "expires", "urls",
             "id", "viewer", "has_location", *(["delete_url"] if "delete_url" in record else [])],
        )
        self.assertEqual(record["id"], f"kitten~{record['file']}")
        self.assertEqual(record["viewer"], f"https://img.example/i/kitten/{record['file']}")
        self.assertEqual(response.headers.getRawHeaders("imgshare-expires"), ["never"])
        self.assertEqual(record["user"], "kitten")
        self.assertRegex(record["file"], r"^20260214_[a-z0-9]{8}\.jpg$")
        self.assertEqual((record["mime"], record["size"], record["width"], record["height"]),
                         ("image/jpeg", len(data), 400, 300))
        self.assertEqual(record["uploaded"], "2026-02-14T09:30:00Z")
        self.assertIsNone(record["expires"])
        stem = record["file"][:-4]
        self.assertEqual(record["urls"], {
            "original": f"https://img.example/img/kitten/{record['file']}",
            "xga": f"https://img.example/img/kitten/xga/{stem}.jpg",
            "vga": f"https://img.example/img/kitten/vga/{stem}.jpg",
            "qvga": f"https://img.example/img/kitten/qvga/{stem}.jpg",
        })
        self.assertEqual(self.f.storage.objects[f"kitten/{record['file']}"], data)
        self.assertEqual(self.f.storage.types[f"kitten/{record['file']}"], "image/jpeg")

    async def test_upload_text_format(self):
        """format=text answers Key=Value lines with expires=never for a permanent file."""
        response, body = await self.upload(format="text", keep_name=1)
        self.assertEqual(response.code, 200)
        lines = dict(line.split("=", 1) for line in body.decode().strip().split("\n"))
        self.assertEqual(list(lines), ["status", "user", "file", "mime", "size", "width", "height",
                                       "sha256", "uploaded", "expires", "url_original", "url_xga",
                                       "url_vga", "url_qvga", "id", "url_viewer", "has_location",
                                       *(["delete_url"] if "delete_url" in lines else [])])
        self.assertEqual(lines["expires"], "never")
        self.assertEqual(lines["id"], "kitten~20260214_photo.jpg")
        self.assertEqual(lines["url_viewer"], "https://img.example/i/kitten/20260214_photo.jpg")
        self.assertEqual(lines["file"], "20260214_photo.jpg")
        self.assertEqual(lines["url_vga"], "https://img.example/img/kitten/vga/20260214_photo.jpg")

    async def test_token_in_headers(self):
        """The token is accepted as X-API-Key and as Authorization: Bearer."""
        for header in ({b"X-API-Key": [self.token.encode()]},
                       {b"Authorization": [b"Bearer " + self.token.encode()]}):
            response, body = await self.upload(token=False, headers=header)
            self.assertEqual(response.code, 200, body)

    async def test_keep_name_and_clashes(self):
        """keep_name keeps a sanitized base; clashes in the account get _2, _3; other accounts don't clash."""
        names = []
        for _ in range(3):
            response, body = await self.upload(filename="My Holiday (1).jpeg", keep_name=1)
            names.append(json.loads(body)["file"])
        self.assertEqual(names, ["20260214_My_Holiday__1_.jpeg", "20260214_My_Holiday__1__2.jpeg",
                                 "20260214_My_Holiday__1__3.jpeg"])
        response, body = await self.upload(filename="My Holiday (1).jpeg", keep_name=1, token=self.bear_token)
        self.assertEqual(json.loads(body)["file"], "20260214_My_Holiday__1_.jpeg")

    async def test_name_parameter_and_extension_fix(self):
        """name= chooses the base; the extension follows the detected type, not the client."""
        response, body = await self.upload(image_bytes("PNG"), filename="x.jpg", name="fountain.jpg")
        self.assertEqual(json.loads(body)["file"], "20260214_fountain.png")
        self.assertEqual(json.loads(body)["mime"], "image/png")

    async def test_stem_clash_across_extensions(self):
        """A kept name whose stem is taken by another type gets a suffix (derived files share the stem)."""
        await self.upload(image_bytes("PNG"), filename="a.png", keep_name=1)
        response, body = await self.upload(image_bytes("JPEG"), filename="a.jpg", keep_name=1)
        self.assertEqual(json.loads(body)["file"], "20260214_a_2.jpg")

    async def test_hostile_filenames(self):
        """Traversal and markup in kept names are neutralised into [A-Za-z0-9._-]."""
        for filename in ["../../etc/passwd.jpg", "<script>alert(1)</script>.jpg", "..\\..\\boot.ini.jpg"]:
            response, body = await self.upload(filename=filename, keep_name=1)
            self.assertEqual(response.code, 200, body)
            name = json.loads(body)["file"]
            self.assertRegex(name, r"^20260214_[A-Za-z0-9_][A-Za-z0-9._-]*\.jpg$")
            self.assertNotIn("..", name)

    async def test_every_type(self):
        """JPEG, PNG, BMP and WEBP are accepted and typed from their bytes."""
        for fmt, mime, ext in [("JPEG", "image/jpeg", ".jpg"), ("PNG", "image/png", ".png"),
                               ("BMP", "image/bmp", ".bmp"), ("WEBP", "image/webp", ".webp")]:
            response, body = await self.upload(image_bytes(fmt), filename="noext")
            record = json.loads(body)
            self.assertEqual((response.code, record["mime"]), (200, mime), body)
            self.assertTrue(record["file"].endswith(ext))

    async def test_lifetimes(self):
        """expire is honoured within the size tier; a short one becomes 1 hour; junk becomes the default."""
        cases = [("2h", T0 + 7200), ("PT5M", T0 + 3600), ("30", T0 + 3600), ("never", None),
                 ("banana", None), ("400d", None), ("P3D", T0 + 3 * 86400)]
        from imgshare.domain.output import iso_time

        for expire, expected in cases:
            response, body = await self.upload(expire=expire)
            got = json.loads(body)["expires"]
            self.assertEqual(got, None if expected is None else iso_time(expected), expire)
            self.assertEqual(response.headers.getRawHeaders("imgshare-expires"), [got or "never"])

    async def test_size_tiers(self):
        """A file over 2 MiB cannot be permanent: it gets its tier's default (90 days)."""
        from imgshare.domain.output import iso_time

        big = image_bytes("BMP", (1100, 700))  # ~2.3 MB uncompressed
        self.assertGreater(len(big), 2 * 1024 * 1024)
        response, body = await self.upload(big, expire="never")
        self.assertEqual(json.loads(body)["expires"], iso_time(T0 + 90 * 86400))


class UploadErrorTests(ApiTestCase):
    async def test_missing_or_bad_token(self):
        """No token, an unknown one, a malformed one, or an expired one: 401, nothing stored."""
        expired = await self.f.token("kitten", expires=T0)
        for token in [False, "0" * 32, "not-a-token", expired]:
            response, body = await self.upload(token=token)
            self.error(response, body, 401)
        self.assertEqual(self.f.storage.objects, {})

    async def test_deleted_token_stops_at_once(self):
        """A deleted token is refused on the very next request."""
        [token] = await self.f.database.run(db.list_tokens, "kitten", T0)
        await self.f.database.run(db.delete_token, "kitten", token.id)
        response, body = await self.upload()
        self.error(response, body, 401)

    async def test_wrong_method(self):
        """GET on an upload endpoint: 405 with Allow."""
        response, body = await self.client.request("GET", URL + "img_upload.php?token=" + self.token)
        self.error(response, body, 405)
        self.assertEqual(response.headers.getRawHeaders("allow"), ["POST"])

    async def test_missing_file(self):
        """A form without a file part: 400."""
        response, body = await self.post("img_upload.php", token=self.token)
        self.assertIn("file", self.error(response, body, 400))

    async def test_unsupported_types(self):
        """GIF, TIFF, SVG, text and empty files: 415 (or 400 for empty), nothing stored."""
        import io

        from PIL import Image

        gif = io.BytesIO()
        Image.new("P", (4, 4)).save(gif, "GIF")
        tiff = io.BytesIO()
        Image.new("RGB", (4, 4)).save(tiff, "TIFF")
        for data in [gif.getvalue(), tiff.getvalue(), b"<svg xmlns='http://www.w3.org/2000/svg'/>", b"hello"]:
            response, body = await self.upload(data, filename="x.jpg")
            self.error(response, body, 415)
        response, body = await self.upload(b"", filename="x.jpg")
        self.error(response, body, 400)
        self.assertEqual(self.f.storage.objects, {})

    async def test_truncated_and_garbage_images(self):
        """A JPEG cut inside its header, and a PNG with a broken header: 400."""
        jpeg = image_bytes("JPEG")
        response, body = await self.upload(jpeg[:20])
        self.error(response, body, 400)
        png = bytearray(image_bytes("PNG"))
        png[20] ^= 0xFF  # IHDR CRC no longer matches
        response, body = await self.upload(bytes(png))
        self.error(response, body, 400)

    async def test_decompression_bomb_header(self):
        """A PNG whose header claims 20000x20000 pixels: 413 from the header alone."""
        response, body = await self.upload(png_header_claiming(20000, 20000), filename="bomb.png")
        self.assertIn("pixels", self.error(response, body, 413))
        self.assertEqual(self.f.storage.objects, {})

    async def test_storage_failure(self):
        """Storage down during upload: 503, nothing is served or left once storage is back."""
        from imgshare.expiry import expire_once

        self.f.storage.available = False
        response, body = await self.upload(keep_name=1)
        self.error(response, body, 503)
        response, _ = await self.client.request("GET", "http://img.example/img/kitten/20260214_photo.jpg")
        self.assertEqual(response.code, 404)
        self.f.storage.available = True
        await expire_once(self.f.database, self.f.library, self.f.clock.seconds())
        self.assertEqual(self.f.storage.objects, {})
        self.assertIsNone(await self.f.database.run(db.get_image, "kitten", "20260214_photo.jpg"))
        response, body = await self.upload(keep_name=1)
        self.assertEqual(json.loads(body)["file"], "20260214_photo.jpg")

    async def test_garbage_multipart(self):
        """Malformed multipart bodies: 400, nothing stored."""
        bad = [
            (b"garbage", b"multipart/form-data; boundary=xyz"),
            (b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n\r\nabc", b"multipart/form-data; boundary=xyz"),
            (b"--xyz\r\nX: y\r\n\r\nabc\r\n--xyz--\r\n", b"multipart/form-data; boundary=xyz"),
            (b"anything", b"multipart/form-data"),
        ]
        for body, ctype in bad:
            response, out = await self.client.request(
                "POST", URL + "img_upload.php?token=" + self.token, data=body, headers={b"Content-Type": [ctype]})
            self.error(response, out, 400)
        self.assertEqual(self.f.storage.objects, {})

    async def test_truncated_upload_body(self):
        """A multipart body cut off inside the file part: 400."""
        body, headers = multipart({"token": self.token}, {"file": ("a.jpg", image_bytes())})
        response, out = await self.client.request(
            "POST", URL + "img_upload.php", data=body[: len(body) // 2], headers=headers)
        self.error(response, out, 400)

    async def test_text_format_errors(self):
        """Errors in text format are status=error / error=... lines."""
        response, body = await self.upload(token="0" * 32, format="text")
        self.assertEqual(response.code, 401)
        self.assertEqual(body.decode().splitlines()[0], "status=error")
        self.assertTrue(body.decode().splitlines()[1].startswith("error="))


class RateLimitTests(unittest.TestCase):
    async def test_per_ip_and_per_token(self):
        """Over the per-IP or per-token limit: 429 with Retry-After; time refills the bucket."""
        f = await make_fixture(self, rate_ip=RateLimit(3, 60.0), rate_token=RateLimit(100, 60.0))
        client = f.client()
        for _ in range(3):
            response, _ = await client.request("GET", URL + "limits")
            self.assertEqual(response.code, 200)
        response, body = await client.request("GET", URL + "limits")
        self.assertEqual(response.code, 429)
        self.assertEqual(response.headers.getRawHeaders("retry-after"), ["20"])
        f.clock.advance(20)
        response, _ = await client.request("GET", URL + "limits")
        self.assertEqual(response.code, 200)

        f = await make_fixture(self, rate_ip=RateLimit(100, 60.0), rate_token=RateLimit(2, 60.0))
        await f.account("kitten")
        token = await f.token("kitten")
        client = f.client()
        codes = []
        for _ in range(3):
            response, _ = await client.request(
                "POST", URL + "img_delete.php", data={"token": token, "file": "20260214_x.jpg"})
            codes.append(response.code)
        self.assertEqual(codes, [404, 404, 429])


class DeleteTests(ApiTestCase):
    async def _uploaded(self, **fields):
        response, body = await self.upload(**fields)
        return json.loads(body)

    async def test_delete_by_name_and_url(self):
        """img_delete takes the name or the URL of any version; afterwards the original is 404."""
        for reference in ["{file}", "{urls[original]}", "{urls[xga]}", "/img/kitten/qvga/{stem}.jpg"]:
            record = await self._uploaded()
            value = reference.format(stem=record["file"][:-4], **record)
            response, body = await self.post("img_delete.php", token=self.token, file=value)
            self.assertEqual(response.code, 200, body)
            self.assertEqual(json.loads(body), {"status": "ok", "deleted": record["file"]})
            response, _ = await self.client.request("GET", record["urls"]["original"])
            self.assertEqual(response.code, 404)

    async def test_delete_multipart_and_text(self):
        """img_delete accepts multipart fields and answers in text format."""
        record = await self._uploaded()
        body, headers = multipart({"token": self.token, "file": record["file"], "format": "text"})
        response, out = await self.client.request("POST", URL + "img_delete.php", data=body, headers=headers)
        self.assertEqual(out.decode(), f"status=ok\ndeleted={record['file']}\n")

    async def test_other_accounts_file(self):
        """Deleting another account's file by URL: 403; by bare name: 404 (names are per account)."""
        record = await self._uploaded()
        response, body = await self.post("img_delete.php", token=self.bear_token, file=record["urls"]["original"])
        self.error(response, body, 403)
        response, body = await self.post("img_delete.php", token=self.bear_token, file=record["file"])
        self.error(response, body, 404)
        response, _ = await self.client.request("GET", record["urls"]["original"])
        self.assertEqual(response.code, 200)

    async def test_bad_references(self):
        """Missing, unknown, twice-deleted and garbage references: 400 or 404."""
        record = await self._uploaded()
        response, body = await self.post("img_delete.php", token=self.token)
        self.error(response, body, 400)
        response, body = await self.post("img_delete.php", token=self.token, file="20260214_nothere.jpg")
        self.error(response, body, 404)
        response, body = await self.post("img_delete.php", token=self.token, file="../../etc/passwd")
        self.assertIn(response.code, (400, 404))
        await self.post("img_delete.php", token=self.token, file=record["file"])
        response, body = await self.post("img_delete.php", token=self.token, file=record["file"])
        self.error(response, body, 404)

    async def test_delete_removes_objects(self):
        """After a delete the objects leave storage and the row goes."""
        record = await self._uploaded(keep_name=1)
        await self.post("img_delete.php", token=self.token, file=record["file"])
        self.f.clock.advance(0)
        await self.f.library.drain()
        self.assertEqual(self.f.storage.objects, {})
        self.assertIsNone(await self.f.database.run(db.get_image, "kitten", record["file"]))

    async def test_delete_during_storage_outage(self):
        """With storage down, a delete still answers 200 and the file is 404 at once."""
        record = await self._uploaded()
        self.f.storage.available = False
        response, body = await self.post("img_delete.php", token=self.token, file=record["file"])
        self.assertEqual(response.code, 200)
        self.f.clock.advance(0)
        await self.f.library.drain()
        self.f.storage.available = True
        response, _ = await self.client.request("GET", record["urls"]["original"])
        self.assertEqual(response.code, 404)
        image = await self.f.database.run(db.get_image, "kitten", record["file"])
        self.assertEqual(image.state, "deleted")


class OtherEndpointTests(ApiTestCase):
    async def test_universe_delete(self):
        """universe_delete answers 403 to a valid token and 401 without one."""
        response, body = await self.client.request("GET", URL + "universe_delete.php?token=" + self.token)
        self.error(response, body, 403)
        response, body = await self.client.request("GET", URL + "universe_delete.php")
        self.error(response, body, 401)
        response, body = await self.client.request("POST", URL + "universe_delete.php", data={"token": self.token})
        self.error(response, body, 405)

    async def test_limits(self):
        """limits needs no token and states sizes, types, tiers and rate limits."""
        response, body = await self.client.request("GET", URL + "limits")
        limits = json.loads(body)
        self.assertEqual(limits["max_size"], 32 * 1024 * 1024)
        self.assertEqual(limits["types"], ["image/jpeg", "image/png", "image/bmp", "image/webp"])
        self.assertEqual(limits["tiers"][0], {"max_size": 2097152, "permanent": True, "longest": None, "default": None})
        self.assertEqual(limits["tiers"][2]["longest"], 7 * 86400)
        self.assertIn("per_token", limits["rate_limits"])
        response, body = await self.client.request("GET", URL + "limits?format=text")
        self.assertIn(b"max_size=33554432\n", body)

    async def test_limits_txt(self):
        """limits?format=txt is the text format, flat like format=text (no dict reprs)."""
        _, text = await self.client.request("GET", URL + "limits?format=text")
        response, body = await self.client.request("GET", URL + "limits?format=txt")
        self.assertEqual(body, text)
        self.assertNotIn(b"{", body)

    async def test_unknown_endpoint(self):
        """Unknown API paths answer a JSON 404."""
        response, body = await self.client.request("GET", URL + "nothing.php")
        self.error(response, body, 404)

    async def test_gather_without_gatherer(self):
        """A server built without a gatherer answers img_gather.php with 501 after authentication."""
        response, body = await self.post("img_gather.php", token=self.token, url="https://example.com/a.jpg")
        self.error(response, body, 501)


class AccountRemovedTests(ApiTestCase):
    async def test_upload_for_a_removed_account(self):
        """An upload whose account is removed while it is under way is refused (401) and leaves nothing."""
        real = self.f.library.io.run

        def remove_during_inspect(f, *args, **kwargs):
            result = real(f, *args, **kwargs)
            if getattr(f, "__name__", "") == "inspect_file":
                return result.addCallback(
                    lambda info: self.f.database.run(db.delete_account, "kitten", T0).addCallback(lambda _: info)
                )
            return result

        self.patch(self.f.library.io, "run", remove_during_inspect)
        response, body = await self.upload(keep_name=1)
        self.error(response, body, 401)
        self.assertEqual(self.f.storage.objects, {})
        self.assertIsNone(await self.f.database.run(db.get_image, "kitten", "20260214_photo.jpg"))
