"""Accounts on a real SQLite database: the one-time setup code and the first admin."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial import unittest

from imgshare import db
from imgshare.accounts import SETUP_CODE_SETTING, Accounts, LastAdmin
from imgshare.domain import errors
from imgshare.testing import T0, open_sqlite_sync
from imgshare.threads import InlineRunner


class SetupCodeTests(unittest.TestCase):
    async def setUp(self):
        self.database = await open_sqlite_sync(self)
        clock = Clock()
        clock.advance(T0)
        self.accounts = Accounts(self.database, InlineRunner(), clock)

    async def test_code_until_the_first_account(self):
        """With no account the code is made once and kept (every process logs the same);
        once an account exists there is none to announce."""
        code = await self.accounts.setup_code_if_needed()
        self.assertTrue(code)
        self.assertEqual(await self.database.run(db.get_setting, SETUP_CODE_SETTING), code)
        self.assertEqual(await self.accounts.setup_code_if_needed(), code)
        self.assertTrue(await self.accounts.setup_code_valid(code))
        await self.accounts.create("kitten", "a long password", False)
        self.assertIsNone(await self.accounts.setup_code_if_needed())

    async def test_first_account_is_admin_when_asked(self):
        """With admin_if_first the first account is an admin, later ones only if asked."""
        first = await self.accounts.create("kitten", "a long password", False, admin_if_first=True)
        second = await self.accounts.create("bear", "a long password", False, admin_if_first=True)
        third = await self.accounts.create("fox", "a long password", True, admin_if_first=True)
        self.assertEqual((first.is_admin, second.is_admin, third.is_admin), (True, False, True))


class AccountNameTests(unittest.TestCase):
    async def setUp(self):
        self.database = await open_sqlite_sync(self)
        clock = Clock()
        clock.advance(T0)
        self.accounts = Accounts(self.database, InlineRunner(), clock)

    async def test_peer_path_names_refused(self):
        """The names of the peer-client paths (i, delete, sharexapi) and register cannot be
        created, and the refusal names every reserved word; nothing is stored."""
        for name in ("i", "delete", "sharexapi", "register"):
            with self.assertRaises(errors.BadRequest) as caught:
                await self.accounts.create(name, "a long password", False)
            for word in ("i,", "delete", "sharexapi", "register", "api", "qvga"):
                self.assertIn(word, caught.exception.message)
            self.assertIsNone(await self.database.run(db.get_account, name))


class AdminRightsTests(unittest.TestCase):
    async def setUp(self):
        self.database = await open_sqlite_sync(self)
        clock = Clock()
        clock.advance(T0)
        self.accounts = Accounts(self.database, InlineRunner(), clock)

    async def test_the_last_admin_stays(self):
        """The only administrator is neither demoted nor removed while other accounts exist
        (409, nothing changed); with a second admin both work; alone it can be removed."""
        await self.accounts.create("kitten", "a long password", True)
        await self.accounts.create("bear", "a long password", False)
        for attempt in (lambda: self.accounts.set_admin("kitten", False), lambda: self.accounts.remove("kitten")):
            with self.assertRaises(LastAdmin) as caught:
                await attempt()
            self.assertEqual(caught.exception.status, 409)
            self.assertIn("kitten is the only administrator", caught.exception.message)
            self.assertTrue((await self.accounts.get("kitten")).is_admin)
        await self.accounts.set_admin("bear", True)
        await self.accounts.set_admin("kitten", False)
        with self.assertRaises(LastAdmin):
            await self.accounts.remove("bear")
        await self.accounts.remove("kitten")
        await self.accounts.remove("bear")
        self.assertFalse(await self.accounts.has_accounts())
        with self.assertRaises(errors.NotFound):
            await self.accounts.set_admin("nobody", True)

    async def test_reset_password_ends_every_session(self):
        """An administrator's reset ends all of the account's sessions (and no other's)."""
        await self.accounts.create("kitten", "a long password", True)
        await self.accounts.create("bear", "a long password", False)
        for digest, account in [("1" * 64, "bear"), ("2" * 64, "bear"), ("3" * 64, "kitten")]:
            await self.database.run(db.create_session, digest, account, T0, T0 + 60)
        self.assertEqual(await self.accounts.reset_password("bear", "a new password"), 2)
        self.assertIsNotNone(await self.accounts.verify("bear", "a new password"))
        self.assertIsNotNone(await self.database.run(db.find_session, "3" * 64, T0))
        self.assertEqual(await self.accounts.reset_password("bear", "again new"), 0)
        with self.assertRaises(errors.NotFound):
            await self.accounts.reset_password("nobody", "a new password")

    async def test_registration_needs_a_first_account(self):
        """Self-registration stores nothing on a database without accounts, then makes users."""
        self.assertIsNone(await self.accounts.register("mallory", "a long password"))
        self.assertFalse(await self.accounts.has_accounts(cached=True))
        await self.accounts.create("kitten", "a long password", True)
        self.assertTrue(await self.accounts.has_accounts(cached=True))
        account = await self.accounts.register("mallory", "a long password")
        self.assertFalse(account.is_admin)
        with self.assertRaises(errors.ApiError) as caught:
            await self.accounts.register("mallory", "a long password")
        self.assertEqual(caught.exception.status, 409)
