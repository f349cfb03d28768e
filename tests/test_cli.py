"""The ``imgshare`` admin command on a real SQLite database."""

from __future__ import annotations

import io
import os
import subprocess
import sys

from twisted.trial import unittest

from imgshare import auth, db
from imgshare.cli import CommandError, build_parser, run_command
from imgshare.testing import T0, open_sqlite_sync

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Clock:
    def seconds(self):
        return T0


class Stdin(io.StringIO):
    def isatty(self):
        return False


class CommandTests(unittest.TestCase):
    async def setUp(self):
        self.database = await open_sqlite_sync(self)

    async def cmd(self, *argv, stdin=""):
        out = io.StringIO()
        await run_command(build_parser().parse_args(list(argv)), self.database, Clock(), out, Stdin(stdin))
        return out.getvalue()

    async def test_user_add_list_del(self):
        """user add reads the password from stdin; the first account is admin; list and del work."""
        self.assertIn("(admin)", await self.cmd("user", "add", "kitten", stdin="a long password\n"))
        await self.cmd("user", "add", "bear", stdin="another password\n")
        stored = await self.database.run(db.get_password_hash, "kitten")
        self.assertTrue(auth.check_password("a long password", stored))
        self.assertFalse(auth.check_password("a long password\n", stored))
        listing = await self.cmd("user", "list")
        self.assertEqual([line.split("\t")[:2] for line in listing.splitlines()],
                         [["bear", "user"], ["kitten", "admin"]])
        await self.cmd("user", "del", "bear")
        self.assertNotIn("bear", await self.cmd("user", "list"))

    async def test_user_add_refusals(self):
        """Invalid or reserved names, duplicates and short passwords are refused."""
        for name in ["Kitten", "img", "thumb", "_x", "a" * 33, "a/b", "ä"]:
            with self.assertRaises(CommandError):
                await self.cmd("user", "add", name, stdin="a long password\n")
        with self.assertRaises(CommandError):
            await self.cmd("user", "add", "kitten", stdin="short\n")
        await self.cmd("user", "add", "kitten", stdin="a long password\n")
        with self.assertRaises(CommandError):
            await self.cmd("user", "add", "kitten", stdin="a long password\n")
        with self.assertRaises(CommandError):
            await self.cmd("user", "del", "nobody")

    async def test_tokens(self):
        """token create prints the token alone; list shows it without the secret; del removes it."""
        await self.cmd("user", "add", "kitten", stdin="a long password\n")
        out = await self.cmd("token", "create", "kitten", "--label", "ci", "--expires", "30d")
        secret = out.strip()
        self.assertEqual(out, secret + "\n")
        self.assertTrue(auth.looks_like_token(secret))
        token = await self.database.run(db.find_token, auth.token_digest(secret), T0)
        self.assertEqual((token.label, token.expires), ("ci", T0 + 30 * 86400))
        listing = await self.cmd("token", "list", "kitten")
        self.assertNotIn(secret, listing)
        self.assertIn("\tci\t", listing)
        await self.cmd("token", "del", "kitten", str(token.id))
        self.assertIsNone(await self.database.run(db.find_token, auth.token_digest(secret), T0))
        with self.assertRaises(CommandError):
            await self.cmd("token", "del", "kitten", str(token.id))

    async def test_token_refusals(self):
        """Unknown accounts and lifetimes under a minute are refused."""
        with self.assertRaises(CommandError):
            await self.cmd("token", "create", "nobody")
        await self.cmd("user", "add", "kitten", stdin="a long password\n")
        for expires in ["30", "30s", "banana"]:
            with self.assertRaises(CommandError):
                await self.cmd("token", "create", "kitten", "--expires", expires)
        out = await self.cmd("token", "create", "kitten", "--expires", "never")
        self.assertTrue(auth.looks_like_token(out.strip()))


class ConsoleScriptTests(unittest.TestCase):
    def test_real_command(self):
        """The installed-style entry point works end to end in a subprocess, env vars included."""
        data = os.path.abspath(self.mktemp())
        env = dict(os.environ, IMGSHARE_DATA_DIR=data, PYTHONPATH=REPO)
        run = lambda *a, stdin="": subprocess.run(  # noqa: E731
            [sys.executable, "-c", "from imgshare.cli import main; main()", *a],
            input=stdin, capture_output=True, text=True, env=env, timeout=60,
        )
        self.assertEqual(run("user", "add", "kitten", stdin="a long password\n").returncode, 0)
        created = run("token", "create", "kitten")
        self.assertEqual(created.returncode, 0, created.stderr)
        self.assertRegex(created.stdout, r"^[0-9a-f]{32}\n$")
        self.assertTrue(os.path.exists(os.path.join(data, "imgshare.sqlite3")))
        failed = run("token", "create", "nobody")
        self.assertEqual(failed.returncode, 1)
        self.assertIn("no account", failed.stderr)
