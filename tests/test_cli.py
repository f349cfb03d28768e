"""The ``imgshare`` admin command: its verbs on a real SQLite database, and the real
console script in a subprocess (stderr lines, exit statuses, what it creates)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import select
import subprocess
import sys
import time

from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from imgshare import auth, cli, db
from imgshare import backends as backends_module
from imgshare.cli import VERBS, CommandError, Console, build_parser, parse, run_command
from imgshare.domain import passwords
from imgshare.plugins.postgres import PostgresDatabase
from imgshare.testing import T0, open_sqlite_sync
from tests import backends
from tests.serverprocess import environment, run_admin

PASSWORD = "a long password"


class Clock:
    def seconds(self):
        return T0


class Stdin(io.StringIO):
    """stdin as a pipe (``tty=False``) or as a terminal where the user types ``text``."""

    def __init__(self, text="", tty=False):
        super().__init__(text)
        self.tty = tty

    def isatty(self):
        return self.tty


class CommandTests(unittest.TestCase):
    async def setUp(self):
        self.database = await open_sqlite_sync(self)
        self.err = ""

    async def cmd(self, *argv, stdin="", tty=False, new_database=False):
        """Run one command; its stdout (its stderr is kept in ``self.err``)."""
        out, err = io.StringIO(), io.StringIO()
        console = Console(out, err, Stdin(stdin, tty), database="sqlite:///test.sqlite3", new_database=new_database)
        try:
            await run_command(build_parser().parse_args(list(argv)), self.database, Clock(), console)
        finally:
            self.err = err.getvalue()
        return out.getvalue()

    async def image(self, account, name):
        image = await self.database.run(db.reserve_image, account, name, name.rsplit(".", 1)[0], "image/png",
                                        10, 4, 3, "ab" * 32, T0, None)
        return await self.database.run(db.commit_image, image.id, T0)

    async def session(self, account, digest):
        await self.database.run(db.create_session, digest, account, T0, T0 + 3600)

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
        await self.cmd("user", "del", "bear", "--yes")
        self.assertNotIn("bear", await self.cmd("user", "list"))

    async def test_user_add_refusals(self):
        """Invalid or reserved names, duplicates and passwords the policy refuses (short, common,
        a repeat or sequence, the account name) are refused, each with its message."""
        for name in ["Kitten", "img", "thumb", "_x", "a" * 33, "a/b", "ä"]:
            with self.assertRaises(CommandError):
                await self.cmd("user", "add", name, stdin="a long password\n")
        for weak, message in [("short", passwords.TOO_SHORT), ("password", passwords.TOO_SHORT),
                              ("aaaaaaaa", passwords.TOO_SHORT), ("Password1234", passwords.COMMON),
                              ("aaaaaaaaaaaa", passwords.PATTERN), ("1234567890", passwords.PATTERN),
                              ("mountaingoat", passwords.IS_NAME)]:
            with self.assertRaises(CommandError) as caught:
                await self.cmd("user", "add", "mountaingoat", stdin=weak + "\n")
            self.assertEqual(str(caught.exception), message)
        self.assertEqual(await self.cmd("user", "list"), "")
        await self.cmd("user", "add", "kitten", stdin="a long password\n")
        with self.assertRaises(CommandError):
            await self.cmd("user", "add", "kitten", stdin="a long password\n")
        with self.assertRaises(CommandError):
            await self.cmd("user", "del", "nobody", "--yes")

    async def test_first_account_is_announced(self):
        """The first account of a brand-new database says so on stderr; the first of an existing
        empty one says the setup link is void; later accounts say nothing more."""
        await self.cmd("user", "add", "kitten", stdin=PASSWORD + "\n", new_database=True)
        self.assertEqual(self.err, "imgshare: this is a new database at sqlite:///test.sqlite3; kitten is its "
                                   "first account and an admin\n")
        await self.cmd("user", "add", "bear", stdin=PASSWORD + "\n")
        self.assertEqual(self.err, "")

        self.database = await open_sqlite_sync(self)
        await self.cmd("user", "add", "fox", stdin=PASSWORD + "\n")
        self.assertIn("fox is the first account of this database and an admin; the setup link", self.err)

    async def test_passwd(self):
        """user passwd reads the new password like user add, ends the account's browser sessions
        (not another account's) and keeps its tokens."""
        await self.cmd("user", "add", "kitten", stdin=PASSWORD + "\n")
        await self.cmd("user", "add", "bear", stdin=PASSWORD + "\n")
        await self.session("kitten", "1" * 64)
        await self.session("kitten", "2" * 64)
        await self.session("bear", "3" * 64)
        secret = (await self.cmd("token", "create", "kitten")).strip()
        out = await self.cmd("user", "passwd", "kitten", stdin="the new password\nignored\n")
        self.assertEqual(out, "set a new password for kitten; 2 browser sessions ended (its API tokens still work)\n")
        stored = await self.database.run(db.get_password_hash, "kitten")
        self.assertTrue(auth.check_password("the new password", stored))
        self.assertIsNone(await self.database.run(db.find_session, "1" * 64, T0))
        self.assertIsNone(await self.database.run(db.find_session, "2" * 64, T0))
        self.assertIsNotNone(await self.database.run(db.find_session, "3" * 64, T0))
        self.assertIsNotNone(await self.database.run(db.find_token, auth.token_digest(secret), T0))
        self.assertNotIn("the new password", out + self.err)

    async def test_passwd_refusals(self):
        """An unknown account is refused before any password is read; the password policy of
        user add applies; on a terminal the password is asked twice and must match."""
        await self.cmd("user", "add", "kitten", stdin=PASSWORD + "\n")
        stdin = Stdin("the new password\n")
        with self.assertRaises(CommandError) as caught:
            await run_command(build_parser().parse_args(["user", "passwd", "nobody"]), self.database, Clock(),
                              Console(io.StringIO(), io.StringIO(), stdin))
        self.assertIn("no account 'nobody'", str(caught.exception))
        self.assertEqual(stdin.tell(), 0, "nothing read")
        for weak in ["short", "x" * 1025, "qwertyuiop", "iloveyou12", "aaaaaaaaaa", "Password123"]:
            with self.assertRaises(CommandError) as caught:
                await self.cmd("user", "passwd", "kitten", stdin=weak + "\n")
            self.assertEqual(str(caught.exception), passwords.problem(weak, "kitten"))
        typed = iter(["one password", "another one"])
        self.patch(cli.getpass, "getpass", lambda prompt: next(typed))
        with self.assertRaises(CommandError) as caught:
            await self.cmd("user", "passwd", "kitten", tty=True)
        self.assertEqual(str(caught.exception), "the passwords differ")
        typed = iter(["typed twice", "typed twice"])
        await self.cmd("user", "passwd", "kitten", tty=True)
        self.assertTrue(auth.check_password("typed twice", await self.database.run(db.get_password_hash, "kitten")))

    async def test_admin_on_off(self):
        """user admin NAME on|off; the last administrator is never demoted."""
        await self.cmd("user", "add", "kitten", stdin=PASSWORD + "\n")
        await self.cmd("user", "add", "bear", stdin=PASSWORD + "\n")
        with self.assertRaises(CommandError) as caught:
            await self.cmd("user", "admin", "kitten", "off")
        self.assertIn("kitten is the only administrator", str(caught.exception))
        self.assertTrue((await self.database.run(db.get_account, "kitten")).is_admin)
        self.assertEqual(await self.cmd("user", "admin", "bear", "on"), "bear is now an administrator\n")
        self.assertEqual(await self.cmd("user", "admin", "bear", "on"), "bear is already an administrator\n")
        self.assertEqual(await self.cmd("user", "admin", "kitten", "off"), "kitten is now a plain user\n")
        self.assertEqual([line.split("\t")[:2] for line in (await self.cmd("user", "list")).splitlines()],
                         [["bear", "admin"], ["kitten", "user"]])
        with self.assertRaises(CommandError):
            await self.cmd("user", "admin", "bear", "off")
        with self.assertRaises(CommandError):
            await self.cmd("user", "admin", "nobody", "on")
        with self.assertRaises(SystemExit), contextlib.redirect_stderr(io.StringIO()) as err:
            build_parser().parse_args(["user", "admin", "bear", "maybe"])
        self.assertIn("invalid choice: 'maybe'", err.getvalue())

    async def test_del_needs_confirmation(self):
        """user del says how many images go with the account; without --yes it needs a terminal
        where the account's name is typed; anything else removes nothing."""
        await self.cmd("user", "add", "kitten", stdin=PASSWORD + "\n")
        await self.cmd("user", "add", "bear", stdin=PASSWORD + "\n")
        for name in ["20260214_a.png", "20260214_b.png"]:
            await self.image("bear", name)
        with self.assertRaises(CommandError) as caught:
            await self.cmd("user", "del", "bear")
        self.assertIn("this would remove bear and its 2 images", str(caught.exception))
        self.assertIn("--yes", str(caught.exception))
        with self.assertRaises(CommandError):
            await self.cmd("user", "del", "bear", stdin="kitten\n", tty=True)
        self.assertIn("Type bear to confirm", self.err)
        self.assertIsNotNone(await self.database.run(db.get_account, "bear"))
        out = await self.cmd("user", "del", "bear", stdin="bear\n", tty=True)
        self.assertIn("imgshare: removing bear and its 2 images\n", self.err)
        self.assertIn("removed account bear", out)
        self.assertIsNone(await self.database.run(db.get_account, "bear"))
        self.assertEqual((await self.database.run(db.get_image, "bear", "20260214_a.png")).state, "deleted")

        await self.cmd("user", "add", "fox", stdin=PASSWORD + "\n")
        await self.image("fox", "20260214_c.png")
        await self.cmd("user", "del", "fox", "--yes")
        self.assertEqual(self.err, "imgshare: removing fox and its 1 image\n")

    async def test_del_keeps_an_admin(self):
        """The only administrator cannot be removed while other accounts exist; alone it can."""
        await self.cmd("user", "add", "kitten", stdin=PASSWORD + "\n")
        await self.cmd("user", "add", "bear", stdin=PASSWORD + "\n")
        with self.assertRaises(CommandError) as caught:
            await self.cmd("user", "del", "kitten", "--yes")
        self.assertIn("kitten is the only administrator", str(caught.exception))
        self.assertIsNotNone(await self.database.run(db.get_account, "kitten"))
        await self.cmd("user", "del", "bear", "--yes")
        await self.cmd("user", "del", "kitten", "--yes")
        self.assertEqual(await self.database.run(db.count_accounts), 0)

    async def test_tokens(self):
        """token create prints the token alone; list shows it without the secret; del removes it."""
        await self.cmd("user", "add", "kitten", stdin="a long password\n")
        out = await self.cmd("token", "create", "kitten", "--label", "ci", "--expires", "30d")
        secret = out.strip()
        self.assertEqual(out, secret + "\n")
        self.assertTrue(auth.looks_like_token(secret))
        self.assertNotIn(secret, self.err)
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


class UsageTests(unittest.TestCase):
    def usage(self, *argv):
        err = io.StringIO()
        with self.assertRaises(SystemExit) as caught:
            parse(list(argv), err)
        self.assertEqual(caught.exception.code, 2)
        return err.getvalue()

    def test_no_arguments_lists_every_verb(self):
        """``imgshare`` alone prints what it can do: every verb with a line of its own."""
        text = self.usage()
        self.assertTrue(text.startswith("usage: imgshare [--data-dir DIR | --db URL] [--storage URL] COMMAND"))
        for area, action, shown, help_text in VERBS:
            self.assertRegex(text, rf"\n  {area} {action} {re.escape(shown)} *{re.escape(help_text)}\n"
                             if shown else rf"\n  {area} {action} +{re.escape(help_text)}\n")
        self.assertNotIn("area", text)
        self.assertNotIn("{", text)

    def test_an_area_alone_lists_its_actions(self):
        text = self.usage("user")
        self.assertIn("user passwd NAME", text)
        self.assertIn("user admin NAME on|off", text)
        self.assertNotIn("token create", text)
        self.assertNotIn("action", text.replace("actions:", ""))


#: The admin command with a pseudo-terminal as its controlling terminal (its stdin, stdout and
#: stderr): it makes itself a session leader and takes the terminal before it starts.
ON_TERMINAL = [sys.executable, "-c", "import fcntl, os, termios; os.setsid(); fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
               "from imgshare.cli import main; main()"]


def run_on_terminal(data_dir, argv, replies, timeout=60.0):
    """Run the real command on a pseudo-terminal, typing each reply once its prompt (a
    string) has appeared; return (exit status, everything the terminal showed)."""
    master, slave = os.openpty()
    process = subprocess.Popen([*ON_TERMINAL, *argv], stdin=slave, stdout=slave, stderr=slave,
                               env=environment(data_dir))
    os.close(slave)
    shown = b""
    unanswered = 0  # where the next prompt is looked for: after the one answered last
    deadline = time.monotonic() + timeout
    replies = list(replies)
    try:
        while time.monotonic() < deadline:
            found = shown.find(replies[0][0].encode(), unanswered) if replies else -1
            if found >= 0:
                unanswered = found + len(replies[0][0].encode())
                os.write(master, replies.pop(0)[1].encode() + b"\n")
                continue
            readable, _, _ = select.select([master], [], [], 0.5)
            if not readable:
                continue
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the command closed the terminal
                break
            if not data:
                break
            shown += data
        return process.wait(timeout=max(1.0, deadline - time.monotonic())), shown.decode("utf-8", "replace")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)


class TerminalTests(unittest.TestCase):
    """The questions asked on a real (pseudo-)terminal."""

    def setUp(self):
        self.data = os.path.abspath(self.mktemp())
        run_admin(self.data, "user", "add", "kitten", stdin=PASSWORD + "\n")
        run_admin(self.data, "user", "add", "bear", stdin=PASSWORD + "\n")

    def test_del_asks_for_the_name(self):
        """user del on a terminal asks for the account's name; another answer removes nothing."""
        status, shown = run_on_terminal(self.data, ["user", "del", "bear"], [("Type bear to confirm: ", "kitten")])
        self.assertEqual(status, 1, shown)
        self.assertIn("This removes the account bear and its 0 images, with its tokens and sessions.", shown)
        self.assertIn("imgshare: not confirmed; nothing was removed", shown)
        self.assertIn("bear\tuser", run_admin(self.data, "user", "list").stdout)
        status, shown = run_on_terminal(self.data, ["user", "del", "bear"], [("Type bear to confirm: ", "bear")])
        self.assertEqual(status, 0, shown)
        self.assertIn("imgshare: removing bear and its 0 images", shown)
        self.assertNotIn("bear", run_admin(self.data, "user", "list").stdout)

    def test_passwd_asks_twice_without_echo(self):
        """user passwd on a terminal asks twice, shows nothing typed, and refuses a mismatch."""
        status, shown = run_on_terminal(self.data, ["user", "passwd", "bear"],
                                        [("Password: ", "first try here"), ("Again: ", "second try here")])
        self.assertEqual(status, 1, shown)
        self.assertIn("imgshare: the passwords differ", shown)
        status, shown = run_on_terminal(self.data, ["user", "passwd", "bear"],
                                        [("Password: ", "bears new password"), ("Again: ", "bears new password")])
        self.assertEqual(status, 0, shown)
        self.assertIn("set a new password for bear", shown)
        for typed in ["first try", "second try", "bears new password"]:
            self.assertNotIn(typed, shown, "a password typed is never shown")


class ConsoleScriptTests(unittest.TestCase):
    """The real command, in a subprocess."""

    def setUp(self):
        self.data = os.path.abspath(self.mktemp())

    def test_real_command(self):
        """The installed-style entry point works end to end, env vars included, and says on
        stderr which database and storage it uses."""
        added = run_admin(self.data, "user", "add", "kitten", stdin=PASSWORD + "\n")
        self.assertEqual(added.returncode, 0, added.stderr)
        database = f"sqlite:///{self.data}/imgshare.sqlite3"
        self.assertEqual(added.stderr, (
            f"imgshare: database {database}\n"
            f"imgshare: storage file://{self.data}/storage\n"
            f"imgshare: this is a new database at {database}; kitten is its first account and an admin\n"))
        self.assertEqual(added.stdout, "created account kitten (admin)\n")
        created = run_admin(self.data, "token", "create", "kitten")
        self.assertEqual(created.returncode, 0, created.stderr)
        self.assertRegex(created.stdout, r"^[0-9a-f]{32}\n$")
        self.assertNotIn(created.stdout.strip(), created.stderr)
        self.assertNotIn("new database", created.stderr)
        self.assertTrue(os.path.exists(os.path.join(self.data, "imgshare.sqlite3")))
        failed = run_admin(self.data, "token", "create", "nobody")
        self.assertEqual(failed.returncode, 1)
        self.assertTrue(failed.stderr.endswith("imgshare: no account 'nobody'\n"), failed.stderr)

    def test_verbs_on_a_missing_database_create_nothing(self):
        """Run from a folder holding no database, every verb but user add fails with one clear
        line and status 1, and creates nothing: no ./imgshare-data, no file given by --db."""
        cwd = os.path.abspath(self.mktemp())
        os.makedirs(cwd)
        expected = os.path.join(cwd, "imgshare-data", "imgshare.sqlite3")
        for argv in [("user", "list"), ("token", "list", "bob"), ("token", "create", "bob"),
                     ("user", "del", "bob", "--yes"), ("user", "passwd", "bob"), ("user", "admin", "bob", "on"),
                     ("token", "del", "bob", "1")]:
            done = run_admin(None, *argv, stdin=PASSWORD + "\n", cwd=cwd)
            self.assertEqual(done.returncode, 1, argv)
            self.assertEqual(done.stdout, "")
            self.assertTrue(done.stderr.endswith(
                f"imgshare: no IMGSHARE database at {expected}: pass --data-dir or --db, or start the server "
                "once\n"), done.stderr)
            self.assertNotIn("Traceback", done.stderr)
            self.assertEqual(os.listdir(cwd), [], argv)
        given = os.path.join(cwd, "elsewhere", "x.sqlite3")
        done = run_admin(None, "--db", f"sqlite:///{given}", "user", "list", cwd=cwd)
        self.assertEqual(done.returncode, 1)
        self.assertIn(f"no IMGSHARE database at {given}:", done.stderr)
        self.assertEqual(os.listdir(cwd), [])

    def test_database_password_redacted(self):
        """A PostgreSQL URL is shown without its password, also when the connection fails."""
        done = run_admin(self.data, "user", "list", IMGSHARE_DB="postgresql://bob:s3cret-pw@127.0.0.1:1/imgshare")
        self.assertEqual(done.returncode, 1)
        self.assertIn("imgshare: database postgresql://bob:***@127.0.0.1:1/imgshare\n", done.stderr)
        self.assertNotIn("s3cret-pw", done.stderr + done.stdout)
        self.assertNotIn("Traceback", done.stderr)
        self.assertFalse(os.path.exists(self.data))

    def test_del_and_passwd_through_the_real_command(self):
        """user del refuses without --yes on a pipe and removes with it; user passwd takes the
        first line of stdin; no password appears in any output."""
        run_admin(self.data, "user", "add", "kitten", stdin=PASSWORD + "\n")
        run_admin(self.data, "user", "add", "bear", stdin=PASSWORD + "\n")
        weak = run_admin(self.data, "user", "passwd", "bear", stdin="aaaaaaaa\n")
        self.assertEqual((weak.returncode, weak.stdout), (1, ""))
        self.assertTrue(weak.stderr.endswith(f"\nimgshare: {passwords.TOO_SHORT}\n"), weak.stderr)
        done = run_admin(self.data, "user", "passwd", "bear", stdin="bears new password\n")
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertNotIn("bears new password", done.stdout + done.stderr)
        refused = run_admin(self.data, "user", "del", "bear", stdin="bear\n")
        self.assertEqual(refused.returncode, 1)
        self.assertIn("imgshare: this would remove bear and its 0 images; stdin is not a terminal, so pass --yes",
                      refused.stderr)
        self.assertIn("bear\tuser", run_admin(self.data, "user", "list").stdout)
        removed = run_admin(self.data, "user", "del", "bear", "--yes")
        self.assertEqual(removed.returncode, 0, removed.stderr)
        self.assertIn("imgshare: removing bear and its 0 images\n", removed.stderr)
        self.assertNotIn("bear", run_admin(self.data, "user", "list").stdout)
        demoted = run_admin(self.data, "user", "admin", "kitten", "off")
        self.assertEqual(demoted.returncode, 1)
        self.assertIn("kitten is the only administrator", demoted.stderr)

    def test_no_arguments(self):
        done = run_admin(self.data)
        self.assertEqual(done.returncode, 2)
        self.assertIn("commands:\n  user add NAME [--admin]", done.stderr)
        self.assertFalse(os.path.exists(self.data))

    def test_a_file_without_tables_is_not_made_a_database(self):
        """An existing SQLite file without IMGSHARE's tables is refused by every verb but user
        add, which makes it a new database and says so."""
        os.makedirs(self.data)
        path = os.path.join(self.data, "imgshare.sqlite3")
        open(path, "wb").close()
        done = run_admin(self.data, "user", "list")
        self.assertEqual(done.returncode, 1)
        self.assertTrue(done.stderr.endswith(
            f"imgshare: no IMGSHARE tables in the database at sqlite:///{path}: pass the server's --db, "
            "or start the server once\n"), done.stderr)
        added = run_admin(self.data, "user", "add", "kitten", stdin=PASSWORD + "\n")
        self.assertEqual(added.returncode, 0, added.stderr)
        self.assertIn(f"this is a new database at sqlite:///{path}; kitten is its first account", added.stderr)


class PostgresCommandTests(unittest.TestCase):
    """The real command on PostgreSQL (the server scripts/test starts)."""

    timeout = 120

    async def test_empty_postgres_database(self):
        """On a PostgreSQL database without IMGSHARE's tables a read-only verb fails and leaves it
        empty; user add makes the tables and says it is a new database."""
        dsn = await backends.create_database(self)
        shown = backends_module.redact_url(dsn)
        data = os.path.abspath(self.mktemp())
        done = await deferToThread(run_admin, data, "user", "list", IMGSHARE_DB=dsn)
        self.assertEqual(done.returncode, 1, done.stderr)
        self.assertIn(f"imgshare: database {shown}\n", done.stderr)
        self.assertTrue(done.stderr.endswith(f"imgshare: no IMGSHARE tables in the database at {shown}: pass the "
                                             "server's --db, or start the server once\n"), done.stderr)
        database = PostgresDatabase(dsn, reactor)
        with self.assertRaises(db.NoSchema):
            await database.start(create=False)
        added = await deferToThread(run_admin, data, "user", "add", "kitten", stdin=PASSWORD + "\n", IMGSHARE_DB=dsn)
        self.assertEqual(added.returncode, 0, added.stderr)
        self.assertIn(f"imgshare: this is a new database at {shown}; kitten is its first account and an admin\n",
                      added.stderr)
        listed = await deferToThread(run_admin, data, "user", "list", IMGSHARE_DB=dsn)
        self.assertTrue(listed.stdout.startswith("kitten\tadmin\t"), listed.stderr)
        self.assertFalse(os.path.exists(data), "nothing made in the data folder")



class VersionTests(unittest.TestCase):
    def test_version(self):
        import contextlib
        import io

        from imgshare import __version__
        from imgshare.cli import main

        out = io.StringIO()
        with contextlib.redirect_stdout(out), self.assertRaises(SystemExit) as e:
            main(["--version"])
        self.assertEqual(e.exception.code, 0)
        self.assertEqual(out.getvalue().strip(), f"IMGSHARE {__version__}")
