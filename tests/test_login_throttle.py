"""Login throttling that cannot lock an owner out, and CSRF tokens only from the body (issue 9, items 3 and 13).

Each browser here comes from a client address of its own (``BrowserAt``): the
StubClient's requests otherwise all come from 127.0.0.1.
"""

from __future__ import annotations

from twisted.trial import unittest

from imgshare import auth, db
from imgshare.gather import ErrorCache
from imgshare.ratelimit import (
    LOGIN_PER_ACCOUNT,
    LOGIN_PER_ACCOUNT_ADDRESS,
    LOGIN_PER_ADDRESS,
    MemoryLimits,
    address_group,
)
from imgshare.testing import make_fixture
from imgshare.web.sessions import SESSION_COOKIE
from tests.limits_contract import LimitsContract
from tests.test_pages import PASSWORD, Browser, csrf_of, header, location

OWNER = "198.51.100.7"
ATTACKER = "203.0.113.5"


class BrowserAt(Browser):
    """A browser profile whose requests come from the client address ``host``."""

    def __init__(self, fixture, host):
        super().__init__(fixture, host)

    async def try_login(self, name="kitten", password=PASSWORD):
        token = await self.csrf("/login")
        return await self.post("/login", {"csrf": token, "name": name, "password": password})


class ThrottleTestCase(unittest.TestCase):
    async def setUp(self):
        # Hundreds of password checks: a cheap scrypt keeps the file fast (the
        # parameters travel in each stored hash, so checking follows them).
        self.patch(auth, "_SCRYPT_N", 2**8)
        self.f = await make_fixture(self)
        await self.f.account("kitten")
        await self.f.account("bear")
        self.scrypt_calls = 0
        check = auth.check_password

        def counting(*args, **kwargs):
            self.scrypt_calls += 1
            return check(*args, **kwargs)

        self.patch(auth, "check_password", counting)

    def at(self, host):
        return BrowserAt(self.f, host)

    async def fail_until_throttled(self, browser, name="kitten", limit=None):
        """Wrong passwords from ``browser`` until a 429; returns the 429 response and how many 400s came first."""
        failures = 0
        for _ in range(limit or LOGIN_PER_ADDRESS.count + 5):
            response, body = await browser.try_login(name, "wrong password")
            if response.code == 429:
                return response, body, failures
            self.assertEqual(response.code, 400, body)
            failures += 1
        self.fail(f"no 429 after {failures} failures")


class LoginLockoutTests(ThrottleTestCase):
    async def test_attacker_elsewhere_does_not_lock_the_owner_out(self):
        """Failures on an account from address A, far past every limit, leave its owner at B free to log in."""
        attacker = self.at(ATTACKER)
        response, _, failures = await self.fail_until_throttled(attacker)
        self.assertEqual(failures, LOGIN_PER_ACCOUNT_ADDRESS.count)
        for _ in range(5):
            response, _ = await attacker.try_login("kitten", "still wrong")
            self.assertEqual(response.code, 429)
        owner = self.at(OWNER)
        response, body = await owner.try_login()
        self.assertEqual((response.code, location(response)), (303, "/images"), body)
        self.assertIn(SESSION_COOKIE.decode(), owner.cookies)

    async def test_failures_from_the_same_address_throttle(self):
        """After the (account, address) failures even the right password waits (429 with Retry-After),
        with no scrypt work; once Retry-After has passed the address may try again."""
        browser = self.at(OWNER)
        response, body, failures = await self.fail_until_throttled(browser)
        self.assertEqual(failures, LOGIN_PER_ACCOUNT_ADDRESS.count)
        self.assertIn("Too many attempts", body)
        before = self.scrypt_calls
        response, body = await browser.try_login()
        self.assertEqual(response.code, 429)
        self.assertEqual(self.scrypt_calls, before, "a throttled attempt costs no scrypt work")
        retry_after = int(header(response, "retry-after"))
        self.assertGreater(retry_after, 0)
        self.assertIsNone(header(response, "location"))
        self.assertNotIn(SESSION_COOKIE.decode(), browser.cookies)
        self.f.clock.advance(retry_after)
        response, body = await browser.try_login()
        self.assertEqual(response.code, 303, body)

    async def test_a_success_resets_the_failures(self):
        """A successful login forgets the (account, address) failures: the full allowance is back."""
        browser = self.at(OWNER)
        for _ in range(LOGIN_PER_ACCOUNT_ADDRESS.count - 1):
            response, _ = await browser.try_login("kitten", "typo")
            self.assertEqual(response.code, 400)
        response, _ = await browser.try_login()
        self.assertEqual(response.code, 303)
        again = self.at(OWNER)
        for _ in range(LOGIN_PER_ACCOUNT_ADDRESS.count):
            response, _ = await again.try_login("kitten", "typo")
            self.assertEqual(response.code, 400)
        response, _ = await again.try_login("kitten", "typo")
        self.assertEqual(response.code, 429)

    async def test_successes_spend_nothing(self):
        """Logging in successfully, more often than any limit allows failures, is never throttled."""
        for _ in range(LOGIN_PER_ADDRESS.count + 2):
            response, body = await self.at(OWNER).try_login()
            self.assertEqual(response.code, 303, body)

    async def test_per_address_limit_across_account_names(self):
        """One address guessing many account names is throttled past the per-address limit, even for
        a right password; other addresses are not."""
        browser = self.at(ATTACKER)
        codes = []
        for i in range(LOGIN_PER_ADDRESS.count + 1):
            response, _ = await browser.try_login(f"guess{i}", "x")
            codes.append(response.code)
        self.assertEqual(codes, [400] * LOGIN_PER_ADDRESS.count + [429])
        response, _ = await browser.try_login("bear")
        self.assertEqual(response.code, 429)
        self.assertTrue(header(response, "retry-after"))
        response, _ = await self.at(OWNER).try_login("bear")
        self.assertEqual(response.code, 303)

    async def test_ipv6_addresses_count_by_their_64(self):
        """Every address of one IPv6 /64 shares the limits; another /64 does not."""
        for i in range(LOGIN_PER_ACCOUNT_ADDRESS.count):
            response, _ = await self.at(f"2001:db8:1:2::{i + 1:x}").try_login("kitten", "wrong")
            self.assertEqual(response.code, 400)
        response, _ = await self.at("2001:db8:1:2:ffff:ffff:ffff:fffe").try_login()
        self.assertEqual(response.code, 429, "the same /64")
        response, _ = await self.at("2001:db8:1:3::1").try_login()
        self.assertEqual(response.code, 303, "another /64")

        for i in range(LOGIN_PER_ADDRESS.count - LOGIN_PER_ACCOUNT_ADDRESS.count):
            response, _ = await self.at(f"2001:db8:5:6:{i + 1:x}::1").try_login(f"guess{i}", "x")
            self.assertEqual(response.code, 400)
        response, _ = await self.at("2001:db8:5:6::1").try_login("bear")
        self.assertEqual(response.code, 303, "another /64 again")

    async def test_distributed_guessing_slows_strangers_only(self):
        """Failures on one account from many addresses past the account's limit throttle addresses
        it never logged in from; an address that logged in successfully before gets in."""
        await self.at(OWNER).login("kitten")
        per_address = LOGIN_PER_ACCOUNT_ADDRESS.count
        hosts = [f"203.0.113.{i + 1}" for i in range(-(-LOGIN_PER_ACCOUNT.count // per_address))]
        for host in hosts:
            browser = self.at(host)
            for _ in range(per_address):
                response, _ = await browser.try_login("kitten", "guess")
                self.assertEqual(response.code, 400)
        stranger = self.at("192.0.2.99")
        response, _ = await stranger.try_login("kitten", "guess")
        self.assertEqual(response.code, 429, "a fresh address is slowed")
        self.assertTrue(header(response, "retry-after"))
        response, body = await self.at(OWNER).try_login()
        self.assertEqual(response.code, 303, body)
        response, _ = await self.at("192.0.2.99").try_login("bear")
        self.assertEqual(response.code, 303, "other accounts are not affected")


class PasswordFormTests(ThrottleTestCase):
    async def change(self, browser, current, csrf=None):
        csrf = csrf or await browser.csrf("/account")
        return await browser.post("/account/password", {
            "csrf": csrf, "current": current, "password": "new password!", "repeat": "new password!"})

    async def test_attacker_does_not_lock_the_owner_out_of_the_password_form(self):
        """Login failures elsewhere leave the owner's password change working."""
        owner = self.at(OWNER)
        await owner.login("kitten")
        await self.fail_until_throttled(self.at(ATTACKER))
        for i in range(LOGIN_PER_ACCOUNT.count):
            await self.at(f"192.0.2.{i + 1}").try_login("kitten", "guess")
        response, body = await self.change(owner, PASSWORD)
        self.assertEqual((response.code, location(response)), (303, "/account?done=password"), body)

    async def test_password_form_failures_throttle_with_retry_after(self):
        """Wrong current passwords are throttled like login failures (429 with Retry-After, no scrypt
        work), and share the (account, address) allowance with the login form."""
        owner = self.at(OWNER)
        await owner.login("kitten")
        csrf = await owner.csrf("/account")
        for _ in range(LOGIN_PER_ACCOUNT_ADDRESS.count):
            response, _ = await self.change(owner, "wrong", csrf)
            self.assertEqual(response.code, 400)
        before = self.scrypt_calls
        response, body = await self.change(owner, PASSWORD, csrf)
        self.assertEqual(response.code, 429)
        self.assertIn("Too many attempts", body)
        self.assertTrue(int(header(response, "retry-after")) > 0)
        self.assertEqual(self.scrypt_calls, before)
        response, _ = await self.at(OWNER).try_login()
        self.assertEqual(response.code, 429, "the login form shares the allowance")
        account_row = await self.f.database.run(db.get_password_hash, "kitten")
        self.assertTrue(auth.check_password(PASSWORD, account_row), "the password did not change")

    async def test_password_form_success_resets(self):
        """The right current password forgets the (account, address) failures, for the login form too."""
        owner = self.at(OWNER)
        await owner.login("kitten")
        csrf = await owner.csrf("/account")
        for _ in range(LOGIN_PER_ACCOUNT_ADDRESS.count - 1):
            response, _ = await self.change(owner, "wrong", csrf)
            self.assertEqual(response.code, 400)
        response, _ = await self.change(owner, PASSWORD, csrf)
        self.assertEqual(response.code, 303)
        elsewhere = self.at(OWNER)
        for _ in range(LOGIN_PER_ACCOUNT_ADDRESS.count):
            response, _ = await elsewhere.try_login("kitten", "wrong")
            self.assertEqual(response.code, 400)


class CsrfFromBodyTests(ThrottleTestCase):
    async def test_session_form_refuses_csrf_in_the_query(self):
        """A session form's CSRF token in the query string counts for nothing; from the body it works."""
        browser = self.at(OWNER)
        await browser.login("kitten")
        csrf = await browser.csrf("/tokens")
        response, _ = await browser.post(f"/tokens?csrf={csrf}", {"label": "from the query"})
        self.assertEqual(response.code, 403)
        response, _ = await browser.post(f"/logout?csrf={csrf}", {})
        self.assertEqual(response.code, 403)
        response, _ = await browser.post(f"/images/upload?csrf={csrf}", {"x": "1"},
                                         files={"file": ("a.png", b"x")})
        self.assertEqual(response.code, 403, "a multipart form too")
        self.assertEqual(await self.f.database.run(db.list_tokens, "kitten", self.f.clock.seconds()), [])
        response, body = await browser.post("/tokens", {"csrf": csrf, "label": "from the body"})
        self.assertEqual(response.code, 200, body)
        response, _ = await browser.post("/tokens?csrf=wrong", {"csrf": csrf, "label": "body wins"})
        self.assertEqual(response.code, 200)
        self.assertEqual(len(await self.f.database.run(db.list_tokens, "kitten", self.f.clock.seconds())), 2)

    async def test_pre_login_form_refuses_csrf_in_the_query(self):
        """The login form's CSRF token in the query string is refused (403, no session); from the body it works."""
        browser = self.at(OWNER)
        token = await browser.csrf("/login")
        response, _ = await browser.post(f"/login?csrf={token}", {"name": "kitten", "password": PASSWORD})
        self.assertEqual(response.code, 403)
        self.assertNotIn(SESSION_COOKIE.decode(), browser.cookies)
        response, _ = await browser.post("/login", {"csrf": token, "name": "kitten", "password": PASSWORD})
        self.assertEqual(response.code, 303)

    async def test_register_refuses_csrf_in_the_query(self):
        f = await make_fixture(self, registration="open")
        await f.account("kitten")  # registration opens once the first account exists
        browser = BrowserAt(f, OWNER)
        _, body = await browser.get("/register")
        token = csrf_of(body)
        fields = {"name": "newbie", "password": "a long password", "repeat": "a long password"}
        response, _ = await browser.post(f"/register?csrf={token}", fields)
        self.assertEqual(response.code, 403)
        self.assertIsNone(await f.database.run(db.get_account, "newbie"))
        response, _ = await browser.post("/register", {"csrf": token, **fields})
        self.assertEqual(response.code, 303)


class MemoryLimitsTests(LimitsContract, unittest.TestCase):
    """The in-memory limits store and error cache (SQLite servers, unit tests)."""

    async def make_limits(self, clock):
        return MemoryLimits(clock)

    async def make_error_cache(self, clock):
        return ErrorCache(clock)


class AddressGroupTests(unittest.TestCase):
    def test_address_groups(self):
        self.assertEqual(address_group("192.0.2.1"), "192.0.2.1")
        self.assertEqual(address_group("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64")
        self.assertEqual(address_group("2001:DB8:1:2::9%eth0"), "2001:db8:1:2::/64")
        self.assertEqual(address_group("::ffff:192.0.2.1"), "192.0.2.1")
        self.assertEqual(address_group("unknown"), "unknown")
