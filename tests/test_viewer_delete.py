"""The public viewer page /i/<account>/<file> and the secret delete links
/delete/<account>/<file>/<secret> (SPEC section 9, PEERS section 3)."""

from __future__ import annotations

import html
import io
import json
from urllib.parse import urlsplit

from PIL import Image
from twisted.trial import unittest

from imgshare import db
from imgshare.config import RateLimit
from imgshare.domain import naming
from imgshare.testing import T0, exif_orientation, image_bytes, make_fixture, multipart
from tests.test_chevereto import sharex_body
from tests.test_pages import SITE, Browser

API = SITE + "/api/v1/img_upload.php"
HOSTILE = 'x"><script>alert(1)</script>[b]*_.png'


class LinkTestCase(unittest.TestCase):
    async def setUp(self):
        self.f = await make_fixture(self)
        await self.f.account("kitten")
        self.token = await self.f.token("kitten")
        self.client = self.f.client()

    async def upload(self, filename="fountain.png", size=(2000, 1000), **fields):
        body, headers = multipart({"token": self.token, **fields},
                                  {"file": (filename, image_bytes("PNG", size))})
        response, out = await self.client.request("POST", API, data=body, headers=headers)
        self.assertEqual(response.code, 200, out)
        return json.loads(out)

    async def fetch(self, method, url, **kwargs):
        return await self.client.request(method, url, allow_redirects=False, **kwargs)

    async def served(self, record):
        codes = []
        for url in [record["urls"]["original"], record["viewer"]]:
            response, _ = await self.fetch("GET", url)
            codes.append(response.code)
        return codes


class DeleteLinkTests(LinkTestCase):
    async def test_upload_answers_a_secret_link(self):
        """Every upload answer has a delete link with a 32-hex secret; only its digest is stored."""
        record = await self.upload()
        prefix = f"{self.f.config.public_url}/delete/kitten/{record['file']}/"
        self.assertTrue(record["delete_url"].startswith(prefix), record["delete_url"])
        secret = record["delete_url"][len(prefix):]
        self.assertRegex(secret, r"^[0-9a-f]{32}$")
        image, digest = await self.f.database.run(db.get_image_and_delete_digest, "kitten", record["file"])
        self.assertNotEqual(digest, secret)
        self.assertEqual(len(digest), 64)

    async def test_get_and_head_never_delete(self):
        """GET shows a confirmation page with one POST button; GET and HEAD change nothing."""
        record = await self.upload()
        for method in ("GET", "HEAD", "GET"):
            response, body = await self.fetch(method, record["delete_url"])
            self.assertEqual(response.code, 200, body)
            self.assertEqual(response.headers.getRawHeaders("cache-control"), ["no-store"])
            self.assertEqual(response.headers.getRawHeaders("referrer-policy"), ["no-referrer"])
            self.assertEqual(response.headers.getRawHeaders("x-robots-tag"), ["noindex, nofollow"])
        self.assertIn(b"Delete permanently", body)
        self.assertIn(record["file"].encode(), body)
        self.assertEqual(await self.served(record), [200, 200])

    async def test_post_from_the_page_deletes(self):
        """The confirmation page's button deletes: every version 404 at once."""
        record = await self.upload()
        browser = Browser(self.f)
        path = urlsplit(record["delete_url"]).path
        token = await browser.csrf(path)
        self.assertIsNotNone(token)
        response, body = await browser.post(path, {"csrf": token})
        self.assertEqual(response.code, 200, body)
        self.assertEqual(await self.served(record), [404, 404])
        response, _ = await self.fetch("GET", record["urls"]["xga"])
        self.assertEqual(response.code, 404)

    async def test_post_without_the_page_token_is_refused(self):
        """A cross-site POST (no token from the confirmation page) deletes nothing."""
        record = await self.upload()
        response, _ = await self.fetch("POST", record["delete_url"], data={"csrf": "forged"})
        self.assertEqual(response.code, 403)
        self.assertEqual(await self.served(record), [200, 200])

    async def test_delete_method_answers_json(self):
        """DELETE deletes and answers JSON; the link then answers 404."""
        record = await self.upload()
        response, body = await self.fetch("DELETE", record["delete_url"])
        self.assertEqual(response.code, 200, body)
        self.assertEqual(json.loads(body), {"status": "ok", "deleted": record["file"]})
        self.assertEqual(await self.served(record), [404, 404])
        response, body = await self.fetch("DELETE", record["delete_url"])
        self.assertEqual(response.code, 404)

    async def test_works_after_the_token_is_deleted(self):
        """The link is no API credential: it keeps working once the uploading token is gone."""
        record = await self.upload()
        for token in await self.f.database.run(db.list_tokens, "kitten", T0):
            await self.f.database.run(db.delete_token, "kitten", token.id)
        response, _ = await self.fetch("DELETE", record["delete_url"])
        self.assertEqual(response.code, 200)

    async def test_one_identical_404(self):
        """Wrong secret, unknown image, deleted, expired, pre-link image: the same 404."""
        good = await self.upload("a.png")
        gone = await self.upload("b.png")
        await self.fetch("DELETE", gone["delete_url"])
        short = await self.upload("c.png", expire="1h")
        self.f.clock.advance(3601)
        wrong = good["delete_url"][:-1] + ("0" if good["delete_url"][-1] != "0" else "1")
        base = f"{SITE}/delete/kitten/"
        urls = [wrong, base + "20260214_nothing.png/" + "0" * 32, gone["delete_url"],
                short["delete_url"], base + good["file"], base + good["file"] + "/short"]
        for method in ("GET", "DELETE"):
            answers = set()
            for url in urls:
                response, body = await self.fetch(method, url)
                headers = sorted((k, tuple(v)) for k, v in response.headers.getAllRawHeaders()
                                 if k.lower() not in (b"date", b"set-cookie"))
                answers.add((response.code, body, tuple(headers)))
            self.assertEqual(len(answers), 1, (method, answers))
            self.assertEqual(next(iter(answers))[0], 404)
        self.assertEqual(await self.served(good), [200, 200])

    async def test_rate_limited_per_address(self):
        """Guessing secrets is rate-limited per client address (429 with Retry-After)."""
        self.f = await make_fixture(self, rate_ip=RateLimit(3, 60.0))
        await self.f.account("kitten")
        self.token = await self.f.token("kitten")
        self.client = self.f.client()
        url = f"{SITE}/delete/kitten/20260214_x.png/" + "0" * 32
        codes = [(await self.fetch("GET", url))[0].code for _ in range(5)]
        self.assertEqual(codes[:3], [404, 404, 404])
        self.assertEqual(codes[3:], [429, 429])


class ViewerTests(LinkTestCase):
    async def test_page_facts_links_and_card(self):
        """The viewer page shows the XGA copy, links to every version and the card tags."""
        record = await self.upload()
        response, body = await self.fetch("GET", record["viewer"])
        self.assertEqual(response.code, 200)
        page = body.decode()
        urls = record["urls"]
        for url in urls.values():
            self.assertIn(html.escape(url), page)
        self.assertIn(f'<meta property="og:image" content="{urls["xga"]}"', page)
        self.assertIn('<meta property="og:image:width" content="1024"', page)
        self.assertIn('<meta property="og:image:height" content="512"', page)
        self.assertIn(f'<meta property="og:url" content="{record["viewer"]}"', page)
        self.assertIn('content="summary_large_image"', page)
        self.assertNotIn("/thumb/", page)
        self.assertNotIn(self.token, page)

    async def test_embed_codes(self):
        """Direct link, BBCode, HTML and Markdown are there, in read-only fields."""
        record = await self.upload()
        response, body = await self.fetch("GET", record["viewer"])
        page = html.unescape(body.decode())
        self.assertIn(f"[url={record['viewer']}][img]{record['urls']['xga']}[/img][/url]", page)
        self.assertIn(f"]({record['urls']['xga']})]({record['viewer']})", page)
        self.assertIn(f'<a href="{record["viewer"]}"><img src="{record["urls"]["xga"]}"', page)
        self.assertIn("readonly", body.decode())

    async def test_hostile_original_name_is_escaped(self):
        """A hostile client file name never reaches the page unescaped."""
        record = await self.upload(HOSTILE, keep_name="0")
        response, body = await self.fetch("GET", record["viewer"])
        self.assertEqual(response.code, 200)
        self.assertNotIn(b"<script>", body)

    async def test_404_exactly_when_img_is(self):
        """Unknown, deleted and expired images: the viewer answers 404 like /img/."""
        response, _ = await self.fetch("GET", f"{SITE}/i/kitten/20260214_nothing.png")
        self.assertEqual(response.code, 404)
        record = await self.upload("gone.png")
        await self.fetch("DELETE", record["delete_url"])
        self.assertEqual(await self.served(record), [404, 404])
        record = await self.upload("short.png", expire="1h")
        self.assertEqual(await self.served(record), [200, 200])
        self.f.clock.advance(3601)
        self.assertEqual(await self.served(record), [404, 404])


class OrientationTests(LinkTestCase):
    """A phone photo stored sideways with EXIF orientation 6 is reported upright (as
    displayed) by every answer, and every derived size reported matches the copy made."""

    #: Stored 1000 x 750 (landscape pixels), shown 750 x 1000 (portrait).
    STORED = (1000, 750)
    UPRIGHT = (750, 1000)

    def photo(self, orientation=6):
        return image_bytes("JPEG", self.STORED, exif=exif_orientation(orientation), quality=80)

    async def test_every_answer_and_every_derived_size(self):
        data = self.photo()
        body, headers = multipart({"token": self.token}, {"file": ("phone.jpg", data)})
        response, out = await self.client.request("POST", API, data=body, headers=headers)
        self.assertEqual(response.code, 200, out)
        record = json.loads(out)
        self.assertEqual((record["width"], record["height"]), self.UPRIGHT)

        # The same photo through the JSON API and the Chevereto API.
        body, headers = multipart({}, {"file": ("phone.jpg", data)})
        headers[b"Authorization"] = [f"Bearer {self.token}".encode()]
        response, out = await self.client.request("POST", SITE + "/api/v1/upload", data=body, headers=headers)
        self.assertEqual(response.code, 200, out)
        answer = json.loads(out)
        self.assertEqual((answer["width"], answer["height"]), self.UPRIGHT)
        body, headers = sharex_body(self.token, "phone.jpg", data)
        response, out = await self.client.request("POST", SITE + "/api/1/upload", data=body, headers=headers)
        self.assertEqual(response.code, 200, out)
        chevereto = json.loads(out)["image"]
        self.assertEqual((chevereto["width"], chevereto["height"]), self.UPRIGHT)
        self.assertEqual(chevereto["ratio"], 0.75)

        # What each answer says the derived copies measure, before they exist.
        reported = {
            "vga": [(chevereto["medium"]["width"], chevereto["medium"]["height"]),
                    (chevereto["display_width"], chevereto["display_height"])],
            "qvga": [(chevereto["thumb"]["width"], chevereto["thumb"]["height"])],
        }
        self.assertEqual(reported["vga"][0], (360, 480))
        self.assertEqual(reported["qvga"][0], (180, 240))
        page = await self.viewer_page(record)
        self.assertIn("750 × 1000", page)
        self.assertIn('<meta property="og:image:width" content="576"', page)
        self.assertIn('<meta property="og:image:height" content="768"', page)
        for variant, size in (("xga", (576, 768)), ("vga", (360, 480)), ("qvga", (180, 240))):
            self.assertIn(f"{size[0]} × {size[1]}", page, variant)
            reported.setdefault(variant, []).append(size)
        reported["thumb"] = [naming.variant_size(*self.UPRIGHT, "thumb")]

        browser = Browser(self.f)
        await browser.login("kitten")
        response, gallery = await browser.get("/images")
        self.assertEqual(response.code, 200)
        self.assertEqual(gallery.count("JPEG · 750 × 1000 ·"), 3)

        while await self.f.derivations.run_one():
            pass
        stem = record["file"][:-4]
        made = {}
        for variant in naming.VARIANTS:
            response, out = await self.fetch("GET", f"{SITE}/img/kitten/{variant}/{stem}.jpg")
            self.assertEqual(response.code, 200, variant)
            made[variant] = Image.open(io.BytesIO(out)).size
        response, out = await browser.client.request("GET", f"{SITE}/thumb/kitten/{stem}.jpg",
                                                     headers=browser._headers(None))
        self.assertEqual(response.code, 200)
        made["thumb"] = Image.open(io.BytesIO(out)).size
        for variant, sizes in reported.items():
            for size in sizes:
                self.assertEqual(size, made[variant], variant)

        # Once the copies exist the pages read their sizes from them: still the same.
        page = await self.viewer_page(record)
        self.assertIn('<meta property="og:image:width" content="576"', page)
        self.assertIn("360 × 480", page)
        # The original is stored byte for byte.
        response, out = await self.fetch("GET", record["urls"]["original"])
        self.assertEqual(out, data)

    async def test_orientations_8_and_3(self):
        """Orientation 8 (the other quarter turn) swaps the sides; 3 (upside down) keeps them."""
        for orientation, expected in ((8, self.UPRIGHT), (3, self.STORED)):
            body, headers = multipart({"token": self.token}, {"file": ("o.jpg", self.photo(orientation))})
            response, out = await self.client.request("POST", API, data=body, headers=headers)
            self.assertEqual(response.code, 200, out)
            record = json.loads(out)
            self.assertEqual((record["width"], record["height"]), expected, orientation)

    async def test_webp_with_orientation(self):
        """A WEBP's EXIF orientation counts like a JPEG's."""
        data = image_bytes("WEBP", self.STORED, exif=exif_orientation(6))
        body, headers = multipart({"token": self.token}, {"file": ("o.webp", data)})
        response, out = await self.client.request("POST", API, data=body, headers=headers)
        self.assertEqual(response.code, 200, out)
        record = json.loads(out)
        self.assertEqual((record["width"], record["height"]), self.UPRIGHT)
        while await self.f.derivations.run_one():
            pass
        response, out = await self.fetch("GET", record["urls"]["xga"])
        self.assertEqual(Image.open(io.BytesIO(out)).size, (576, 768))

    async def test_corrupt_exif_still_uploads(self):
        """A JPEG whose EXIF block is corrupt is stored, at its header size, and derived."""
        data = image_bytes("JPEG", self.STORED, exif=b"Exif\x00\x00XXnot a TIFF header at all")
        body, headers = multipart({"token": self.token}, {"file": ("bad-exif.jpg", data)})
        response, out = await self.client.request("POST", API, data=body, headers=headers)
        self.assertEqual(response.code, 200, out)
        record = json.loads(out)
        self.assertEqual((record["width"], record["height"]), self.STORED)
        while await self.f.derivations.run_one():
            pass
        response, out = await self.fetch("GET", record["urls"]["xga"])
        self.assertEqual(Image.open(io.BytesIO(out)).size, (1000, 750))

    async def viewer_page(self, record):
        response, body = await self.fetch("GET", record["viewer"])
        self.assertEqual(response.code, 200)
        return body.decode()
