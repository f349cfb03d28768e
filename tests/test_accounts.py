"""Accounts on a real SQLite database: the one-time setup code and the first admin."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial import unittest

from imgshare import db
from imgshare.accounts import SETUP_CODE_SETTING, Accounts
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
