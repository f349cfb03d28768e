"""The gallery's search, sort and "Delete selected" in real headless Chromium against the
real ``twistd imgshare``: with JavaScript and without, screenshots at 1280 and 390 px,
and axe-core over the search form, an empty result and the confirmation page."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

from twisted.internet.threads import deferToThread

import tests.test_browser as browser_tests
from imgshare.testing import image_bytes
from tests.serverprocess import admin
from tests.test_browser import (
    Pages,
    ServerTestCase,
    api_upload,
)

PASSWORD = browser_tests.PASSWORD
#: (client file name, format, size, colour): kept names, so they are searchable.
PHOTOS = (
    ("cat-garden.jpg", "JPEG", (900, 600), (40, 110, 190)),
    ("dog-beach.jpg", "JPEG", (300, 200), (230, 120, 40)),
    ("Cat-sofa.png", "PNG", (640, 480), (60, 160, 90)),
    ("bird.png", "PNG", (200, 200), (150, 60, 170)),
    ("cat_100%.png", "PNG", (120, 120), (200, 40, 40)),
)


class SearchAndSelectTests(ServerTestCase):
    """Search, sort and delete several images at once, as a person does it in Chromium."""

    timeout = 300

    async def setUp(self):
        await self.start_server()
        self.start_audits()

    def _fill_account(self) -> dict[str, dict]:
        admin(self.data, "user", "add", "kitten", stdin=PASSWORD + "\n")
        token = admin(self.data, "token", "create", "kitten").strip()
        records = {}
        for name, fmt, size, colour in PHOTOS:
            status, record = api_upload(self.base, token, image_bytes(fmt, size, colour), name)
            self.assertEqual(status, 200, record)
            records[name] = record
        return records

    def _browser(self, name: str, javascript: bool) -> tuple[Any, Pages]:
        site = self.open_browser(name, javascript, prefix=f"search-{name}-")
        self.log_in(site)
        return site.driver, site

    def _names(self, site: Pages) -> list[str]:
        return [e.text for e in site.find_all(".card.item .name")]

    def _gone(self, record: dict) -> bool:
        try:
            urllib.request.urlopen(record["urls"]["original"], timeout=10)
        except urllib.error.HTTPError as e:
            return e.code == 404
        return False

    def _search(self, site: Pages, text: str, sort: str) -> None:
        site.fill(q=text)
        site.find(f"select[name=sort] option[value='{sort}']").click()
        site.find("form.search-form button[type=submit]").click()

    async def test_search_sort_and_delete_selected_with_javascript(self):
        await deferToThread(self._with_javascript)

    def _with_javascript(self) -> None:
        records = self._fill_account()
        driver, site = self._browser("js", True)
        site.wait(lambda: site.thumbnails_loaded() == len(PHOTOS), "the thumbnails")
        button = site.find("[data-selected-button]")
        self.assertEqual(button.text, "Delete selected")
        self.assertFalse(button.is_enabled(), "nothing selected: the button waits")

        self._search(site, "CAT", "largest")
        site.wait(lambda: "q=CAT" in site.path(), "the search's address")
        self.assertEqual(site.path(), "/images?q=CAT&sort=largest")
        names = self._names(site)
        self.assertEqual(names, [records[n]["file"] for n in ("cat-garden.jpg", "Cat-sofa.png", "cat_100%.png")],
                         "the three cats, largest first")
        self.assertIn("(3 matching “CAT”)", site.find("#list-title").text)
        self.assertEqual(site.find("input[name=q]").get_attribute("value"), "CAT")
        site.wait(lambda: site.thumbnails_loaded() == 3, "the thumbnails")
        self.audit(site, "search")

        boxes = site.find_all("input[data-select]")
        boxes[0].click()
        boxes[2].click()
        self.assertEqual(site.find("[data-selected-button]").text, "Delete selected (2)")
        self.assertTrue(site.find("[data-selected-button]").is_enabled())
        site.shoot("two-selected")
        boxes[2].click()
        self.assertEqual(site.find("[data-selected-button]").text, "Delete selected (1)")
        boxes[2].click()
        site.find("[data-selected-button]").click()

        site.wait_path("/images/delete-selected")
        doomed = [e.text for e in site.find_all(".doomed li")]
        self.assertEqual(doomed, [names[0], names[2]])
        self.assertIn("Delete 2 images?", site.find(".question").text)
        self.assertFalse(self._gone(records["cat-garden.jpg"]), "nothing deleted before the confirmation")
        self.audit(site, "confirm")
        site.find("form.actions button[type=submit]").click()

        site.wait(lambda: "deleted=2" in site.path(), "the gallery after deleting")
        self.assertEqual(site.path(), "/images?q=CAT&sort=largest&deleted=2")
        self.assertEqual(site.find(".notice").text, "Deleted 2 images. Every version of them stopped working.")
        self.assertEqual(self._names(site), [names[1]])
        self.assertTrue(self._gone(records["cat-garden.jpg"]) and self._gone(records["cat_100%.png"]))
        self.assertFalse(self._gone(records["Cat-sofa.png"]))
        site.shoot("after-delete")

        self._search(site, "zebra", "newest")
        site.wait(lambda: "q=zebra" in site.path(), "the empty search")
        self.assertIn("No image matches “zebra”.", site.find("main").text)
        self.audit(site, "empty")
        site.find(".empty a").click()
        site.wait(lambda: site.path() == "/images", "the gallery without the search")
        self.assertEqual(len(site.find_all(".card.item")), len(PHOTOS) - 2)
        self._report()

    async def test_search_sort_and_delete_selected_without_javascript(self):
        await deferToThread(self._without_javascript)

    def _without_javascript(self) -> None:
        records = self._fill_account()
        driver, site = self._browser("nojs", False)
        button = site.find("[data-selected-button]")
        self.assertTrue(button.is_enabled(), "without the script the button always works")
        self._search(site, "%", "oldest")
        site.wait(lambda: "sort=oldest" in site.path(), "the search's address")
        self.assertEqual(self._names(site), [records["cat_100%.png"]["file"]], "% is a character, not a wildcard")
        site.shoot("percent")

        self._search(site, "", "oldest")
        site.wait(lambda: len(site.find_all(".card.item")) == len(PHOTOS), "all images, oldest first")
        names = self._names(site)
        self.assertEqual(names, [records[p[0]]["file"] for p in PHOTOS])
        site.find("[data-selected-button]").click()
        site.wait_path("/images/delete-selected")
        self.assertIn("Select at least one image to delete.", site.find("main").text)
        site.shoot("none-selected")
        driver.back()
        site.wait_for(".gallery")
        for box in site.find_all("input[data-select]")[1:4]:
            box.click()
        site.shoot("three-selected")
        site.find("[data-selected-button]").click()
        site.wait_path("/images/delete-selected")
        self.assertEqual([e.text for e in site.find_all(".doomed li")], names[1:4])
        site.shoot("confirm")
        site.find("form.actions button[type=submit]").click()
        site.wait(lambda: "deleted=3" in site.path(), "the gallery after deleting")
        self.assertEqual(site.find(".notice").text, "Deleted 3 images. Every version of them stopped working.")
        self.assertEqual(self._names(site), [names[0], names[4]])
        for name, *_ in PHOTOS[1:4]:
            self.assertTrue(self._gone(records[name]), name)
        site.shoot("after-delete")

    def _report(self) -> None:
        self.assert_accessible(["search", "confirm", "empty"])
