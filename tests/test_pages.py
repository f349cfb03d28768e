"""The browser pages through StubTreq: sessions, CSRF, every page and form, escaping, headers."""

from __future__ import annotations

import html
import json
import re
from http.cookies import SimpleCookie

from twisted.trial import unittest

from imgshare import auth, db
from imgshare.accounts import SETUP_CODE_SETTING
from imgshare.domain import lifetime, output, passwords, words
from imgshare.expiry import expire_once
from imgshare.ratelimit import LOGIN_PER_ACCOUNT_ADDRESS
from imgshare.sessions import SESSION_SECONDS
from imgshare.testing import T0, image_bytes, make_fixture, multipart
from imgshare.web.pages.images import PAGE_SIZE
from imgshare.web.sessions import SESSION_COOKIE

SITE = "http://img.example"
PASSWORD = "correct horse"
#: Passwords the policy refuses, with its message for each (for an account named mountaingoat).
WEAK = [("password", passwords.TOO_SHORT), ("aaaaaaaa", passwords.TOO_SHORT),
        ("aaaaaaaaaa", passwords.PATTERN), ("1234567890", passwords.PATTERN),
        ("Password1234", passwords.COMMON), ("MountainGoat", passwords.IS_NAME)]
HOSTILE = "<script>alert(1)</script>"
CSP = ("default-src 'self'; img-src 'self'; script-src 'self'; style-src 'self'; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")


class Browser:
    """A cookie-keeping client over the fixture's StubClient, like one browser profile."""

    def __init__(self, fixture, address="127.0.0.1"):
        self.client = fixture.client(address)
        self.cookies: dict[str, str] = {}
        self.set_cookies: list[str] = []

    def _headers(self, extra=None):
        headers = {}
        if self.cookies:
            headers[b"Cookie"] = ["; ".join(f"{k}={v}" for k, v in self.cookies.items()).encode()]
        headers.update(extra or {})
        return headers

    def _keep(self, response):
        for raw in response.headers.getRawHeaders("set-cookie") or []:
            self.set_cookies.append(raw)
            cookie = SimpleCookie()
            cookie.load(raw)
            for name, morsel in cookie.items():
                if morsel["max-age"] == "0":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value

    async def get(self, path, headers=None):
        response, body = await self.client.request(
            "GET", SITE + path, headers=self._headers(headers), allow_redirects=False)
        self._keep(response)
        return response, body.decode("utf-8")

    async def post(self, path, fields, headers=None, files=None):
        if files is not None:
            data, h = multipart(fields, files)
            h.update(headers or {})
            response, body = await self.client.request(
                "POST", SITE + path, data=data, headers=self._headers(h), allow_redirects=False)
        else:
            response, body = await self.client.request(
                "POST", SITE + path, data=fields, headers=self._headers(headers), allow_redirects=False)
        self._keep(response)
        return response, body.decode("utf-8", "replace")

    async def csrf(self, path):
        """The CSRF token of the first form on ``path``."""
        response, body = await self.get(path)
        return csrf_of(body)

    async def login(self, name="kitten", password=PASSWORD):
        token = await self.csrf("/login")
        response, body = await self.post("/login", {"csrf": token, "name": name, "password": password})
        assert response.code == 303, (response.code, body)
        return response


def csrf_of(body):
    m = re.search(r'name="csrf" value="([^"]+)"', body)
    return html.unescape(m.group(1)) if m else None


def location(response):
    return (response.headers.getRawHeaders("location") or [None])[0]


def header(response, name):
    values = response.headers.getRawHeaders(name)
    return values[0] if values else None


class PagesTestCase(unittest.TestCase):
    async def setUp(self):
        self.f = await make_fixture(self)
        await self.f.account("kitten")
        await self.f.account("bear")
        self.browser = Browser(self.f)

    async def logged_in(self, name="kitten"):
        browser = Browser(self.f)
        await browser.login(name)
        return browser

    async def make_admin(self, name):
        await self.f.database.run(db.delete_account, name, T0)
        await self.f.database.run(db.create_account, name, auth.hash_password(PASSWORD, b"1" * 16), True, T0)

    async def api_upload(self, token, data=None, filename="photo.png", **fields):
        body, headers = multipart({"token": token, **fields}, {"file": (filename, data or image_bytes("PNG"))})
        response, out = await self.f.client().request(
            "POST", SITE + "/api/v1/img_upload.php", data=body, headers=headers)
        return response, json.loads(out)


class SetupTests(PagesTestCase):
    async def setUp(self):
        self.f = await make_fixture(self)
        self.browser = Browser(self.f)
        await self.f.database.run(db.setting_or_insert, SETUP_CODE_SETTING, "the-code")

    async def submit(self, browser, code="the-code", name="boss", password="a long password", repeat=None):
        token = await browser.csrf("/setup?code=the-code") or "no-form"
        return await browser.post("/setup", {"csrf": token, "code": code, "name": name, "password": password,
                                             "repeat": password if repeat is None else repeat})

    async def test_setup_link_creates_the_first_admin_once(self):
        """The logged link shows a form; it creates an admin, logs it in, and is void afterwards."""
        response, body = await self.browser.get("/setup?code=the-code")
        self.assertEqual(response.code, 200)
        self.assertIn('name="code" value="the-code"', body)
        response, body = await self.submit(self.browser)
        self.assertEqual((response.code, location(response)), (303, "/images?done=welcome"), body)
        account = await self.f.database.run(db.get_account, "boss")
        self.assertTrue(account.is_admin)
        self.assertIsNone(await self.f.database.run(db.get_setting, SETUP_CODE_SETTING))
        response, body = await self.browser.get("/images?done=welcome")
        self.assertEqual(response.code, 200)
        self.assertIn("Welcome!", body)

        again = Browser(self.f)
        response, _ = await again.get("/setup?code=the-code")
        self.assertEqual(response.code, 404)
        token = await again.csrf("/login")
        response, _ = await again.post("/setup", {"csrf": token, "code": "the-code", "name": "other",
                                                  "password": "a long password", "repeat": "a long password"})
        self.assertEqual(response.code, 404)
        self.assertIsNone(await self.f.database.run(db.get_account, "other"))

    async def test_wrong_code_is_404(self):
        """A wrong or missing code shows no form."""
        for path in ["/setup?code=wrong", "/setup"]:
            response, body = await self.browser.get(path)
            self.assertEqual(response.code, 404, path)
            self.assertNotIn('name="password"', body)

    async def test_setup_void_once_an_account_exists(self):
        """An account made with the admin command voids the setup link."""
        await self.f.account("kitten")
        response, _ = await self.browser.get("/setup?code=the-code")
        self.assertEqual(response.code, 404)

    async def test_setup_form_problems(self):
        """A bad name, a short password or differing passwords re-show the form with a 400."""
        for kwargs in [{"name": "Bad Name"}, {"name": "api"}, {"password": "short"},
                       {"password": "a long password", "repeat": "another one"}]:
            response, body = await self.submit(self.browser, **kwargs)
            self.assertEqual(response.code, 400, kwargs)
            self.assertIn('class="problem"', body)
        self.assertEqual(await self.f.database.run(db.count_accounts), 0)

    async def test_setup_refuses_weak_passwords(self):
        """The setup form states the rule next to the field and re-shows itself with the
        policy's message for each weak password; nothing is stored."""
        body = (await self.browser.get("/setup?code=the-code"))[1]
        self.assertIn(f'<p class="field-hint" id="password-hint">{passwords.RULE}</p>', body)
        self.assertIn('minlength="10"', body)
        for password, message in WEAK:
            response, body = await self.submit(self.browser, name="mountaingoat", password=password)
            self.assertEqual(response.code, 400, password)
            self.assertIn('class="problem"', body)
            self.assertIn(html.escape(message, quote=False), body, password)
        self.assertEqual(await self.f.database.run(db.count_accounts), 0)

    async def test_setup_needs_csrf(self):
        """Without the pre-session CSRF token the setup form is refused (403)."""
        await self.browser.get("/setup?code=the-code")
        response, _ = await self.browser.post("/setup", {"code": "the-code", "name": "boss",
                                                         "password": "a long password",
                                                         "repeat": "a long password"})
        self.assertEqual(response.code, 403)
        self.assertEqual(await self.f.database.run(db.count_accounts), 0)


class LoginTests(PagesTestCase):
    async def test_login_sets_a_safe_session_cookie(self):
        """A good login answers 303 to /images with an HttpOnly, SameSite=Lax, Secure session cookie."""
        response = await self.browser.login()
        self.assertEqual(location(response), "/images")
        raw = [c for c in self.browser.set_cookies if c.startswith(SESSION_COOKIE.decode() + "=")][-1]
        self.assertIn("HttpOnly", raw)
        self.assertIn("SameSite=lax", raw)
        self.assertIn("Secure", raw, "the public URL is https")
        self.assertIn(f"Max-Age={SESSION_SECONDS}", raw)
        response, body = await self.browser.get("/images")
        self.assertEqual(response.code, 200)
        self.assertIn("Log out", body)

    async def test_wrong_password_and_unknown_name_look_alike(self):
        """A wrong password and an unknown account get the same 400 answer and no session."""
        answers = []
        for name, password in [("kitten", "wrong password"), ("nobody", PASSWORD)]:
            token = await self.browser.csrf("/login")
            response, body = await self.browser.post("/login", {"csrf": token, "name": name, "password": password})
            self.assertEqual(response.code, 400)
            self.assertNotIn(SESSION_COOKIE.decode(), self.browser.cookies)
            answers.append(re.search(r'class="problem"[^>]*>([^<]*)<', body).group(1))
        self.assertEqual(answers[0], answers[1])
        self.assertEqual(answers[0], "Wrong account name or password.")

    async def test_login_needs_csrf(self):
        """A login POST with a missing or wrong CSRF token, or without the pre-session cookie, is 403."""
        token = await self.browser.csrf("/login")
        for fields in [{}, {"csrf": "0" * 64}, {"csrf": token + "x"}]:
            response, _ = await self.browser.post("/login", {**fields, "name": "kitten", "password": PASSWORD})
            self.assertEqual(response.code, 403, fields)
        cookieless = Browser(self.f)
        response, _ = await cookieless.post("/login", {"csrf": token, "name": "kitten", "password": PASSWORD})
        self.assertEqual(response.code, 403)
        self.assertNotIn(SESSION_COOKIE.decode(), self.browser.cookies)

    async def test_login_throttled_per_account(self):
        """After too many failures on one account from one address even the right password waits
        there (429); other accounts are not affected, and the account opens again later."""
        token = await self.browser.csrf("/login")
        for _ in range(LOGIN_PER_ACCOUNT_ADDRESS.count):
            response, _ = await self.browser.post("/login", {"csrf": token, "name": "kitten", "password": "nope"})
            self.assertEqual(response.code, 400)
        response, body = await self.browser.post("/login", {"csrf": token, "name": "kitten", "password": PASSWORD})
        self.assertEqual(response.code, 429)
        self.assertIn("Too many attempts", body)
        self.assertTrue(header(response, "retry-after"))
        await Browser(self.f).login("bear")
        self.f.clock.advance(LOGIN_PER_ACCOUNT_ADDRESS.period)
        await self.browser.login("kitten")

    async def test_login_throttled_per_address(self):
        """One client address trying many account names is throttled too (429)."""
        token = await self.browser.csrf("/login")
        codes = []
        for i in range(31):
            response, _ = await self.browser.post("/login", {"csrf": token, "name": f"guess{i}", "password": "x"})
            codes.append(response.code)
        self.assertEqual(codes[:30], [400] * 30)
        self.assertEqual(codes[30], 429)

    async def test_logout_ends_the_session(self):
        """POST /logout (with its CSRF token) deletes the session row and clears the cookie."""
        await self.browser.login()
        stolen = dict(self.browser.cookies)
        token = await self.browser.csrf("/images")
        response, _ = await self.browser.post("/logout", {"csrf": token})
        self.assertEqual((response.code, location(response)), (303, "/login?done=logout"))
        self.assertNotIn(SESSION_COOKIE.decode(), self.browser.cookies)
        response, _ = await self.browser.get("/images")
        self.assertEqual(location(response), "/login?next=%2Fimages")
        replay = Browser(self.f)
        replay.cookies = stolen
        response, _ = await replay.get("/images")
        self.assertEqual(response.code, 303, "the old session id is dead")

    async def test_logout_needs_csrf(self):
        """A logout POST without the CSRF token is refused and the session lives on."""
        await self.browser.login()
        response, _ = await self.browser.post("/logout", {})
        self.assertEqual(response.code, 403)
        response, _ = await self.browser.get("/images")
        self.assertEqual(response.code, 200)

    async def test_login_makes_a_new_session_id(self):
        """A session id the browser brought along is never adopted (no fixation)."""
        self.browser.cookies[SESSION_COOKIE.decode()] = "A" * 43
        await self.browser.login()
        self.assertNotEqual(self.browser.cookies[SESSION_COOKIE.decode()], "A" * 43)

    async def test_next_page_after_login(self):
        """A page asked for before logging in is shown after it; foreign targets are ignored."""
        response, _ = await self.browser.get("/tokens")
        self.assertEqual(location(response), "/login?next=%2Ftokens")
        for target, expected in [("/tokens", "/tokens"), ("https://evil.example/", "/images"), ("//evil", "/images")]:
            browser = Browser(self.f)
            token = await browser.csrf("/login")
            response, _ = await browser.post("/login", {"csrf": token, "name": "kitten", "password": PASSWORD,
                                                        "next": target})
            self.assertEqual(location(response), expected)

    async def test_start_page_redirects(self):
        """/ sends a visitor to the login page, and a logged-in one to the images."""
        response, _ = await self.browser.get("/")
        self.assertEqual(location(response), "/login")
        await self.browser.login()
        response, _ = await self.browser.get("/")
        self.assertEqual(location(response), "/images")

    async def test_login_page_explains_a_fresh_server(self):
        """With no account yet, the login page points to the setup link."""
        f = await make_fixture(self)
        response, body = await Browser(f).get("/login")
        self.assertIn("setup?code=", body)
        response, body = await self.browser.get("/login")
        self.assertNotIn("setup?code=", body)


class SessionTests(PagesTestCase):
    async def test_expired_session(self):
        """A session unused for SESSION_SECONDS is refused, and the expiry pass deletes its row."""
        await self.browser.login()
        self.f.clock.advance(SESSION_SECONDS + 1)
        response, _ = await self.browser.get("/images")
        self.assertEqual(response.code, 303)
        await expire_once(self.f.database, self.f.library, self.f.clock.seconds())
        rows = await self.f.database.run(db.delete_expired_sessions, 10 * T0)
        self.assertEqual(rows, 0, "the expiry pass had removed it")

    async def test_use_extends_the_session(self):
        """A session in use keeps living past its first expiry."""
        await self.browser.login()
        for _ in range(3):
            self.f.clock.advance(SESSION_SECONDS - 3600)
            response, _ = await self.browser.get("/images")
            self.assertEqual(response.code, 200)

    async def test_api_tokens_cannot_open_pages(self):
        """An API token in any form the API accepts does not open a page."""
        token = await self.f.token("kitten")
        for path, headers in [("/images", {b"X-API-Key": [token.encode()]}),
                              ("/tokens", {b"Authorization": [b"Bearer " + token.encode()]}),
                              (f"/account?token={token}", {})]:
            response, _ = await self.browser.get(path, headers)
            self.assertEqual(response.code, 303, path)
            self.assertTrue(location(response).startswith("/login"))

    async def test_sessions_cannot_use_the_api(self):
        """A logged-in browser's cookie is no API credential (401)."""
        await self.browser.login()
        response, body = await self.browser.post("/api/v1/img_upload.php", {}, files={"file": ("a.png", image_bytes("PNG"))})
        self.assertEqual(response.code, 401, body)

    async def test_removed_account_loses_its_sessions(self):
        """Removing an account ends its sessions at once."""
        await self.browser.login()
        await self.f.database.run(db.delete_account, "kitten", T0)
        response, _ = await self.browser.get("/images")
        self.assertEqual(response.code, 303)


class RegisterTests(PagesTestCase):
    async def test_closed_registration_is_404(self):
        """With registration closed (the default), /register is 404 and not offered."""
        response, body = await self.browser.get("/register")
        self.assertEqual(response.code, 404)
        token = await self.browser.csrf("/login")
        response, _ = await self.browser.post("/register", {"csrf": token, "name": "newbie",
                                                            "password": "a long password",
                                                            "repeat": "a long password"})
        self.assertEqual(response.code, 404)
        self.assertIsNone(await self.f.database.run(db.get_account, "newbie"))
        response, body = await self.browser.get("/login")
        self.assertNotIn('href="/register"', body)

    async def test_open_registration(self):
        """With --registration open anyone can make a (non-admin) account and is logged in; taken
        and bad names are explained."""
        f = await make_fixture(self, registration="open")
        await f.account("kitten")
        browser = Browser(f)
        response, body = await browser.get("/register")
        self.assertEqual(response.code, 200)
        for name, status in [("kitten", 400), ("No Way", 400), ("newbie", 303)]:
            token = csrf_of((await browser.get("/register"))[1])
            response, body = await browser.post("/register", {"csrf": token, "name": name,
                                                              "password": "a long password",
                                                              "repeat": "a long password"})
            self.assertEqual(response.code, status, (name, body))
        self.assertFalse((await f.database.run(db.get_account, "newbie")).is_admin)
        response, _ = await browser.get("/images")
        self.assertEqual(response.code, 200)


    async def test_registration_refuses_weak_passwords(self):
        """Self-registration applies the same policy, with the same messages, and states the rule."""
        f = await make_fixture(self, registration="open")
        await f.account("kitten")
        browser = Browser(f)
        body = (await browser.get("/register"))[1]
        self.assertIn(passwords.RULE, body)
        for password, message in WEAK:
            token = csrf_of((await browser.get("/register"))[1])
            response, body = await browser.post("/register", {"csrf": token, "name": "mountaingoat",
                                                              "password": password, "repeat": password})
            self.assertEqual(response.code, 400, password)
            self.assertIn(html.escape(message, quote=False), body, password)
        self.assertIsNone(await f.database.run(db.get_account, "mountaingoat"))

    async def test_open_registration_waits_for_the_first_account(self):
        """On a fresh server with --registration open nobody registers before the setup link
        made the first account (an admin): the page is refused, a stranger's POST is refused and
        stores nothing, nothing offers it; the setup link still works, and then registration opens."""
        f = await make_fixture(self, registration="open")
        await f.database.run(db.setting_or_insert, SETUP_CODE_SETTING, "the-code")
        stranger = Browser(f, address="203.0.113.9")
        response, body = await stranger.get("/register")
        self.assertEqual(response.code, 403)
        self.assertIn("the first account comes from the setup link", body)
        self.assertNotIn('name="password"', body)
        token = await stranger.csrf("/login")
        response, body = await stranger.post("/register", {"csrf": token, "name": "mallory",
                                                           "password": "a long password",
                                                           "repeat": "a long password"})
        self.assertEqual(response.code, 403)
        self.assertEqual(await f.database.run(db.count_accounts), 0)
        self.assertNotIn("mallory", body)
        body = (await stranger.get("/login"))[1]
        self.assertNotIn('href="/register"', body)
        self.assertIn("No account exists yet", body)

        owner = Browser(f)
        token = await owner.csrf("/setup?code=the-code")
        response, _ = await owner.post("/setup", {"csrf": token, "code": "the-code", "name": "boss",
                                                  "password": "a long password", "repeat": "a long password"})
        self.assertEqual((response.code, location(response)), (303, "/images?done=welcome"))
        self.assertTrue((await f.database.run(db.get_account, "boss")).is_admin)

        body = (await stranger.get("/login"))[1]
        self.assertIn('href="/register"', body)
        token = csrf_of((await stranger.get("/register"))[1])
        response, _ = await stranger.post("/register", {"csrf": token, "name": "mallory",
                                                        "password": "a long password",
                                                        "repeat": "a long password"})
        self.assertEqual(response.code, 303)
        self.assertFalse((await f.database.run(db.get_account, "mallory")).is_admin)


class ImagesTests(PagesTestCase):
    async def setUp(self):
        await super().setUp()
        await self.browser.login()
        self.csrf = await self.browser.csrf("/images")

    async def upload(self, files, browser=None, **fields):
        browser = browser or self.browser
        fields = {"csrf": self.csrf, **fields}
        return await browser.post("/images/upload", fields, files=files)

    async def test_upload_form_with_several_files(self):
        """The form uploads several files at once, with the chosen lifetime and kept names."""
        files = [("file", "one.png", image_bytes("PNG")), ("file", "two.jpg", image_bytes("JPEG"))]
        data, headers = _multipart_many({"csrf": self.csrf, "expire": "1d", "keep_name": "1"}, files)
        response, out = await self.browser.client.request(
            "POST", SITE + "/images/upload", data=data, headers=self.browser._headers(headers))
        out = out.decode()
        self.assertEqual(response.code, 200, out)
        self.assertIn("20260214_one.png", out)
        self.assertIn("20260214_two.jpg", out)
        for name in ["20260214_one.png", "20260214_two.jpg"]:
            image = await self.f.database.run(db.get_image, "kitten", name)
            self.assertEqual(image.expires, T0 + 86400)
        self.assertEqual(_spooled_uploads(self.f), [], "no spooled upload left behind")

    async def test_upload_answers_json_to_the_script(self):
        """With Accept: application/json (the page's script) the answer is JSON, errors included."""
        accept = {b"Accept": [b"application/json"]}
        response, body = await self.browser.post("/images/upload", {"csrf": self.csrf}, headers=accept,
                                                 files={"file": ("a.png", image_bytes("PNG"))})
        answer = json.loads(body)
        self.assertEqual((response.code, answer["status"]), (200, "ok"))
        self.assertRegex(answer["results"][0]["name"], r"^20260214_[a-z0-9]{8}\.png$")
        self.assertTrue(answer["results"][0]["url"].startswith("https://img.example/img/kitten/"))
        response, body = await self.browser.post("/images/upload", {"csrf": self.csrf}, headers=accept,
                                                 files={"file": ("a.png", b"not an image at all")})
        self.assertEqual(response.code, 415)
        self.assertIn("error", json.loads(body))

    async def test_upload_needs_csrf_and_session(self):
        """An upload without the CSRF token is 403 and stores nothing; without a session it goes to login."""
        response, _ = await self.browser.post("/images/upload", {}, files={"file": ("a.png", image_bytes("PNG"))})
        self.assertEqual(response.code, 403)
        response, _ = await self.browser.post("/images/upload", {"csrf": "f" * 64},
                                              files={"file": ("a.png", image_bytes("PNG"))})
        self.assertEqual(response.code, 403)
        self.assertEqual(self.f.storage.objects, {})
        self.assertEqual(_spooled_uploads(self.f), [])
        response, _ = await Browser(self.f).post("/images/upload", {"csrf": self.csrf},
                                                 files={"file": ("a.png", image_bytes("PNG"))})
        self.assertEqual((response.code, location(response)), (303, "/login"))
        self.assertEqual(self.f.storage.objects, {})

    async def test_upload_without_a_file(self):
        """An empty file field is explained (400)."""
        response, body = await self.upload({"file": ("", b"")})
        self.assertEqual(response.code, 400)
        self.assertIn("Choose at least one image", body)

    async def test_hostile_file_name_is_escaped(self):
        """A hostile client file name is neutralised in the stored name and escaped in the page."""
        response, body = await self.upload({"file": (HOSTILE + ".png", image_bytes("PNG"))}, keep_name="1")
        self.assertEqual(response.code, 200, body)
        self.assertNotIn(HOSTILE, body)
        self.assertIn(html.escape(HOSTILE, quote=False), body)
        response, body = await self.upload({"file": (HOSTILE + ".png", b"junk")}, keep_name="1")
        self.assertEqual(response.code, 415)
        self.assertNotIn(HOSTILE, body)
        response, body = await self.browser.get("/images")
        self.assertNotIn("<script>alert", body)
        self.assertRegex(body, r"20260214_script_(_\d)?\.png")

    async def test_gallery_shows_every_fact(self):
        """Each image shows its private thumbnail, four links, type, size, dimensions, expiry in words,
        and "processing" until its derived files exist."""
        token = await self.f.token("kitten")
        _, record = await self.api_upload(token, image_bytes("PNG", (300, 200)), expire="3d")
        _, permanent = await self.api_upload(token, image_bytes("JPEG", (64, 48)))
        stem = record["file"][:-4]
        response, body = await self.browser.get("/images")
        self.assertEqual(response.code, 200)
        self.assertLess(body.index(permanent["file"]), body.index(record["file"]), "newest first")
        self.assertIn(f'data-thumb="/thumb/kitten/{stem}.jpg"', body)
        for url in record["urls"].values():
            self.assertIn(f'href="{url}"', body)
            self.assertIn(f'data-copy="{url}"', body)
        self.assertIn("PNG · 300 × 200 ·", body)
        self.assertIn("in 3 days", body)
        self.assertIn(">never<", body)
        self.assertEqual(body.count('class="badge"'), 2)
        while await self.f.derivations.run_one():
            pass
        response, body = await self.browser.get("/images")
        self.assertIn(f'src="/thumb/kitten/{stem}.jpg"', body)
        self.assertNotIn('class="badge"', body)

    async def test_pagination(self):
        """The gallery shows PAGE_SIZE images a page, with links between pages."""
        token = await self.f.token("kitten")
        for _ in range(PAGE_SIZE + 2):
            await self.api_upload(token)
            self.f.clock.advance(1)
        response, body = await self.browser.get("/images")
        self.assertEqual(body.count('class="card item"'), PAGE_SIZE)
        self.assertIn('href="/images?page=2&amp;after=', body)  # Older carries the last card's cursor
        response, body = await self.browser.get("/images?page=2")
        self.assertEqual(body.count('class="card item"'), 2)
        self.assertIn('href="/images"', body)
        self.assertNotIn("page=3", body)
        response, body = await self.browser.get("/images?page=banana")
        self.assertEqual(response.code, 200)

    async def test_cards_link_the_viewer_page_and_share_codes(self):
        """Each card links to its viewer page and offers the direct link, BBCode and
        Markdown as selectable text (copy buttons once the script runs)."""
        token = await self.f.token("kitten")
        _, record = await self.api_upload(token)
        response, body = await self.browser.get("/images")
        self.assertIn(f'href="{record["viewer"]}"', body)
        original = record["urls"]["original"]
        self.assertIn(f'value="{original}"', body)
        self.assertIn(f'[img]{record["urls"]["xga"]}[/img]', body)
        self.assertIn(f'({record["urls"]["xga"]})]({record["viewer"]})', body)
        self.assertIn('aria-label="Copy the BBCode code"', body)

    async def test_pager_counts_and_pages_past_the_end(self):
        """The total on every page, "page X of N", and a page past the last says so and
        links back to the last (not to the page before the one asked for)."""
        token = await self.f.token("kitten")
        for _ in range(PAGE_SIZE + 2):
            await self.api_upload(token)
            self.f.clock.advance(1)
        for url in ("/images", "/images?page=2"):
            response, body = await self.browser.get(url)
            self.assertIn(f"({PAGE_SIZE + 2})", body)
        self.assertIn("Page 2 of 2", body)
        response, body = await self.browser.get("/images")
        self.assertIn("Page 1 of 2", body)
        response, body = await self.browser.get("/images?page=99")
        self.assertEqual(response.code, 200)
        self.assertEqual(body.count('class="card item"'), 0)
        self.assertIn("There is no page 99", body)
        self.assertIn('href="/images?page=2"', body)
        self.assertNotIn("page=98", body)
        self.assertNotIn('class="pager"', body, "no pager past the last page")
        self.assertNotIn("No images yet", body)

    async def test_delete_asks_then_deletes(self):
        """Delete without confirm=1 shows a confirmation page; with it the image is gone at once."""
        token = await self.f.token("kitten")
        _, record = await self.api_upload(token)
        url = record["urls"]["original"].replace("https://img.example", SITE)
        response, body = await self.browser.post("/images/delete", {"csrf": self.csrf, "name": record["file"]})
        self.assertEqual(response.code, 200)
        self.assertIn('name="confirm" value="1"', body)
        self.assertEqual((await self.f.client().request("GET", url))[0].code, 200, "not deleted yet")
        response, _ = await self.browser.post("/images/delete", {"csrf": self.csrf, "name": record["file"],
                                                                 "confirm": "1"})
        self.assertEqual((response.code, location(response)), (303, "/images?done=deleted"))
        self.assertEqual((await self.f.client().request("GET", url))[0].code, 404)

    async def test_delete_needs_csrf(self):
        """A delete without the CSRF token is refused and the image stays."""
        token = await self.f.token("kitten")
        _, record = await self.api_upload(token)
        response, _ = await self.browser.post("/images/delete", {"name": record["file"], "confirm": "1"})
        self.assertEqual(response.code, 403)
        self.assertIsNotNone(await self.f.library.served_image("kitten", record["file"]))

    async def test_cannot_delete_someone_elses_image(self):
        """Another account's image is 404 to the delete form, by name or by URL, and stays."""
        token = await self.f.token("bear")
        _, record = await self.api_upload(token)
        for reference in [record["file"], record["urls"]["original"]]:
            response, _ = await self.browser.post("/images/delete", {"csrf": self.csrf, "name": reference,
                                                                     "confirm": "1"})
            self.assertEqual(response.code, 404)
        self.assertIsNotNone(await self.f.library.served_image("bear", record["file"]))

    async def test_thumbnail_for_the_owner_only(self):
        """/thumb/ serves the owner's session; anyone else, API tokens included, gets 404;
        /img/<user>/thumb/ stays 404 for everyone."""
        token = await self.f.token("kitten")
        _, record = await self.api_upload(token, image_bytes("PNG", (300, 200)))
        await self.f.derivations.run_one()
        path = f"/thumb/kitten/{record['file'][:-4]}.jpg"
        response, _ = await self.browser.client.request("GET", SITE + path, headers=self.browser._headers())
        self.assertEqual(response.code, 200)
        self.assertEqual(header(response, "content-type"), "image/jpeg")
        self.assertTrue(header(response, "cache-control").startswith("private"))
        bear = await self.logged_in("bear")
        anonymous = self.f.client()
        for client, headers in [(bear.client, bear._headers()), (anonymous, {}),
                                (anonymous, {b"X-API-Key": [token.encode()]}),
                                (anonymous, {b"Authorization": [b"Bearer " + token.encode()]})]:
            response, _ = await client.request("GET", SITE + path, headers=headers)
            self.assertEqual(response.code, 404)
        response, _ = await anonymous.request("GET", SITE + path + "?token=" + token)
        self.assertEqual(response.code, 404)
        response, _ = await self.browser.client.request(
            "GET", SITE + f"/img/kitten/thumb/{record['file'][:-4]}.jpg", headers=self.browser._headers())
        self.assertEqual(response.code, 404)

    async def test_upload_form_offers_the_lifetimes(self):
        """The upload form offers the lifetimes, each saying which sizes may have it, keep-name,
        and explains the size tiers before any upload."""
        response, body = await self.browser.get("/images")
        self.assertIn('name="keep_name"', body)
        self.assertIn('<option value="never">Forever (files up to 2.0 MiB)</option>', body)
        self.assertIn('<option value="365d">1 year (files up to 2.0 MiB)</option>', body)
        self.assertIn('<option value="30d">30 days (files up to 8.0 MiB)</option>', body)
        self.assertIn('<option value="7d">7 days</option>', body)
        self.assertIn("Up to 8.0 MiB: kept at most 90 days.", body)
        self.assertNotIn("<details class=\"tiers\"", body, "the tiers are shown, not folded away")
        self.assertIn('multiple="multiple"', body)
        # The page's script reads what each choice gives each size from the server.
        table = json.loads(html.unescape(re.search(r'data-lifetimes="([^"]*)"', body).group(1)))
        self.assertEqual(table["sizes"], [2 * 1024 * 1024, 8 * 1024 * 1024, 32 * 1024 * 1024])
        self.assertEqual(table["choices"]["never"][0], ["forever", ""])
        self.assertEqual(table["choices"]["never"][1], [
            "90 days", "Shortened from forever to 90 days: files over 2.0 MiB and up to 8.0 MiB are kept "
            "at most 90 days."])
        self.assertEqual(table["choices"]["30d"][2][0], "7 days")
        self.assertEqual(table["choices"][""][2], ["7 days", ""])

    async def test_upload_forms_of_a_server_with_other_tiers(self):
        """A choice no size may have is not offered; one every size may have carries no note."""
        f = await make_fixture(self, tiers=lifetime.parse_tiers("1MiB:30d"), max_size=1024 * 1024)
        await f.account("kitten")
        browser = Browser(f)
        await browser.login()
        response, body = await browser.get("/images")
        self.assertIn('<option value="30d">30 days</option>', body)
        self.assertNotIn('value="never"', body)
        self.assertNotIn('value="90d"', body)

    async def test_every_result_says_what_lifetime_a_file_got_and_why(self):
        """A 2.3 MB photo asked to be kept forever gets 90 days; the result page, the script's
        answer and the gallery card all say so, and why; a small one gets forever, no note."""
        big = image_bytes("BMP", (1100, 700))
        self.assertGreater(len(big), 2 * 1024 * 1024)
        response, body = await self.upload({"file": ("holiday.bmp", big)}, expire="never")
        self.assertEqual(response.code, 200, body)
        until = words.date_in_words(T0 + 90 * 86400)
        why = ("Shortened from forever to 90 days: files over 2.0 MiB and up to 8.0 MiB are kept at "
               "most 90 days.")
        self.assertIn(f"Kept 90 days, until {until}.", body)
        self.assertIn(f'<span class="note">{why}</span>', body)
        link = re.search(r'<a href="(https://img\.example/delete/kitten/[^"]+)" rel="nofollow">Secret delete link</a>',
                         body)
        self.assertIsNotNone(link, "the result shows the delete link, the only time it can")
        response, page = await Browser(self.f).get(link.group(1).removeprefix("https://img.example"))
        self.assertEqual(response.code, 200)
        self.assertIn("Delete permanently", page)
        accept = {b"Accept": [b"application/json"]}
        response, out = await self.browser.post("/images/upload", {"csrf": self.csrf, "expire": "never"},
                                                headers=accept, files={"file": ("small.png", image_bytes("PNG"))})
        result = json.loads(out)["results"][0]
        self.assertEqual((result["expires"], result["kept"], result["lifetime_note"]), (None, "Kept forever.", None))
        self.assertRegex(result["delete_url"], r"^https://img\.example/delete/kitten/20260214_\w+\.png/[0-9a-f]{32}$")
        response, out = await self.browser.post("/images/upload", {"csrf": self.csrf, "expire": "10m"},
                                                headers=accept, files={"file": ("brief.png", image_bytes("PNG"))})
        result = json.loads(out)["results"][0]
        self.assertEqual(result["expires"], output.iso_time(T0 + 3600))
        self.assertEqual(result["kept"], f"Kept 1 hour, until {words.date_in_words(T0 + 3600)}.")
        self.assertEqual(result["lifetime_note"], "Lengthened from 10 minutes to 1 hour: the shortest lifetime "
                                                  "is 1 hour.")
        response, body = await self.browser.get("/images")
        cards = body.split('<li class="card item">')[1:]
        self.assertEqual(len(cards), 3)
        holiday = next(c for c in cards if ".bmp" in c)
        self.assertIn(f'<p class="facts note">{why}</p>', holiday)
        small = next(c for c in cards if "Expires <time datetime=\"\">never" in c)
        self.assertNotIn('class="facts note"', small)

    async def test_api_uploads_show_their_lifetime_in_the_gallery(self):
        """An upload through the API that asked for more than its size allows is marked in the
        gallery too; one that asked for nothing (its size's default) is not."""
        token = await self.f.token("kitten")
        big = image_bytes("BMP", (1100, 700))
        response, record = await self.api_upload(token, big, "a.bmp", expire="365d")
        self.assertEqual(response.code, 200)
        response, record = await self.api_upload(token, big, "b.bmp")
        self.assertEqual(response.code, 200)
        response, body = await self.browser.get("/images")
        self.assertEqual(body.count('class="facts note"'), 1)
        self.assertIn("Shortened from 1 year to 90 days", body)


class DatesTests(PagesTestCase):
    async def test_every_page_shows_dates_beside_the_words(self):
        """Wherever a moment is in words ("just now", "in 90 days") its date is shown beside it
        (a hover title is out of reach on a touch screen): gallery, viewer, delete link, tokens,
        accounts."""
        await self.make_admin("kitten")
        await self.browser.login()
        token = await self.f.token("kitten", expires=T0 + 30 * 86400)
        response, record = await self.api_upload(token, image_bytes("BMP", (1100, 700)), "big.bmp")
        date = f'<span class="date">{words.date_in_words(T0)}</span>'
        later = f'<span class="date">{words.date_in_words(T0 + 90 * 86400)}</span>'
        pages = {"/images": [date, later], "/tokens": [date, words.date_in_words(T0 + 30 * 86400)],
                 "/account": [date], record["viewer"].removeprefix("https://img.example"): [date],
                 record["delete_url"].removeprefix("https://img.example"): [date, later]}
        for path, expected in pages.items():
            response, body = await self.browser.get(path)
            self.assertEqual(response.code, 200, path)
            for text in expected:
                self.assertIn(text, body, path)
            self.assertNotIn("<time title=", body, path)


class TokensTests(PagesTestCase):
    async def setUp(self):
        await super().setUp()
        await self.browser.login()
        self.csrf = await self.browser.csrf("/tokens")

    async def create(self, label="laptop", expires="never", custom=""):
        return await self.browser.post("/tokens", {"csrf": self.csrf, "label": label, "expires": expires,
                                                   "expires_custom": custom})

    async def test_new_token_shown_once_and_works(self):
        """A new token is shown once (with its copy button), works with the API, then is only listed."""
        response, body = await self.create("laptop", "7d")
        self.assertEqual(response.code, 200)
        secret = re.search(r'<code class="token" id="new-token">([0-9a-f]{32})</code>', body).group(1)
        self.assertIn(f'data-copy="{secret}"', body)
        response, record = await self.api_upload(secret)
        self.assertEqual(response.code, 200)
        self.assertEqual(record["user"], "kitten")
        response, body = await self.browser.get("/tokens")
        self.assertNotIn(secret, body)
        self.assertIn("laptop", body)
        self.assertIn("in 7 days", body)
        self.assertIn("just now", body, "last used")

    async def test_hostile_label_is_escaped(self):
        """A label full of markup is shown as text, never as markup."""
        response, body = await self.create(HOSTILE)
        self.assertNotIn(HOSTILE, body)
        self.assertIn(html.escape(HOSTILE, quote=False), body)
        response, body = await self.browser.get("/tokens")
        self.assertNotIn(HOSTILE, body)
        self.assertNotIn("<script>alert", body)
        self.assertIn("&lt;script&gt;alert(1)&lt;/script&gt;", body)

    async def test_lifetimes(self):
        """A custom lifetime wins over the menu; junk and under a minute are explained (400)."""
        await self.create("custom", "never", "45m")
        tokens = await self.f.database.run(db.list_tokens, "kitten", T0)
        self.assertEqual(tokens[0].expires, T0 + 45 * 60)
        for custom in ["banana", "30s"]:
            response, body = await self.create("bad", "never", custom)
            self.assertEqual(response.code, 400)
            self.assertIn('class="problem"', body)
            self.assertIn(f'value="{custom}"', body, "the form keeps what was typed")
        self.assertEqual(len(await self.f.database.run(db.list_tokens, "kitten", T0)), 1)

    async def test_create_needs_csrf(self):
        """Creating a token without the CSRF token is 403 and makes none."""
        response, _ = await self.browser.post("/tokens", {"label": "x", "expires": "never"})
        self.assertEqual(response.code, 403)
        self.assertEqual(await self.f.database.run(db.list_tokens, "kitten", T0), [])

    async def test_sharex_file(self):
        """The .sxcu download is a ShareX custom uploader for the token, in current ShareX syntax."""
        _, body = await self.create()
        secret = re.search(r'id="new-token">([0-9a-f]{32})<', body).group(1)
        self.assertIn('action="/tokens/sxcu"', body)
        response, body = await self.browser.post("/tokens/sxcu", {"csrf": self.csrf, "token": secret})
        self.assertEqual(response.code, 200)
        self.assertEqual(header(response, "content-disposition"), 'attachment; filename="img.example.sxcu"')
        self.assertEqual(header(response, "cache-control"), "no-store")
        sxcu = json.loads(body)
        self.assertEqual(sxcu["DestinationType"], "ImageUploader")
        self.assertEqual(sxcu["RequestMethod"], "POST")
        self.assertEqual(sxcu["RequestURL"], "https://img.example/api/v1/img_upload.php")
        self.assertEqual(sxcu["Headers"], {"X-API-Key": secret})
        self.assertEqual((sxcu["Body"], sxcu["FileFormName"]), ("MultipartFormData", "file"))
        self.assertEqual(sxcu["URL"], "{json:urls.original}")
        self.assertEqual(sxcu["ErrorMessage"], "{json:error}")
        self.assertTrue(sxcu["Version"])
        response, _ = await self.browser.post("/tokens/sxcu", {"csrf": self.csrf, "token": "<x>"})
        self.assertEqual(response.code, 400)
        response, _ = await self.browser.post("/tokens/sxcu", {"token": secret})
        self.assertEqual(response.code, 403)

    async def test_sharex_files_offered(self):
        """A new token's card offers the three .sxcu flavours (native first) in one CSRF form, and
        explains ShareX's built-in Chevereto uploader with this server's URL."""
        _, body = await self.create()
        form = re.search(r'<form method="post" action="/tokens/sxcu".*?</form>', body, re.S).group(0)
        self.assertEqual(re.findall(r'name="flavour" value="([a-z0-9]+)"', form), ["native", "v1", "chevereto"])
        self.assertIn('name="csrf"', form)
        self.assertIn("<code>https://img.example/api/1/upload</code>", body)
        _, listed = await self.browser.get("/tokens")
        self.assertNotIn('action="/tokens/sxcu"', listed, "offered only with the new token")

    async def test_sharex_file_flavours(self):
        """Each flavour downloads as its own file name with its own endpoint; no flavour is the
        native file; an unknown flavour is 400; every download needs the CSRF token."""
        _, body = await self.create()
        secret = re.search(r'id="new-token">([0-9a-f]{32})<', body).group(1)
        expected = {
            "native": ("img.example.sxcu", "https://img.example/api/v1/img_upload.php",
                       {"X-API-Key": secret}, "file", "{json:delete_url}"),
            "v1": ("img.example-v1.sxcu", "https://img.example/api/v1/upload",
                   {"Authorization": "Bearer " + secret}, "file", "{json:delete_url}"),
            "chevereto": ("img.example-chevereto.sxcu", "https://img.example/api/1/upload",
                          {"X-API-Key": secret}, "source", "{json:image.delete_url}"),
        }
        for flavour, (filename, url, headers, field, deletion) in expected.items():
            response, out = await self.browser.post("/tokens/sxcu", {"csrf": self.csrf, "token": secret,
                                                                     "flavour": flavour})
            self.assertEqual(response.code, 200, flavour)
            self.assertEqual(header(response, "content-disposition"), f'attachment; filename="{filename}"')
            self.assertEqual(header(response, "content-type"), "application/octet-stream")
            self.assertEqual(header(response, "cache-control"), "no-store")
            sxcu = json.loads(out)
            self.assertEqual((sxcu["Version"], sxcu["RequestURL"], sxcu["Headers"], sxcu["FileFormName"],
                              sxcu["DeletionURL"]), ("17.0.0", url, headers, field, deletion), flavour)
        response, out = await self.browser.post("/tokens/sxcu", {"csrf": self.csrf, "token": secret})
        self.assertEqual(json.loads(out)["RequestURL"], "https://img.example/api/v1/img_upload.php")
        response, out = await self.browser.post("/tokens/sxcu", {"csrf": self.csrf, "token": secret,
                                                                 "flavour": "imgur"})
        self.assertEqual(response.code, 400)
        self.assertNotIn(secret, out)
        response, _ = await self.browser.post("/tokens/sxcu", {"token": secret, "flavour": "chevereto"})
        self.assertEqual(response.code, 403)
        response, _ = await self.browser.post(f"/tokens/sxcu?csrf={self.csrf}", {"token": secret,
                                                                                 "flavour": "v1"})
        self.assertEqual(response.code, 403, "the CSRF token counts only from the body")

    async def test_delete_token(self):
        """Deleting asks first; once confirmed the token stops working at once."""
        _, body = await self.create("old")
        secret = re.search(r'id="new-token">([0-9a-f]{32})<', body).group(1)
        token_id = (await self.f.database.run(db.list_tokens, "kitten", T0))[0].id
        response, body = await self.browser.post("/tokens/delete", {"csrf": self.csrf, "id": str(token_id)})
        self.assertEqual(response.code, 200)
        self.assertIn("Delete the token “old”?", body)
        response, _ = await self.browser.post("/tokens/delete", {"csrf": self.csrf, "id": str(token_id),
                                                                 "confirm": "1"})
        self.assertEqual((response.code, location(response)), (303, "/tokens?done=token-deleted"))
        response, _ = await self.api_upload(secret)
        self.assertEqual(response.code, 401)

    async def test_cannot_delete_someone_elses_token(self):
        """Another account's token id is 404 and the token keeps working."""
        secret = await self.f.token("bear")
        bear_id = (await self.f.database.run(db.list_tokens, "bear", T0))[0].id
        response, _ = await self.browser.post("/tokens/delete", {"csrf": self.csrf, "id": str(bear_id),
                                                                 "confirm": "1"})
        self.assertEqual(response.code, 404)
        response, _ = await self.api_upload(secret)
        self.assertEqual(response.code, 200)


class AccountTests(PagesTestCase):
    async def test_change_password(self):
        """The password changes with the current one; mistakes are explained; other sessions end."""
        other = await self.logged_in()
        await self.browser.login()
        csrf = await self.browser.csrf("/account")
        for fields in [{"current": "wrong", "password": "new password!", "repeat": "new password!"},
                       {"current": PASSWORD, "password": "new password!", "repeat": "different!!"},
                       {"current": PASSWORD, "password": "short", "repeat": "short"}]:
            response, body = await self.browser.post("/account/password", {"csrf": csrf, **fields})
            self.assertEqual(response.code, 400, fields)
        response, _ = await self.browser.post("/account/password", {
            "csrf": csrf, "current": PASSWORD, "password": "new password!", "repeat": "new password!"})
        self.assertEqual((response.code, location(response)), (303, "/account?done=password"))
        self.assertEqual((await self.browser.get("/account"))[0].code, 200, "this browser stays in")
        self.assertEqual((await other.get("/account"))[0].code, 303, "the other browser is out")
        await Browser(self.f).login("kitten", "new password!")

    async def test_change_password_policy_and_same_password(self):
        """The change form states the rule; weak passwords get the policy's message; the password
        the account has now is refused as such; nothing changes and no session ends."""
        other = await self.logged_in()
        await self.browser.login()
        body = (await self.browser.get("/account"))[1]
        self.assertIn(passwords.RULE, body)
        csrf = csrf_of(body)
        for password, message in [*WEAK[:5], ("abcabcabcabc", passwords.PATTERN),
                                  (PASSWORD, passwords.SAME_AS_NOW)]:
            response, body = await self.browser.post("/account/password", {
                "csrf": csrf, "current": PASSWORD, "password": password, "repeat": password})
            self.assertEqual(response.code, 400, password)
            self.assertIn(html.escape(message, quote=False), body, password)
        self.assertIn("The new password is the one you have now", body)
        self.assertEqual((await other.get("/account"))[0].code, 200, "no session ended")
        await Browser(self.f).login("kitten", PASSWORD)

    async def test_old_weak_password_still_logs_in_and_can_be_changed(self):
        """An account made under the old rule (a short, common password) logs in, and its owner
        can move to a good password."""
        await self.f.database.run(db.create_account, "oldtimer", auth.hash_password("password", b"2" * 16),
                                  False, T0)
        browser = Browser(self.f)
        await browser.login("oldtimer", "password")
        csrf = await browser.csrf("/account")
        response, _ = await browser.post("/account/password", {
            "csrf": csrf, "current": "password", "password": "a much better one", "repeat": "a much better one"})
        self.assertEqual((response.code, location(response)), (303, "/account?done=password"))
        await Browser(self.f).login("oldtimer", "a much better one")

    async def test_change_password_needs_csrf(self):
        """A password change without the CSRF token is 403 and changes nothing."""
        await self.browser.login()
        response, _ = await self.browser.post("/account/password", {
            "current": PASSWORD, "password": "new password!", "repeat": "new password!"})
        self.assertEqual(response.code, 403)
        await Browser(self.f).login("kitten", PASSWORD)

    async def test_admin_manages_accounts(self):
        """An admin lists, creates (user or admin) and removes accounts, not their own."""
        await self.make_admin("boss")
        await self.browser.login("boss")
        response, body = await self.browser.get("/account")
        self.assertIn("Create an account", body)
        for name in ["bear", "boss", "kitten"]:
            self.assertIn(f"<td data-label=\"Name\">{name}</td>", body)
        csrf = csrf_of(body)
        response, _ = await self.browser.post("/account/create", {"csrf": csrf, "name": "newbie",
                                                                  "password": "a long password",
                                                                  "repeat": "a long password"})
        self.assertEqual(location(response), "/account?done=account-created")
        self.assertFalse((await self.f.database.run(db.get_account, "newbie")).is_admin)
        response, body = await self.browser.post("/account/create", {"csrf": csrf, "name": "newbie",
                                                                     "password": "a long password",
                                                                     "repeat": "a long password"})
        self.assertEqual(response.code, 400)
        self.assertIn("taken", body)
        kitten = await self.logged_in("kitten")
        response, body = await self.browser.post("/account/remove", {"csrf": csrf, "name": "kitten"})
        self.assertIn("Remove the account kitten?", body)
        response, _ = await self.browser.post("/account/remove", {"csrf": csrf, "name": "kitten", "confirm": "1"})
        self.assertEqual(location(response), "/account?done=account-removed")
        self.assertIsNone(await self.f.database.run(db.get_account, "kitten"))
        self.assertEqual((await kitten.get("/images"))[0].code, 303, "its session ended")
        response, _ = await self.browser.post("/account/remove", {"csrf": csrf, "name": "boss", "confirm": "1"})
        self.assertEqual(response.code, 400)

    async def test_admin_creates_no_account_with_a_weak_password(self):
        """The admin's create form states the rule and refuses weak passwords with the policy's message."""
        await self.make_admin("boss")
        await self.browser.login("boss")
        body = (await self.browser.get("/account"))[1]
        self.assertIn(f'<p class="field-hint" id="new-password-hint">{passwords.RULE}</p>', body)
        csrf = csrf_of(body)
        for password, message in WEAK:
            response, body = await self.browser.post("/account/create", {
                "csrf": csrf, "name": "mountaingoat", "password": password, "repeat": password})
            self.assertEqual(response.code, 400, password)
            self.assertIn(html.escape(message, quote=False), body, password)
        self.assertIsNone(await self.f.database.run(db.get_account, "mountaingoat"))

    async def test_users_cannot_manage_accounts(self):
        """A non-admin sees no account list and is refused (403) by the admin forms."""
        await self.browser.login("kitten")
        response, body = await self.browser.get("/account")
        self.assertNotIn("Create an account", body)
        csrf = csrf_of(body)
        response, _ = await self.browser.post("/account/create", {"csrf": csrf, "name": "sneaky",
                                                                  "password": "a long password",
                                                                  "repeat": "a long password"})
        self.assertEqual(response.code, 403)
        response, _ = await self.browser.post("/account/remove", {"csrf": csrf, "name": "bear", "confirm": "1"})
        self.assertEqual(response.code, 403)
        self.assertIsNotNone(await self.f.database.run(db.get_account, "bear"))


class AdminFormsTests(PagesTestCase):
    """An administrator's forms for other accounts: a new password, administrator rights."""

    async def setUp(self):
        await super().setUp()
        await self.make_admin("boss")
        await self.browser.login("boss")
        self.csrf = await self.browser.csrf("/account")

    async def test_admin_sees_the_forms_for_other_accounts_only(self):
        """Each other account's row offers a new password and the role change; one's own row neither."""
        response, body = await self.browser.get("/account")
        self.assertIn('href="/account/reset?name=kitten"', body)
        self.assertIn('href="/account/reset?name=bear"', body)
        self.assertNotIn('href="/account/reset?name=boss"', body)
        self.assertEqual(body.count(">Make admin</button>"), 2)
        self.assertNotIn(">Remove admin</button>", body)
        self.assertIn('data-confirm="Make kitten an administrator?', body)
        await self.browser.post("/account/admin", {"csrf": self.csrf, "name": "bear", "admin": "1", "confirm": "1"})
        body = (await self.browser.get("/account"))[1]
        self.assertEqual(body.count(">Remove admin</button>"), 1)
        self.assertIn('data-confirm="Remove the administrator rights of bear?"', body)

    async def test_admin_sets_a_new_password(self):
        """The form asks for the password twice; the reset ends that account's sessions, keeps its
        tokens, and the new password logs in."""
        kitten = await self.logged_in("kitten")
        secret = await self.f.token("kitten")
        response, body = await self.browser.get("/account/reset?name=kitten")
        self.assertEqual(response.code, 200)
        self.assertIn("Choose a new password for <strong>kitten</strong>", body)
        self.assertIn('action="/account/reset"', body)
        csrf = csrf_of(body)
        for fields in [{"password": "new password!", "repeat": "different!!"},
                       {"password": "short", "repeat": "short"}]:
            response, body = await self.browser.post("/account/reset", {"csrf": csrf, "name": "kitten", **fields})
            self.assertEqual(response.code, 400, fields)
            self.assertIn('class="problem"', body)
        self.assertEqual((await kitten.get("/images"))[0].code, 200, "nothing changed yet")
        response, _ = await self.browser.post("/account/reset", {
            "csrf": csrf, "name": "kitten", "password": "new password!", "repeat": "new password!"})
        self.assertEqual((response.code, location(response)), (303, "/account?done=password-reset"))
        self.assertIn("browsers were logged out; its tokens still work",
                      (await self.browser.get("/account?done=password-reset"))[1])
        self.assertEqual((await kitten.get("/images"))[0].code, 303, "kitten's session ended")
        self.assertEqual((await self.browser.get("/account"))[0].code, 200, "the admin's own stays")
        self.assertIsNotNone(await self.f.database.run(db.find_token, auth.token_digest(secret), T0))
        await Browser(self.f).login("kitten", "new password!")
        response, _ = await self.api_upload(secret)
        self.assertEqual(response.code, 200)

    async def test_admin_reset_refuses_weak_passwords(self):
        """The reset form states the rule and refuses weak passwords with the policy's message;
        the account keeps its password and its session."""
        kitten = await self.logged_in("kitten")
        body = (await self.browser.get("/account/reset?name=kitten"))[1]
        self.assertIn(f'<p class="field-hint" id="password-hint">{passwords.RULE}</p>', body)
        csrf = csrf_of(body)
        for password, message in [*WEAK[:5], ("zxcvbnmzxcvbnm", passwords.PATTERN)]:
            response, body = await self.browser.post("/account/reset", {
                "csrf": csrf, "name": "kitten", "password": password, "repeat": password})
            self.assertEqual(response.code, 400, password)
            self.assertIn(html.escape(message, quote=False), body, password)
        self.assertEqual((await kitten.get("/images"))[0].code, 200, "nothing changed")
        await Browser(self.f).login("kitten", PASSWORD)

    async def test_admin_gives_and_takes_admin_rights(self):
        """Without JavaScript the role change asks first; once confirmed it takes effect on the
        account's live session; one's own role and unknown accounts are refused."""
        kitten = await self.logged_in("kitten")
        response, body = await self.browser.post("/account/admin", {"csrf": self.csrf, "name": "kitten", "admin": "1"})
        self.assertEqual(response.code, 200)
        self.assertIn("Make kitten an administrator?", body)
        self.assertIn('name="confirm" value="1"', body)
        self.assertFalse((await self.f.database.run(db.get_account, "kitten")).is_admin)
        response, _ = await self.browser.post("/account/admin", {"csrf": self.csrf, "name": "kitten", "admin": "1",
                                                                 "confirm": "1"})
        self.assertEqual(location(response), "/account?done=admin-on")
        self.assertTrue((await self.f.database.run(db.get_account, "kitten")).is_admin)
        self.assertIn("Create an account", (await kitten.get("/account"))[1])
        response, _ = await self.browser.post("/account/admin", {"csrf": self.csrf, "name": "kitten", "admin": "0",
                                                                 "confirm": "1"})
        self.assertEqual(location(response), "/account?done=admin-off")
        self.assertFalse((await self.f.database.run(db.get_account, "kitten")).is_admin)
        self.assertNotIn("Create an account", (await kitten.get("/account"))[1])
        for fields, status in [({"name": "boss", "admin": "0"}, 400), ({"name": "nobody", "admin": "1"}, 404),
                               ({"name": "kitten", "admin": "yes"}, 400)]:
            response, _ = await self.browser.post("/account/admin", {"csrf": self.csrf, "confirm": "1", **fields})
            self.assertEqual(response.code, status, fields)
        self.assertTrue((await self.f.database.run(db.get_account, "boss")).is_admin)
        for path in ["/account/reset?name=boss", "/account/reset?name=nobody", "/account/reset"]:
            self.assertIn((await self.browser.get(path))[0].code, (400, 404), path)

    async def test_admin_forms_need_csrf(self):
        """Without the session's CSRF token both forms are 403 and change nothing."""
        for path, fields in [("/account/reset", {"name": "kitten", "password": "new password!",
                                                 "repeat": "new password!"}),
                             ("/account/admin", {"name": "kitten", "admin": "1", "confirm": "1"})]:
            for csrf in [{}, {"csrf": "0" * 64}]:
                response, _ = await self.browser.post(path, {**fields, **csrf})
                self.assertEqual(response.code, 403, (path, csrf))
            response, _ = await self.browser.post(path + "?csrf=" + self.csrf, fields)
            self.assertEqual(response.code, 403, "a token in the query string counts for nothing")
        self.assertFalse((await self.f.database.run(db.get_account, "kitten")).is_admin)
        await Browser(self.f).login("kitten", PASSWORD)

    async def test_users_cannot_use_the_admin_forms(self):
        """A plain user sees neither form and is refused (403) with a valid CSRF token."""
        kitten = await self.logged_in("kitten")
        response, body = await kitten.get("/account")
        for text in ["Set a new password", "Make admin", "Remove admin", "/account/reset", "/account/admin"]:
            self.assertNotIn(text, body)
        csrf = csrf_of(body)
        self.assertEqual((await kitten.get("/account/reset?name=bear"))[0].code, 403)
        response, _ = await kitten.post("/account/reset", {"csrf": csrf, "name": "bear", "password": "new password!",
                                                           "repeat": "new password!"})
        self.assertEqual(response.code, 403)
        for name in ["kitten", "bear"]:
            response, _ = await kitten.post("/account/admin", {"csrf": csrf, "name": name, "admin": "1", "confirm": "1"})
            self.assertEqual(response.code, 403)
            self.assertFalse((await self.f.database.run(db.get_account, name)).is_admin)
        response, _ = await kitten.post("/account/admin", {"csrf": csrf, "name": "boss", "admin": "0", "confirm": "1"})
        self.assertEqual(response.code, 403)
        self.assertTrue((await self.f.database.run(db.get_account, "boss")).is_admin)
        await Browser(self.f).login("bear", PASSWORD)


class HeaderTests(PagesTestCase):
    async def test_security_headers_on_every_page(self):
        """Every page has the CSP without inline script, nosniff, same-origin referrers and no-store."""
        await self.browser.login()
        for path in ["/images", "/tokens", "/account", "/nowhere"]:
            response, _ = await self.browser.get(path)
            self.assertEqual(header(response, "content-security-policy"), CSP, path)
            self.assertEqual(header(response, "x-content-type-options"), "nosniff")
            self.assertEqual(header(response, "referrer-policy"), "same-origin")
            self.assertEqual(header(response, "cache-control"), "no-store")
            self.assertEqual(header(response, "content-type"), "text/html; charset=utf-8")
        response, _ = await Browser(self.f).get("/login")
        self.assertEqual(header(response, "content-security-policy"), CSP)

    async def test_no_inline_script_or_style(self):
        """No page holds an inline script, an inline event handler or a style attribute."""
        await self.browser.login()
        token = await self.f.token("kitten")
        await self.api_upload(token)
        csrf = await self.browser.csrf("/tokens")
        _, created = await self.browser.post("/tokens", {"csrf": csrf, "label": "x", "expires": "never"})
        pages = [created]
        for path in ["/images", "/tokens", "/account", "/nowhere"]:
            pages.append((await self.browser.get(path))[1])
        pages.append((await Browser(self.f).get("/login"))[1])
        for body in pages:
            for script in re.findall(r"<script[^>]*>(.*?)</script>", body, re.S):
                self.assertEqual(script, "")
            self.assertEqual(len(re.findall(r"<script ", body)), len(re.findall(r'<script [^>]*src="/static/', body)))
            self.assertNotRegex(body, r"\son[a-z]+=")
            self.assertNotRegex(body, r"\sstyle=")

    async def test_static_files(self):
        """The CSS, JavaScript and icon are served by the app with their types."""
        for name, mime in [("app.css", "text/css; charset=utf-8"), ("app.js", "text/javascript; charset=utf-8"),
                           ("icon.svg", "image/svg+xml")]:
            response, body = await self.browser.get(f"/static/{name}")
            self.assertEqual(response.code, 200)
            self.assertEqual(header(response, "content-type"), mime)
            self.assertEqual(header(response, "x-content-type-options"), "nosniff")
            etag = header(response, "etag")
            response, _ = await self.browser.get(f"/static/{name}", {b"If-None-Match": [etag.encode()]})
            self.assertEqual(response.code, 304)
        response, _ = await self.browser.get("/static/../imgshare.sqlite3")
        self.assertEqual(response.code, 404)

    async def test_unknown_page_is_404(self):
        """An unknown address is an HTML 404 page; the API keeps its JSON errors."""
        response, body = await self.browser.get("/nowhere")
        self.assertEqual(response.code, 404)
        self.assertIn("Not found", body)
        response, body = await self.browser.get("/api/v1/nowhere")
        self.assertEqual(response.code, 404)
        self.assertEqual(json.loads(body)["status"], "error")

    async def test_wrong_method(self):
        """GET on a POST-only form is 405."""
        await self.browser.login()
        response, _ = await self.browser.get("/logout")
        self.assertEqual(response.code, 405)


def _multipart_many(fields, files):
    """A multipart body with several parts of the same name (``multipart`` takes a dict)."""
    body, headers = multipart(fields)
    boundary = headers[b"Content-Type"][0].split(b"boundary=")[1].decode()
    parts = body[: -len(f"--{boundary}--\r\n")]
    for name, filename, data in files:
        parts += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                  "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    return parts + f"--{boundary}--\r\n".encode(), headers


def _spooled_uploads(fixture):
    import os

    spool = fixture.config.spool_dir
    return [n for n in os.listdir(spool) if n.startswith("upload-")] if os.path.isdir(spool) else []

