"""``imgshare``: the admin command (accounts and tokens), on the same backends as the server."""

from __future__ import annotations

import argparse
import datetime
import getpass
import sys
from typing import Any

from imgshare import auth, backends, db
from imgshare.domain import errors, lifetime, naming
from imgshare.options import BACKEND_OPTIONS, SERVER_OPTIONS, build_config, env_name, resolve
from imgshare.threads import InlineRunner

MIN_PASSWORD = 8


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
    if len(password) < MIN_PASSWORD:
        raise CommandError(f"the password must have at least {MIN_PASSWORD} characters")
    return password


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def run_command(args: argparse.Namespace, database: Any, clock: Any, out: Any, stdin: Any) -> None:
    """Carry out one parsed command against an open database."""
    now = clock.seconds()
    if args.area == "user":
        if args.action == "add":
            if not naming.is_valid_account_name(args.name):
                raise CommandError(
                    f"invalid account name {args.name!r}: 1-32 of a-z 0-9 _ -, starting with a letter "
                    "or digit, and not one of: " + " ".join(sorted(naming.RESERVED_NAMES))
                )
            password = read_password(stdin)
            first = await database.run(db.count_accounts) == 0
            try:
                account = await database.run(
                    db.create_account, args.name, auth.hash_password(password), args.admin or first, now
                )
            except db.Conflict:
                raise CommandError(f"account {args.name!r} exists (or its old images are still being removed)") from None
            print(f"created account {account.name}" + (" (admin)" if account.is_admin else ""), file=out)
        elif args.action == "list":
            for account in await database.run(db.list_accounts):
                print(f"{account.name}\t{'admin' if account.is_admin else 'user'}\t{_when(account.created)}", file=out)
        elif args.action == "del":
            if not await database.run(db.delete_account, args.name, now):
                raise CommandError(f"no account {args.name!r}")
            print(f"removed account {args.name}; its images are removed by the server's expiry service", file=out)
    elif args.area == "token":
        if await database.run(db.get_account, args.name) is None:
            raise CommandError(f"no account {args.name!r}")
        if args.action == "create":
            try:
                ttl = lifetime.parse_token_lifetime(args.expires)
            except errors.ApiError as e:
                raise CommandError(e.message) from None
            secret = auth.new_token()
            await database.run(
                db.create_token, args.name, auth.token_digest(secret), args.label, now,
                None if ttl is None else now + ttl,
            )
            print(secret, file=out)
        elif args.action == "list":
            print("id\tlabel\tcreated\texpires\tlast_used", file=out)
            for t in await database.run(db.list_tokens, args.name, now):
                label = t.label.replace("\t", " ").replace("\n", " ")
                print(f"{t.id}\t{label}\t{_when(t.created)}\t{_when(t.expires) if t.expires else 'never'}\t{_when(t.last_used)}", file=out)
        elif args.action == "del":
            if not await database.run(db.delete_token, args.name, args.id):
                raise CommandError(f"account {args.name!r} has no token {args.id}")
            print(f"deleted token {args.id}", file=out)


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
            database.stop()

    def react_main(reactor: Any) -> Any:
        d = defer.Deferred.fromCoroutine(body(reactor))

        def explain(failure: Any) -> None:
            failure.trap(CommandError, db.DatabaseUnavailable)
            print(f"imgshare: {failure.value}", file=sys.stderr)
            raise SystemExit(1)

        return d.addErrback(explain)

    task.react(react_main)
