"""Keyset pagination: cursors (``domain.cursors``), ``db.find_images_at`` on every
database backend the contract tests run on (SQLite threaded and synchronous,
PostgreSQL), ``GET /api/v1/images?after=|before=`` and the gallery's Newer/Older
links (plain links: through StubTreq, and in Chromium with and without JavaScript),
with images added and deleted between pages and hostile cursors."""

from __future__ import annotations

import base64
import html
import re

from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from imgshare import db
from imgshare.domain import cursors, errors
from imgshare.domain.records import DELETED
from imgshare.testing import image_bytes, open_sqlite, open_sqlite_sync
from imgshare.web.pages.images import PAGE_SIZE
from tests.serverprocess import admin
from tests.test_backends_production import open_postgres
from tests.test_browser import PASSWORD, ServerTestCase, api_upload
from tests.test_jsonapi import B, JsonApiTestCase
from tests.test_pages import PagesTestCase

T = 1_771_061_400.0
LIST = B + "/api/v1/images"


def raw(text: str) -> str:
    """``text`` encoded as a cursor is on the wire (for cursors ``encode`` never makes)."""
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


class CursorTests(unittest.TestCase):
    def test_round_trip(self):
        """A cursor names its sort, key and id exactly (an upload time to the last bit)."""
        for position in (cursors.Position("newest", T + 0.1, 7), cursors.Position("oldest", 1e-7, 1),
                         cursors.Position("largest", 2**63 - 1, 2**63 - 1), cursors.Position("newest", -2.5, 3)):
            cursor = cursors.encode(position)
            self.assertRegex(cursor, r"\A[A-Za-z0-9_-]+\Z")
            self.assertEqual(cursors.decode(cursor, position.sort), position)

    def test_hostile_cursors_refused(self):
        """Garbage, a huge cursor, a bad key or id, another sort's: BadRequest, saying why."""
        bad = ["", "!!!", "a" * 101, "x" * 5000, raw("n.1.2.3.4"), raw("n.abc.1"), raw("n.1.0"), raw("n.1.-1"),
               raw("n.inf.1"), raw("n.nan.1"), raw("n.1e999.1"), raw("n.1." + "9" * 20), raw("q.1.1"),
               raw("l.1.5.1"), raw("l.-1.1"), raw("l.01.1"), raw("n. 1.1"), raw("n.1.1\n"), "bi4xLjE=",
               raw("n.1"), raw("n"), base64.urlsafe_b64encode(b"\xff\xfe.1.1").decode().rstrip("=")]
        for cursor in bad:
            with self.assertRaises(errors.BadRequest, msg=cursor):
                cursors.decode(cursor, "newest" if not cursor.startswith("bC") else "largest")
        with self.assertRaises(errors.BadRequest) as refused:
            cursors.decode(cursors.encode(cursors.Position("largest", 5, 1)), "newest")
        self.assertIn("sort=largest", refused.exception.message)


class KeysetContract:
    """``db.find_images_at`` on one backend (``make_database``)."""

    async def make_database(self):
        raise NotImplementedError

    async def setUp(self):
        self.database = await self.make_database()
        for account in ("kitten", "bear"):
            await self.database.run(db.create_account, account, "h", False, T)
        self.names = {}

    async def add(self, account, name, uploaded, size=10, expires=None, original=""):
        image = await self.database.run(
            db.reserve_image, account, name, name.rsplit(".", 1)[0], "image/jpeg", size, 4, 3, "ab" * 32,
            uploaded, expires, False, original)
        return await self.database.run(db.commit_image, image.id, uploaded)

    async def fill(self):
        """20 images of kitten: every fourth shares its predecessor's upload time, sizes
        repeat in threes (ties broken by id); bear's images interleaved; one expired and
        one deleted of kitten's that are never listed."""
        images = []
        for i in range(20):
            images.append(await self.add("kitten", f"20260214_k{i}.jpg", T + i - (i % 4 == 3), size=100 + i // 3,
                                         original=f"cat{i % 2}.jpg"))
            await self.add("bear", f"20260214_b{i}.jpg", T + i + 0.5, size=100 + i)
        await self.add("kitten", "20260214_gone.jpg", T + 5.5, expires=T + 30)
        deleted = await self.add("kitten", "20260214_del.jpg", T + 6.5)
        await self.database.run(db.mark_deleted, deleted.id, T + 40)
        return images

    async def walk(self, sort, search="", limit=3, now=T + 100, before=False):
        """Every page from the far end, each read at the place of the previous one's edge
        image; the names in the sort's order, and the last total."""
        descending = db.ORDER_KEYS[sort][1]
        key, image_id = (10**15 if descending != before else -(10**15)), 2**62
        names = []
        while True:
            page, more, total = await self.database.run(
                db.find_images_at, "kitten", now, key, image_id, before, limit, sort, search)
            self.assertLessEqual(len(page), limit)
            names = ([i.name for i in page] + names) if before else (names + [i.name for i in page])
            if not more:
                return names, total
            position = cursors.position_of(sort, page[0] if before else page[-1])
            key, image_id = position.key, position.id

    async def expected(self, sort, search="", now=T + 100):
        page, total = await self.database.run(db.find_images_page, "kitten", now, 0, 100, sort, search)
        return [i.name for i in page]

    async def test_walks_every_order_both_ways(self):
        """Forward from the start and backward from the end, every sort, with and without a
        search: each page follows the last in the order's own sequence (ties by id),
        nothing skipped or repeated, no other account's, expired or deleted image."""
        await self.fill()
        for sort in db.SORTS:
            for search in ("", "CAT1", "k1"):
                expected = await self.expected(sort, search)
                self.assertTrue(expected)
                self.assertFalse([n for n in expected if "_b" in n or "gone" in n or "del" in n])
                forward, total = await self.walk(sort, search)
                self.assertEqual(forward, expected, (sort, search))
                self.assertEqual(total, len(expected) if search else 20)
                backward, _ = await self.walk(sort, search, before=True)
                self.assertEqual(backward, expected, (sort, search))

    async def test_ties_are_broken_by_id(self):
        """Images sharing an upload time (or a size) are ordered by id, so a cursor between
        them splits them exactly."""
        images = await self.fill()
        twin_a, twin_b = images[2], images[3]  # k3 shares k2's upload time
        self.assertEqual(twin_a.uploaded, twin_b.uploaded)
        page, more, _ = await self.database.run(
            db.find_images_at, "kitten", T + 100, twin_b.uploaded, twin_b.id, False, 2, "newest", "")
        self.assertEqual([i.name for i in page], [twin_a.name, images[1].name])
        self.assertTrue(more)
        page, more, _ = await self.database.run(
            db.find_images_at, "kitten", T + 100, twin_a.uploaded, twin_a.id, True, 1, "newest", "")
        self.assertEqual([i.name for i in page], [twin_b.name])
        same_size = [i for i in images if i.size == images[0].size]
        self.assertEqual(len(same_size), 3)
        page, _, _ = await self.database.run(
            db.find_images_at, "kitten", T + 100, same_size[2].size, same_size[2].id, False, 5, "largest", "")
        self.assertEqual([i.name for i in page][:2], [same_size[1].name, same_size[0].name])

    async def test_added_and_deleted_between_pages(self):
        """Images uploaded after the first page was read and images deleted meanwhile
        never shift the next page: it starts right after the last image shown."""
        images = await self.fill()
        first, more, _ = await self.database.run(
            db.find_images_at, "kitten", T + 100, 10**15, 2**62, False, 5, "newest", "")
        self.assertEqual([i.name for i in first], [f"20260214_k{i}.jpg" for i in (19, 18, 17, 16, 15)])
        for i in range(3):
            await self.add("kitten", f"20260214_new{i}.jpg", T + 50 + i)
        await self.database.run(db.mark_deleted, images[15].id, T + 60)  # the cursor's own image
        await self.database.run(db.mark_deleted, images[13].id, T + 60)  # one on the next page
        last = cursors.position_of("newest", first[-1])
        page, more, total = await self.database.run(
            db.find_images_at, "kitten", T + 100, last.key, last.id, False, 5, "newest", "")
        self.assertEqual([i.name for i in page], [f"20260214_k{i}.jpg" for i in (14, 12, 11, 10, 9)])
        self.assertEqual(total, 21)
        back = cursors.position_of("newest", page[0])
        page, more, _ = await self.database.run(
            db.find_images_at, "kitten", T + 100, back.key, back.id, True, 5, "newest", "")
        self.assertEqual([i.name for i in page], ["20260214_new0.jpg", *(f"20260214_k{i}.jpg" for i in (19, 18, 17, 16))])
        self.assertTrue(more)

    async def test_a_position_only_positions(self):
        """Another account's position (or a made-up one) lists the caller's own images from
        there; an expiry is checked at the instant."""
        await self.fill()
        bear = (await self.database.run(db.find_images_page, "bear", T + 100, 0, 100, "newest", ""))[0]
        spot = cursors.position_of("newest", bear[5])  # bear's k14.5
        page, _, _ = await self.database.run(
            db.find_images_at, "kitten", T + 100, spot.key, spot.id, False, 3, "newest", "")
        self.assertEqual([i.account for i in page], ["kitten"] * 3)
        self.assertEqual(page[0].name, "20260214_k15.jpg")  # k15 is at T + 14, before bear's T + 14.5
        page, more, total = await self.database.run(
            db.find_images_at, "bear", T + 100, -(10**15), 1, False, 3, "newest", "")
        self.assertEqual((page, more, total), ([], False, 20))
        page, _, _ = await self.database.run(db.find_images_at, "kitten", T + 10, T + 6, 2**62, False, 3, "newest", "")
        self.assertIn("20260214_gone.jpg", [i.name for i in page])
        page, _, _ = await self.database.run(db.find_images_at, "kitten", T + 30, T + 6, 2**62, False, 3, "newest", "")
        self.assertNotIn("20260214_gone.jpg", [i.name for i in page])


class SqliteKeysetTests(KeysetContract, unittest.TestCase):
    async def make_database(self):
        return await open_sqlite(self)


class SyncSqliteKeysetTests(KeysetContract, unittest.TestCase):
    async def make_database(self):
        return await open_sqlite_sync(self)


class PostgresKeysetTests(KeysetContract, unittest.TestCase):
    async def make_database(self):
        return await open_postgres(self)


async def bulk(fixture, account, count, start=T, prefix="p"):
    """``count`` live images of ``account`` written through the database (no objects:
    listings read only rows); every fifth shares its predecessor's upload time."""
    made = []
    for i in range(count):
        uploaded = start + i - (i % 5 == 4)
        image = await fixture.database.run(
            db.reserve_image, account, f"20260214_{prefix}{i}.jpg", f"20260214_{prefix}{i}", "image/jpeg",
            1000 + (i * 7) % 13, 4, 3, "ab" * 32, uploaded, None, False, f"photo{i}.jpg")
        made.append(await fixture.database.run(db.commit_image, image.id, uploaded))
    return made


class ApiCursorTests(JsonApiTestCase):
    async def setUp(self):
        await super().setUp()
        await self.f.account("bear")
        self.images = await bulk(self.f, "kitten", 12)
        await bulk(self.f, "bear", 4, start=T + 0.5, prefix="b")

    async def listing(self, query, status=200):
        response, answer = await self.call("GET", LIST + query, headers=self.bearer())
        self.assertEqual(response.code, status, answer)
        return answer

    async def test_next_and_previous_walk_every_sort(self):
        """``next`` leads page after page through every image once, ``previous`` back, in
        each sort and a search; a page by number carries them too."""
        for sort, q in (("newest", ""), ("oldest", ""), ("largest", ""), ("newest", "photo1"), ("largest", "photo")):
            extra = f"&sort={sort}&q={q}"
            expected = [i["file"] for i in (await self.listing(f"?limit=100{extra}"))["images"]]
            answer = await self.listing(f"?limit=5{extra}")
            self.assertEqual((answer["page"], answer["previous"]), (1, None))
            seen = [i["file"] for i in answer["images"]]
            pages = [answer]
            while answer["next"]:
                answer = await self.listing(f"?limit=5{extra}&after={answer['next']}")
                self.assertIsNone(answer["page"])
                self.assertEqual(answer["has_more"], answer["next"] is not None)
                seen += [i["file"] for i in answer["images"]]
                pages.append(answer)
            self.assertEqual(seen, expected, sort)
            back = [i["file"] for i in answer["images"]]
            while answer["previous"]:
                answer = await self.listing(f"?limit=5{extra}&before={answer['previous']}")
                back = [i["file"] for i in answer["images"]] + back
            self.assertEqual(back, expected, sort)
            self.assertEqual(answer["images"], pages[0]["images"])
        numbered = await self.listing("?limit=5&page=2")
        self.assertEqual(numbered["page"], 2)
        self.assertIsNotNone(numbered["previous"])
        self.assertIsNotNone(numbered["next"])
        last = await self.listing("?limit=5&page=3")
        self.assertEqual((last["has_more"], last["next"]), (False, None))

    async def test_added_between_pages(self):
        """An upload and a delete between two pages shift nothing: the next page starts
        right after the last image seen."""
        first = await self.listing("?limit=4")
        await bulk(self.f, "kitten", 2, start=T + 100, prefix="new")
        await self.f.database.run(db.mark_deleted, self.images[7].id, T + 200)
        after = await self.listing(f"?limit=4&after={first['next']}")
        self.assertEqual([i["file"] for i in after["images"]],
                         [f"20260214_p{i}.jpg" for i in (6, 5, 4, 3)])
        self.assertEqual(after["total"], 13)

    async def test_hostile_cursors_are_400_and_change_nothing(self):
        """Garbage, huge, another sort's cursor, both cursors, a cursor with a page: a 400
        saying why; a cursor of another account's image lists only the caller's."""
        before = await self.listing("?limit=100")
        good = before["images"] and (await self.listing("?limit=3"))["next"]
        for query, word in (("?after=garbage!", "cursor"), ("?before=" + "A" * 5000, "cursor"),
                            (f"?after={good}&sort=largest", "sort=newest"), (f"?after={good}&before={good}", "one"),
                            (f"?after={good}&page=2", "page"), ("?after=", "cursor"), (f"?after={good}&sort=huge", "sort"),
                            (f"?after={good}&limit=0", "limit")):
            answer = await self.listing(query, status=400)
            self.assertIn(word, answer["error"], query)
            self.assertEqual(answer["status"], "error")
        bear = (await self.call("GET", LIST + "?limit=2", headers=self.bearer(await self.f.token("bear"))))[1]
        self.assertEqual([i["user"] for i in bear["images"]], ["bear", "bear"])
        mine = await self.listing(f"?limit=100&after={bear['next']}")
        self.assertTrue(mine["images"])
        self.assertEqual({i["user"] for i in mine["images"]}, {"kitten"})
        invented = await self.listing("?after=" + cursors.encode(cursors.Position("newest", T + 10**9, 1)))
        self.assertEqual([i["file"] for i in invented["images"]], [i["file"] for i in before["images"]])
        self.assertEqual(await self.listing("?limit=100"), before)


def _cards(body):
    return re.findall(r'<h3 class="name">([^<]+)</h3>', body)


def _link(body, rel):
    found = re.search(rf'<a rel="{rel}" href="([^"]+)"', body)
    return html.unescape(found.group(1)) if found else None


class GalleryCursorTests(PagesTestCase):
    """The gallery without JavaScript: its Newer and Older links are plain links with a cursor."""

    async def setUp(self):
        await super().setUp()
        await self.browser.login()
        self.images = await bulk(self.f, "kitten", 2 * PAGE_SIZE + 5)
        await bulk(self.f, "bear", 3, start=T + 0.5, prefix="b")

    async def test_older_and_newer_links_walk_every_image(self):
        """Older → Older → … shows every image once, with "Page X of N"; Newer walks back."""
        for sort in ("newest", "oldest", "largest"):
            response, body = await self.browser.get(f"/images?sort={sort}")
            seen, pages = _cards(body), [body]
            while (older := _link(body, "next")) is not None:
                self.assertIn("after=", older)
                response, body = await self.browser.get(older)
                self.assertEqual(response.code, 200)
                self.assertIn(f"Page {len(pages) + 1} of 3", body)
                seen += _cards(body)
                pages.append(body)
            self.assertEqual(len(pages), 3)
            everything = [i.name for i in self.images]
            self.assertEqual(sorted(seen), sorted(everything), sort)
            self.assertEqual(len(seen), len(set(seen)))
            while (newer := _link(body, "prev")) is not None:
                self.assertIn("before=", newer) if len(pages) > 2 else self.assertEqual(
                    newer, "/images" if sort == "newest" else f"/images?sort={sort}")
                response, body = await self.browser.get(newer)
                pages.pop()
                self.assertEqual(_cards(body), _cards(pages[-1]))
            self.assertIn("Page 1 of 3", body)

    async def test_uploads_between_pages_are_not_skipped_or_repeated(self):
        """Images added while someone pages through shift no page; the first page by
        number shows them."""
        response, body = await self.browser.get("/images")
        first = _cards(body)
        await bulk(self.f, "kitten", 3, start=T + 1000, prefix="new")
        response, body = await self.browser.get(_link(body, "next"))
        second = _cards(body)
        self.assertEqual(len(second), PAGE_SIZE)
        self.assertFalse(set(first) & set(second))
        self.assertEqual(second[0], "20260214_p28.jpg")
        response, body = await self.browser.get(_link(body, "prev"))
        self.assertEqual(_cards(body)[:3], ["20260214_new2.jpg", "20260214_new1.jpg", "20260214_new0.jpg"])
        self.assertIn("Page 1 of 3", body)
        self.assertIsNone(_link(body, "prev"))

    async def test_a_numbered_page_links_with_cursors(self):
        """A page reached by number (the Last link) links to its neighbours with cursors."""
        response, body = await self.browser.get("/images?page=2")
        self.assertEqual(_link(body, "prev"), "/images")
        self.assertIn("after=", _link(body, "next"))
        response, body = await self.browser.get("/images?page=3")
        self.assertIsNone(_link(body, "next"))
        self.assertIn("before=", _link(body, "prev"))
        response, body = await self.browser.get("/images?page=9")
        self.assertIn('href="/images?page=3">Go to the last page', body)

    async def test_a_capped_search_stops_at_its_last_counted_page(self):
        """At a cursor, as by number, the gallery pages through the matches a search counts."""
        self.patch(db, "SEARCH_COUNT_CAP", PAGE_SIZE + 1)
        response, body = await self.browser.get("/images?q=photo")
        self.assertIn("Page 1 of 2", body)
        response, body = await self.browser.get(_link(body, "next"))
        self.assertIn("Page 2 of 2", body)
        self.assertEqual(len(_cards(body)), PAGE_SIZE)
        self.assertIsNone(_link(body, "next"))

    async def test_hostile_gallery_cursor_is_400(self):
        """A bad cursor is a 400 page saying why; another sort's too; nothing changes."""
        before = (await self.browser.get("/images"))[1]
        for path in ("/images?after=nonsense!", "/images?before=" + "Q" * 3000,
                     "/images?sort=largest&after=" + cursors.encode(cursors.Position("newest", T, 1)),
                     "/images?after=bi4xLjE&before=bi4xLjE"):
            response, body = await self.browser.get(path)
            self.assertEqual(response.code, 400, path)
            self.assertIn("cursor", body.lower())
        self.assertEqual(_cards((await self.browser.get("/images"))[1]), _cards(before))

    async def test_delete_selected_returns_to_the_same_place(self):
        """The multiple delete carries the page's cursor back, so the gallery returns to
        where it was (a cursor that is not one is dropped)."""
        response, body = await self.browser.get("/images")
        older = _link(body, "next")
        response, body = await self.browser.get(older)
        self.assertIn('name="after"', body)
        cursor = re.search(r"after=([A-Za-z0-9_-]+)", older).group(1)
        csrf = await self.browser.csrf("/images")
        victim = _cards(body)[0]
        response, _ = await self.browser.post("/images/delete-selected", {
            "csrf": csrf, "name": victim, "page": "2", "after": cursor, "confirm": "1"})
        self.assertEqual(response.code, 303)
        location = response.headers.getRawHeaders("location")[0]
        self.assertIn(f"after={cursor}", location)
        response, _ = await self.browser.post("/images/delete-selected", {
            "csrf": csrf, "name": _cards(body)[1], "page": "2", "after": "bad!", "confirm": "1"})
        self.assertNotIn("after=", response.headers.getRawHeaders("location")[0])
        images = [i for i in await self.f.database.run(db.list_images, "kitten", T + 10**6, 0, 100)]
        self.assertNotIn(victim, [i.name for i in images])
        self.assertEqual(len(images), 2 * PAGE_SIZE + 3)
        self.assertFalse([i for i in images if i.state == DELETED])


def shown(site) -> list[str]:
    """The names of the cards shown, without the upload date a kept name is stored with."""
    return [e.text.split("_", 1)[1] for e in site.find_all(".card.item h3.name")]


class GalleryCursorBrowserTests(ServerTestCase):
    """Chromium against the real server, with JavaScript and without: the Older and Newer
    links page at a cursor while images are uploaded meanwhile; axe-core over the page
    read at a cursor and over the page refusing a bad cursor."""

    timeout = 300

    async def setUp(self):
        await self.start_server()
        admin(self.data, "user", "add", "kitten", stdin=PASSWORD + "\n")
        self.token = admin(self.data, "token", "create", "kitten").strip()
        self.start_audits()

    def upload(self, name: str, shade: int) -> None:
        status, _ = api_upload(self.base, self.token, image_bytes("PNG", (40, 30), (shade, 90, 160)), name)
        self.assertEqual(status, 200)

    async def test_paging_at_a_cursor_while_uploading(self):
        await deferToThread(self._paging)

    def _paging(self) -> None:
        order = []  # newest first
        for i in range(PAGE_SIZE + 2):
            self.upload(f"p{i}.png", 8 * i)
            order.insert(0, f"p{i}.png")
        for javascript in (True, False):
            order = self._walk("keyset-js" if javascript else "keyset-nojs", javascript, order)
        self.assert_accessible(["keyset-js-page-2-at-a-cursor", "keyset-js-bad-cursor"])

    def _walk(self, name: str, javascript: bool, order: list[str]) -> list[str]:
        site = self.open_browser(name, javascript)
        self.log_in(site)
        first = shown(site)
        self.assertEqual(first, order[:PAGE_SIZE])
        for i in range(3):  # uploaded after page 1 was shown: an offset would repeat three
            self.upload(f"{name}-new{i}.png", 200 + i)
        site.find(".pager a[rel=next]").click()
        site.wait(lambda: "Page 2 of 2" in site.find(".pager").text, "page 2")
        self.assertIn("after=", site.path())
        second = shown(site)
        self.assertEqual(second, order[PAGE_SIZE:], "the page right after the last card seen")
        self.assertEqual(site.find_all(".pager a[rel=next]"), [], "nothing older")
        site.shoot("page-2-at-a-cursor")
        if javascript:  # axe-core is a script: it runs where scripts do (the page is the same without)
            self.audit(site, f"{name}-page-2-at-a-cursor")
        site.find(".pager a[rel=prev]").click()
        site.wait(lambda: "Page 1 of" in site.find(".pager").text, "page 1")
        newest = [f"{name}-new{i}.png" for i in (2, 1, 0)]
        self.assertEqual(shown(site)[:3], newest,
                         "Newer to page 1 shows the new uploads")
        site.open("/images?after=not-a-cursor!")
        site.wait_for("main h1")
        self.assertIn("Cursor: not a cursor of this listing", site.find("main").text)
        site.shoot("bad-cursor")
        if javascript:
            self.audit(site, f"{name}-bad-cursor")
        return newest + order
