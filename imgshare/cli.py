"""``imgshare``: the admin command (accounts and tokens), on the same backends as the server."""

from __future__ import annotations

import argparse
import datetime
import getpass
import sys
from typing import Any

from imgshare import backends, db
from imgshare.accounts import Accounts, check_account_name, check_password_length
from imgshare.domain import errors
from imgshare.options import BACKEND_OPTIONS, SERVER_OPTIONS, build_config, env_name, resolve
from imgshare.threads import InlineRunner


class CommandError(Exception):
    """Printed on stderr; the command exits with status 1."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgshare", description="Manage IMGSHARE accounts and tokens.")
    helps = dict(SERVER_OPTIONS)
    for option in BACKEND_OPTIONS:
        parser.add_argument(f"--{option}", help=helps[option] + f" (env {env_name(option)})")
    sub = parser.add_subparsers(dest="area", required=True)

    user = sub.add_parser("user", help="accounts").add_subparsers(dest="action", required=True)
    add = user.add_parser("add", help="create an account; the password is read from stdin")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="make it an admin (the first account always is)")
    user.add_parser("list", help="list accounts")
    delete = user.add_parser("del", help="remove an account, its tokens and its images")
    delete.add_argument("name")

    token = sub.add_parser("token", help="API tokens").add_subparsers(dest="action", required=True)
    create = token.add_parser("create", help="create a token and print it (alone) on stdout")
    create.add_argument("name")
    create.add_argument("--expires", help="lifetime: 3600, 90m, 12h, 30d, 2w, P3D or never [default: never]")
    create.add_argument("--label", default="", help="a note to recognise the token by")
    tlist = token.add_parser("list", help="list an account's tokens")
    tlist.add_argument("name")
    tdel = token.add_parser("del", help="delete a token")
    tdel.add_argument("name")
    tdel.add_argument("id", type=int)
    return parser


def read_password(stdin: Any) -> str:
    """The new password: prompted twice on a terminal, else the first line of stdin."""
    if stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != first:
            raise CommandError("the passwords differ")
        password = first
    else:
        password = stdin.readline().rstrip("\r\n")
    try:
        check_password_length(password)
    except errors.ApiError as e:
        raise CommandError(e.message) from None
    return password


def _utc_timestamp(ts: float | None) -> str:
    """``ts`` as ``YYYY-MM-DDTHH:MM:SSZ``, or ``-`` for none."""
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def user_add(args: argparse.Namespace, accounts: Accounts, out: Any, stdin: Any) -> None:
    """Create an account (the first one is an admin); the name is checked before the password is read."""
    try:
        check_account_name(args.name)
    except errors.ApiError as e:
        raise CommandError(f"invalid account name {args.name!r}: {e.message}") from None
    password = read_password(stdin)
    try:
        account = await accounts.create(args.name, password, args.admin, admin_if_first=True)
    except errors.ApiError as e:
        if e.status == 409:
            raise CommandError(f"account {args.name!r} exists (or its old images are still being removed)") from None
        raise
    print(f"created account {account.name}" + (" (admin)" if account.is_admin else ""), file=out)


async def user_list(args: argparse.Namespace, accounts: Accounts, out: Any, stdin: Any) -> None:
    for account in await accounts.every():
        role = "admin" if account.is_admin else "user"
        print(f"{account.name}\t{role}\t{_utc_timestamp(account.created)}", file=out)


async def user_del(args: argparse.Namespace, accounts: Accounts, out: Any, stdin: Any) -> None:
    try:
        await accounts.remove(args.name)
    except errors.NotFound:
        raise CommandError(f"no account {args.name!r}") from None
    print(f"removed account {args.name}; its images are removed by the server's expiry service", file=out)


async def _existing_account(accounts: Accounts, name: str) -> None:
    if await accounts.get(name) is None:
        raise CommandError(f"no account {name!r}")


async def token_create(args: argparse.Namespace, accounts: Accounts, out: Any, stdin: Any) -> None:
    """Print the new token's secret alone on stdout."""
    await _existing_account(accounts, args.name)
    try:
        secret, _ = await accounts.create_token(args.name, args.label, args.expires)
    except errors.BadRequest as e:
        raise CommandError(e.message) from None
    print(secret, file=out)


async def token_list(args: argparse.Namespace, accounts: Accounts, out: Any, stdin: Any) -> None:
    await _existing_account(accounts, args.name)
    print("id\tlabel\tcreated\texpires\tlast_used", file=out)
    for t in await accounts.tokens(args.name):
        label = t.label.replace("\t", " ").replace("\n", " ")
        expires = _utc_timestamp(t.expires) if t.expires else "never"
        print(f"{t.id}\t{label}\t{_utc_timestamp(t.created)}\t{expires}\t{_utc_timestamp(t.last_used)}", file=out)


async def token_del(args: argparse.Namespace, accounts: Accounts, out: Any, stdin: Any) -> None:
    await _existing_account(accounts, args.name)
    try:
        await accounts.delete_token(args.name, args.id)
    except errors.NotFound:
        raise CommandError(f"account {args.name!r} has no token {args.id}") from None
    print(f"deleted token {args.id}", file=out)


#: The function carrying out each (area, action) of ``build_parser``.
COMMANDS = {
    ("user", "add"): user_add,
    ("user", "list"): user_list,
    ("user", "del"): user_del,
    ("token", "create"): token_create,
    ("token", "list"): token_list,
    ("token", "del"): token_del,
}


async def run_command(args: argparse.Namespace, database: Any, clock: Any, out: Any, stdin: Any) -> None:
    """Carry out one parsed command against an open database, through ``Accounts``
    (scrypt inline: the command has nothing else to do meanwhile)."""
    await COMMANDS[args.area, args.action](args, Accounts(database, InlineRunner(), clock), out, stdin)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``imgshare`` console script."""
    from twisted.internet import defer, task

    args = build_parser().parse_args(argv)
    try:
        config = build_config(resolve({o: getattr(args, o.replace("-", "_")) for o in BACKEND_OPTIONS}))
    except ValueError as e:
        print(f"imgshare: {e}", file=sys.stderr)
        raise SystemExit(2) from None

    async def body(reactor: Any) -> None:
        database = backends.open_database(config.db, reactor, InlineRunner())
        await database.start()
        try:
            await run_command(args, database, reactor, sys.stdout, sys.stdin)
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
