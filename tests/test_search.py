"""The gallery's search, sort and multiple delete through StubTreq (pages and API):
the form, links that keep the search and order, counts, messages, CSRF and bad input."""

from __future__ import annotations

import html
import io
import json
import re

from twisted.trial import unittest

from imgshare.library import MAX_SEARCH_CHARACTERS, MAX_SELECTED
from imgshare.testing import image_bytes
from imgshare.web.forms import parse_body
from imgshare.web.pages.images import PAGE_SIZE
from tests.test_pages import SITE, Browser, PagesTestCase, location


def _cards(body):
    """The names of the gallery cards on a page, in order."""
    return re.findall(r'<h3 class="name">([^<]+)</h3>', body)


class SearchPageTests(PagesTestCase):
    async def setUp(self):
        await super().setUp()
        await self.browser.login()
        self.csrf = await self.browser.csrf("/images")
        self.token = await self.f.token("kitten")

    async def put(self, client_name, size=(8, 8), kind="PNG"):
        """Upload one image keeping its name (so it is searchable by it); its record."""
        _, record = await self.api_upload(self.token, image_bytes(kind, size), filename=client_name,
                                          keep_name="1")
        self.f.clock.advance(1)
        return record

    async def test_a_search_matching_more_than_it_counts(self):
        """Past SEARCH_COUNT_CAP matches the heading says "more than", the pages stop at the
        cap, and the API says its total is capped."""
        from imgshare import db

        self.patch(db, "SEARCH_COUNT_CAP", PAGE_SIZE + 1)
        for i in range(PAGE_SIZE + 3):
            await self.put(f"cat{i}.png")
        response, body = await self.browser.get("/images?q=cat")
        self.assertIn(f"(more than {PAGE_SIZE + 1} matching “cat”)", body)
        self.assertIn("Page 1 of 2", body)
        response, body = await self.browser.get("/images?q=cat&page=2")
        self.assertEqual(len(_cards(body)), 1)
        response, body = await self.browser.get("/images?q=cat&page=3")
        self.assertIn(f"the first {PAGE_SIZE + 1} matching images (a search shows no more: refine it)", body)
        response, out = await self.f.client().request(
            "GET", SITE + "/api/v1/images?q=cat&limit=100", headers={b"X-API-Key": [self.token.encode()]})
        answer = json.loads(out)
        self.assertEqual((answer["total"], answer["total_capped"], len(answer["images"]), answer["has_more"]),
                         (PAGE_SIZE + 1, True, PAGE_SIZE + 1, False))
        response, out = await self.f.client().request(
            "GET", SITE + "/api/v1/images?q=cat1", headers={b"X-API-Key": [self.token.encode()]})
        self.assertNotIn("total_capped", json.loads(out))

    async def test_form_and_search_results(self):
        """The labelled search and sort form keeps its values; the count says how many
        match; file names and original names are searched, ignoring case."""
        cat = await self.put("cat.png")
        await self.put("dog.png")
        upper = await self.put("CATALOG.png")
        response, body = await self.browser.get("/images")
        self.assertIn('role="search"', body)
        self.assertIn('<label class="field search-field">Search file names', body)
        self.assertIn('name="q"', body)
        self.assertIn('<option value="largest">Largest first</option>', body)
        response, body = await self.browser.get("/images?q=Cat&sort=oldest")
        self.assertEqual(response.code, 200)
        self.assertEqual(_cards(body), [cat["file"], upper["file"]])
        self.assertIn("(2 matching “Cat”)", body)
        self.assertIn('value="Cat"', body)
        self.assertIn('<option value="oldest" selected="selected">Oldest first</option>', body)
        self.assertIn('href="/images?sort=oldest">Clear the search', body)
        original = await self.put("holiday.png")
        await self.f.database.run(_rename_original, original["file"], "Summer Holiday.png")
        _, body = await self.browser.get("/images?q=summer")
        self.assertEqual(_cards(body), [original["file"]])

    async def test_empty_result_says_so_with_a_link_to_clear(self):
        """A search matching nothing says so (not "No images yet") and links back without it."""
        await self.put("cat.png")
        response, body = await self.browser.get("/images?q=zebra&sort=largest")
        self.assertEqual(response.code, 200)
        self.assertEqual(_cards(body), [])
        self.assertIn("No image matches “zebra”.", body)
        self.assertIn('href="/images?sort=largest">Clear the search</a> to see all your images', body)
        self.assertNotIn("No images yet", body)
        self.assertNotIn('id="bulk-delete"', body, "nothing to select")

    async def test_hostile_search_is_escaped_and_literal(self):
        """A search is text: escaped in the page, and its % and _ are no wildcards."""
        await self.put("a.png")
        response, body = await self.browser.get("/images?q=%3Cscript%3E%25")
        self.assertEqual(response.code, 200)
        self.assertNotIn("<script>%", body)
        self.assertIn("&lt;script&gt;%", body)
        _, body = await self.browser.get("/images?q=%25")
        self.assertIn("No image matches “%”.", body)

    async def test_search_length_and_control_characters_refused(self):
        """A search longer than the bound, or holding control characters, is a 400 saying why."""
        response, body = await self.browser.get("/images?q=" + "a" * (MAX_SEARCH_CHARACTERS + 1))
        self.assertEqual(response.code, 400)
        self.assertIn(f"Search for at most {MAX_SEARCH_CHARACTERS} characters", body)
        response, _ = await self.browser.get("/images?q=" + "a" * MAX_SEARCH_CHARACTERS)
        self.assertEqual(response.code, 200)
        response, body = await self.browser.get("/images?q=a%00b")
        self.assertEqual(response.code, 400)
        self.assertIn("control characters", body)

    async def test_sort_largest_and_a_bad_sort(self):
        """sort=largest lists the biggest files first; an unknown sort falls back to newest
        first, as an unknown page number falls back to the first page."""
        small = await self.put("small.png", (4, 4))
        big = await self.put("big.png", (300, 300), "BMP")
        middle = await self.put("middle.png", (120, 90), "BMP")
        _, body = await self.browser.get("/images?sort=largest")
        self.assertEqual(_cards(body), [big["file"], middle["file"], small["file"]])
        response, body = await self.browser.get("/images?sort=sideways")
        self.assertEqual(response.code, 200)
        self.assertEqual(_cards(body), [middle["file"], big["file"], small["file"]])
        self.assertIn('<option value="newest" selected="selected">', body)

    async def test_pager_keeps_search_and_sort(self):
        """Pager links, the page count and the past-the-end link keep q and sort."""
        for i in range(PAGE_SIZE + 2):
            await self.put(f"cat{i}.png")
        await self.put("dog.png")
        _, body = await self.browser.get("/images?q=cat&sort=oldest")
        self.assertIn(f"({PAGE_SIZE + 2} matching “cat”)", body)
        self.assertIn("Page 1 of 2", body)
        self.assertIn('href="/images?q=cat&amp;sort=oldest&amp;page=2&amp;after=', body)  # Older: at a cursor
        _, body = await self.browser.get("/images?q=cat&sort=oldest&page=2")
        self.assertEqual(len(_cards(body)), 2)
        self.assertIn('href="/images?q=cat&amp;sort=oldest"', body)
        _, body = await self.browser.get("/images?q=cat&sort=oldest&page=9")
        self.assertIn("There is no page 9: the matching images fill", body)
        self.assertIn('href="/images?q=cat&amp;sort=oldest&amp;page=2">Go to the last page', body)

    async def test_api_search_and_sort(self):
        """GET /api/v1/images takes the same q and sort; total counts the matches; a bad sort
        or search is a 400 there (as a bad page is)."""
        await self.put("cat.png", (4, 4))
        big = await self.put("bigcat.png", (200, 200), "BMP")
        await self.put("dog.png")
        client = self.f.client()
        auth = {b"Authorization": [b"Bearer " + self.token.encode()]}

        async def listing(query):
            response, out = await client.request("GET", SITE + "/api/v1/images?" + query, headers=auth)
            return response.code, json.loads(out)

        code, answer = await listing("q=CAT&sort=largest")
        self.assertEqual((code, answer["total"]), (200, 2))
        self.assertEqual(answer["images"][0]["file"], big["file"])
        for bad in ("sort=sideways", "q=" + "a" * (MAX_SEARCH_CHARACTERS + 1)):
            code, answer = await listing(bad)
            self.assertEqual(code, 400, bad)
            self.assertEqual(answer["status"], "error")


async def _rename_original(tx, name, original):
    """Give an image another original (client) name, as an upload from another tool would."""
    await tx.execute("UPDATE images SET original_name = ? WHERE name = ?", (original, name))


class DeleteSelectedTests(PagesTestCase):
    async def setUp(self):
        await super().setUp()
        await self.browser.login()
        self.csrf = await self.browser.csrf("/images")
        self.token = await self.f.token("kitten")
        self.records = []
        for _ in range(3):
            _, record = await self.api_upload(self.token)
            self.records.append(record)
            self.f.clock.advance(1)
        self.names = [r["file"] for r in self.records]

    async def select(self, names, browser=None, **fields):
        browser = browser or self.browser
        pairs = [("csrf", self.csrf), *(("name", n) for n in names), *fields.items()]
        return await browser.post("/images/delete-selected", pairs)

    async def served(self, name):
        return await self.f.library.served_image("kitten", name) is not None

    async def direct(self, record):
        url = record["urls"]["original"].replace("https://img.example", SITE)
        return (await self.f.client().request("GET", url))[0].code

    async def test_cards_have_labelled_checkboxes_in_one_form(self):
        """Each card has a checkbox named after its image, all belonging to one form
        with the CSRF token and a "Delete selected" button."""
        _, body = await self.browser.get("/images?q=2026&sort=oldest")
        self.assertIn('<form id="bulk-delete" class="bulk" method="post" action="/images/delete-selected">', body)
        for name in self.names:
            self.assertIn(f'<input type="checkbox" name="name" form="bulk-delete" data-select="" value="{name}" />',
                          body)
            self.assertRegex(body, rf'Select <span class="visually-hidden">{re.escape(name)}</span></label>')
        form = body[body.index('id="bulk-delete"'):body.index("</form>", body.index('id="bulk-delete"'))]
        self.assertIn(f'name="csrf" value="{self.csrf}"', html.unescape(form))
        self.assertIn('name="q" value="2026"', form)
        self.assertIn('name="sort" value="oldest"', form)
        self.assertIn(">Delete selected</button>", form)

    async def test_confirm_then_delete_in_one_go(self):
        """The first POST shows a confirmation listing the images (nothing deleted); its
        confirm POST deletes them all, back to the same listing with "Deleted N images.";
        they are 404 at /img/ at once."""
        chosen = self.names[:2]
        response, body = await self.select(chosen, q="2026", sort="oldest")
        self.assertEqual(response.code, 200)
        self.assertIn("Delete 2 images?", body)
        for name in chosen:
            self.assertIn(f"<li>{name}</li>", body)
            self.assertIn(f'name="name" value="{name}"', body)
            self.assertTrue(await self.served(name))
        self.assertIn('name="confirm" value="1"', body)
        self.assertIn('name="q" value="2026"', body)
        self.assertIn('href="/images?q=2026&amp;sort=oldest">Cancel', body)
        response, _ = await self.select(chosen, q="2026", sort="oldest", confirm="1")
        self.assertEqual((response.code, location(response)), (303, "/images?q=2026&sort=oldest&deleted=2"))
        for record in self.records[:2]:
            self.assertEqual(await self.direct(record), 404)
        self.assertEqual(await self.direct(self.records[2]), 200)
        _, body = await self.browser.get(location(response))
        self.assertIn("Deleted 2 images. Every version of them stopped working.", body)
        self.assertEqual(_cards(body), [self.names[2]])
        _, body = await self.browser.get("/images?deleted=1")
        self.assertIn("Deleted 1 image. Every version of it stopped working.", body)
        _, body = await self.browser.get("/images?deleted=junk")
        self.assertNotIn("Deleted", body)

    async def test_csrf_refused(self):
        """Without the CSRF token (or with another), both steps are 403 and nothing is deleted."""
        for fields in ([("name", self.names[0]), ("confirm", "1")],
                       [("csrf", "f" * 64), ("name", self.names[0]), ("confirm", "1")]):
            response, _ = await self.browser.post("/images/delete-selected", fields)
            self.assertEqual(response.code, 403)
        self.assertTrue(await self.served(self.names[0]))
        response, _ = await Browser(self.f).post("/images/delete-selected",
                                                 [("csrf", self.csrf), ("name", self.names[0]), ("confirm", "1")])
        self.assertEqual((response.code, location(response)), (303, "/login"))
        self.assertTrue(await self.served(self.names[0]))

    async def test_bad_selections_refused(self):
        """No names, a duplicate, more than the bound: 400 at both steps.  An unknown name or
        another account's: 404 naming it before the confirmation, and once confirmed a 409
        naming it (gone, as far as the caller can tell) that asks again for the others.
        Nothing is deleted by any of them."""
        _, bears = await self.api_upload(await self.f.token("bear"))
        many = [f"20260214_x{i}.png" for i in range(MAX_SELECTED + 1)]
        cases = [
            ([], 400, "Select at least one image to delete."),
            ([""], 400, "Select at least one image to delete."),
            ([self.names[0], self.names[0]], 400, "Each image may be selected once"),
            (many, 400, f"Select at most {MAX_SELECTED} images at once"),
            ([self.names[0], "20260214_nothere.png"], 404, "20260214_nothere.png"),
            ([self.names[0], bears["file"]], 404, bears["file"]),
            ([self.names[0], "../../etc/passwd"], 404, "nothing was deleted"),
        ]
        for names, status, message in cases:
            for confirm in ({}, {"confirm": "1"}):
                response, body = await self.select(names, **confirm)
                expected = 409 if status == 404 and confirm else status
                self.assertEqual(response.code, expected, (names, confirm, body[-600:]))
                self.assertIn(html.escape(message, quote=False), body)
                if expected == 409:
                    self.assertIn("is gone already (deleted or expired), so nothing was deleted.", body)
        for name in self.names:
            self.assertTrue(await self.served(name))
        self.assertIsNotNone(await self.f.library.served_image("bear", bears["file"]))

    async def test_too_many_fields_refused(self):
        """A body past the form parser's field limit is a 400 too, and deletes nothing."""
        response, body = await self.select([f"20260214_x{i}.png" for i in range(80)])
        self.assertEqual(response.code, 400)
        self.assertTrue(await self.served(self.names[0]))

    async def test_images_gone_before_the_confirmation(self):
        """Confirmed, with one image gone meanwhile (deleted elsewhere): nothing is deleted,
        a 409 says which is gone and asks again for the others; with all gone, a 404."""
        response, _ = await self.select(self.names[:2])
        self.assertEqual(response.code, 200)
        await self.f.library.delete("kitten", self.names[0])
        response, body = await self.select(self.names[:2], confirm="1")
        self.assertEqual(response.code, 409)
        self.assertIn(f"{self.names[0]} is gone already (deleted or expired), so nothing was deleted.", body)
        self.assertIn("Delete the other image? Its address", body)
        self.assertIn(f'name="name" value="{self.names[1]}"', body)
        self.assertNotIn(f'name="name" value="{self.names[0]}"', body)
        self.assertTrue(await self.served(self.names[1]))
        await self.f.library.delete("kitten", self.names[1])
        response, body = await self.select(self.names[:2], confirm="1")
        self.assertEqual(response.code, 404)
        self.assertIn("None of these images is there any more", body)
        self.assertTrue(await self.served(self.names[2]))


class RepeatedFieldTests(unittest.TestCase):
    def test_every_value_of_a_repeated_field(self):
        """A field given several times (a group of checkboxes) keeps every value in order,
        in urlencoded and multipart bodies alike; ``get`` still answers the first."""
        spool = self.mktemp()
        urlencoded = parse_body(io.BytesIO(b"name=a.png&csrf=x&name=b.png&name="),
                                b"application/x-www-form-urlencoded", spool, 10)
        body, headers = _multipart_repeated([("name", "a.png"), ("csrf", "x"), ("name", "b.png")])
        multi = parse_body(io.BytesIO(body), headers, spool, 10)
        self.assertEqual(urlencoded.get_all("name"), ["a.png", "b.png", ""])
        self.assertEqual(multi.get_all("name"), ["a.png", "b.png"])
        for form in (urlencoded, multi):
            self.assertEqual(form.get("name"), "a.png")
            self.assertEqual(form.get_all("csrf"), ["x"])
            self.assertEqual(form.get_all("missing"), [])


def _multipart_repeated(pairs):
    boundary = "repeated-boundary"
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                    for k, v in pairs)
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}".encode()
