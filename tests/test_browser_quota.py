"""Quotas in real headless Chromium against the real ``twistd imgshare``: /account for a
user without a quota, one near and one at its quota, the administrator setting a quota
(with JavaScript and without), and a refused upload; axe-core over each new state.

Screenshots go to ``test-artifacts/screenshots/quota-*`` at 1280 and 390 px."""

from __future__ import annotations

import os

from twisted.internet.threads import deferToThread

from imgshare.testing import image_bytes
from tests.serverprocess import admin
from tests.test_browser import (
    PASSWORD,
    Pages,
    ServerTestCase,
    api_upload,
)

PHOTO = image_bytes("JPEG", (900, 600), (40, 110, 190))


class QuotaBrowserTests(ServerTestCase):
    """One server: boss (the administrator), plain (no quota), kitten (near its quota)."""

    timeout = 300

    async def setUp(self):
        await self.start_server()
        self.start_audits()
        await deferToThread(self._accounts)

    def _accounts(self) -> None:
        for name in ("boss", "plain", "kitten"):
            admin(self.data, "user", "add", name, stdin=PASSWORD + "\n")
        for name in ("plain", "kitten"):
            token = admin(self.data, "token", "create", name).strip()
            for i in range(2):
                status, _ = api_upload(self.base, token, PHOTO, f"photo-{i}.jpg")
                self.assertEqual(status, 200)
        # Two photos of a quota of 2.15: 93% used, and a third does not fit.
        admin(self.data, "user", "quota", "kitten", f"{2 * len(PHOTO) + len(PHOTO) * 15 // 100}B")

    def audit_without_scripts(self, site: Pages, name: str) -> None:
        """Audit a page loaded without JavaScript: scripts are allowed for axe-core only, then
        disabled again for what follows."""
        site.driver.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": False})
        self.audit(site, name)
        site.driver.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})

    def browser(self, name: str, javascript: bool = True) -> Pages:
        """A Chromium; without ``javascript`` the pages' scripts never run (disabled through
        DevTools, so that axe-core can still be run between pages)."""
        site = self.open_browser(name, prefix=f"quota-{name}-")
        if not javascript:
            site.driver.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})
        return site

    def finish(self, count: int) -> None:
        self.assert_accessible()
        self.assertEqual(len(self.checked), count, self.checked)

    async def test_account_usage_and_admin_with_javascript(self):
        """With JavaScript: a user without a quota sees their count and storage in words and
        no meter; one near their quota sees labelled meters and a warning, and an upload past
        it fails in the upload row with the quota in words; the administrator sets a quota
        in the accounts table and the user's page follows."""
        await deferToThread(self._with_javascript)

    def _with_javascript(self) -> None:
        site = self.browser("js")
        self.log_in(site, "plain")
        site.open("/account")
        usage = site.wait_for("section.usage")
        self.assertIn("You have 2 images, using", usage.text)
        self.assertIn("Your account has no quota.", usage.text)
        self.assertEqual(site.find_all("section.usage meter"), [])
        self.audit(site, "account-no-quota")
        site.find(".logout button").click()
        site.wait_path("/login")

        self.log_in(site, "kitten")
        site.open("/account")
        meter = site.wait_for("#usage-meter-0")
        self.assertEqual(site.find("label[for=usage-meter-0]").text, "Storage used")
        self.assertEqual(int(meter.get_attribute("value")), 2 * len(PHOTO))
        self.assertIn("(93%)", site.find("section.usage").text)
        self.assertIn("Your quota is nearly full", site.find(".usage-hint").text)
        self.audit(site, "account-near-quota")
        site.open("/images")
        site.find("input[type=file]").send_keys(self._photo_file())
        site.find("#upload-form button[type=submit]").click()
        failed = site.wait_for(".progress-list li.failed")
        self.assertIn("Storage quota full:", failed.text)
        self.assertIn("this file is", failed.text)
        self.audit(site, "upload-refused-by-quota")
        site.find(".logout button").click()
        site.wait_path("/login")

        self.log_in(site, "boss")
        site.open("/account")
        site.wait_for("#quota-kitten")
        self.assertIn("2 images,", site.find("table.list").text)
        self.audit(site, "admin-accounts")
        field = site.find("#quota-kitten")
        field.clear()
        field.send_keys("20MB")
        images = site.find("#images-kitten")
        images.clear()
        images.send_keys("3")
        site.find("#quota-kitten").find_element(site.By.XPATH, "./ancestor::form").find_element(
            site.By.CSS_SELECTOR, "button[type=submit]").click()
        site.wait_path("/account?done=quota")
        self.assertIn("The quota is set.", site.find(".notice").text)
        self.assertEqual(site.find("#quota-kitten").get_attribute("value"), "20MB")
        self.assertEqual(site.find("#images-kitten").get_attribute("value"), "3")
        self.assertIn("2 of 3 images", site.find("table.list").text)
        self.audit(site, "admin-quota-set")
        self.finish(5)

    def _photo_file(self) -> str:
        path = os.path.join(self.work, "third.jpg")
        with open(path, "wb") as f:
            f.write(PHOTO)
        return path

    async def test_admin_and_refusal_without_javascript(self):
        """Without JavaScript: the administrator's quota form posts and redirects, a bad size
        comes back as a 400 page saying what is wrong, and the form upload past the quota is
        a result page with the refusal in words."""
        await deferToThread(self._without_javascript)

    def _without_javascript(self) -> None:
        site = self.browser("nojs", javascript=False)
        self.log_in(site, "boss")
        site.open("/account")
        field = site.wait_for("#quota-kitten")
        field.clear()
        field.send_keys("lots")
        field.submit()
        problem = site.wait_for(".problem")
        self.assertIn("The quota of kitten is unchanged: invalid quota 'lots'", problem.text)
        site.shoot("admin-bad-quota")
        field = site.find("#quota-kitten")
        field.clear()
        field.send_keys(f"{2 * len(PHOTO)}B")
        field.submit()
        site.wait_path("/account?done=quota")
        self.assertIn("(100%)", site.find("table.list").text)
        site.shoot("admin-quota-set")
        site.find(".logout button").click()
        site.wait_path("/login")

        self.log_in(site, "kitten")
        site.open("/account")
        self.assertIn("Your quota is full", site.wait_for(".usage-hint").text)
        self.audit_without_scripts(site, "account-full")
        site.open("/images")
        site.find("input[type=file]").send_keys(self._photo_file())
        site.find("#upload-form button[type=submit]").click()
        site.wait(lambda: "Storage quota full:" in site.find("main").text, "the refusal page")
        self.assertIn("Uploaded 0 of 1", site.driver.title)
        self.assertEqual(site.find_all(".progress-list li"), [], "no script built upload rows")
        self.audit_without_scripts(site, "upload-refused-by-quota")
        self.finish(2)

