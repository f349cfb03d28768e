"""Location metadata in Chromium against the real server: the gallery's "Location in
original" badge, the upload form's "Remove location" checkbox (with and without
JavaScript), the /account setting that checks it by default, and the owner's note on
the viewer page; axe-core over each new state, screenshots at 1280 and 390 px."""

from __future__ import annotations

import os
import urllib.request

from twisted.internet.threads import deferToThread

from imgshare.domain import location
from imgshare.testing import image_bytes
from tests.phonefiles import phone_jpeg
from tests.serverprocess import admin
from tests.test_browser import (
    PASSWORD,
    Pages,
    ServerTestCase,
    api_upload,
)


class LocationBrowserTests(ServerTestCase):
    """The location badge, checkbox and setting in a real browser."""

    timeout = 300

    async def setUp(self):
        await self.start_server()
        self.start_audits()
        admin(self.data, "user", "add", "kitten", stdin=PASSWORD + "\n")
        self.token = admin(self.data, "token", "create", "kitten").strip()
        self.phone = os.path.join(self.work, "phone.jpg")
        with open(self.phone, "wb") as f:
            f.write(phone_jpeg())

    def browser(self, name: str, javascript: bool) -> Pages:
        site = self.open_browser(name, javascript, prefix=f"location-{name}-")
        self.log_in(site)
        return site

    def stored(self, url: str) -> bytes:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.read()

    def carries_location(self, url: str) -> bool:
        path = os.path.join(self.work, "fetched")
        with open(path, "wb") as f:
            f.write(self.stored(url))
        return location.examine(path).has_location

    def newest_original(self, site: Pages) -> str:
        site.open("/images")
        return site.find(".item .links a").get_attribute("href")

    async def test_with_javascript(self):
        """JS on: the badge marks only the photo with a location; the checkbox strips an upload
        made through the script; the account setting checks the box; the owner's viewer note."""
        await deferToThread(self._with_javascript)

    def _with_javascript(self) -> None:
        status, plain = api_upload(self.base, self.token, image_bytes("PNG", (640, 480)), "plain.png")
        self.assertEqual(status, 200)
        status, record = api_upload(self.base, self.token, phone_jpeg(), "phone.jpg")
        self.assertEqual((status, record["has_location"]), (200, True))
        site = self.browser("js", javascript=True)
        site.open("/images")
        badges = site.find_all(".item .badge.location")
        self.assertEqual([b.text for b in badges], ["Location in original"])
        card = badges[0].find_element(site.By.XPATH, "ancestor::li[contains(@class, 'item')]")
        self.assertIn(record["file"], card.text)
        self.assertTrue(badges[0].is_displayed())
        box = site.find("input[name=strip_location]")
        self.assertFalse(box.is_selected(), "off while the account setting is off")
        label = box.find_element(site.By.XPATH, "ancestor::label")
        self.assertIn("Remove location", label.text)
        self.audit(site, "gallery-badge")

        site.find("input[type=file]").send_keys(self.phone)
        box.click()
        site.find("#upload-form button[type=submit]").click()
        site.wait(lambda: len(site.find_all(".progress-list li.ok")) == 1, "the file stored")
        site.shoot("uploaded-stripped")
        url = site.find(".progress-list li.ok .state a").get_attribute("href")
        self.assertFalse(self.carries_location(url), "the script's upload sent strip_location=1")

        site.open(record["viewer"].removeprefix(self.base))
        note = site.wait_for(".location-note")
        self.assertIn("Only you see this note", note.text)
        self.audit(site, "viewer-owner-note")

        site.open("/account")
        form = site.find("form[action='/account/location']")
        self.assertTrue(form.find_element(site.By.CSS_SELECTOR, "input[value='0']").is_selected())
        form.find_element(site.By.CSS_SELECTOR, "input[value='1']").click()
        form.find_element(site.By.CSS_SELECTOR, "button[type=submit]").click()
        site.wait_path("/account?done=location-strip")
        self.assertIn("uploads now remove location", site.find(".notice").text)
        self.audit(site, "account-setting-on")

        site.open("/images")
        self.assertTrue(site.find("input[name=strip_location]").is_selected(), "checked by the setting")
        self.audit(site, "form-checked")
        self.assert_accessible()

    async def test_without_javascript(self):
        """JS off: the setting's form, the checked box and the form post strip; an unchecked box
        keeps the location, which the gallery badge then shows."""
        await deferToThread(self._without_javascript)

    def _without_javascript(self) -> None:
        site = self.browser("nojs", javascript=False)
        site.open("/account")
        form = site.find("form[action='/account/location']")
        form.find_element(site.By.CSS_SELECTOR, "input[value='1']").click()
        form.find_element(site.By.CSS_SELECTOR, "button[type=submit]").click()
        site.wait_path("/account?done=location-strip")
        site.shoot("account-setting-on")

        site.open("/images")
        box = site.find("input[name=strip_location]")
        self.assertTrue(box.is_selected())
        site.find("input[type=file]").send_keys(self.phone)
        site.find("#upload-form button[type=submit]").click()
        site.wait_path("/images/upload")
        self.assertEqual(len(site.find_all(".results li.ok")), 1)
        site.shoot("uploaded-stripped")
        self.assertFalse(self.carries_location(self.newest_original(site)))
        self.assertEqual(site.find_all(".item .badge.location"), [])

        site.find("input[name=strip_location]").click()  # unchecked: keep the location
        self.assertFalse(site.find("input[name=strip_location]").is_selected())
        site.find("input[type=file]").send_keys(self.phone)
        site.find("#upload-form button[type=submit]").click()
        site.wait_path("/images/upload")
        self.assertTrue(self.carries_location(self.newest_original(site)))
        badges = site.find_all(".item .badge.location")
        self.assertEqual([b.text for b in badges], ["Location in original"])
        # axe-core needs scripts, so it audits these same states in the JavaScript test.
        site.shoot("gallery-badge")
