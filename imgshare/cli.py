"""``imgshare``: the admin command (accounts and tokens), on the same backends as the server.

It says on stderr which database and storage it works on.  Only ``user add`` may
create a database (and says so); every other verb refuses a SQLite file that does
not exist, and a database (SQLite or PostgreSQL) without IMGSHARE's tables, so a
command run from the wrong folder or with the wrong URL creates nothing.
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import sys
from typing import Any

import attrs

from imgshare import __version__, backends, db
from imgshare.accounts import Accounts, check_account_name, check_password_policy
from imgshare.domain import errors, quota, words
from imgshare.options import BACKEND_OPTIONS, SERVER_OPTIONS, build_config, env_name, resolve
from imgshare.threads import InlineRunner


class CommandError(Exception):
    """Printed on stderr; the command exits with status 1."""


@attrs.define
class Console:
    """Where a command writes its results (``out``), its remarks and prompts (``err``) and
    reads passwords and confirmations (``stdin``); what it knows of the database it opened."""

    out: Any
    err: Any
    stdin: Any
    database: str = ""  # its URL, password redacted
    new_database: bool = False  # created by this command

    def say(self, text: str) -> None:
        """A remark on stderr (never a secret)."""
        print(f"imgshare: {text}", file=self.err, flush=True)


#: Every verb: (area, action, arguments as shown, one line of help).  The usage lists them.
VERBS = (
    ("user", "add", "NAME [--admin]", "create an account; its password is read from stdin"),
    ("user", "list", "", "list the accounts, their roles and what their images use"),
    ("user", "passwd", "NAME", "set a new password (read from stdin); ends its browser sessions"),
    ("user", "admin", "NAME on|off", "make an account an administrator, or not"),
    ("user", "del", "NAME [--yes]", "remove an account, its tokens and its images (asks first)"),
    ("user", "quota", "NAME SIZE [--images N]", "limit an account's storage (500MB, 2GiB; none: no limit)"),
    ("token", "create", "NAME [--expires D] [--label L]", "create an API token; print it alone on stdout"),
    ("token", "list", "NAME", "list an account's tokens (never their secrets)"),
    ("token", "del", "NAME ID", "delete one of an account's tokens"),
)
#: The verbs that only read: they never create a database.
READ_ONLY = {("user", "list"), ("token", "list")}
#: The one verb that may create a database: the first account of a new server.
CREATES = ("user", "add")

_AREAS = {"user": "accounts", "token": "API tokens"}


def _listing(area: str | None = None) -> str:
    rows = [(f"{a} {v} {shown}".rstrip(), text) for a, v, shown, text in VERBS if area in (None, a)]
    width = max(len(words) for words, _ in rows) + 2
    return "\n".join(f"  {words:<{width}}{text}" for words, text in rows)


def build_parser() -> argparse.ArgumentParser:
    helps = dict(SERVER_OPTIONS)
    parser = argparse.ArgumentParser(
        prog="imgshare", formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="imgshare [--data-dir DIR | --db URL] [--storage URL] COMMAND ...",
        description="Manage the accounts and API tokens of an IMGSHARE server, on the server's own "
                    "database:\ngive the same --data-dir (or --db) as the server, or the same "
                    "IMGSHARE_* variables.\n\ncommands:\n" + _listing(),
        epilog="Passwords are read from stdin: typed twice on a terminal, else its first line.",
    )
    parser.add_argument("--version", action="version", version=f"IMGSHARE {__version__}")
    for option in BACKEND_OPTIONS:
        metavar = "DIR" if option == "data-dir" else "URL"
        parser.add_argument(f"--{option}", metavar=metavar, help=helps[option] + f" (env {env_name(option)})")
    sub = parser.add_subparsers(dest="area", metavar="COMMAND", help=argparse.SUPPRESS)
    actions: dict[str, Any] = {}
    for area, what in _AREAS.items():
        area_parser = sub.add_parser(
            area, prog=f"imgshare {area}", formatter_class=argparse.RawDescriptionHelpFormatter,
            usage=f"imgshare {area} ACTION ...",
            description=f"Manage {what}.\n\nactions:\n" + _listing(area),
        )
        actions[area] = area_parser.add_subparsers(dest="action", metavar="ACTION", help=argparse.SUPPRESS)
    parser.set_defaults(area_parsers={area: sub.choices[area] for area in _AREAS})
    helps_of = {(a, v): text for a, v, _, text in VERBS}

    def verb(area: str, action: str) -> argparse.ArgumentParser:
        return actions[area].add_parser(action, prog=f"imgshare {area} {action}", help=helps_of[area, action],
                                        description=helps_of[area, action])

    add = verb("user", "add")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--admin", action="store_true", help="make it an admin (the first account always is)")
    verb("user", "list")
    passwd = verb("user", "passwd")
    passwd.add_argument("name", metavar="NAME")
    admin = verb("user", "admin")
    admin.add_argument("name", metavar="NAME")
    admin.add_argument("state", metavar="on|off", choices=("on", "off"), help="on: an administrator; off: a plain user")
    delete = verb("user", "del")
    delete.add_argument("name", metavar="NAME")
    delete.add_argument("--yes", action="store_true",
                        help="do not ask (needed when stdin is not a terminal)")

    limit = verb("user", "quota")
    limit.add_argument("name", metavar="NAME")
    limit.add_argument("size", metavar="SIZE", help="the most its originals may hold: 500MB, 2GiB, 1048576 "
                       "(bytes), or none")
    limit.add_argument("--images", metavar="N", help="the most images it may hold, or none [default: unchanged]")

    create = verb("token", "create")
    create.add_argument("name", metavar="NAME")
    create.add_argument("--expires", help="lifetime: 3600, 90m, 12h, 30d, 2w, P3D or never [default: never]")
    create.add_argument("--label", default="", help="a note to recognise the token by")
    tlist = verb("token", "list")
    tlist.add_argument("name", metavar="NAME")
    tdel = verb("token", "del")
    tdel.add_argument("name", metavar="NAME")
    tdel.add_argument("id", metavar="ID", type=int)
    return parser


def read_password(stdin: Any, name: str) -> str:
    """The new password of the account ``name``: prompted twice on a terminal, else the first
    line of stdin; refused (CommandError) unless it passes the password policy."""
    if stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != first:
            raise CommandError("the passwords differ")
        password = first
    else:
        password = stdin.readline().rstrip("\r\n")
    try:
        check_password_policy(password, name)
    except errors.ApiError as e:
        raise CommandError(e.message) from None
    return password


def _utc_timestamp(ts: float | None) -> str:
    """``ts`` as ``YYYY-MM-DDTHH:MM:SSZ``, or ``-`` for none."""
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


async def _existing_account(accounts: Accounts, name: str) -> Any:
    account = await accounts.get(name)
    if account is None:
        raise CommandError(f"no account {name!r}")
    return account


async def user_add(args: argparse.Namespace, accounts: Accounts, console: Console) -> None:
    """Create an account (the first one is an admin); the name is checked before the password is read."""
    try:
        check_account_name(args.name)
    except errors.ApiError as e:
        raise CommandError(f"invalid account name {args.name!r}: {e.message}") from None
    first = not await accounts.has_accounts()
    password = read_password(console.stdin, args.name)
    try:
        account = await accounts.create(args.name, password, args.admin, admin_if_first=True)
    except errors.ApiError as e:
        if e.status == 409:
            raise CommandError(f"account {args.name!r} exists (or its old images are still being removed)") from None
        raise
    if first and console.new_database:
        console.say(f"this is a new database at {console.database}; {account.name} is its first account "
                    "and an admin")
    elif first:
        console.say(f"{account.name} is the first account of this database and an admin; the setup link "
                    "the server logged no longer works")
    quota_words = "" if accounts.default_quota is None else (
        f", its storage quota {words.size_in_words(accounts.default_quota)} (IMGSHARE_QUOTA)")
    print(f"created account {account.name}" + (" (admin)" if account.is_admin else "") + quota_words,
          file=console.out)


async def user_list(args: argparse.Namespace, accounts: Accounts, console: Console) -> None:
    """One line per account: name, role, created, and what its images use (against its quota)."""
    usage = await accounts.usage()
    for account in await accounts.every():
        role = "admin" if account.is_admin else "user"
        used = usage.get(account.name)
        shown = quota.usage_in_words(used) if used is not None else "-"
        print(f"{account.name}\t{role}\t{_utc_timestamp(account.created)}\t{shown}", file=console.out)


async def user_quota(args: argparse.Namespace, accounts: Accounts, console: Console) -> None:
    """Set an account's storage limit (and with ``--images`` its image-count limit); both
    are checked before anything changes."""
    try:
        quota_bytes = quota.parse_quota_bytes(args.size)
        quota_images = None if args.images is None else quota.parse_quota_images(args.images)
    except ValueError as e:
        raise CommandError(str(e)) from None
    await _existing_account(accounts, args.name)
    if args.images is None:
        quota_images = (await accounts.usage())[args.name].quota_images
    try:
        usage = await accounts.set_quota(args.name, quota_bytes, quota_images)
    except errors.NotFound:
        raise CommandError(f"no account {args.name!r}") from None
    print(f"{args.name} may now hold {quota.quota_in_words(usage)}; it holds {quota.usage_in_words(usage)}",
          file=console.out)


async def user_passwd(args: argparse.Namespace, accounts: Accounts, console: Console) -> None:
    """A new password for an existing account (asked for once the account is known to exist);
    its browser sessions end, its API tokens stay."""
    await _existing_account(accounts, args.name)
    password = read_password(console.stdin, args.name)
    try:
        ended = await accounts.reset_password(args.name, password)
    except errors.NotFound:
        raise CommandError(f"no account {args.name!r}") from None
    print(f"set a new password for {args.name}; {_plural(ended, 'browser session')} ended "
          "(its API tokens still work)", file=console.out)


async def user_admin(args: argparse.Namespace, accounts: Accounts, console: Console) -> None:
    """Make an account an administrator (``on``) or a plain user (``off``); the last
    administrator is never demoted."""
    account = await _existing_account(accounts, args.name)
    wanted = args.state == "on"
    if account.is_admin == wanted:
        print(f"{args.name} is already " + ("an administrator" if wanted else "a plain user"), file=console.out)
        return
    await _as_command(accounts.set_admin(args.name, wanted), args.name)
    print(f"{args.name} is now " + ("an administrator" if wanted else "a plain user"), file=console.out)


async def _as_command(change: Any, name: str) -> None:
    """Await an account change; its refusals (no such account, the last administrator)
    as the command's one-line errors."""
    try:
        await change
    except errors.NotFound:
        raise CommandError(f"no account {name!r}") from None
    except errors.ApiError as e:
        if e.status != 409:
            raise
        raise CommandError(f"{e.message[:-1]} (imgshare user admin NAME on)") from None


async def user_del(args: argparse.Namespace, accounts: Accounts, console: Console) -> None:
    """Remove an account once confirmed: its name typed on a terminal, or ``--yes``."""
    await _existing_account(accounts, args.name)
    what = f"{args.name} and its {_plural(await accounts.image_count(args.name), 'image')}"
    if not args.yes:
        if not console.stdin.isatty():
            raise CommandError(f"this would remove {what}; stdin is not a terminal, so pass --yes "
                               "to do it without asking")
        console.err.write(f"This removes the account {what}, with its tokens and sessions.\n"
                          f"Type {args.name} to confirm: ")
        console.err.flush()
        if console.stdin.readline().strip() != args.name:
            raise CommandError("not confirmed; nothing was removed")
    console.say(f"removing {what}")
    await _as_command(accounts.remove(args.name), args.name)
    print(f"removed account {args.name}; the server deletes its images' files at its next expiry pass",
          file=console.out)


async def token_create(args: argparse.Namespace, accounts: Accounts, console: Console) -> None:
    """Print the new token's secret alone on stdout."""
    await _existing_account(accounts, args.name)
    try:
        secret, _ = await accounts.create_token(args.name, args.label, args.expires)
    except errors.BadRequest as e:
        raise CommandError(e.message) from None
    print(secret, file=console.out)


async def token_list(args: argparse.Namespace, accounts: Accounts, console: Console) -> None:
    await _existing_account(accounts, args.name)
    print("id\tlabel\tcreated\texpires\tlast_used", file=console.out)
    for t in await accounts.tokens(args.name):
        label = t.label.replace("\t", " ").replace("\n", " ")
        expires = _utc_timestamp(t.expires) if t.expires else "never"
        print(f"{t.id}\t{label}\t{_utc_timestamp(t.created)}\t{expires}\t{_utc_timestamp(t.last_used)}",
              file=console.out)


async def token_del(args: argparse.Namespace, accounts: Accounts, console: Console) -> None:
    await _existing_account(accounts, args.name)
    try:
        await accounts.delete_token(args.name, args.id)
    except errors.NotFound:
        raise CommandError(f"account {args.name!r} has no token {args.id}") from None
    print(f"deleted token {args.id}", file=console.out)


#: The function carrying out each (area, action) of ``VERBS``.
COMMANDS = {
    ("user", "add"): user_add,
    ("user", "list"): user_list,
    ("user", "passwd"): user_passwd,
    ("user", "admin"): user_admin,
    ("user", "del"): user_del,
    ("user", "quota"): user_quota,
    ("token", "create"): token_create,
    ("token", "list"): token_list,
    ("token", "del"): token_del,
}


async def run_command(args: argparse.Namespace, database: Any, clock: Any, console: Console,
                      default_quota: int | None = None) -> None:
    """Carry out one parsed command against an open database, through ``Accounts``
    (scrypt inline: the command has nothing else to do meanwhile); ``user add`` gives a
    new account ``default_quota`` (``IMGSHARE_QUOTA``, as the server's ``--quota``)."""
    accounts = Accounts(database, InlineRunner(), clock, default_quota=default_quota)
    await COMMANDS[args.area, args.action](args, accounts, console)


def parse(argv: list[str] | None, err: Any) -> argparse.Namespace:
    """The parsed command line; with no command (or no action) the listing of the verbs
    on ``err`` and exit status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.area is None:
        parser.print_help(err)
        raise SystemExit(2)
    if args.action is None:
        args.area_parsers[args.area].print_help(err)
        raise SystemExit(2)
    return args


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``imgshare`` console script."""
    from twisted.internet import defer, task

    args = parse(argv, sys.stderr)
    console = Console(sys.stdout, sys.stderr, sys.stdin)
    try:
        config = build_config(resolve({o: getattr(args, o.replace("-", "_")) for o in BACKEND_OPTIONS}))
        missing = backends.missing_database(config.db)
    except ValueError as e:
        print(f"imgshare: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    console.database = backends.redact_url(config.db)
    console.say(f"database {console.database}")
    console.say(f"storage {backends.redact_url(config.storage)}")
    verb = (args.area, args.action)
    if missing is not None and verb != CREATES:
        console.say(f"no IMGSHARE database at {missing}: pass --data-dir or --db, or start the server once")
        raise SystemExit(1)
    console.new_database = missing is not None

    async def body(reactor: Any) -> None:
        database = backends.open_database(config.db, reactor, InlineRunner())
        if console.new_database:
            await database.start()
        else:
            try:
                await database.start(create=False)
            except db.NoSchema:
                await database.stop()
                if verb != CREATES:
                    raise CommandError(f"no IMGSHARE tables in the database at {console.database}: pass "
                                       "the server's --db, or start the server once") from None
                await database.start()  # an empty PostgreSQL database, made for IMGSHARE
                console.new_database = True
        try:
            await run_command(args, database, reactor, console, config.default_quota)
        finally:
            await database.stop()

    def react_main(reactor: Any) -> Any:
        d = defer.Deferred.fromCoroutine(body(reactor))

        def explain(failure: Any) -> None:
            failure.trap(CommandError, db.DatabaseUnavailable, errors.Unavailable)
            error = failure.value
            if isinstance(error, errors.Unavailable) and error.__cause__ is not None:
                error = error.__cause__  # the database's own words, as before
            print(f"imgshare: {error}", file=sys.stderr)
            raise SystemExit(1)

        return d.addErrback(explain)

    task.react(react_main)
