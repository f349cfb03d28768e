"""Accounts on a real SQLite database: the one-time setup code and the first admin."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial import unittest

from imgshare import auth, db
from imgshare.accounts import SETUP_CODE_SETTING, Accounts, LastAdmin
from imgshare.domain import errors, passwords
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
        self.assertEqual(await self.accounts.reset_password("bear", "again a new one"), 0)
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


class PasswordPolicyTests(unittest.TestCase):
    """The policy of imgshare.domain.passwords, on its own and through Accounts."""

    async def setUp(self):
        self.database = await open_sqlite_sync(self)
        clock = Clock()
        clock.advance(T0)
        self.accounts = Accounts(self.database, InlineRunner(), clock)

    def test_length_counts_code_points_after_nfkc(self):
        """10 to 1024 characters counted after NFKC; nothing is stripped, spaces count."""
        self.assertEqual(passwords.problem("password"), passwords.TOO_SHORT)
        self.assertEqual(passwords.problem("aaaaaaaa"), passwords.TOO_SHORT)
        self.assertEqual(passwords.problem("Fx7 mq2Zr"), passwords.TOO_SHORT)
        self.assertIsNone(passwords.problem("Fx7 mq2Zr!"))
        self.assertIsNone(passwords.problem("  Fx7mq2  "), "leading and trailing spaces count")
        self.assertEqual(passwords.problem("Fx7mq2Zr" * 128), None)
        self.assertEqual(passwords.problem("Fx7mq2Zr" * 128 + "x"), passwords.TOO_LONG)
        # Five emoji are ten UTF-16 units but five code points.
        self.assertEqual(passwords.problem("\N{CAT FACE}\N{DOG FACE}\N{BEAR FACE}\N{FROG FACE}\N{TIGER FACE}"),
                         passwords.TOO_SHORT)
        # "e" + a combining acute accent composes to one code point under NFKC: 11 -> 10 -> 9.
        decomposed = "cafe\u0301 tr\u0065\u0301s"
        self.assertEqual(len(decomposed), 11)
        self.assertEqual(passwords.length(decomposed), 9)
        self.assertEqual(passwords.problem(decomposed), passwords.TOO_SHORT)
        # U+FDFA (one code point) is 18 under NFKC.
        self.assertEqual(passwords.length("\ufdfa"), 18)

    def test_common_passwords_case_insensitively(self):
        """A hit in the shipped list is refused whatever the case or width of its letters."""
        self.assertGreaterEqual(len(passwords.common_passwords()), 10000)
        self.assertIs(passwords.common_passwords(), passwords.common_passwords(), "loaded once")
        for common in ("password1234", "Password1234", "PASSWORD123", "iloveyou12", "1q2w3e4r5t",
                       "\uff30\uff41\uff53\uff53\uff57\uff4f\uff52\uff44\uff11\uff12\uff13"):
            self.assertEqual(passwords.problem(common), passwords.COMMON, common)
        self.assertIsNone(passwords.problem("a long password"))

    def test_repeats_and_sequences(self):
        """One character repeated, a short block repeated and obvious sequences are refused."""
        for pattern in ("aaaaaaaaaa", "AAAAAAAAAAAA", "1234567890", "0987654321", "4567890123",
                        "abcdefghij", "ABCDEFGHIJKL", "zyxwvutsrq", "qwertyuiop", "poiuytrewq",
                        "abababababab", "xyzxyzxyzxyz", "abcdabcdabcd", "!!!!!!!!!!"):
            self.assertEqual(passwords.problem(pattern), passwords.PATTERN, pattern)
        for fine in ("abcdefghix", "1234567899x", "abcdeabcdeab"):
            self.assertIsNone(passwords.problem(fine), fine)

    def test_the_account_name(self):
        """The account name (whatever its case) is refused as its password, not as another's."""
        self.assertEqual(passwords.problem("mountaingoat", "mountaingoat"), passwords.IS_NAME)
        self.assertEqual(passwords.problem("MountainGoat", "mountaingoat"), passwords.IS_NAME)
        self.assertIsNone(passwords.problem("mountaingoat", "kitten"))
        self.assertIsNone(passwords.problem("mountaingoat"))

    async def test_every_way_of_setting_a_password(self):
        """create, create_first, register, set_password and reset_password all apply the policy
        and store nothing when it refuses."""
        code = await self.accounts.setup_code_if_needed()
        with self.assertRaises(errors.BadRequest) as caught:
            await self.accounts.create_first(code, "kitten", "password")
        self.assertEqual(caught.exception.message, passwords.TOO_SHORT)
        with self.assertRaises(errors.BadRequest):
            await self.accounts.create("kitten", "password1234", False)
        self.assertEqual(await self.database.run(db.count_accounts), 0)
        await self.accounts.create_first(code, "kitten", "a long password")
        with self.assertRaises(errors.BadRequest) as caught:
            await self.accounts.register("bearbearbear", "bearbearbear")
        self.assertEqual(caught.exception.message, passwords.IS_NAME)
        self.assertIsNone(await self.database.run(db.get_account, "bearbearbear"))
        await self.accounts.create("bear", "a long password", False)
        for weak in ("aaaaaaaa", "aaaaaaaaaa", "Password123", "bearbearbear"):
            with self.assertRaises(errors.BadRequest):
                await self.accounts.set_password("bear", weak)
            with self.assertRaises(errors.BadRequest):
                await self.accounts.reset_password("bear", weak)
        self.assertIsNotNone(await self.accounts.verify("bear", "a long password"), "unchanged")

    async def test_changing_to_the_same_password(self):
        """The owner's change to the password they have now is refused with a clear message;
        an administrator's reset (who does not know it) is not."""
        await self.accounts.create("kitten", "a long password", False)
        with self.assertRaises(errors.BadRequest) as caught:
            await self.accounts.set_password("kitten", "a long password")
        self.assertEqual(caught.exception.message, passwords.SAME_AS_NOW)
        self.assertIn("the one you have now", caught.exception.message)
        await self.accounts.set_password("kitten", "another long one")
        self.assertIsNotNone(await self.accounts.verify("kitten", "another long one"))
        self.assertEqual(await self.accounts.reset_password("kitten", "another long one"), 0)
        with self.assertRaises(errors.NotFound):
            await self.accounts.set_password("nobody", "another long one")

    async def test_old_weak_passwords_still_log_in(self):
        """An account made under the old rule (8 characters, a common one) still logs in:
        login never applies the policy."""
        await self.database.run(db.create_account, "kitten", auth.hash_password("password", b"0" * 16),
                                False, T0)
        self.assertIsNotNone(await self.accounts.verify("kitten", "password"))
        self.assertIsNone(await self.accounts.verify("kitten", "password1"))
