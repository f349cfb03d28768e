"""The caller's images through the Bearer / X-API-Key JSON API (PEERS section 2):
``GET /api/v1/images``, ``GET /api/v1/image/<id>`` (alias ``/images/<id>``) and
``DELETE`` on both paths, with their errors, over the in-memory client."""

from __future__ import annotations

import json
import os

from imgshare import db
from imgshare.config import RateLimit
from imgshare.testing import image_bytes, make_fixture
from tests.test_jsonapi import PUBLIC, B, JsonApiTestCase
from tests.test_pages import Browser

LIST = B + "/api/v1/images"


def one(image_id: str, plural: bool = False) -> str:
    return f"{B}/api/v1/{'images' if plural else 'image'}/{image_id}"


class ImagesTestCase(JsonApiTestCase):
    """Account kitten (with ``self.token``) and bear (with ``self.bear``)."""

    async def setUp(self):
        await super().setUp()
        await self.f.account("bear")
        self.bear = await self.f.token("bear")
        os.makedirs(self.f.config.spool_dir, exist_ok=True)  # as the service does at start-up

    async def stored(self, account: str = "kitten", name: str | None = None, expire: str | None = None):
        """A live image of ``account`` stored through the library (its record)."""
        folder = self.mktemp()
        os.makedirs(folder)
        path = os.path.join(folder, "a.jpg")
        with open(path, "wb") as f:
            f.write(image_bytes("JPEG", (400, 300)))
        return await self.f.library.upload(account, path, "a.jpg", name=name, expire=expire)

    async def listing(self, query: str = "", token: str | None = None):
        response, answer = await self.call("GET", LIST + query, headers=self.bearer(token))
        self.assertEqual(response.code, 200, answer)
        return answer


class ListTests(ImagesTestCase):
    async def test_newest_first_with_paging(self):
        """Newest first, ties by id (the later upload first); pages, total and has_more."""
        names = []
        for i in range(5):
            names.append((await self.stored(name=f"n{i}")).name)
            if i != 2:  # n2 and n3 share their upload time: the id decides
                self.f.clock.advance(1)
        expected = names[::-1]
        answer = await self.listing("?limit=2")
        self.assertEqual([i["file"] for i in answer["images"]], expected[:2])
        self.assertEqual((answer["success"], answer["status"]), (True, "ok"))
        self.assertEqual((answer["page"], answer["limit"], answer["total"], answer["has_more"]), (1, 2, 5, True))
        answer = await self.listing("?limit=2&page=2")
        self.assertEqual([i["file"] for i in answer["images"]], expected[2:4])
        self.assertTrue(answer["has_more"])
        answer = await self.listing("?limit=2&page=3")
        self.assertEqual([i["file"] for i in answer["images"]], expected[4:])
        self.assertEqual((answer["total"], answer["has_more"]), (5, False))
        answer = await self.listing()
        self.assertEqual([i["file"] for i in answer["images"]], expected)
        self.assertEqual((answer["page"], answer["limit"]), (1, 24))

    async def test_entries_are_image_objects_without_delete_links(self):
        """Each entry is the image object of an upload answer, minus its delete link."""
        image = await self.stored(name="fountain")
        entry = (await self.listing())["images"][0]
        self.assertEqual(entry["id"], f"kitten~{image.name}")
        self.assertEqual(entry["url"], f"{PUBLIC}/img/kitten/{image.name}")
        self.assertEqual(entry["viewer"], f"{PUBLIC}/i/kitten/{image.name}")
        self.assertEqual(entry["thumbnail"], f"{PUBLIC}/img/kitten/qvga/{image.stem}.jpg")
        self.assertEqual((entry["width"], entry["height"], entry["original_name"]), (400, 300, "a.jpg"))
        self.assertEqual(entry["created_at"], "2026-02-14T09:30:00Z")
        self.assertNotIn("delete_url", entry)
        self.assertNotIn("delete", entry)

    async def test_limit_is_clamped(self):
        """limit=500 lists at most 100 and says 100."""
        for i in range(101):
            await self.stored(name=f"c{i}")
        answer = await self.listing("?limit=500")
        self.assertEqual((len(answer["images"]), answer["limit"], answer["total"], answer["has_more"]),
                         (100, 100, 101, True))

    async def test_bad_paging_is_400(self):
        """page or limit that is not a whole number of at least 1: 400."""
        for query in ["?page=0", "?limit=0", "?limit=abc", "?page=-1", "?page=1.5", "?page=", "?limit=%202",
                      "?page=" + "9" * 5000]:
            response, answer = await self.call("GET", LIST + query, headers=self.bearer())
            self.error(response, answer, 400)

    async def test_page_past_the_end(self):
        """A page past the end is empty and still says the total, even a huge one."""
        await self.stored()
        for page in ["2", "99999999999999999999999"]:
            answer = await self.listing("?page=" + page)
            self.assertEqual((answer["images"], answer["total"], answer["has_more"]), ([], 1, False))

    async def test_only_served_images_of_the_caller(self):
        """Expired (checked in the query, at its instant), deleted, uploading and other
        accounts' images are never listed."""
        keep = await self.stored(name="keep")
        await self.stored(name="brief", expire="1h")
        gone = await self.stored(name="gone")
        await self.f.library.delete("kitten", gone.name)
        await self.stored("bear", name="bears")
        await self.f.database.run(db.reserve_image, "kitten", "20260214_up.jpg", "20260214_up", "image/jpeg",
                                  1, 1, 1, "ab" * 32, self.f.clock.seconds(), None)
        answer = await self.listing()
        self.assertEqual([i["file"] for i in answer["images"]], ["20260214_brief.jpg", keep.name])
        self.f.clock.advance(3600)
        answer = await self.listing()
        self.assertEqual(([i["file"] for i in answer["images"]], answer["total"]), ([keep.name], 1))
        answer = await self.listing(token=self.bear)
        self.assertEqual([i["file"] for i in answer["images"]], ["20260214_bears.jpg"])

    async def test_credentials(self):
        """Bearer, X-API-Key and ?token= list; nothing or an unknown token: 401."""
        await self.stored()
        for headers, query in [(self.bearer(), ""), ({b"X-API-Key": [self.token.encode()]}, ""),
                               ({}, "?token=" + self.token), ({}, "?key=" + self.token)]:
            response, answer = await self.call("GET", LIST + query, headers=headers)
            self.assertEqual((response.code, answer["total"]), (200, 1))
        response, answer = await self.call("GET", LIST)
        self.error(response, answer, 401)
        response, answer = await self.call("GET", LIST, headers=self.bearer("x" * 43))
        self.error(response, answer, 401)

    async def test_head_and_trailing_slash(self):
        """HEAD answers like GET without a body; /images/ lists too (no redirect)."""
        response, out = await self.call("HEAD", LIST, headers=self.bearer())
        self.assertEqual((response.code, out), (200, b""))
        response, answer = await self.call("GET", LIST + "/", headers=self.bearer())
        self.assertEqual((response.code, answer["total"]), (200, 0))

    async def test_gallery_uses_the_same_listing(self):
        """The /images page lists the same images (db.list_images is the same query)."""
        image = await self.stored(name="gallery")
        await self.stored(name="brief", expire="1h")
        self.f.clock.advance(3600)
        listed = await self.f.library.account_images("kitten", 0, 10)
        self.assertEqual([i.name for i in listed], [image.name])


class GetTests(ImagesTestCase):
    async def test_composite_id_needs_no_token(self):
        """A composite id: 200 without any credential (on both paths), with uploadedAt;
        a credential sent along is not looked at."""
        image = await self.stored(name="fountain")
        for plural in (False, True):
            response, answer = await self.call("GET", one(f"kitten~{image.name}", plural))
            self.assertEqual(response.code, 200, answer)
            self.assertEqual((answer["success"], answer["status"]), (True, "ok"))
            data = answer["data"]
            self.assertEqual((data["id"], data["file"], data["user"]), (f"kitten~{image.name}", image.name, "kitten"))
            self.assertEqual(data["uploadedAt"], "2026-02-14T09:30:00Z")
            self.assertEqual(data["url"], f"{PUBLIC}/img/kitten/{image.name}")
            self.assertNotIn("delete_url", data)
        response, _ = await self.call("GET", one(f"kitten~{image.name}"), headers=self.bearer("x" * 43))
        self.assertEqual(response.code, 200)

    async def test_percent_encoded_separator(self):
        """``%7E`` is ``~``: clients that escape it still name the image."""
        image = await self.stored(name="fountain")
        response, answer = await self.call("GET", one(f"kitten%7E{image.name}"))
        self.assertEqual((response.code, answer["data"]["file"]), (200, image.name))

    async def test_another_accounts_composite_id(self):
        """Another account's image by composite id: public, 200, with any token or none."""
        image = await self.stored("bear", name="bears")
        response, answer = await self.call("GET", one(f"bear~{image.name}"), headers=self.bearer())
        self.assertEqual((response.code, answer["data"]["user"]), (200, "bear"))

    async def test_bare_name_needs_a_token(self):
        """A bare name: 401 without a token, the caller's image with one; another
        account's name is looked up in the caller's account only (404)."""
        image = await self.stored(name="fountain")
        response, answer = await self.call("GET", one(image.name))
        self.error(response, answer, 401)
        for headers, query in [(self.bearer(), ""), ({b"X-API-Key": [self.token.encode()]}, ""),
                               ({}, "?token=" + self.token)]:
            response, answer = await self.call("GET", one(image.name, plural=True) + query, headers=headers)
            self.assertEqual((response.code, answer["data"]["id"]), (200, f"kitten~{image.name}"))
        response, answer = await self.call("GET", one(image.name), headers=self.bearer(self.bear))
        self.error(response, answer, 404)

    async def test_not_served_is_404(self):
        """Unknown, deleted, expired and malformed ids: 404 in the family shape."""
        gone = await self.stored(name="gone")
        await self.f.library.delete("kitten", gone.name)
        brief = await self.stored(name="brief", expire="1h")
        response, _ = await self.call("GET", one(f"kitten~{brief.name}"))
        self.assertEqual(response.code, 200)
        self.f.clock.advance(3600)
        for image_id in [f"kitten~{gone.name}", f"kitten~{brief.name}", "kitten~20260214_nothere.jpg",
                         "nobody~20260214_x.jpg", "kitten~", "~x.jpg", "kitten~..", "a~b~c", "KITTEN~x.jpg",
                         "kitten~%2e%2e"]:
            response, answer = await self.call("GET", one(image_id), headers=self.bearer())
            self.error(response, answer, 404)

    async def test_head(self):
        """HEAD of an image: its GET's status, without a body."""
        image = await self.stored(name="fountain")
        response, out = await self.call("HEAD", one(f"kitten~{image.name}"))
        self.assertEqual((response.code, out), (200, b""))
        response, out = await self.call("HEAD", one("kitten~20260214_nothere.jpg"))
        self.assertEqual(response.code, 404)


class DeleteTests(ImagesTestCase):
    async def versions(self, image) -> dict[str, int]:
        """The status of every version of ``image``: the four /img/ URLs, and the
        private thumbnail as the owner's browser session asks for it."""
        codes = {}
        for key, url in {"original": f"/img/kitten/{image.name}",
                         **{v: f"/img/kitten/{v}/{image.stem}.jpg" for v in ("xga", "vga", "qvga")}}.items():
            response, _ = await self.client.request("GET", B + url)
            codes[key] = response.code
        browser = Browser(self.f)
        await browser.login("kitten")
        response, _ = await browser.client.request("GET", f"{B}/thumb/kitten/{image.stem}.jpg",
                                                   headers=browser._headers())
        codes["thumb"] = response.code
        return codes

    async def test_delete_with_each_credential_on_both_paths(self):
        """Bearer, X-API-Key and ?token=, on /image/ and /images/, composite or bare:
        200 with deleted and id; the image is gone from the listing."""
        cases = [(self.bearer(), "", False, True), ({b"X-API-Key": [self.token.encode()]}, "", True, False),
                 ({}, "?token=" + self.token, True, True), ({}, "?token=" + self.token, False, False)]
        for i, (headers, query, plural, composite) in enumerate(cases):
            image = await self.stored(name=f"d{i}")
            image_id = f"kitten~{image.name}" if composite else image.name
            response, answer = await self.call("DELETE", one(image_id, plural) + query, headers=headers)
            self.assertEqual(response.code, 200, answer)
            self.assertEqual(answer, {"success": True, "status": "ok", "deleted": image.name,
                                      "id": f"kitten~{image.name}"})
        self.assertEqual((await self.listing())["total"], 0)

    async def test_every_version_404_after(self):
        """From the DELETE's answer on, every version answers 404; the objects go."""
        image = await self.stored(name="fountain")
        await self.f.derivations.run_one()
        self.assertEqual(set((await self.versions(image)).values()), {200})
        response, answer = await self.call("DELETE", one(f"kitten~{image.name}"), headers=self.bearer())
        self.assertEqual(response.code, 200, answer)
        self.assertEqual(set((await self.versions(image)).values()), {404})
        response, answer = await self.call("GET", one(f"kitten~{image.name}"))
        self.error(response, answer, 404)
        self.f.clock.advance(0)
        await self.f.library.drain()
        self.assertEqual(self.f.storage.objects, {})

    async def test_every_version_404_during_a_storage_outage(self):
        """Storage down: the DELETE still answers 200 and every version is 404 at once;
        the objects are removed once storage is back (the expiry service retries)."""
        image = await self.stored(name="fountain")
        await self.f.derivations.run_one()
        self.f.storage.available = False
        response, answer = await self.call("DELETE", one(image.name, plural=True), headers=self.bearer())
        self.assertEqual(response.code, 200, answer)
        self.f.clock.advance(0)
        await self.f.library.drain()
        self.assertEqual(set((await self.versions(image)).values()), {404})
        self.assertNotEqual(self.f.storage.objects, {})
        self.f.storage.available = True
        self.f.clock.advance(60)
        from imgshare.expiry import expire_once

        await expire_once(self.f.database, self.f.library, self.f.clock.seconds())
        self.assertEqual(self.f.storage.objects, {})

    async def test_another_accounts_image_is_403(self):
        """bear deleting kitten's image by composite id: 403, and nothing changes; by
        bare name it names bear's own (absent) file: 404."""
        image = await self.stored(name="fountain")
        for plural in (False, True):
            response, answer = await self.call("DELETE", one(f"kitten~{image.name}", plural),
                                               headers=self.bearer(self.bear))
            self.error(response, answer, 403)
        response, answer = await self.call("DELETE", one(image.name), headers=self.bearer(self.bear))
        self.error(response, answer, 404)
        self.assertIsNotNone(await self.f.library.served_image("kitten", image.name))

    async def test_unknown_and_twice_is_404(self):
        """Unknown, malformed, or already deleted: 404."""
        image = await self.stored(name="fountain")
        await self.call("DELETE", one(image.name), headers=self.bearer())
        for image_id in [image.name, f"kitten~{image.name}", "20260214_nothere.jpg", "..", "a~b~c"]:
            response, answer = await self.call("DELETE", one(image_id), headers=self.bearer())
            self.error(response, answer, 404)

    async def test_needs_a_token(self):
        """No or an unknown credential: 401, even for a composite id; nothing is deleted."""
        image = await self.stored(name="fountain")
        for headers in [{}, self.bearer("x" * 43)]:
            response, answer = await self.call("DELETE", one(f"kitten~{image.name}"), headers=headers)
            self.error(response, answer, 401)
        self.assertIsNotNone(await self.f.library.served_image("kitten", image.name))


class RoutingTests(ImagesTestCase):
    async def test_wrong_methods_are_405_with_allow(self):
        """POST or PUT: 405 JSON naming the methods in Allow."""
        image = await self.stored(name="fountain")
        for method, url, allow in [("POST", LIST, "GET, HEAD"), ("DELETE", LIST, "GET, HEAD"),
                                   ("POST", one(f"kitten~{image.name}"), "GET, HEAD, DELETE"),
                                   ("PUT", one(image.name, plural=True), "GET, HEAD, DELETE")]:
            response, answer = await self.call(method, url, headers=self.bearer())
            self.error(response, answer, 405)
            self.assertEqual(response.headers.getRawHeaders("allow"), [allow])
        self.assertIsNotNone(await self.f.library.served_image("kitten", image.name))

    async def test_unknown_paths_are_json_404(self):
        for path in ["/api/v1/image", "/api/v1/image/", "/api/v1/image/a/b", "/api/v1/images/x/y",
                     "/api/v1/imagesx"]:
            response, answer = await self.call("GET", B + path, headers=self.bearer())
            self.assertEqual(response.code, 404, path)
            self.assertEqual(answer["status"], "error")


class RateLimitTests(JsonApiTestCase):
    async def test_address_limit_then_token_limit(self):
        """Over the address's limit: 429 with Retry-After before any auth; over the
        token's: 429 after it, from fresh addresses too."""
        f = await make_fixture(self, rate_ip=RateLimit(2, 60.0), rate_token=RateLimit(3, 60.0))
        await f.account("kitten")
        token = await f.token("kitten")
        headers = {b"Authorization": [f"Bearer {token}".encode()]}
        client = f.client("192.0.2.1")
        codes = []
        for _ in range(3):
            response, _ = await client.request("GET", LIST)
            codes.append(response.code)
        self.assertEqual(codes, [401, 401, 429])
        self.assertTrue(response.headers.getRawHeaders("retry-after"))
        codes = []
        for i in range(4):
            response, body = await f.client(f"192.0.2.{10 + i}").request(
                "DELETE", one("20260214_x.jpg"), headers=headers)
            codes.append(response.code)
        self.assertEqual(codes, [404, 404, 404, 429])
        self.assertTrue(response.headers.getRawHeaders("retry-after"))
        self.assertEqual(json.loads(body)["success"], False)
