"""The Bearer / X-API-Key JSON API (PEERS section 2) through the in-memory client:
uploads of one file, batches and JSON bodies, and discovery."""

from __future__ import annotations

import json

from twisted.trial import unittest

from imgshare.testing import image_bytes, make_fixture, multipart

B = "http://img.example"
PUBLIC = "https://img.example"
UPLOAD = B + "/api/v1/upload"


class JsonApiTestCase(unittest.TestCase):
    """A fixture with account kitten and a token; helpers for this family's answers."""

    async def setUp(self):
        self.f = await make_fixture(self)
        await self.f.account("kitten")
        self.token = await self.f.token("kitten")
        self.client = self.f.client()

    def bearer(self, token: str | None = None) -> dict:
        return {b"Authorization": [f"Bearer {token or self.token}".encode()]}

    async def call(self, method: str, url: str, body: bytes = b"", headers: dict | None = None, **kwargs):
        """(response, parsed JSON body) of one request."""
        response, out = await self.client.request(method, url, data=body or None, headers=headers or {}, **kwargs)
        if method == "HEAD":
            return response, out
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"], out)
        self.assertEqual(response.headers.getRawHeaders("cache-control"), ["no-store"])
        return response, json.loads(out)

    def error(self, response, answer, status: int) -> str:
        """Check a family error answer; return its message."""
        self.assertEqual(response.code, status, answer)
        self.assertEqual(answer["success"], False)
        self.assertEqual(answer["status"], "error")
        self.assertIsInstance(answer["error"], str)
        return answer["error"]

    async def upload_one(self, data: bytes | None = None, filename: str = "shot.jpg", **fields: str) -> dict:
        """Upload one file with Bearer; the answer's image object."""
        body, headers = multipart(fields, {"file": (filename, data or image_bytes("JPEG", (400, 300)))})
        response, answer = await self.call("POST", UPLOAD, body, {**headers, **self.bearer()})
        self.assertEqual(response.code, 200, answer)
        return answer


class DiscoveryTests(JsonApiTestCase):
    async def test_discovery_needs_no_auth(self):
        response, answer = await self.call("GET", UPLOAD)
        self.assertEqual(response.code, 200)
        self.assertEqual(answer["success"], True)
        self.assertEqual(answer["max_files_per_request"], 10)
        self.assertEqual(answer["max_size"], self.f.config.max_size)
        self.assertIn("upload", answer["routes"])

    async def test_head_discovery(self):
        response, out = await self.call("HEAD", UPLOAD)
        self.assertEqual(response.code, 200)
        self.assertEqual(out, b"")
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])

    async def test_unknown_path_is_json_404(self):
        response, answer = await self.call("GET", B + "/api/v1/upload/nothing-here")
        self.error(response, answer, 404)

    async def test_native_api_still_answers(self):
        response, answer = await self.call("GET", B + "/api/v1/limits")
        self.assertEqual(response.code, 200)
        self.assertEqual(answer["status"], "ok")


def gif_bytes() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("P", (4, 4)).save(out, "GIF")
    return out.getvalue()


def files_body(files: list[tuple[str, str, bytes]], fields: dict[str, str] | None = None,
               boundary: str = "----imgtreeBoundary7MA4YWxk") -> tuple[bytes, dict]:
    """A multipart body of text ``fields`` then file parts (field, filename, bytes), in order;
    the same field name may repeat (seed 002: ``file`` once per image)."""
    out = b""
    for name, value in (fields or {}).items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    for field, filename, data in files:
        out += (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out, {b"Content-Type": [f"multipart/form-data; boundary={boundary}".encode()]}


def json_body(data: dict) -> tuple[bytes, dict]:
    return json.dumps(data).encode(), {b"Content-Type": [b"application/json"]}


PHOTO = image_bytes("JPEG", (400, 300))
PNG = image_bytes("PNG", (40, 30))


class UploadTests(JsonApiTestCase):
    def served(self, account: str = "kitten") -> list[str]:
        return sorted(k for k in self.f.storage.objects if k.startswith(account + "/"))

    async def test_one_file_with_bearer(self):
        """The object at the top level (ImgLink reads data.url) and as images[0] (imgtree)."""
        body, headers = files_body([("file", "fountain.jpg", PHOTO)])
        response, answer = await self.call("POST", UPLOAD, body, {**headers, **self.bearer()})
        self.assertEqual(response.code, 200, answer)
        self.assertEqual(response.headers.getRawHeaders("imgshare-expires"), ["never"])
        self.assertEqual((answer["success"], answer["status"]), (True, "ok"))
        name = answer["file"]
        self.assertRegex(name, r"^20260214_[a-z0-9]{8}\.jpg$")
        self.assertEqual(answer["id"], f"kitten~{name}")
        self.assertEqual(answer["slug"], answer["id"])
        self.assertEqual(answer["user"], "kitten")
        self.assertEqual(answer["url"], f"{PUBLIC}/img/kitten/{name}")
        self.assertEqual(answer["direct_url"], answer["url"])
        self.assertEqual(answer["viewer"], f"{PUBLIC}/i/kitten/{name}")
        qvga = f"{PUBLIC}/img/kitten/qvga/{name}"
        self.assertEqual((answer["thumb_url"], answer["thumbnail"]), (qvga, qvga))
        self.assertRegex(answer["delete_url"], rf"^{PUBLIC}/delete/kitten/{name}/[0-9a-f]{{32}}$")
        self.assertEqual(answer["delete"], answer["delete_url"])
        self.assertEqual((answer["width"], answer["height"], answer["size"], answer["mime"]),
                         (400, 300, len(PHOTO), "image/jpeg"))
        self.assertEqual(answer["original_name"], "fountain.jpg")
        self.assertEqual(answer["created_at"], "2026-02-14T09:30:00Z")
        self.assertIsNone(answer["expires"])
        self.assertEqual(answer["codes"]["bbcode"], f"[img]{answer['url']}[/img]")
        self.assertEqual(answer["codes"]["bbcode_thumb"], f"[url={answer['viewer']}][img]{qvga}[/img][/url]")
        self.assertEqual(answer["codes"]["markdown"], f"![fountain.jpg]({answer['url']})")
        self.assertIn('alt="fountain.jpg"', answer["codes"]["html"])
        self.assertEqual(answer["urls"]["original"], answer["url"])
        one = dict(answer)
        for key in ("success", "status", "images"):
            one.pop(key)
        self.assertEqual(answer["images"], [one])
        self.assertEqual(self.f.storage.objects[f"kitten/{name}"], PHOTO)
        # the delete link works as on every other upload
        path = answer["delete_url"].removeprefix(PUBLIC)
        response, _ = await self.client.request("DELETE", B + path)
        self.assertEqual(response.code, 200)
        response, _ = await self.client.request("GET", B + f"/img/kitten/{name}")
        self.assertEqual(response.code, 404)

    async def test_every_credential_form(self):
        """X-API-Key (ImgLink), Bearer (imgtree), and token or key as a field or in the query."""
        body, headers = files_body([("file", "a.jpg", PHOTO)])
        forms = [
            ({b"X-API-Key": [self.token.encode()]}, UPLOAD, {}),
            ({b"Authorization": [f"bearer {self.token}".encode()]}, UPLOAD, {}),
            ({}, UPLOAD, {"token": self.token}),
            ({}, UPLOAD, {"key": self.token}),
            ({}, UPLOAD + "?token=" + self.token, {}),
            ({}, UPLOAD + "?key=" + self.token, {}),
        ]
        for extra, url, fields in forms:
            body, headers = files_body([("file", "a.jpg", PHOTO)], fields)
            response, answer = await self.call("POST", url, body, {**headers, **extra})
            self.assertEqual(response.code, 200, (extra, url, fields, answer))
        self.assertEqual(len(self.served()), 6)

    async def test_bad_credentials(self):
        body, headers = files_body([("file", "a.jpg", PHOTO)])
        for extra in ({}, {b"X-API-Key": [b"imgs_wrong"]}, {b"Authorization": [b"Bearer nope"]},
                      {b"Authorization": [f"Basic {self.token}".encode()]}):
            response, answer = await self.call("POST", UPLOAD, body, {**headers, **extra})
            self.error(response, answer, 401)
        self.assertEqual(self.f.storage.objects, {})

    async def test_three_files_with_a_gif(self):
        """Each file on its own: the GIF is an entry with its reason, the others are stored."""
        body, headers = files_body([("file", "one.jpg", PHOTO), ("file", "two.gif", gif_bytes()),
                                    ("file", "three.png", PNG)])
        response, answer = await self.call("POST", UPLOAD, body, {**headers, **self.bearer()})
        self.assertEqual(response.code, 200, answer)
        self.assertEqual(answer["success"], True)
        self.assertNotIn("url", answer)  # several files: only the list
        first, second, third = answer["images"]
        self.assertEqual((first["original_name"], first["mime"]), ("one.jpg", "image/jpeg"))
        self.assertEqual(second["filename"], "two.gif")
        self.assertEqual(set(second), {"error", "filename"})
        self.assertIn("unsupported", second["error"].lower())
        self.assertEqual((third["original_name"], third["mime"]), ("three.png", "image/png"))
        self.assertEqual(self.served(), sorted([f"kitten/{first['file']}", f"kitten/{third['file']}"]))

    async def test_any_file_field_name_in_body_order(self):
        """file[] (PHP-style clients), a ShareX FileFormName, mixed: every file part counts."""
        body, headers = files_body([("file[]", "a.jpg", PHOTO), ("image", "b.png", PNG), ("upload", "c.jpg", PHOTO)])
        response, answer = await self.call("POST", UPLOAD, body, {**headers, **self.bearer()})
        self.assertEqual([i["original_name"] for i in answer["images"]], ["a.jpg", "b.png", "c.jpg"])

    async def test_all_files_fail(self):
        """No file stored: the shared status (415 for two GIFs), else 400; nothing stored."""
        body, headers = files_body([("file", "a.gif", gif_bytes()), ("file", "b.gif", gif_bytes())])
        response, answer = await self.call("POST", UPLOAD, body, {**headers, **self.bearer()})
        self.error(response, answer, 415)
        self.assertEqual([e["filename"] for e in answer["images"]], ["a.gif", "b.gif"])
        body, headers = files_body([("file", "a.gif", gif_bytes()), ("file", "b.jpg", PHOTO[:40])])
        response, answer = await self.call("POST", UPLOAD, body, {**headers, **self.bearer()})
        self.error(response, answer, 400)
        body, headers = files_body([("file", "a.gif", gif_bytes())])
        response, answer = await self.call("POST", UPLOAD, body, {**headers, **self.bearer()})
        self.assertIn("unsupported", self.error(response, answer, 415).lower())
        self.assertEqual(self.f.storage.objects, {})
        self.assertEqual(self.spool_left(), [])

    def spool_left(self) -> list[str]:
        import os

        spool = self.f.config.spool_dir
        return [n for n in os.listdir(spool) if not n.endswith(".original")] if os.path.isdir(spool) else []

    async def test_a_file_over_max_size_is_an_entry(self):
        """One file past --max-size among good ones: 413 for it, the others stored."""
        self.f.components.site.max_body = 10 ** 9
        big = PHOTO + b"\0" * (self.f.config.max_size - len(PHOTO) + 1)
        body, headers = files_body([("file", "big.jpg", big), ("file", "ok.jpg", PHOTO)])
        response, answer = await self.call("POST", UPLOAD, body, {**headers, **self.bearer()})
        self.assertEqual(response.code, 200, answer)
        self.assertIn("too large", answer["images"][0]["error"])
        self.assertEqual(answer["images"][1]["original_name"], "ok.jpg")
        self.assertEqual(len(self.served()), 1)
        self.assertEqual(self.spool_left(), [])

    async def test_too_many_or_no_files(self):
        body, headers = files_body([("file", f"{i}.jpg", PNG) for i in range(11)])
        response, answer = await self.call("POST", UPLOAD, body, {**headers, **self.bearer()})
        self.assertIn("at most 10", self.error(response, answer, 400))
        body, headers = files_body([], {"expire": "1d"})
        response, answer = await self.call("POST", UPLOAD, body, {**headers, **self.bearer()})
        self.assertIn("no file", self.error(response, answer, 400))
        self.assertEqual(self.f.storage.objects, {})
        self.assertEqual(self.spool_left(), [])

    async def test_options(self):
        """expire / expiration, keep_name, name (one file only: else nothing is stored)."""
        body, headers = files_body([("file", "holiday pic.jpg", PHOTO)], {"keep_name": "true", "expiration": "1d"})
        response, answer = await self.call("POST", UPLOAD, body, {**headers, **self.bearer()})
        self.assertEqual(answer["file"], "20260214_holiday_pic.jpg")
        self.assertEqual(answer["expires"], "2026-02-15T09:30:00Z")
        self.assertEqual(response.headers.getRawHeaders("imgshare-expires"), ["2026-02-15T09:30:00Z"])
        body, headers = files_body([("file", "x.jpg", PHOTO)], {"name": "cat", "expire": "1h"})
        response, answer = await self.call("POST", UPLOAD, body, {**headers, **self.bearer()})
        self.assertEqual(answer["file"], "20260214_cat.jpg")
        body, headers = files_body([("file", "x.jpg", PHOTO), ("file", "y.jpg", PHOTO)], {"name": "cat"})
        response, answer = await self.call("POST", UPLOAD, body, {**headers, **self.bearer()})
        self.assertIn("exactly one file", self.error(response, answer, 400))
        body, headers = files_body([("file", "x.jpg", PHOTO)],
                                   {"albumId": "9f1c", "title": "t", "nsfw": "1", "contentType": "image/gif"})
        response, answer = await self.call("POST", UPLOAD, body, {**headers, **self.bearer()})
        self.assertEqual(response.code, 200, answer)
        self.assertEqual(len(self.served()), 3)
        self.assertEqual(self.spool_left(), [])

    async def test_json_body_with_data_uri(self):
        """Seed 002's JSON upload: file_base64 as a data: URI (or base64), contentType ignored."""
        import base64

        data = "data:image/png;base64," + base64.b64encode(PNG).decode()
        body, headers = json_body({"filename": "screenshot.png", "contentType": "image/jpeg",
                                   "file_base64": data, "albumId": None})
        response, answer = await self.call("POST", UPLOAD, body, {**headers, **self.bearer()})
        self.assertEqual(response.code, 200, answer)
        self.assertEqual((answer["mime"], answer["original_name"]), ("image/png", "screenshot.png"))
        self.assertEqual(answer["images"][0]["id"], answer["id"])
        self.assertEqual(self.f.storage.objects[f"kitten/{answer['file']}"], PNG)
        # the alias, URL-safe and unpadded, with keep_name and the token in the body
        text = base64.urlsafe_b64encode(PHOTO).decode().rstrip("=")
        body, headers = json_body({"filename": "b.jpg", "base64": text, "keep_name": True, "token": self.token})
        response, answer = await self.call("POST", UPLOAD, body, headers)
        self.assertEqual((response.code, answer.get("file")), (200, "20260214_b.jpg"), answer)
        self.assertEqual(self.spool_left(), [])

    async def test_bad_json_bodies(self):
        for raw, status in ((b'{"filename": "a.png"}', 400), (b"[1, 2]", 400), (b"{", 400), (b"", 400),
                            (b'{"file_base64": "!!!not base64!!!"}', 400),
                            (json.dumps({"file_base64": "R0lGODlhAQABAAAAACw="}).encode(), 415)):
            response, answer = await self.call("POST", UPLOAD, raw, {b"Content-Type": [b"application/json"],
                                                                     **self.bearer()})
            self.error(response, answer, status)
        self.assertEqual(self.f.storage.objects, {})
        self.assertEqual(self.spool_left(), [])

    async def test_other_content_types_are_415(self):
        for ctype in (b"text/plain", b"application/x-www-form-urlencoded", b"image/png"):
            response, answer = await self.call("POST", UPLOAD, PNG, {b"Content-Type": [ctype], **self.bearer()})
            self.error(response, answer, 415)
        response, answer = await self.call("POST", UPLOAD, PNG, self.bearer())
        self.error(response, answer, 415)
        self.assertEqual(self.f.storage.objects, {})

    async def test_wrong_method_and_no_redirect(self):
        response, answer = await self.call("PUT", UPLOAD, PNG, self.bearer())
        self.error(response, answer, 405)
        self.assertEqual(response.headers.getRawHeaders("allow"), ["GET, HEAD, POST"])
        body, headers = files_body([("file", "a.jpg", PHOTO)])
        response, answer = await self.call("POST", UPLOAD + "/", body, {**headers, **self.bearer()})
        self.assertEqual(response.code, 200, answer)

    def test_body_limits_while_it_arrives(self):
        """Multipart: max-files x max-size + 64 KiB; JSON: the base64 of one; else one file."""
        from twisted.web.http_headers import Headers

        site, config = self.f.components.site, self.f.config

        class Request:
            def __init__(self, ctype):
                self.requestHeaders = Headers({b"content-type": [ctype]})

            def getHeader(self, name):  # noqa: N802
                return self.requestHeaders.getRawHeaders(name, [None])[0]

        multipart = Request(b"multipart/form-data; boundary=x")
        self.assertEqual(site.max_body_for(b"/api/v1/upload", multipart), 10 * config.max_size + 65536)
        self.assertEqual(site.max_body_for(b"/api/v1/upload/?x=1", multipart), 10 * config.max_size + 65536)
        self.assertEqual(site.max_body_for(b"/api/v1/upload", Request(b"application/json")),
                         -(-4 * config.max_size // 3) + 65536)
        self.assertEqual(site.max_body_for(b"/api/v1/upload", Request(b"text/plain")), config.max_size + 65536)
        self.assertEqual(site.max_body_for(b"/api/v1/img_upload.php", multipart), config.max_size + 65536)

    async def test_rate_limit_in_family_shape(self):
        from imgshare.config import RateLimit

        f = await make_fixture(self, rate_ip=RateLimit(100, 60.0), rate_token=RateLimit(1, 60.0))
        await f.account("kitten")
        token = await f.token("kitten")
        client = f.client()
        body, headers = files_body([("file", "a.jpg", PHOTO)])
        codes = []
        for _ in range(2):
            response, out = await client.request("POST", UPLOAD, data=body,
                                                 headers={**headers, b"X-API-Key": [token.encode()]})
            codes.append(response.code)
        self.assertEqual(codes, [200, 429])
        self.assertEqual(json.loads(out)["success"], False)
        self.assertTrue(response.headers.getRawHeaders("retry-after"))


def sharex_multipart(field: str, filename: str, data: bytes) -> tuple[bytes, dict]:
    """What ShareX's custom uploader sends for Body MultipartFormData: a boundary of
    dashes and ticks, the file part alone, its name as raw UTF-8."""
    boundary = "-" * 27 + "8de4a5b2d3c1f0e"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            "Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {b"Content-Type": [f"multipart/form-data; boundary={boundary}".encode()]}


def sharex_resolve(template: str, answer: dict) -> str:
    """ShareX's ``{json:a.b[0].c}`` (and the old ``$json:…$``) over a JSON answer."""
    import re

    match = re.fullmatch(r"\{json:(.+)\}|\$json:(.+)\$", template)
    assert match, template
    value: object = answer
    for step in (match.group(1) or match.group(2)).split("."):
        name, _, index = step.partition("[")
        value = value[name] if name else value  # type: ignore[index]
        if index:
            value = value[int(index.rstrip("]"))]  # type: ignore[index]
    return str(value)


class ShareXReplayTests(JsonApiTestCase):
    """ShareX configs, sent and read as ShareX does (its own program cannot run here)."""

    async def replay(self, config: dict) -> dict[str, str]:
        url = config["RequestURL"].replace(PUBLIC, B)
        headers = {k.encode(): [v.encode()] for k, v in config["Headers"].items()}
        body, ctype = sharex_multipart(config["FileFormName"], "Ünïcode shot.png", PNG)
        response, answer = await self.call(config["RequestMethod"], url, body, {**ctype, **headers})
        self.assertEqual(response.code, 200, answer)
        return {key: sharex_resolve(config[key], answer) for key in ("URL", "ThumbnailURL", "DeletionURL")}

    async def check_links(self, links: dict[str, str]) -> None:
        response, out = await self.client.request("GET", links["URL"].replace(PUBLIC, B))
        self.assertEqual((response.code, out), (200, PNG))
        await self.f.derivations.run_one()
        response, out = await self.client.request("GET", links["ThumbnailURL"].replace(PUBLIC, B))
        self.assertEqual((response.code, out[:2]), (200, b"\xff\xd8"))
        self.assertIn("/delete/kitten/", links["DeletionURL"])
        response, _ = await self.client.request("DELETE", links["DeletionURL"].replace(PUBLIC, B))
        self.assertEqual(response.code, 200)
        response, _ = await self.client.request("GET", links["URL"].replace(PUBLIC, B))
        self.assertEqual(response.code, 404)

    async def test_the_sxcu_files_of_the_tokens_page(self):
        """All three flavours IMGSHARE hands out work end to end, the v1 one included."""
        from imgshare.domain import sharex

        for flavour in sharex.FLAVOURS:
            links = await self.replay(sharex.uploader(PUBLIC, self.token, flavour))
            await self.check_links(links)

    async def test_seed_002_sharex_config(self):
        """imgtree's printed ShareX config, with Version added and the host changed."""
        config = {
            "Version": "17.0.0",
            "Name": "imgtree",
            "DestinationType": "ImageUploader",
            "RequestMethod": "POST",
            "RequestURL": f"{PUBLIC}/api/v1/upload",
            "Headers": {"Authorization": f"Bearer {self.token}"},
            "Body": "MultipartFormData",
            "FileFormName": "file",
            "URL": "$json:images[0].url$",
            "ThumbnailURL": "$json:images[0].thumb_url$",
            "DeletionURL": "$json:images[0].delete_url$",
        }
        await self.check_links(await self.replay(config))

    async def test_imglink_manual_setup(self):
        """ImgLink's manual ShareX setup: X-API-Key, field file, {json:viewer} or {json:url}."""
        config = {"RequestMethod": "POST", "RequestURL": f"{PUBLIC}/api/v1/upload",
                  "Headers": {"X-API-Key": self.token}, "FileFormName": "file",
                  "URL": "{json:url}", "ThumbnailURL": "{json:thumbnail}", "DeletionURL": "{json:delete}"}
        links = await self.replay(config)
        await self.check_links(links)
