"""The browser pages in real headless Chromium against the real ``twistd imgshare`` on loopback.

Driven with Selenium and Debian's ``chromium`` and ``chromium-driver``; a
missing browser or driver fails these tests (they are never skipped).  Each
page is saved as a PNG at 1280 and 390 CSS pixels wide into
``test-artifacts/screenshots/`` (or ``$IMGSHARE_SCREENSHOTS``) for a person
to look at.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import tempfile
import time
import urllib.request
from typing import Any

from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from imgshare.testing import image_bytes, multipart
from tests.serverprocess import REPO, ServerProcess, admin

SCREENSHOTS = os.environ.get("IMGSHARE_SCREENSHOTS") or os.path.join(REPO, "test-artifacts", "screenshots")
WIDTHS = (1280, 390)
PASSWORD = "a long password"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    "--disable-dev-shm-usage", "--window-size=1280,900",
)
WAIT = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_chromium(profile: str, downloads: str, javascript: bool = True) -> Any:
    """A fresh headless Chromium under chromedriver; AssertionError if either is missing."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        raise AssertionError("selenium is not installed: pip install -e '.[test]'") from e
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        raise AssertionError("Chromium and chromedriver are needed: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    prefs: dict[str, Any] = {"download.default_directory": downloads, "download.prompt_for_download": False}
    if not javascript:
        prefs["profile.managed_default_content_settings.javascript"] = 2
    options.add_experimental_option("prefs", prefs)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


class Pages:
    """One browser session over the site, with waits and screenshots."""

    def __init__(self, driver: Any, base: str, shots: str, prefix: str):
        from selenium.webdriver.common.by import By

        self.driver = driver
        self.base = base
        self.shots = shots
        self.prefix = prefix
        self.By = By
        self.count = 0

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def path(self) -> str:
        return self.driver.current_url.removeprefix(self.base)

    def find(self, css: str) -> Any:
        return self.driver.find_element(self.By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[Any]:
        return self.driver.find_elements(self.By.CSS_SELECTOR, css)

    def fill(self, **fields: str) -> None:
        for name, value in fields.items():
            element = self.find(f"[name={name}]")
            element.clear()
            element.send_keys(value)

    def wait(self, condition: Any, what: str) -> Any:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what} on {self.driver.current_url}")

    def wait_for(self, css: str) -> Any:
        """The first element matching ``css`` once the page shows one."""
        return self.wait(lambda: (self.find_all(css) or [None])[0], css)

    def wait_path(self, prefix: str) -> None:
        self.wait(lambda: self.path().startswith(prefix), f"the page {prefix}")

    def shoot(self, name: str) -> None:
        """Save the whole page at each width."""
        self.count += 1
        for width in WIDTHS:
            metrics = {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 600}
            self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
            height = self.driver.execute_script(
                "return Math.max(document.documentElement.scrollHeight, document.body.scrollHeight)")
            metrics["height"] = max(600, min(int(height), 5000))
            self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
            shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
            path = os.path.join(self.shots, f"{self.prefix}{self.count:02d}-{name}-{width}.png")
            with open(path, "wb") as f:
                f.write(base64.b64decode(shot["data"]))
        self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    def thumbnails_loaded(self) -> int:
        return self.driver.execute_script(
            "return Array.from(document.querySelectorAll('.thumb img'))"
            ".filter(function (i) { return i.complete && i.naturalWidth > 0; }).length")


def api_upload(base: str, token: str, data: bytes, filename: str) -> tuple[int, dict]:
    body, headers = multipart({"keep_name": "1"}, {"file": (filename, data)})
    request = urllib.request.Request(
        base + "/api/v1/img_upload.php", data=body, method="POST",
        headers={"Content-Type": headers[b"Content-Type"][0].decode(), "X-API-Key": token},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.loads(response.read())


class ServerTestCase(unittest.TestCase):
    """A real twistd on a free loopback port (``self.base``), a data folder and a scratch folder."""

    timeout = 300

    async def start_server(self, *args: str) -> None:
        self.data = os.path.abspath(self.mktemp())
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.server = await ServerProcess(
            self.data, "--public-url", self.base, "--listen", f"tcp:{port}:interface=127.0.0.1", *args,
        ).start()
        self.addCleanup(self.server.stop)
        os.makedirs(SCREENSHOTS, exist_ok=True)
        self.work = tempfile.mkdtemp(prefix="imgshare-chromium-")
        self.addCleanup(shutil.rmtree, self.work, True)

    def open_browser(self, name: str, javascript: bool = True, prefix: str | None = None) -> Pages:
        """A fresh Chromium (its own profile ``name``) on this server; screenshots named
        ``prefix`` (``<name>-`` by default)."""
        driver = start_chromium(os.path.join(self.work, f"profile-{name}"),
                                os.path.join(self.work, f"downloads-{name}"), javascript)
        self.addCleanup(driver.quit)
        driver.set_script_timeout(120)
        return Pages(driver, self.base, SCREENSHOTS, f"{name}-" if prefix is None else prefix)

    def log_in(self, site: Pages, account: str = "kitten", password: str = PASSWORD) -> None:
        """Log ``account`` in through the login form; the gallery is shown."""
        site.open("/login")
        site.fill(name=account, password=password)
        site.find("form.stack button[type=submit]").click()
        site.wait_path("/images")

    def start_audits(self) -> None:
        """Get axe-core ready; ``audit`` then collects what it finds, ``assert_accessible`` judges it."""
        self.axe = axe_source()
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.checked: list[str] = []

    def audit(self, site: Pages, name: str) -> None:
        """Run axe-core on the page shown, in both themes; collect what it finds."""
        axe_audit(site, self.axe, name, self.problems, self.notes)
        self.checked.append(name)

    def assert_accessible(self, checked: list[str] | None = None) -> None:
        """No serious or critical violation on any page audited (the minor ones in the
        message); ``checked``: the pages that must have been audited, in order."""
        message = "\n".join(self.problems)
        if self.notes:
            message += "\nminor and moderate:\n" + "\n".join(self.notes)
        self.assertEqual(self.problems, [], message)
        if checked is not None:
            self.assertEqual(self.checked, checked)


class BrowserTests(ServerTestCase):
    """A newcomer's whole path, in Chromium, against the real server."""

    timeout = 300

    async def setUp(self):
        await self.start_server()
        photos = os.path.join(self.work, "photos")
        os.makedirs(photos)
        self.photos = []
        for name, fmt, size, color in [("harbour.jpg", "JPEG", (1600, 1000), (40, 110, 190)),
                                       ("sunset.png", "PNG", (800, 1200), (230, 120, 40))]:
            path = os.path.join(photos, name)
            with open(path, "wb") as f:
                f.write(image_bytes(fmt, size, color))
            self.photos.append(path)

    def browser(self, name: str, javascript: bool = True) -> Any:
        profile = os.path.join(self.work, f"profile-{name}")
        downloads = os.path.join(self.work, f"downloads-{name}")
        os.makedirs(downloads)
        driver = start_chromium(profile, downloads, javascript)
        self.addCleanup(driver.quit)
        return driver, downloads

    def setup_link(self) -> str:
        m = re.search(r"/setup\?code=([A-Za-z0-9_-]+)", self.server.log())
        self.assertIsNotNone(m, "the server logs the one-time setup link")
        return f"/setup?code={m.group(1)}"

    async def test_viewer_and_delete_link_in_chromium(self):
        """A public viewer page (XGA copy, card tags, embed codes with copy buttons) and the
        secret delete link: its confirmation page deletes after one click, not before."""
        await deferToThread(self._viewer_and_delete)

    def _viewer_and_delete(self) -> None:
        admin(self.data, "user", "add", "kitten", stdin=PASSWORD + "\n")
        token = admin(self.data, "token", "create", "kitten").strip()
        with open(self.photos[0], "rb") as f:
            status, record = api_upload(self.base, token, f.read(), "harbour.jpg")
        self.assertEqual(status, 200)
        driver, _ = self.browser("viewer")
        site = Pages(driver, self.base, SCREENSHOTS, "viewer-")
        site.open(record["viewer"].removeprefix(self.base))
        site.wait(lambda: driver.execute_script(
            "var i = document.querySelector('.viewer-image'); return i && i.complete && i.naturalWidth > 0;"),
            "the XGA copy")
        image = driver.find_element(site.By.CSS_SELECTOR, 'meta[property="og:image"]')
        self.assertEqual(image.get_attribute("content"), record["urls"]["xga"])
        codes = [e.get_attribute("value") for e in site.find_all(".embed-row input")]
        self.assertEqual(codes[0], record["urls"]["original"])
        self.assertEqual(len(codes), 4)
        buttons = site.find_all(".embed-row button.copy")
        self.assertTrue(all(b.is_displayed() for b in buttons), "the script shows the copy buttons")
        site.shoot("viewer")

        site.open(record["delete_url"].removeprefix(self.base))
        self.assertIn(record["file"], site.find("main").text)
        site.shoot("delete-link")
        with urllib.request.urlopen(record["urls"]["original"], timeout=10) as response:
            self.assertEqual(response.status, 200, "opening the link deleted nothing")
        site.find("form.actions button[type=submit]").click()
        site.wait(lambda: "Delete permanently" not in driver.page_source, "the page after deleting")
        site.shoot("deleted")
        with self.assertRaises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(record["urls"]["original"], timeout=10)
        self.assertEqual(caught.exception.code, 404)

    async def test_newcomer_in_chromium(self):
        """From the logged setup link to a working API token in the browser: set up the first
        account, log out and in, upload two files through the form (drag-and-drop's script path,
        with progress), see them with their thumbnails, make a token and its .sxcu, upload with
        it, delete an image after the confirm dialog, visit the account page, log out."""
        await deferToThread(self._newcomer)

    def _newcomer(self) -> None:
        driver, downloads = self.browser("js")
        site = Pages(driver, self.base, SCREENSHOTS, "js-")
        started = time.monotonic()

        site.open(self.setup_link())
        self.assertEqual(driver.title, "Set up IMGSHARE · IMGSHARE")
        site.shoot("setup")
        site.fill(name="kitten", password=PASSWORD, repeat=PASSWORD)
        site.find("form.stack button[type=submit]").click()
        site.wait_path("/images?done=welcome")
        self.assertIn("Welcome!", site.find(".notice").text)
        site.shoot("welcome")

        site.find(".logout button").click()
        site.wait_path("/login?done=logout")
        site.open(self.setup_link())
        self.assertIn("not valid", site.wait_for("main").text, "the setup link is void now")
        site.open("/login")
        site.fill(name="kitten", password="wrong password")
        site.find("form.stack button[type=submit]").click()
        self.assertIn("Wrong account name or password.", site.wait_for(".problem").text)
        site.shoot("login-failed")
        site.fill(name="kitten", password=PASSWORD)
        site.find("form.stack button[type=submit]").click()
        site.wait_path("/images")

        site.find("input[type=file]").send_keys("\n".join(self.photos))
        site.find("select[name=expire] option[value='30d']").click()
        site.find("input[name=keep_name]").click()
        site.find("#upload-form button[type=submit]").click()
        site.wait(lambda: len(site.find_all(".progress-list li.ok")) == 2, "both files stored")
        results = site.find_all(".progress-list li.ok .state a")
        self.assertEqual(len(results), 2, "each result links its file, and stays on the page")
        self.assertTrue(all(r.text.startswith("20") for r in results))
        self.assertTrue(site.find(".progress-list .after button").is_displayed(), "a Dismiss button")
        site.shoot("uploaded")
        site.find(".progress-list .after a").click()
        site.wait(lambda: site.path() == "/images" and len(site.find_all(".item")) == 2, "two images listed")
        names = [e.text for e in site.find_all(".item .name")]
        self.assertEqual(sorted(n.split("_", 1)[1] for n in names), ["harbour.jpg", "sunset.png"])
        site.wait(lambda: site.thumbnails_loaded() == 2, "both thumbnails")
        self.assertNotIn("processing", site.find(".gallery").text)
        self.assertIn("Expires in 30 days", site.find(".gallery").text)
        site.shoot("images")

        site.open("/tokens")
        site.shoot("tokens-empty")
        site.fill(label="laptop ShareX")
        site.find("form.grid-form button[type=submit]").click()
        token = site.wait_for("#new-token").text
        self.assertRegex(token, r"^[0-9a-f]{32}$")
        self.assertFalse(site.find(".fresh button.copy").get_attribute("hidden"), "the script shows Copy")
        site.shoot("token-created")
        seconds = time.monotonic() - started
        self.assertLess(seconds, 60, "from the setup link to a working token in under a minute")
        flavours = [b.get_attribute("value") for b in site.find_all(".fresh form.sharex button[type=submit]")]
        self.assertEqual(flavours, ["native", "v1", "chevereto"], "the three ShareX files, native first")
        site.find(".fresh form button[type=submit]").click()
        uploader = site.wait(lambda: _downloaded_json(downloads, ".sxcu"), "the .sxcu download")
        self.assertEqual(uploader["Headers"], {"X-API-Key": token})
        self.assertEqual(uploader["RequestURL"], self.base + "/api/v1/img_upload.php")

        status, record = api_upload(self.base, token, image_bytes("PNG", (640, 480), (20, 160, 90)), "meadow.png")
        self.assertEqual(status, 200)
        self.assertEqual(record["user"], "kitten")
        site.open("/tokens")
        self.assertIn("laptop ShareX", site.find("table.list").text)
        self.assertNotIn(token, driver.page_source, "a token is shown only once")
        site.shoot("tokens")

        site.open("/images")
        site.wait(lambda: site.thumbnails_loaded() == 3, "three thumbnails")
        first = site.find(".item .name").text
        self.assertEqual(first, record["file"], "newest first")
        site.find(".item form.delete button").click()
        alert = site.wait(lambda: _alert(driver), "the confirm dialog")
        self.assertIn(first, alert.text)
        alert.accept()
        site.wait_path("/images?done=deleted")
        self.assertEqual(len(site.find_all(".item")), 2)
        self.assertNotIn(first, site.find(".gallery").text)
        with self.assertRaises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(record["urls"]["original"], timeout=10)
        self.assertEqual(caught.exception.code, 404)
        site.shoot("images-after-delete")

        site.open("/account")
        # The page may still be settling from the delete's redirect: wait for it.
        site.wait_path("/account")
        site.wait(lambda: "Create an account" in driver.page_source, "the first account is an admin")
        site.shoot("account")
        site.find(".logout button").click()
        site.wait_path("/login?done=logout")
        site.shoot("logged-out")
        site.open("/images")
        site.wait_path("/login")

    async def test_pages_without_javascript(self):
        """With JavaScript off: log in, upload two files in one form post (results page), delete
        through the confirmation page, create a token (shown with its .sxcu button)."""
        await deferToThread(self._without_javascript)

    def _without_javascript(self) -> None:
        from tests.serverprocess import admin

        admin(self.data, "user", "add", "kitten", stdin=PASSWORD + "\n")
        driver, _ = self.browser("nojs", javascript=False)
        site = Pages(driver, self.base, SCREENSHOTS, "nojs-")
        site.open("/login")
        site.shoot("login")
        site.fill(name="kitten", password=PASSWORD)
        site.find("form.stack button[type=submit]").click()
        site.wait_path("/images")
        self.assertTrue(site.find(".drop-hint").get_attribute("hidden") is not None, "no drag-and-drop hint")
        site.find("input[type=file]").send_keys("\n".join(self.photos))
        site.find("#upload-form button[type=submit]").click()
        site.wait_path("/images/upload")
        self.assertEqual(len(site.find_all(".results li.ok")), 2)
        site.shoot("uploaded")
        site.open("/images")
        self.assertEqual(len(site.find_all(".item")), 2)
        site.find(".item form.delete button").click()
        site.wait_path("/images/delete")
        self.assertIn("Delete", site.find(".question").text)
        site.shoot("confirm-delete")
        site.find(".confirm button[type=submit]").click()
        site.wait_path("/images?done=deleted")
        self.assertEqual(len(site.find_all(".item")), 1)
        site.open("/tokens")
        site.fill(label="<script>alert(1)</script>")
        site.find("form.grid-form button[type=submit]").click()
        self.assertRegex(site.wait_for("#new-token").text, r"^[0-9a-f]{32}$")
        self.assertIsNotNone(site.find(".fresh button.copy").get_attribute("hidden"), "no Copy without script")
        site.shoot("token-created")
        site.open("/tokens")
        self.assertIn("<script>alert(1)</script>", site.find("table.list").text, "shown as text")
        site.shoot("tokens")

        # The administrator (kitten, the first account) resets bear's password and makes it an
        # administrator, through the form page and the confirmation page.
        admin(self.data, "user", "add", "bear", stdin=PASSWORD + "\n")
        site.open("/account")
        site.shoot("account-admin")
        site.find("a[href='/account/reset?name=bear']").click()
        site.wait_path("/account/reset?name=bear")
        site.fill(password="bears new password", repeat="bears new password")
        site.shoot("reset-password")
        site.find("form.stack button[type=submit]").click()
        site.wait_path("/account?done=password-reset")
        self.assertIn("browsers were logged out", site.find(".notice").text)
        site.find("form[action='/account/admin'] button").click()
        site.wait_path("/account/admin")
        self.assertIn("Make bear an administrator?", site.find(".question").text)
        site.shoot("confirm-make-admin")
        site.find(".confirm button[type=submit]").click()
        site.wait_path("/account?done=admin-on")
        self.assertIn("Remove admin", site.find("table.list").text)
        self.assertIn("bear\tadmin", admin(self.data, "user", "list"))


def _alert(driver: Any) -> Any:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        alert = driver.switch_to.alert
        alert.text  # noqa: B018 - raises when there is none
        return alert
    except NoAlertPresentException:
        return None


def _downloaded_json(folder: str, suffix: str) -> Any:
    """The parsed JSON of the first finished download ending in ``suffix``, or None
    while there is none (or it is still being written)."""
    for name in os.listdir(folder):
        if name.endswith(suffix):
            try:
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    return json.load(f)
            except (OSError, ValueError):
                return None
    return None


def _luminance(rgb: tuple[float, float, float]) -> float:
    def channel(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (channel(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    """The WCAG contrast ratio of two CSS ``rgb(…)``/``rgba(…)`` colours."""
    def parse(css: str) -> tuple[float, float, float]:
        numbers = [float(n) for n in re.findall(r"[\d.]+", css)[:3]]
        return numbers[0], numbers[1], numbers[2]
    light, dark = sorted((_luminance(parse(a)), _luminance(parse(b))), reverse=True)
    return (light + 0.05) / (dark + 0.05)


class GalleryLayoutTests(ServerTestCase):
    """The gallery at 390 px (two columns), dates as words and as dates, the dark theme,
    a focus ring of at least 3:1 and controls of at least 24 x 24 px, in both themes."""

    timeout = 300

    async def setUp(self):
        await self.start_server()

    async def test_gallery_on_a_phone_dark_theme_focus_and_targets(self):
        await deferToThread(self._gallery)

    def _gallery(self) -> None:
        admin(self.data, "user", "add", "kitten", stdin=PASSWORD + "\n")
        token = admin(self.data, "token", "create", "kitten").strip()
        colours = [(40, 110, 190), (230, 120, 40), (60, 160, 90), (150, 60, 170)]
        for i, colour in enumerate(colours):
            status, _ = api_upload(self.base, token, image_bytes("JPEG", (900, 600), colour), f"photo-{i}.jpg")
            self.assertEqual(status, 200)
        driver = start_chromium(os.path.join(self.work, "profile"), os.path.join(self.work, "downloads"))
        self.addCleanup(driver.quit)
        site = Pages(driver, self.base, SCREENSHOTS, "gallery-")
        site.open("/login")
        site.fill(name="kitten", password=PASSWORD)
        site.find("form.stack button[type=submit]").click()
        site.wait_path("/images")
        site.wait(lambda: site.thumbnails_loaded() == len(colours), "the thumbnails")
        dates = [e.text for e in site.find_all(".card.item .facts .date")]
        self.assertTrue(dates and all(d.endswith("UTC") for d in dates[:1]), dates)
        self.assertIn(f"({len(colours)})", site.find("#list-title").text)

        for scheme in ("light", "dark"):
            driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {
                "features": [{"name": "prefers-color-scheme", "value": scheme}]})
            background = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
            is_dark = _luminance(tuple(float(n) for n in re.findall(r"[\d.]+", background)[:3])) < 0.1
            self.assertEqual(is_dark, scheme == "dark", (scheme, background))
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                   {"width": 390, "height": 900, "deviceScaleFactor": 1, "mobile": True})
            boxes = driver.execute_script(
                "return Array.from(document.querySelectorAll('.card.item')).slice(0, 2)"
                ".map(function (e) { var r = e.getBoundingClientRect(); return [r.left, r.top, r.width]; })")
            (left0, top0, width0), (left1, top1, _) = boxes
            self.assertEqual(round(top0), round(top1), "two cards side by side on a phone")
            self.assertLess(left0, left1)
            self.assertLess(width0, 195)
            small = driver.execute_script(
                "return Array.from(document.querySelectorAll('button, input, select'))"
                ".filter(function (e) { var r = e.getBoundingClientRect();"
                " return r.width > 0 && (r.width < 24 || r.height < 24); })"
                ".map(function (e) { return e.outerHTML.slice(0, 80); })")
            self.assertEqual(small, [], "every control is at least 24 x 24 px")
            driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
            # The focus ring against the page behind it.
            driver.execute_script("document.querySelector('.card.item .links a').focus()")
            body = driver.find_element(site.By.CSS_SELECTOR, "body")
            body.send_keys("")  # keep the focus
            from selenium.webdriver.common.keys import Keys

            driver.find_element(site.By.CSS_SELECTOR, "body").send_keys(Keys.TAB)
            ring = driver.execute_script(
                "var e = document.activeElement; var s = getComputedStyle(e);"
                "return [s.outlineStyle, s.outlineColor, s.outlineWidth];")
            self.assertEqual(ring[0], "solid", ring)
            for behind in (background, driver.execute_script(
                    "return getComputedStyle(document.querySelector('.card')).backgroundColor")):
                self.assertGreaterEqual(contrast(ring[1], behind), 3.0, (scheme, ring, behind))
            site.prefix = f"gallery-{scheme}-"
            site.shoot("images")

    async def test_drop_anywhere_paste_and_a_failed_file(self):
        """A file dropped anywhere on the page is uploaded (the browser stays); an image
        pasted from the clipboard is uploaded; a refused file shows why, with no bar."""
        await deferToThread(self._drop_and_paste)

    def _drop_and_paste(self) -> None:
        import io as stdio

        from PIL import Image as PILImage

        admin(self.data, "user", "add", "kitten", stdin=PASSWORD + "\n")
        driver = start_chromium(os.path.join(self.work, "profile-drop"), os.path.join(self.work, "downloads-drop"))
        self.addCleanup(driver.quit)
        site = Pages(driver, self.base, SCREENSHOTS, "drop-")
        site.open("/login")
        site.fill(name="kitten", password=PASSWORD)
        site.find("form.stack button[type=submit]").click()
        site.wait_path("/images")
        gif = stdio.BytesIO()
        PILImage.new("P", (4, 4)).save(gif, "GIF")
        files = {"dropped-on-the-heading.png": image_bytes("PNG", (300, 200), (200, 40, 40)),
                 "an animation that is not supported by this host.gif": gif.getvalue()}
        script = """
            var target = document.querySelector(arguments[0]);
            var dt = new DataTransfer();
            arguments[1].forEach(function (f) {
              var bytes = Uint8Array.from(atob(f[1]), function (c) { return c.charCodeAt(0); });
              dt.items.add(new File([bytes], f[0], {type: f[2]}));
            });
            if (arguments[2] === "paste") {
              target.dispatchEvent(new ClipboardEvent("paste", {clipboardData: dt, bubbles: true}));
            } else {
              ["dragenter", "dragover", "drop"].forEach(function (name) {
                target.dispatchEvent(new DragEvent(name, {dataTransfer: dt, bubbles: true, cancelable: true}));
              });
            }"""
        encoded = [[name, base64.b64encode(data).decode(), "image/png" if name.endswith("png") else "image/gif"]
                   for name, data in files.items()]
        driver.execute_script(script, "h1", encoded, "drop")
        site.wait(lambda: len(site.find_all(".progress-list li.ok, .progress-list li.failed")) == 2, "both files done")
        self.assertEqual(site.path(), "/images", "the browser stayed on the page")
        failed = site.find(".progress-list li.failed")
        self.assertIn("an animation that is not supported by this host.gif", failed.text, "the whole name")
        reason = failed.find_element(site.By.CSS_SELECTOR, ".state").text
        self.assertTrue(reason[:1].isupper() and reason.endswith("."), reason)
        self.assertEqual(failed.find_elements(site.By.CSS_SELECTOR, "progress"), [], "no bar on a failed file")
        site.shoot("dropped")
        site.find(".progress-list .after button").click()
        self.assertTrue(site.find(".progress-list").get_attribute("hidden") is not None, "dismissed")
        driver.execute_script(script, "body", [["pasted.png", encoded[0][1], "image/png"]], "paste")
        site.wait(lambda: len(site.find_all(".progress-list li.ok")) == 1, "the pasted image stored")
        self.assertIn("pasted", site.find(".progress-list li.ok").text)


AXE_VERSION = "4.14.1"
AXE_CACHE = os.environ.get("IMGSHARE_AXE_CORE", os.path.join(REPO, "test-artifacts", "axe-core"))


def axe_source() -> str:
    """axe.min.js of axe-core AXE_VERSION, installed from npm into AXE_CACHE unless it is there."""
    folder = os.path.join(AXE_CACHE, "node_modules", "axe-core")
    try:
        with open(os.path.join(folder, "package.json"), encoding="utf-8") as f:
            installed = json.load(f).get("version")
    except (OSError, ValueError):
        installed = None
    if installed != AXE_VERSION:
        if not shutil.which("npm"):
            raise AssertionError("npm is needed to install axe-core: apt-get install -y nodejs npm")
        import subprocess

        os.makedirs(AXE_CACHE, exist_ok=True)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts", "--no-save",
                        "--prefix", AXE_CACHE, f"axe-core@{AXE_VERSION}"], check=True, timeout=300)
    with open(os.path.join(folder, "axe.min.js"), encoding="utf-8") as f:
        return f.read()


def axe_audit(site: Pages, axe: str, name: str, problems: list[str], notes: list[str]) -> None:
    """Run axe-core (its source ``axe``) on the page shown, in light and dark theme, with a
    screenshot of each; serious and critical violations go to ``problems``, the rest to ``notes``."""
    driver = site.driver
    for scheme in ("light", "dark"):
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {
            "features": [{"name": "prefers-color-scheme", "value": scheme}]})
        # WebDriver's scripts are not subject to the page's Content-Security-Policy.
        driver.execute_script(axe + "\n;window.axe = axe;")
        found = driver.execute_async_script(
            "var done = arguments[arguments.length - 1];"
            "axe.run(document, {resultTypes: ['violations']})"
            ".then(function (r) { done(JSON.stringify(r.violations)); })"
            ".catch(function (e) { done(JSON.stringify({error: String(e)})); });")
        violations = json.loads(found)
        if isinstance(violations, dict):
            raise AssertionError(f"axe-core failed on {name}: {violations['error']}")
        for v in violations:
            where = "; ".join(" ".join(n["target"]) + " " + n.get("failureSummary", "").replace("\n", " ")[:160]
                              for n in v["nodes"][:4])
            line = f"{name} ({scheme}): [{v['impact']}] {v['id']}: {v['help']} at {where}"
            (problems if v["impact"] in ("serious", "critical") else notes).append(line)
        site.shoot(f"{name}-{scheme}")
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})


class AccessibilityTests(ServerTestCase):
    """axe-core over every page, in light and dark theme: no serious or critical violation."""

    timeout = 300

    async def setUp(self):
        await self.start_server("--registration", "open")
        self.start_audits()

    async def test_axe_core_on_every_page(self):
        await deferToThread(self._every_page)

    def _every_page(self) -> None:
        site = self.open_browser("a11y")
        driver = site.driver
        m = re.search(r"/setup\?code=([A-Za-z0-9_-]+)", self.server.log())
        self.assertIsNotNone(m, "the server logs the one-time setup link")
        site.open(f"/setup?code={m.group(1)}")
        site.wait_for("form.stack")
        self.audit(site, "setup")
        site.fill(name="kitten", password=PASSWORD, repeat=PASSWORD)
        site.find("form.stack button[type=submit]").click()
        site.wait_path("/images?done=welcome")
        admin(self.data, "user", "add", "puppy", stdin=PASSWORD + "\n")
        token = admin(self.data, "token", "create", "kitten").strip()
        records = []
        for i, colour in enumerate([(40, 110, 190), (230, 120, 40), (60, 160, 90)]):
            status, record = api_upload(self.base, token, image_bytes("JPEG", (900, 600), colour), f"photo-{i}.jpg")
            self.assertEqual(status, 200)
            records.append(record)

        site.open("/images")
        site.wait(lambda: site.thumbnails_loaded() == 3, "the thumbnails")
        self.assertEqual(site.find(".progress-list").get_attribute("aria-live"), "polite", "uploads are announced")
        self.audit(site, "images")
        # The upload rows: one stored, one refused, with their links and the Dismiss button.
        driver.execute_script("""
            var dt = new DataTransfer();
            arguments[0].forEach(function (f) {
              var bytes = Uint8Array.from(atob(f[1]), function (c) { return c.charCodeAt(0); });
              dt.items.add(new File([bytes], f[0], {type: f[2]}));
            });
            ["dragenter", "dragover", "drop"].forEach(function (name) {
              document.body.dispatchEvent(new DragEvent(name, {dataTransfer: dt, bubbles: true, cancelable: true}));
            });""", [["dropped.png", base64.b64encode(image_bytes("PNG", (300, 200), (200, 40, 40))).decode(),
                      "image/png"],
                     ["not an image.png", base64.b64encode(b"plain text, not a picture").decode(), "image/png"]])
        site.wait(lambda: len(site.find_all(".progress-list li.ok, .progress-list li.failed")) == 2, "both files done")
        self.audit(site, "images-uploaded")
        site.open("/tokens")
        site.fill(label="laptop ShareX")
        site.find("form.grid-form button[type=submit]").click()
        site.wait_for("#new-token")
        self.audit(site, "tokens-fresh")
        site.open("/account")
        site.wait(lambda: "Create an account" in driver.page_source, "the admin forms")
        self.audit(site, "account")
        site.open(records[0]["viewer"].removeprefix(self.base))
        site.wait_for("main img")
        self.audit(site, "viewer")
        site.open(records[1]["delete_url"].removeprefix(self.base))
        site.wait_for("form.actions")
        self.audit(site, "delete-link")
        site.open("/no/such/page")
        site.wait_for("main")
        self.audit(site, "not-found")
        # /images as a browser without JavaScript builds it: app.js is not run while the
        # page loads (then scripts are allowed again, for axe-core only).
        driver.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})
        site.open("/images")
        site.wait_for(".gallery")
        driver.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": False})
        site.wait(lambda: site.thumbnails_loaded() == 4, "the thumbnails")
        site.prefix = "a11y-nojs-"
        self.audit(site, "images")
        site.prefix = "a11y-"
        site.find(".logout button").click()
        site.wait_path("/login?done=logout")
        self.audit(site, "login")
        site.open("/register")
        site.wait_for("form.stack")
        self.audit(site, "register")

        self.assert_accessible()
        self.assertEqual(len(self.checked), 11, self.checked)


class LifetimeTests(ServerTestCase):
    """Honest lifetimes: before an upload each chosen file says what it will get for the
    lifetime chosen; after it, every result and the gallery card say what it got and why,
    with JavaScript and without."""

    timeout = 300

    async def setUp(self):
        await self.start_server()
        admin(self.data, "user", "add", "kitten", stdin=PASSWORD + "\n")
        self.big = os.path.join(self.work, "holiday photo.bmp")
        with open(self.big, "wb") as f:
            f.write(image_bytes("BMP", (1100, 700), (40, 110, 190)))  # 2.3 MB: over the forever tier
        self.small = os.path.join(self.work, "small.png")
        with open(self.small, "wb") as f:
            f.write(image_bytes("PNG", (300, 200), (230, 120, 40)))
        self.start_audits()

    def login(self, javascript: bool) -> Pages:
        profile = "js" if javascript else "nojs"
        site = self.open_browser(profile, javascript, prefix=f"lifetime-{profile}-")
        self.log_in(site)
        return site

    async def test_with_javascript(self):
        await deferToThread(self._with_javascript)

    def _with_javascript(self) -> None:
        from selenium.webdriver.support.ui import Select

        site = self.login(javascript=True)
        tiers = site.find("#tiers").text
        self.assertIn("Up to 2.0 MiB: kept as long as you like", tiers, "the tiers are shown before an upload")
        self.assertTrue(site.find("#tiers").is_displayed())
        choice = Select(site.find("select[name=expire]"))
        self.assertIn("Forever (files up to 2.0 MiB)", [o.text for o in choice.options])
        choice.select_by_value("never")
        site.find("input[type=file]").send_keys(self.big + "\n" + self.small)
        rows = site.wait(lambda: len(site.find_all(".progress-list li")) == 2 and site.find_all(".progress-list li"),
                         "a row per chosen file")
        why = ("Shortened from forever to 90 days: files over 2.0 MiB and up to 8.0 MiB are kept at most "
               "90 days.")
        self.assertEqual(rows[0].find_element(site.By.CSS_SELECTOR, ".note").text, "Will be kept 90 days. " + why)
        self.assertEqual(rows[1].find_element(site.By.CSS_SELECTOR, ".note").text, "Will be kept forever.")
        self.assertEqual(rows[0].find_element(site.By.CSS_SELECTOR, ".state").text, "Ready to upload (2.2 MiB).")
        self.audit(site, "chosen")
        choice.select_by_value("7d")
        site.wait(lambda: site.find(".progress-list li .note").text == "Will be kept 7 days.", "the plan for 7 days")
        choice.select_by_value("never")
        site.find("#upload-form button[type=submit]").click()
        done = site.wait(lambda: len(site.find_all(".progress-list li.ok")) == 2 and site.find_all(
            ".progress-list li.ok"), "both files stored")
        until = re.escape("until ") + r"\d{1,2} \w{3} \d{4}, \d\d:\d\d UTC\."
        self.assertRegex(done[0].text, r"Stored as 2\d{7}_[a-z0-9]+\.bmp\. Kept 90 days, " + until)
        self.assertEqual(done[0].find_element(site.By.CSS_SELECTOR, ".note").text, why)
        self.assertRegex(done[1].text, r"Stored as 2\d{7}_[a-z0-9]+\.png\. Kept forever\.")
        secret = done[1].find_element(site.By.CSS_SELECTOR, ".delete-link a").get_attribute("href")
        self.assertRegex(secret, r"/delete/kitten/2\d{7}_[a-z0-9]+\.png/[0-9a-f]{32}$")
        self.audit(site, "uploaded")
        site.open("/images")
        site.wait(lambda: len(site.find_all(".card.item")) == 2, "two cards")
        notes = [e.text for e in site.find_all(".card.item .facts.note")]
        self.assertEqual(notes, [why], "only the shortened one says so")
        self.audit(site, "gallery")
        self.assert_accessible(["chosen", "uploaded", "gallery"])

    async def test_without_javascript(self):
        await deferToThread(self._without_javascript)

    def _without_javascript(self) -> None:
        from selenium.webdriver.support.ui import Select

        site = self.login(javascript=False)
        self.assertTrue(site.find("#tiers").is_displayed())
        Select(site.find("select[name=expire]")).select_by_value("never")
        site.find("input[type=file]").send_keys(self.big)
        site.find("#upload-form button[type=submit]").click()
        result = site.wait_for(".results li.ok")
        self.assertRegex(result.text, r"Stored as 2\d{7}_[a-z0-9]+\.bmp\. Kept 90 days, until .+ UTC\.")
        self.assertIn("Secret delete link", result.find_element(site.By.CSS_SELECTOR, ".delete-link").text)
        self.assertEqual(result.find_element(site.By.CSS_SELECTOR, ".note").text,
                         "Shortened from forever to 90 days: files over 2.0 MiB and up to 8.0 MiB are kept at "
                         "most 90 days.")
        site.shoot("uploaded")
        site.open("/images")
        note = site.wait_for(".card.item .facts.note")
        self.assertIn("Shortened from forever to 90 days", note.text)
        site.shoot("gallery")


def rotated_jpeg(size: tuple[int, int], orientation: int) -> bytes:
    """A JPEG of ``size`` stored pixels whose EXIF asks a viewer to rotate it (6: 90° clockwise)."""
    import io as stdio

    from PIL import Image as PILImage

    picture = PILImage.new("RGB", size, (90, 140, 60))
    exif = PILImage.Exif()
    exif[0x0112] = orientation
    out = stdio.BytesIO()
    picture.save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


class GalleryItemTests(ServerTestCase):
    """The gallery's count and pages (a page past the last says so and links back), a card's
    viewer page, share codes and copy buttons, an EXIF-rotated photo's upright size, and the
    password rules, in Chromium at both widths."""

    timeout = 300

    async def setUp(self):
        await self.start_server()
        admin(self.data, "user", "add", "kitten", stdin=PASSWORD + "\n")
        self.token = admin(self.data, "token", "create", "kitten").strip()

    def login(self, name: str, javascript: bool = True) -> Pages:
        site = self.open_browser(name, javascript)
        self.log_in(site)
        return site

    async def test_count_pages_and_past_the_end(self):
        await deferToThread(self._pages)

    def _pages(self) -> None:
        for i in range(26):
            status, _ = api_upload(self.base, self.token, image_bytes("PNG", (40, 30), (8 * i, 90, 160)), f"p{i}.png")
            self.assertEqual(status, 200)
        for javascript in (True, False):
            self._page_through(self.login("pages-js" if javascript else "pages-nojs", javascript))

    def _page_through(self, site: Pages) -> None:
        self.assertEqual(site.find("#list-title").text, "Your images (26)")
        self.assertEqual(len(site.find_all(".card.item")), 24)
        self.assertIn("Page 1 of 2", site.find(".pager").text)
        site.shoot("page-1")
        site.find(".pager a[rel=next]").click()
        site.wait(lambda: "Page 2 of 2" in site.find(".pager").text, "page 2")
        self.assertEqual(len(site.find_all(".card.item")), 2)
        self.assertEqual(site.find_all(".pager a[rel=next]"), [], "no page after the last")
        site.shoot("page-2")
        site.open("/images?page=99")
        message = site.wait_for(".empty").text
        self.assertEqual(message, "There is no page 99: your images fill 2 pages. Go to the last page.")
        self.assertEqual(site.find_all(".pager"), [], "no pager leading to page 98")
        site.shoot("page-99")
        site.find(".empty a").click()
        site.wait(lambda: site.path() == "/images?page=2", "the last page")
        self.assertEqual(len(site.find_all(".card.item")), 2)

    async def test_card_viewer_share_codes_and_upright_size(self):
        await deferToThread(self._card)

    def _card(self) -> None:
        status, record = api_upload(self.base, self.token, rotated_jpeg((400, 300), 6), "phone.jpg")
        self.assertEqual(status, 200)
        self.assertEqual((record["width"], record["height"]), (300, 400), "the upright size")
        site = self.login("card")
        driver = site.driver
        driver.execute_cdp_cmd("Browser.grantPermissions", {
            "origin": self.base, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]})
        card = site.wait_for(".card.item")
        self.assertIn("JPEG · 300 × 400", card.text)
        site.wait(lambda: site.thumbnails_loaded() == 1, "the thumbnail")
        shape = driver.execute_script(
            "var i = document.querySelector('.thumb img'); return [i.naturalWidth, i.naturalHeight];")
        self.assertLess(shape[0], shape[1], "the thumbnail is upright (portrait)")
        card.find_element(site.By.CSS_SELECTOR, ".share summary").click()
        codes = {e.find_element(site.By.CSS_SELECTOR, "label").text.split("\n")[0].strip():
                 e.find_element(site.By.CSS_SELECTOR, "input").get_attribute("value")
                 for e in site.find_all(".share-code")}
        self.assertEqual(len(codes), 3, codes)
        direct, bbcode, markdown = codes.values()
        self.assertEqual(direct, record["urls"]["original"])
        self.assertIn(f"[url={record['viewer']}][img]{record['urls']['xga']}[/img][/url]", bbcode)
        self.assertIn(f"]({record['urls']['xga']})]({record['viewer']})", markdown)
        button = site.find(".share-code button.copy")
        self.assertTrue(button.is_displayed(), "the script shows the copy buttons")
        button.click()
        site.wait(lambda: button.text == "Copied", "the copy confirmed")
        copied = driver.execute_async_script(
            "var done = arguments[arguments.length - 1];"
            "navigator.clipboard.readText().then(done, function (e) { done('failed: ' + e); });")
        self.assertEqual(copied, direct)
        site.shoot("card-share")
        site.find(".card.item a.viewer-link").click()
        site.wait(lambda: site.path().startswith("/i/"), "the viewer page")
        self.assertEqual(site.driver.current_url, record["viewer"])
        site.wait(lambda: driver.execute_script(
            "var i = document.querySelector('.viewer-image'); return i && i.complete && i.naturalWidth > 0;"),
            "the viewer's image")
        shape = driver.execute_script(
            "var i = document.querySelector('.viewer-image'); return [i.naturalWidth, i.naturalHeight];")
        self.assertEqual(shape, [300, 400], "the viewer shows the upright photo")
        self.assertIn("300 × 400", site.find("main").text)
        site.shoot("viewer-rotated")

    async def test_password_rules(self):
        await deferToThread(self._passwords)

    def _passwords(self) -> None:
        site = self.login("passwords")
        site.open("/account")
        site.wait_for("#current")
        self.assertIn("at least 10 characters", site.find("main").text.lower())
        for new, message in [("Password1234", "among the most common passwords"), (PASSWORD, "the one you have now")]:
            site.fill(current=PASSWORD, password=new, repeat=new)
            site.find("#current").find_element(site.By.XPATH, "ancestor::form").submit()
            problem = site.wait_for(".problem").text
            self.assertIn(message, problem.lower(), problem)
        site.shoot("password-refused")
        site.fill(current=PASSWORD, password="a new and long one", repeat="a new and long one")
        site.find("#current").find_element(site.By.XPATH, "ancestor::form").submit()
        site.wait_path("/account?done=password")
        site.shoot("password-changed")
