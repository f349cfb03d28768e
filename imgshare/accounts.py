"""Accounts, passwords, the one-time setup code and API tokens: their rules, written once.

The browser pages and the ``imgshare`` command both go through ``Accounts``.
Password hashing (scrypt: ~50 ms and 16 MiB each) runs on the injected runner
(the io pool in the server, inline in the command), never on the reactor.  It
holds no HTTP and no SQL: it calls the Database.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any

import attrs

from imgshare import auth, db
from imgshare.domain import errors, lifetime, naming, passwords
from imgshare.domain.records import Account, Token, Usage
from imgshare.gateway import run_query

#: The setting holding the one-time setup code (made by ``Accounts.setup_code_if_needed``),
#: kept as is: every process logs the same link, and whoever can read the
#: database could create accounts anyway.
SETUP_CODE_SETTING = "setup_code"
MIN_PASSWORD = passwords.MIN_LENGTH
MAX_PASSWORD = passwords.MAX_LENGTH
MAX_LABEL = 100
LAST_ADMIN = "{name} is the only administrator: make another account an administrator first."


class LastAdmin(errors.ApiError):
    """The change would leave the accounts without an administrator (409)."""

    status = 409


def check_new_password(password: str, repeated: str, name: str | None = None) -> None:
    """BadRequest unless ``password`` is typed the same twice and passes the password policy
    (for the account ``name`` when known)."""
    if password != repeated:
        raise errors.BadRequest("The two passwords differ.")
    check_password_policy(password, name)


def check_password_policy(password: str, name: str | None = None) -> None:
    """BadRequest unless ``password`` passes the password policy (``imgshare.domain.passwords``:
    10 to 1024 characters, not common, not a repeat or sequence, not the account name)."""
    problem = passwords.problem(password, name)
    if problem is not None:
        raise errors.BadRequest(problem)


def check_account_name(name: str) -> None:
    """BadRequest unless ``name`` is a well-formed, unreserved account name."""
    if not naming.is_valid_account_name(name):  # reserved names refused
        raise errors.BadRequest(
            "Account names have 1 to 32 of a-z, 0-9, _ and -, start with a letter or digit, "
            "and are not one of: " + ", ".join(sorted(naming.RESERVED_NAMES)) + "."
        )


@attrs.define
class Accounts:
    """Account and token operations over an injected database, io runner and clock."""

    database: Any  # IDatabase
    io: Any  # Runner for scrypt
    clock: Any  # IReactorTime
    #: The storage quota (bytes) of each account made here (``--quota``); None: none.
    default_quota: int | None = None
    _dummy_hash: str | None = None
    _seen_accounts: bool = False  # some account existed once: has_accounts(cached=True) stops asking

    def now(self) -> float:
        return self.clock.seconds()

    async def _db(self, operation: Any, *args: Any) -> Any:
        return await run_query(self.database, operation, *args)

    # -------------------------------------------------------------- passwords

    async def verify(self, name: str, password: str) -> Account | None:
        """The account if ``password`` is its password, else None.

        An unknown name costs the same scrypt work as a wrong password, so the
        answer's timing tells nothing about which part was wrong.
        """
        stored = None
        if naming.is_valid_account_name(name, allow_reserved=True) and len(password) <= MAX_PASSWORD:
            stored = await self._db(db.get_password_hash, name)
        if stored is None:
            if self._dummy_hash is None:
                self._dummy_hash = await self.io.run(auth.hash_password, "not a password")
            await self.io.run(auth.check_password, password[:MAX_PASSWORD], self._dummy_hash)
            return None
        if not await self.io.run(auth.check_password, password, stored):
            return None
        return await self._db(db.get_account, name)

    async def set_password(self, name: str, password: str) -> None:
        """The account owner's own change (its sessions are the caller's business):
        BadRequest if the policy refuses ``password`` or it is the one the account has now."""
        check_password_policy(password, name)
        stored = await self._db(db.get_password_hash, name)
        if stored is None:
            raise errors.NotFound("no such account")
        if await self.io.run(auth.check_password, password, stored):
            raise errors.BadRequest(passwords.SAME_AS_NOW)
        digest = await self.io.run(auth.hash_password, password)
        if not await self._db(db.set_password_hash, name, digest):
            raise errors.NotFound("no such account")

    async def reset_password(self, name: str, password: str) -> int:
        """An administrator's reset: the new password, and every session of the account
        ended (API tokens stay); the number of sessions ended.  NotFound without the account,
        BadRequest if the policy refuses ``password``."""
        check_password_policy(password, name)
        digest = await self.io.run(auth.hash_password, password)
        ended = await self._db(db.reset_password, name, digest)
        if ended is None:
            raise errors.NotFound("no such account")
        return ended

    # --------------------------------------------------------------- accounts

    async def create(self, name: str, password: str, is_admin: bool, *, admin_if_first: bool = False) -> Account:
        """A new account; BadRequest for a bad name or password, 409 if the name is taken.

        With ``admin_if_first`` (the ``imgshare`` command) the first account is an
        admin whatever ``is_admin`` says."""
        check_account_name(name)
        check_password_policy(password, name)
        digest = await self.io.run(auth.hash_password, password)
        if admin_if_first and not is_admin:
            is_admin = not await self.has_accounts()
        try:
            return await self._db(db.create_account, name, digest, is_admin, self.now(), self.default_quota)
        except db.Conflict:
            raise errors.ApiError(
                "That name is taken (or an account of that name is still being removed).", 409
            ) from None

    async def setup_code_if_needed(self) -> str | None:
        """With no account yet, the one-time code that creates the first (admin) account
        (made once: every process starting on an empty database gets the same); else None."""
        if await self.has_accounts():
            return None
        return await self._db(db.setting_or_insert, SETUP_CODE_SETTING, secrets.token_urlsafe(24))

    async def setup_code_valid(self, code: str) -> bool:
        """Whether ``code`` is the unused one-time setup code and there is no account yet."""
        stored = await self._db(db.get_setting, SETUP_CODE_SETTING)
        if not stored or not code or len(code) > 200:
            return False
        if not hmac.compare_digest(stored.encode(), code.encode("utf-8", "replace")):
            return False
        return await self._db(db.count_accounts) == 0

    async def create_first(self, code: str, name: str, password: str) -> Account | None:
        """Use the setup code: the first account, an admin; None if the code is void."""
        check_account_name(name)
        check_password_policy(password, name)
        if len(code) > 200:
            return None
        digest = await self.io.run(auth.hash_password, password)
        return await self._db(
            db.create_first_account, SETUP_CODE_SETTING, code, name, digest, self.now(), self.default_quota
        )

    async def register(self, name: str, password: str) -> Account | None:
        """A self-registered account (never an admin); None while no account exists yet
        (the first one, an admin, comes from the setup link or the admin command).
        BadRequest for a bad name or password, 409 if the name is taken."""
        check_account_name(name)
        check_password_policy(password, name)
        digest = await self.io.run(auth.hash_password, password)
        try:
            return await self._db(db.register_account, name, digest, self.now(), self.default_quota)
        except db.Conflict:
            raise errors.ApiError(
                "That name is taken (or an account of that name is still being removed).", 409
            ) from None

    async def has_accounts(self, *, cached: bool = False) -> bool:
        """Whether any account exists; with ``cached``, True without asking once one was seen
        (for what pages offer; decisions ask the database)."""
        if cached and self._seen_accounts:
            return True
        found = bool(await self._db(db.count_accounts))
        self._seen_accounts = self._seen_accounts or found
        return found

    async def set_admin(self, name: str, is_admin: bool) -> None:
        """Make ``name`` an administrator or not; NotFound, or LastAdmin when it is the only one."""
        try:
            found = await self._db(db.set_admin, name, is_admin)
        except db.LastAdmin:
            raise LastAdmin(LAST_ADMIN.format(name=name)) from None
        if not found:
            raise errors.NotFound("no such account")

    async def image_count(self, name: str) -> int:
        """How many images go with the account (stored or being uploaded)."""
        return await self._db(db.count_images, name)

    async def usage(self) -> dict[str, Usage]:
        """Every account's usage and quotas, by account name."""
        return {u.account: u for u in await self._db(db.list_usage)}

    async def set_quota(self, name: str, quota_bytes: int | None, quota_images: int | None) -> Usage:
        """Set an account's storage limit and image-count limit (None: no limit); its usage
        after.  NotFound without the account.  What it holds already stays, even past them."""
        found = await self._db(db.set_quota, name, quota_bytes, quota_images)
        if found is None:
            raise errors.NotFound("no such account")
        return found

    async def get(self, name: str) -> Account | None:
        """The account named ``name``, if there is one."""
        return await self._db(db.get_account, name)

    async def every(self) -> list[Account]:
        return await self._db(db.list_accounts)

    async def remove(self, name: str) -> None:
        """Remove an account: its tokens and sessions at once, its images shortly after.
        NotFound, or LastAdmin when it is the only administrator and other accounts exist."""
        try:
            found = await self._db(db.delete_account, name, self.now())
        except db.LastAdmin:
            raise LastAdmin(LAST_ADMIN.format(name=name)) from None
        if not found:
            raise errors.NotFound("no such account")

    # ----------------------------------------------------------------- tokens

    async def create_token(self, account: str, label: str, expires: str | None) -> tuple[str, Token]:
        """A new API token: (its secret, shown once; its row)."""
        label = " ".join(label.split())
        if len(label) > MAX_LABEL:
            raise errors.BadRequest(f"The label may have at most {MAX_LABEL} characters.")
        ttl = lifetime.parse_token_lifetime(expires)
        now = self.now()
        secret = auth.new_token()
        token = await self._db(
            db.create_token, account, auth.token_digest(secret), label, now,
            None if ttl is None else now + ttl,
        )
        return secret, token

    async def tokens(self, account: str) -> list[Token]:
        return await self._db(db.list_tokens, account, self.now())

    async def delete_token(self, account: str, token_id: int) -> None:
        if not await self._db(db.delete_token, account, token_id):
            raise errors.NotFound("no such token")
