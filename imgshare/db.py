"""The Database interface, and the SQL every backend shares.

Each operation is written once as an ``async`` function over a ``Tx`` (a
transaction that runs SQL with ``?`` placeholders).  A backend only supplies
the driver: SQLite runs the coroutine to completion inside an adbapi
interaction thread (its ``Tx`` never really suspends); PostgreSQL awaits
txpostgres cursors on the reactor.  Both get the same statements and the same
records.
"""

from __future__ import annotations

import hmac
import importlib.resources
import re
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from zope.interface import Attribute, Interface

from imgshare.domain import naming
from imgshare.domain.records import (
    DELETED,
    GRANT_COMPLETING,
    GRANT_OPEN,
    GRANT_SPENT,
    GRANT_STAGED,
    LIVE,
    PENDING,
    RUNNING,
    UPLOADING,
    Account,
    Grant,
    Image,
    Job,
    Session,
    Token,
    Usage,
    Variant,
)

# PENDING and RUNNING (job states, now in records) stay importable from here.


class Tx(Protocol):
    """One transaction.  The few dialect differences are its attributes, so the SQL
    below is written once: ``share_lock`` and ``skip_locked`` are the row-locking
    clauses ending a SELECT (empty where writers are serialized anyway, as on
    SQLite), ``update_lock`` the clause locking the selected rows against every other
    writer until the transaction ends, ``least`` and ``greatest`` are the SQL names of the smaller and the larger
    of two values, ``byte_order``
    the collation comparing text byte by byte, ``search_key`` the column holding the
    names lowered for a search (empty where LIKE itself ignores case, on SQLite),
    ``positive_number(expr)`` a condition
    true when ``expr`` is a number without a leading zero, and ``lock(key)`` holds
    a lock on a text key until the transaction ends."""

    share_lock: str
    update_lock: str
    skip_locked: str
    least: str
    greatest: str
    byte_order: str
    #: The lowered names a search matches with LIKE (PostgreSQL, migration 012); "" on
    #: SQLite, whose LIKE ignores the case of ASCII letters itself.
    search_key: str

    def positive_number(self, expr: str) -> str: ...

    async def lock(self, key: str) -> None: ...

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        """Run one statement; return its rows (empty for statements without)."""
        ...


class Conflict(Exception):
    """A unique constraint refused the row (name taken)."""


class DatabaseUnavailable(Exception):
    """The database cannot be reached."""


class AccountGone(Exception):
    """The account was removed while one of its requests was under way."""


class LastAdmin(Exception):
    """The change would leave accounts without any administrator."""


class NoSchema(Exception):
    """The database holds no IMGSHARE tables, and was opened with ``create=False``."""


class LostClaim(Exception):
    """A derived-file worker no longer holds the job it worked on: its lease ran out
    and another worker claimed the job (or the job is gone)."""


class NotHeld(Exception):
    """A condition a commit depends on no longer holds: a presigned upload's grant
    was spent, swept or claimed by another completion meanwhile (the commit rolls back)."""


class OverQuota(Exception):
    """The reservation would pass the account's quota; ``usage`` is what the account
    holds (``records.Usage``), ``size`` the refused file's."""

    def __init__(self, usage: Usage, size: int):
        super().__init__(f"{usage.account} is over its quota")
        self.usage = usage
        self.size = size


class IDatabase(Interface):
    """Everything IMGSHARE keeps in its database. Every method returns a Deferred.

    Operations fail with the exceptions above: ``Conflict``, ``AccountGone`` and
    ``LostClaim`` from the operations that name them, ``DatabaseUnavailable`` when
    the database itself cannot serve (503)."""

    url = Attribute("The URL this database was opened from.")
    shared = Attribute(
        "Optional, default False: True when several processes commonly share this "
        "database (PostgreSQL), so per-client limits are kept in it.")

    def start(create=True):
        """Connect and apply pending migrations; with ``create=False`` a database without
        IMGSHARE's tables is left as it is and ``NoSchema`` raised (the admin command's verbs
        that must not make a database)."""

    def stop():
        """Close every connection; fires once they are closed."""

    def run(operation, *args):
        """Run ``await operation(tx, *args)`` in one transaction."""


class IDatabaseFactory(Interface):
    """A Database backend plugin, found by URL scheme."""

    schemes = Attribute("URL schemes handled, e.g. ('sqlite',).")

    def open(url, reactor, runner):
        """Return an IDatabase for ``url`` (not started yet)."""

    def missing(url):
        """Where the database at ``url`` would be created if it does not exist yet (a
        SQLite file's path), else None: it exists, or only the server it lives on could
        make it (PostgreSQL: ``CREATE DATABASE`` is the operator's)."""


def readonly(operation: Any) -> Any:
    """Mark an operation that only reads: backends may run it without a write lock."""
    operation.readonly = True
    return operation


def single_read(operation: Any) -> Any:
    """Mark an operation that is one SELECT: atomic by itself, it needs no transaction."""
    operation.readonly = True
    operation.single_statement = True
    return operation


def one_statement(operation: Any) -> Any:
    """Mark a write that is one statement: atomic by itself, it needs no transaction
    around it.  PostgreSQL runs it without ``BEGIN``/``COMMIT``: one round trip (the
    rate limits' check, on every API request)."""
    operation.one_statement = True
    return operation


def recoverable(operation: Any) -> Any:
    """Mark a write that the service redoes by itself if a power failure loses it: the
    derived-file jobs' bookkeeping (a lost claim, lease or retry leaves the job to be
    claimed again; a lost result, the job to be derived again, from the original,
    which is durable).  Backends may commit it without waiting for the disk (SQLite:
    ``synchronous = NORMAL`` for it; PostgreSQL: ``synchronous_commit`` off).  Both
    write their log in order, so the next durable commit makes it durable too, and a
    crash of the process alone never loses it."""
    operation.recoverable = True
    return operation


# ------------------------------------------------------------- rows -> records


def named(columns: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
    """A row as a dict keyed by the names of the selected ``columns``, in order
    (``table.column`` counts as ``column``); independent of the driver's cursor."""
    return {c.rsplit(".", 1)[-1]: value for c, value in zip(columns, row, strict=True)}


class Columns:
    """The columns selected for one record type: ``str()`` is the SELECT list, and
    ``record(row)`` maps a row selected with it to the record, by column name.
    ``flags`` are columns stored as integers on SQLite and read as booleans."""

    def __init__(self, record: type, columns: Sequence[str], flags: Sequence[str] = ()):
        self.type = record
        self.columns = tuple(columns)
        self.flags = tuple(flags)
        self._sql = ", ".join(self.columns)
        #: The record's field of each column (``table.column`` counts as ``column``).
        self._fields = tuple(c.rsplit(".", 1)[-1] for c in self.columns)

    def __str__(self) -> str:
        return self._sql

    def record(self, row: Sequence[Any]) -> Any:
        values = dict(zip(self._fields, row, strict=True))
        for flag in self.flags:
            values[flag] = bool(values[flag])
        return self.type(**values)


# ---------------------------------------------------------------- migrations


def schema_files(dialect: str) -> list[tuple[int, str]]:
    """The numbered schema files of one SQL dialect, in order."""
    folder = importlib.resources.files("imgshare") / "schema" / dialect
    found = []
    for entry in folder.iterdir():
        m = re.match(r"^(\d+)_.*\.sql$", entry.name)
        if m:
            found.append((int(m.group(1)), entry.read_text("utf-8")))
    return sorted(found)


def split_statements(script: str) -> list[str]:
    """Split a schema file into statements (one per ``;`` at a line end)."""
    lines = [ln for ln in script.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";\n") if s.strip().rstrip(";").strip()]


class SchemaTooNew(Exception):
    """The database was migrated by a newer IMGSHARE."""


async def current_version(tx: Tx) -> int:
    await tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    rows = await tx.execute("SELECT MAX(version) FROM schema_version")
    return rows[0][0] or 0


async def migrate(tx: Tx, files: list[tuple[int, str]], create: bool = True) -> int:
    """Apply every schema file newer than the recorded version; return the new version.

    Without ``create``, NoSchema (and the transaction rolled back) on a database that has
    none.  A database migrated by a newer IMGSHARE (a downgrade) is refused: this version
    would not know its tables' meaning."""
    version = await current_version(tx)
    if not version and not create:
        raise NoSchema("no IMGSHARE tables")
    known = max((number for number, _ in files), default=0)
    if version > known:
        raise SchemaTooNew(f"the database schema is version {version}, newer than this IMGSHARE "
                           f"knows ({known}): run the newer IMGSHARE, or restore the backup taken "
                           "before the upgrade")
    for number, script in files:
        if number <= version:
            continue
        for statement in split_statements(script):
            await tx.execute(statement.rstrip(";"))
        await tx.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
        version = number
    return version


# ------------------------------------------------------------------ accounts

_ACCOUNT = Columns(Account, ("id", "name", "is_admin", "created"), flags=("is_admin",))


async def _lock_account(tx: Tx, account: str) -> None:
    """AccountGone unless ``account`` exists; where rows can be locked (PostgreSQL) its
    row stays locked against removal until the transaction ends."""
    if not await tx.execute(f"SELECT 1 FROM accounts WHERE name = ?{tx.share_lock}", (account,)):
        raise AccountGone(account)


@single_read
async def ping(tx: Tx) -> None:
    """``SELECT 1``: the database answers (the readiness probe)."""
    await tx.execute("SELECT 1")


@single_read
async def count_accounts(tx: Tx) -> int:
    return (await tx.execute("SELECT COUNT(*) FROM accounts"))[0][0]


async def create_account(tx: Tx, name: str, password_hash: str, is_admin: bool, now: float,
                         quota_bytes: int | None = None) -> Account:
    """Insert an account (with a storage quota of ``quota_bytes``: None for none);
    ``Conflict`` if the name exists or awaits purging."""
    if await tx.execute("SELECT 1 FROM accounts WHERE name = ?", (name,)):
        raise Conflict(name)
    if await tx.execute("SELECT 1 FROM images WHERE account = ? LIMIT 1", (name,)):
        # Images of a removed account with this name are still being purged.
        raise Conflict(name)
    rows = await tx.execute(
        f"INSERT INTO accounts (name, password_hash, is_admin, created, quota_bytes) VALUES (?, ?, ?, ?, ?) "
        f"RETURNING {_ACCOUNT}",
        (name, password_hash, is_admin, now, quota_bytes),
    )
    return _ACCOUNT.record(rows[0])


@single_read
async def get_account(tx: Tx, name: str) -> Account | None:
    rows = await tx.execute(f"SELECT {_ACCOUNT} FROM accounts WHERE name = ?", (name,))
    return _ACCOUNT.record(rows[0]) if rows else None


@readonly
async def get_password_hash(tx: Tx, name: str) -> str | None:
    rows = await tx.execute("SELECT password_hash FROM accounts WHERE name = ?", (name,))
    return rows[0][0] if rows else None


async def set_password_hash(tx: Tx, name: str, password_hash: str) -> bool:
    rows = await tx.execute(
        "UPDATE accounts SET password_hash = ? WHERE name = ? RETURNING id", (password_hash, name)
    )
    return bool(rows)


@readonly
async def list_accounts(tx: Tx) -> list[Account]:
    return [_ACCOUNT.record(r) for r in await tx.execute(f"SELECT {_ACCOUNT} FROM accounts ORDER BY name")]


#: The ``tx.lock`` key serializing the changes that could remove the last admin.
ADMINS_LOCK = "admins"


async def _refuse_last_admin(tx: Tx, name: str, *, unless_alone: bool = False) -> None:
    """LastAdmin if ``name`` is the only administrator (with ``unless_alone``: and other
    accounts exist).  The caller holds ``ADMINS_LOCK``, so two such changes made at
    once cannot both pass."""
    if await tx.execute("SELECT 1 FROM accounts WHERE is_admin AND name <> ? LIMIT 1", (name,)):
        return
    if unless_alone and not await tx.execute("SELECT 1 FROM accounts WHERE name <> ? LIMIT 1", (name,)):
        return
    raise LastAdmin(name)


async def set_admin(tx: Tx, name: str, is_admin: bool) -> bool:
    """Make ``name`` an administrator or not; False if there is no such account,
    ``LastAdmin`` (nothing changed) if it is the only administrator and would stop being one."""
    await tx.lock(ADMINS_LOCK)
    rows = await tx.execute("SELECT is_admin FROM accounts WHERE name = ?", (name,))
    if not rows:
        return False
    if rows[0][0] and not is_admin:
        await _refuse_last_admin(tx, name)
    await tx.execute("UPDATE accounts SET is_admin = ? WHERE name = ?", (is_admin, name))
    return True


async def reset_password(tx: Tx, name: str, password_hash: str) -> int | None:
    """Give ``name`` a new password and end every session of it (an administrator's reset:
    whoever knew the old password is logged out); the number of sessions ended, or None
    if there is no such account.  Its API tokens stay."""
    if not await set_password_hash(tx, name, password_hash):
        return None
    return len(await tx.execute("DELETE FROM sessions WHERE account = ? RETURNING digest", (name,)))


@single_read
async def get_strip_location(tx: Tx, name: str) -> bool:
    """The account's default for removing location metadata at upload (False without the account)."""
    rows = await tx.execute("SELECT strip_location FROM accounts WHERE name = ?", (name,))
    return bool(rows[0][0]) if rows else False


async def set_strip_location(tx: Tx, name: str, strip: bool) -> bool:
    """Set the account's default for removing location metadata; False without the account."""
    rows = await tx.execute("UPDATE accounts SET strip_location = ? WHERE name = ? RETURNING id", (strip, name))
    return bool(rows)


# ------------------------------------------------------------ usage (010)
#
# ``accounts.image_count`` and ``image_bytes`` count the rows of the account's
# images that are not deleted (reserved or live, expired ones until their purge)
# and the sizes of their originals.  Every operation that moves a row into or out
# of that set changes them in its own transaction, holding the account's row
# first (``reserve_image`` by its conditional UPDATE, the others through
# ``_hold_account_of``): the account row, then the image row, in every one of
# them, so they queue and never deadlock.

_USAGE = "name, image_count, image_bytes, quota_bytes, quota_images"


def _usage(row: Sequence[Any]) -> Usage:
    account, images, stored, quota_bytes, quota_images = row
    return Usage(account, images, stored, quota_bytes, quota_images)


@single_read
async def account_usage(tx: Tx, account: str) -> Usage | None:
    """What ``account``'s images hold and its quotas (one row, by its primary key's
    twin, the unique name); None without the account."""
    rows = await tx.execute(f"SELECT {_USAGE} FROM accounts WHERE name = ?", (account,))
    return _usage(rows[0]) if rows else None


@readonly
async def list_usage(tx: Tx) -> list[Usage]:
    """Every account's usage and quotas, by name."""
    return [_usage(r) for r in await tx.execute(f"SELECT {_USAGE} FROM accounts ORDER BY name")]


async def set_quota(tx: Tx, account: str, quota_bytes: int | None, quota_images: int | None) -> Usage | None:
    """Set ``account``'s limits (None: no limit); its usage after, or None without the
    account.  Images it holds already stay, even past the new limits: only new uploads
    are refused."""
    rows = await tx.execute(
        f"UPDATE accounts SET quota_bytes = ?, quota_images = ? WHERE name = ? RETURNING {_USAGE}",
        (quota_bytes, quota_images, account),
    )
    return _usage(rows[0]) if rows else None


async def _hold_account_of(tx: Tx, image_id: int) -> str | None:
    """Lock the row of the account owning image ``image_id`` (its name never changes,
    so it is read unlocked first); the account's name, None without the image."""
    rows = await tx.execute("SELECT account FROM images WHERE id = ?", (image_id,))
    if not rows:
        return None
    await tx.execute(f"SELECT 1 FROM accounts WHERE name = ?{tx.update_lock}", (rows[0][0],))
    return rows[0][0]


async def _give_back(tx: Tx, account: str | None, sizes: Sequence[int]) -> None:
    """Take images of ``sizes`` bytes off the account's counters (they stopped holding storage)."""
    if account is not None and sizes:
        await tx.execute(
            "UPDATE accounts SET image_count = image_count - ?, image_bytes = image_bytes - ? WHERE name = ?",
            (len(sizes), sum(sizes), account),
        )


@readonly
async def count_images(tx: Tx, account: str) -> int:
    """How many images of ``account`` are stored or being uploaded (not deleted)."""
    rows = await tx.execute("SELECT COUNT(*) FROM images WHERE account = ? AND state <> ?", (account, DELETED))
    return rows[0][0]


async def register_account(tx: Tx, name: str, password_hash: str, now: float,
                           quota_bytes: int | None = None) -> Account | None:
    """A self-registered (never admin) account, only once some account exists: the first
    one comes from the setup link or the admin command.  None, and nothing stored, on a
    database without accounts; ``Conflict`` as ``create_account``."""
    if not (await tx.execute("SELECT COUNT(*) FROM accounts"))[0][0]:
        return None
    return await create_account(tx, name, password_hash, False, now, quota_bytes)


async def delete_account(tx: Tx, name: str, now: float) -> bool:
    """Remove an account, its tokens and sessions; its images become deleted (purged later).

    ``LastAdmin`` (nothing changed) if it is the only administrator while other accounts exist."""
    await tx.lock(ADMINS_LOCK)
    rows = await tx.execute("SELECT is_admin FROM accounts WHERE name = ?", (name,))
    if not rows:
        return False
    if rows[0][0]:
        await _refuse_last_admin(tx, name, unless_alone=True)
    await tx.execute("DELETE FROM accounts WHERE name = ?", (name,))
    await tx.execute("DELETE FROM tokens WHERE account = ?", (name,))
    await tx.execute("DELETE FROM sessions WHERE account = ?", (name,))
    await tx.execute(
        "UPDATE images SET state = ?, deleted = ? WHERE account = ? AND state <> ?",
        (DELETED, now, name, DELETED),
    )
    return True


# -------------------------------------------------------------------- tokens

_TOKEN = Columns(Token, ("id", "account", "label", "created", "expires", "last_used"))


async def create_token(
    tx: Tx, account: str, digest: str, label: str, now: float, expires: float | None
) -> Token:
    rows = await tx.execute(
        "INSERT INTO tokens (account, digest, label, created, expires) VALUES (?, ?, ?, ?, ?) "
        f"RETURNING {_TOKEN}",
        (account, digest, label, now, expires),
    )
    return _TOKEN.record(rows[0])


async def find_token(tx: Tx, digest: str, now: float) -> Token | None:
    """The unexpired token with this digest, its use recorded (at most once a minute)."""
    rows = await tx.execute(
        f"SELECT {_TOKEN} FROM tokens WHERE digest = ? AND (expires IS NULL OR expires > ?)",
        (digest, now),
    )
    if not rows:
        return None
    token = _TOKEN.record(rows[0])
    if token.last_used is None or token.last_used < now - 60:
        await tx.execute("UPDATE tokens SET last_used = ? WHERE id = ?", (now, token.id))
    return token


@readonly
async def list_tokens(tx: Tx, account: str, now: float) -> list[Token]:
    rows = await tx.execute(
        f"SELECT {_TOKEN} FROM tokens WHERE account = ? AND (expires IS NULL OR expires > ?) "
        "ORDER BY created DESC, id DESC",
        (account, now),
    )
    return [_TOKEN.record(r) for r in rows]


async def delete_token(tx: Tx, account: str, token_id: int) -> bool:
    rows = await tx.execute(
        "DELETE FROM tokens WHERE account = ? AND id = ? RETURNING id", (account, token_id)
    )
    return bool(rows)


async def delete_expired_tokens(tx: Tx, now: float) -> list[str]:
    """Delete the expired tokens; the account of each (one entry per token, sorted)."""
    rows = await tx.execute(
        "DELETE FROM tokens WHERE expires IS NOT NULL AND expires <= ? RETURNING account", (now,))
    return sorted(row[0] for row in rows)


# -------------------------------------------------------------------- images

_IMAGE = Columns(Image, ("id", "account", "name", "mime", "size", "width", "height", "sha256", "uploaded",
                          "expires", "state", "original_name", "asked_expire", "has_location"),
                 flags=("has_location",))


async def reserve_image(
    tx: Tx, account: str, name: str, stem: str, mime: str, size: int, width: int,
    height: int, sha256: str, now: float, expires: float | None, next_free: bool = False,
    original_name: str = "", delete_digest: str | None = None, asked_expire: str | None = None,
    has_location: bool = False,
) -> Image:
    """Claim ``name`` for an upload in progress; ``Conflict`` if its stem is taken.

    With ``next_free`` (a kept name) a taken stem takes the next clash suffix
    instead, found in one query: one past the highest ``<stem>_N`` the account
    has, ``_2`` after the plain name.  The returned record holds the name taken.

    Rows of deleted images stay until their objects are gone, so a name is
    never reused while an old object under the same key may still be removed.
    AccountGone if the account was removed meanwhile.  ``original_name`` is the
    client's file name; ``delete_digest`` the SHA-256 of the delete link's secret;
    ``asked_expire`` the lifetime asked for (``lifetime.format_asked``); ``has_location``
    whether the stored original carries GPS coordinates.
    """
    await _count_in(tx, account, size)
    if next_free:
        name, stem = await _next_free_name(tx, account, name, stem)
    elif await tx.execute("SELECT 1 FROM images WHERE account = ? AND stem = ?", (account, stem)):
        raise Conflict(name)
    rows = await tx.execute(
        "INSERT INTO images (account, name, stem, mime, size, width, height, sha256, uploaded, "
        f"expires, state, original_name, delete_digest, asked_expire, has_location) "
        f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {_IMAGE}",
        (account, name, stem, mime, size, width, height, sha256, now, expires, UPLOADING, original_name,
         delete_digest, asked_expire, has_location),
    )
    return _IMAGE.record(rows[0])


async def _count_in(tx: Tx, account: str, size: int) -> None:
    """Count one more image of ``size`` bytes for ``account`` if its quotas allow: one
    conditional UPDATE, whose row lock serializes the account's reservations (on
    PostgreSQL a racing one waits, then tests the condition again on the row as the
    first left it), so racing uploads never pass a quota together.  OverQuota, or
    AccountGone if the account was removed."""
    rows = await tx.execute(
        "UPDATE accounts SET image_count = image_count + 1, image_bytes = image_bytes + ? WHERE name = ? "
        "AND (quota_bytes IS NULL OR image_bytes + ? <= quota_bytes) "
        "AND (quota_images IS NULL OR image_count + 1 <= quota_images) RETURNING id",
        (size, account, size),
    )
    if rows:
        return
    usage = await account_usage(tx, account)
    if usage is None:
        raise AccountGone(account)
    raise OverQuota(usage, size)


async def _next_free_name(tx: Tx, account: str, name: str, stem: str) -> tuple[str, str]:
    """``(name, stem)`` if the stem is free, else the name with the suffix after the
    highest taken ``<stem>_N`` (N a number without leading zeros: nothing else can
    clash with a suffix we make).  No LIKE (``_`` would be a wildcard): the suffixes
    are a range of the ``(account, stem)`` index in byte order, from ``<stem>_`` to
    ``<stem>`` and a backtick (the character after ``_``), filtered to digits; the
    highest is the longest, then the greatest.  A base that itself ends in ``_3``
    is just a longer stem."""
    # Same-name reservations queue here (until commit) instead of colliding.
    await tx.lock(f"{account}/{stem}")
    c = tx.byte_order
    digits = tx.positive_number(f"substr(stem, {len(stem) + 2:d})")
    rows = await tx.execute(
        "SELECT EXISTS (SELECT 1 FROM images WHERE account = ? AND stem = ?), "
        f"(SELECT stem FROM images WHERE account = ? AND stem{c} > ? AND stem{c} < ? AND {digits}"
        f" ORDER BY length(stem) DESC, stem{c} DESC LIMIT 1)",
        (account, stem, account, stem + "_", stem + "`"),
    )
    taken, highest = rows[0]
    if not taken:
        return name, stem
    number = int(highest[len(stem) + 1:]) + 1 if highest else 2
    suffixed = naming.suffixed_name(name, number)
    if not naming.is_valid_file_name(suffixed):  # past the longest name IMGSHARE issues
        raise Conflict(name)
    return suffixed, naming.name_stem(suffixed)


async def commit_image(tx: Tx, image_id: int, now: float, also: tuple | None = None) -> Image:
    """Make a reserved image live (its original is durably stored) and queue
    its derived files, in the same transaction.

    ``also`` is ``(operation, *args)``, run in that transaction too: a presigned
    upload spends its grant there, so an image and the spending of its grant are
    committed together or not at all (``NotHeld`` from it rolls everything back)."""
    owner = await tx.execute("SELECT account FROM images WHERE id = ?", (image_id,))
    if not owner:
        raise Conflict(f"image {image_id} is no longer reserved")
    await _lock_account(tx, owner[0][0])  # the account row first, as every image operation
    rows = await tx.execute(
        f"UPDATE images SET state = ? WHERE id = ? AND state = ? RETURNING {_IMAGE}",
        (LIVE, image_id, UPLOADING),
    )
    if not rows:
        raise Conflict(f"image {image_id} is no longer reserved")
    image = _IMAGE.record(rows[0])
    await tx.execute(
        "INSERT INTO jobs (image_id, state, available_at, created) VALUES (?, ?, ?, ?)",
        (image_id, PENDING, now, now),
    )
    if also is not None:
        await also[0](tx, *also[1:])
    return image


async def discard_image(tx: Tx, image_id: int) -> None:
    """Forget a reservation whose original never reached storage (its share of the
    quota is given back)."""
    account = await _hold_account_of(tx, image_id)
    rows = await tx.execute("DELETE FROM images WHERE id = ? AND state = ? RETURNING size", (image_id, UPLOADING))
    await _give_back(tx, account, [r[0] for r in rows])


async def abandon_upload(tx: Tx, image_id: int, now: float) -> str | None:
    """A reservation whose upload failed (its object, maybe partial, may be in
    storage): the row becomes deleted, so a purge removes the object and then the
    row.  Returns the row's state now: ``deleted``, or ``live`` if the upload was
    committed after all (a commit whose answer was lost); None without a row.  A
    reservation made deleted gives its share of the quota back."""
    account = await _hold_account_of(tx, image_id)
    gone = await tx.execute(
        "UPDATE images SET state = ?, deleted = ? WHERE id = ? AND state = ? RETURNING size",
        (DELETED, now, image_id, UPLOADING),
    )
    if gone:
        await _give_back(tx, account, [gone[0][0]])
        return DELETED
    rows = await tx.execute("SELECT state FROM images WHERE id = ?", (image_id,))
    return rows[0][0] if rows else None


@single_read
async def get_image(tx: Tx, account: str, name: str) -> Image | None:
    rows = await tx.execute(f"SELECT {_IMAGE} FROM images WHERE account = ? AND name = ?", (account, name))
    return _IMAGE.record(rows[0]) if rows else None


@single_read
async def get_image_and_delete_digest(tx: Tx, account: str, name: str) -> tuple[Image, str | None] | None:
    """The image ``account/name`` with the SHA-256 of its delete link's secret (None:
    it has no link, an image from before links existed); None without a row."""
    rows = await tx.execute(
        f"SELECT {_IMAGE}, delete_digest FROM images WHERE account = ? AND name = ?", (account, name)
    )
    return (_IMAGE.record(rows[0][:-1]), rows[0][-1]) if rows else None


@single_read
async def get_image_by_stem(tx: Tx, account: str, stem: str) -> Image | None:
    rows = await tx.execute(f"SELECT {_IMAGE} FROM images WHERE account = ? AND stem = ?", (account, stem))
    return _IMAGE.record(rows[0]) if rows else None


async def mark_deleted(tx: Tx, image_id: int, now: float) -> bool:
    """Stop serving an image at once; its objects are removed by the expiry service.
    Its share of the quota is given back at once."""
    account = await _hold_account_of(tx, image_id)
    rows = await tx.execute(
        "UPDATE images SET state = ?, deleted = ? WHERE id = ? AND state = ? RETURNING size",
        (DELETED, now, image_id, LIVE),
    )
    await _give_back(tx, account, [r[0] for r in rows])
    # A job being worked on stays until its worker lets go (the purge waits for it).
    await tx.execute("DELETE FROM jobs WHERE image_id = ? AND state = ?", (image_id, PENDING))
    return bool(rows)


#: The account's served images, in listing order: live, unexpired, newest first.
#: Written once for the page and its count, so both read the ``images_search``
#: index (migration 012, which replaced 009's ``images_listing``) and agree on what is listed.
_LIVE = "FROM images WHERE account = ? AND state = ?"
_LISTED = f"{_LIVE} AND (expires IS NULL OR expires > ?)"
_NEWEST_FIRST = "ORDER BY uploaded DESC, id DESC"
#: The same order reversed: the same index, walked from its other end.
_OLDEST_FIRST = "ORDER BY uploaded, id"


async def _listed_page(tx: Tx, account: str, now: float, offset: int, limit: int,
                       order: str = _NEWEST_FIRST) -> list[Image]:
    """``limit`` listed images after the first ``offset`` in ``order``, newest first.
    The inner SELECT reads only ``images_search`` (it covers every column it names),
    so the skip walks index entries, never rows; only the page's own rows are then
    read, by id."""
    rows = await tx.execute(
        f"SELECT {_IMAGE} FROM images WHERE id IN (SELECT id {_LISTED} {order} LIMIT ? OFFSET ?) "
        f"{_NEWEST_FIRST}",
        (account, LIVE, now, limit, offset),
    )
    return [_IMAGE.record(r) for r in rows]


async def _count_listed(tx: Tx, account: str, now: float) -> int:
    """How many images the account lists: the images its counters count (schema 010:
    reserved and live) less its uploads in flight and its live images expired but not
    purged yet.  The same number as ``COUNT(*)`` under ``_LISTED``, without counting the
    account's entries: one row of ``accounts``, then two ranges, both few: the
    ``uploading`` entries of ``images_search`` (uploads under way) and the expired rows,
    a range of ``images_state_expires`` (the expiry service purges them within seconds;
    while storage is down, those awaiting a retry).  One statement: one snapshot, in
    which the counters agree with the rows (they change in the same transactions).
    ``bench/account_usage.py``: 1 ms where ``COUNT(*)`` took 119 ms at 100 000 images on
    PostgreSQL (0.35 ms against 11 ms on SQLite)."""
    rows = await tx.execute(
        "SELECT COALESCE((SELECT image_count FROM accounts WHERE name = ?), 0) "
        f"- (SELECT COUNT(*) {_LIVE}) - (SELECT COUNT(*) {_LIVE} AND expires <= ?)",
        (account, account, UPLOADING, account, LIVE, now),
    )
    return max(0, rows[0][0])


@readonly
async def list_images(tx: Tx, account: str, now: float, offset: int, limit: int) -> list[Image]:
    """The account's served images, newest first."""
    return await _listed_page(tx, account, now, offset, limit)


@readonly
async def list_images_page(tx: Tx, account: str, now: float, offset: int, limit: int) -> tuple[list[Image], int]:
    """One page of the account's served images and how many there are in all, in one
    transaction (one snapshot on SQLite; under PostgreSQL's read committed an upload
    committed between the two statements may shift the page by one, as it would
    shift any page of an offset listing).

    Knowing the total, the page is skipped to from the nearer end of the index: a
    page in the older half is read oldest first, from the other end, so a skip walks
    at most half the account's entries and the last pages cost what the first do.
    Past the end the page is empty without a second query: an offset beyond the
    total (even one too large for a 64-bit integer) never reaches SQL."""
    total = await _count_listed(tx, account, now)
    if offset >= total:
        return [], total
    end = min(offset + limit, total)
    if total - end < offset:
        return await _listed_page(tx, account, now, total - end, end - offset, _OLDEST_FIRST), total
    return await _listed_page(tx, account, now, offset, limit), total


#: The gallery's orders (``?sort=``): each with its reverse, the same index walked
#: from its other end (newest: ``images_search``; largest: ``images_by_size``, 012).
_LARGEST_FIRST = "ORDER BY size DESC, id DESC"
_SMALLEST_FIRST = "ORDER BY size, id"
ORDERS = {
    "newest": (_NEWEST_FIRST, _OLDEST_FIRST),
    "oldest": (_OLDEST_FIRST, _NEWEST_FIRST),
    "largest": (_LARGEST_FIRST, _SMALLEST_FIRST),
}
#: The sort keys, the default first.
SORTS = tuple(ORDERS)
#: A search counts its matches up to this many and pages through those: counting
#: every match of a search that matches most of a large account would walk all of it
#: (a total past the cap is returned as ``SEARCH_COUNT_CAP + 1``: "more than").
SEARCH_COUNT_CAP = 1000


def like_pattern(text: str) -> str:
    """A LIKE pattern (with ``ESCAPE '\\'``) matching ``text`` anywhere: its own
    ``%``, ``_`` and backslashes match only themselves."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _matching(tx: Tx, search: str) -> tuple[str, tuple]:
    """The condition of a search, and its arguments: the file name or the original
    name contains ``search``, without regard to case.  The ESCAPE clause only when
    the search holds a character it escapes (SQLite matches a quarter faster without)."""
    pattern = like_pattern(search)
    escape = " ESCAPE '\\'" if pattern != f"%{search}%" else ""
    if tx.search_key:  # the names, lowered once when written (PostgreSQL, migration 012)
        return f" AND {tx.search_key} LIKE lower(?){escape}", (pattern,)
    return f" AND (name LIKE ?{escape} OR original_name LIKE ?{escape})", (pattern, pattern)


#: Each sort's order key, and whether its forward order is descending (the id breaks
#: ties in the same direction: ``ORDERS``).
ORDER_KEYS = {"newest": ("uploaded", True), "oldest": ("uploaded", False), "largest": ("size", True)}


async def _search_total(tx: Tx, account: str, now: float, match: str, args: tuple) -> int:
    """How many listed images match a search, counted up to ``SEARCH_COUNT_CAP`` + 1."""
    return (await tx.execute(
        f"SELECT COUNT(*) FROM (SELECT 1 {_LISTED}{match} LIMIT ?) AS found",
        (account, LIVE, now, *args, SEARCH_COUNT_CAP + 1),
    ))[0][0]


@readonly
async def find_images_page(
    tx: Tx, account: str, now: float, offset: int, limit: int, sort: str = "newest", search: str = "",
) -> tuple[list[Image], int]:
    """One page of the account's served images in the order ``sort`` (a key of
    ``ORDERS``), only those whose file name or original name contains ``search``
    (any case; every character literal) when it is not empty, and how many there
    are in all (matching, with a search).  As ``list_images_page``: the page is
    skipped to from the nearer end of its index, and past the end it is empty
    without a second query.  A search counts its matches by scanning the account's
    entries of an index that carries the names (012), up to ``SEARCH_COUNT_CAP`` + 1
    (a total past the cap means "more than", and only the pages within the cap are
    read); its first page is read first, and when it is not full it is every
    match, so no count is needed (a search finding a few images scans once).
    Without a search the count is ``_count_listed``."""
    forward, backward = ORDERS[sort]
    match, args = _matching(tx, search) if search else ("", ())

    async def page(order: str, skip: int, take: int) -> list[Image]:
        rows = await tx.execute(
            f"SELECT {_IMAGE} FROM images WHERE id IN (SELECT id {_LISTED}{match} {order} LIMIT ? OFFSET ?) "
            f"{forward}",
            (account, LIVE, now, *args, take, skip),
        )
        return [_IMAGE.record(r) for r in rows]

    if search and offset == 0:
        first = await page(forward, 0, min(limit, SEARCH_COUNT_CAP))
        if len(first) < min(limit, SEARCH_COUNT_CAP):
            return first, len(first)
    if search:
        total = await _search_total(tx, account, now, match, args)
        if offset == 0:
            return first, total
    else:
        total = await _count_listed(tx, account, now)
    capped = bool(search) and total > SEARCH_COUNT_CAP
    if offset >= (SEARCH_COUNT_CAP if capped else total):
        return [], total
    if capped:  # the far end is unknown: read forward, within the cap
        return await page(forward, offset, min(limit, SEARCH_COUNT_CAP - offset)), total
    end = min(offset + limit, total)
    if total - end < offset:
        return await page(backward, total - end, end - offset), total
    return await page(forward, offset, limit), total


@readonly
async def find_images_at(
    tx: Tx, account: str, now: float, key: float, image_id: int, before: bool, limit: int,
    sort: str = "newest", search: str = "",
) -> tuple[list[Image], bool, int]:
    """Keyset pagination: the ``limit`` listed images of the account (matching
    ``search``, as ``find_images_page``) that follow the place ``(key, image_id)`` in
    the order ``sort`` (preceding it when ``before``), in that order; whether more
    follow (precede) them; and the total (as ``find_images_page`` counts it).

    The place is a seek in the sort's index (``images_search`` or ``images_by_size``,
    whose key is the equality columns, then the order key and id in the sort's
    direction): the page costs what the first page does wherever the place is, and
    an image added or deleted elsewhere in the order never shifts it.  The place
    itself need not exist (its image may be deleted, or the key made up): it is only
    compared with.  The subquery reads one entry more than the page, to tell whether
    more follow."""
    forward, backward = ORDERS[sort]
    column, descending = ORDER_KEYS[sort]
    match, args = _matching(tx, search) if search else ("", ())
    comparison = "<" if descending != before else ">"
    rows = await tx.execute(
        f"SELECT {_IMAGE} FROM images WHERE id IN (SELECT id {_LISTED}{match} "
        f"AND ({column}, id) {comparison} (?, ?) {backward if before else forward} LIMIT ?) {forward}",
        (account, LIVE, now, *args, key, image_id, limit + 1),
    )
    found = [_IMAGE.record(r) for r in rows]
    more = len(found) > limit
    if more:
        found = found[1:] if before else found[:limit]
    if search:
        total = await _search_total(tx, account, now, match, args)
    else:
        total = await _count_listed(tx, account, now)
    return found, more, total


async def delete_served_named(tx: Tx, account: str, names: Sequence[str], now: float) -> tuple[list[Image], list[str]]:
    """Delete the account's images ``names`` together, or none of them: ``(deleted,
    [])`` when every one was served at ``now`` (each through ``mark_deleted``), else
    ``([], the names that are not)`` and nothing changed."""
    if not names:
        return [], []
    marks = ", ".join("?" * len(names))
    rows = await tx.execute(
        f"SELECT {_IMAGE} FROM images WHERE account = ? AND name IN ({marks})", (account, *names)
    )
    found = {image.name: image for image in map(_IMAGE.record, rows) if image.is_served(now)}
    missing = [name for name in names if name not in found]
    if missing:
        return [], missing
    for name in names:
        if not await mark_deleted(tx, found[name].id, now):
            raise NotHeld(name)  # deleted by another transaction meanwhile: roll all back
    return [found[name] for name in names], []


def _purgeable(now: float, stale_before: float) -> tuple[str, tuple]:
    """The condition (SQL and its arguments) on an ``images`` row whose objects must
    go now: deleted, expired, or an upload abandoned (still ``uploading`` from before
    ``stale_before``); not waiting for the ``retry_at`` of a failed removal or held by
    another purge's claim; and no derived-file worker at its job."""
    return (
        "(retry_at IS NULL OR retry_at <= ?) AND ("
        " state = ? OR (state = ? AND expires IS NOT NULL AND expires <= ?)"
        " OR (state = ? AND uploaded < ?))"
        " AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.image_id = images.id AND jobs.state = ?)",
        (now, DELETED, LIVE, now, UPLOADING, stale_before, RUNNING),
    )


async def purgeable_images(
    tx: Tx, now: float, stale_before: float, limit: int
) -> list[tuple[Image, int]]:
    """Images whose objects must go (deleted, expired, or uploads abandoned by a
    crash), each with the number of removal attempts that failed so far.

    Rows whose last removal attempt failed wait until their ``retry_at``.
    """
    purgeable, args = _purgeable(now, stale_before)
    columns = (*_IMAGE.columns, "attempts")
    rows = await tx.execute(
        f"SELECT {', '.join(columns)} FROM images WHERE {purgeable} ORDER BY id LIMIT ?", (*args, limit)
    )
    found = []
    for row in rows:
        values = named(columns, row)
        attempts = values.pop("attempts")
        values["has_location"] = bool(values["has_location"])
        found.append((Image(**values), attempts))
    return found


async def claim_purge(tx: Tx, image_id: int, now: float, stale_before: float, lease: float) -> bool:
    """Take the right to remove an image's objects for ``lease`` seconds.

    False when the image is served, or another purge holds it, or a derived-file
    worker is still at it: two purges never overlap, so a purge can never delete
    the objects of a newer image that reused the name after the first one ended.
    """
    return bool(await claim_purges(tx, [image_id], now, stale_before, lease))


async def claim_purges(
    tx: Tx, image_ids: Sequence[int], now: float, stale_before: float, lease: float,
) -> list[int]:
    """``claim_purge`` for several images in one statement: the ids claimed."""
    if not image_ids:
        return []
    purgeable, args = _purgeable(now, stale_before)
    marks = ", ".join("?" * len(image_ids))
    rows = await tx.execute(
        f"UPDATE images SET retry_at = ? WHERE id IN ({marks}) AND {purgeable} RETURNING id",
        (now + lease, *image_ids, *args),
    )
    return [r[0] for r in rows]


async def postpone_purge(tx: Tx, image_id: int, retry_at: float) -> None:
    """Record that removing an image's objects failed; try again at ``retry_at``."""
    await tx.execute(
        "UPDATE images SET retry_at = ?, attempts = attempts + 1 WHERE id = ?", (retry_at, image_id)
    )


async def remove_image(tx: Tx, image_id: int) -> None:
    """Drop an image's rows once its objects are gone from storage.  An image purged
    without being deleted first (expired, or an upload abandoned by a crash) gives
    its share of the quota back here."""
    await _remove(tx, [image_id])


async def remove_images(tx: Tx, images: Sequence[tuple[str, int]]) -> None:
    """``remove_image`` for several images ``(account, id)`` in one transaction (one
    commit for a whole batch of purges)."""
    await _remove(tx, sorted({image_id for _, image_id in images}))


#: Ids per statement of ``_remove`` (well under every backend's limit of parameters).
_REMOVE_CHUNK = 500


async def _remove(tx: Tx, image_ids: Sequence[int]) -> None:
    """Drop the rows of ``image_ids`` with a statement per table for the whole batch
    (a statement per image made a purge of 10 000 images on PostgreSQL mostly round
    trips).  Their accounts are locked first, in name order, so two such
    transactions never wait on each other in a cycle; each account then gives back
    in one update what its images not deleted before held."""
    chunks = [(chunk, ", ".join("?" * len(chunk)))
              for chunk in (image_ids[i:i + _REMOVE_CHUNK] for i in range(0, len(image_ids), _REMOVE_CHUNK))]
    accounts: set[str] = set()
    for chunk, marks in chunks:
        accounts.update(r[0] for r in await tx.execute(f"SELECT account FROM images WHERE id IN ({marks})", chunk))
    for account in sorted(accounts):
        await tx.execute(f"SELECT 1 FROM accounts WHERE name = ?{tx.update_lock}", (account,))
    held: dict[str, list[int]] = {}
    for chunk, marks in chunks:
        await tx.execute(f"DELETE FROM jobs WHERE image_id IN ({marks})", chunk)
        await tx.execute(f"DELETE FROM variants WHERE image_id IN ({marks})", chunk)
        rows = await tx.execute(f"DELETE FROM images WHERE id IN ({marks}) RETURNING account, state, size", chunk)
        for account, state, size in rows:
            if state != DELETED:
                held.setdefault(account, []).append(size)
    for account in sorted(held):
        await _give_back(tx, account, held[account])


# ------------------------------------------------------------- derived files

_VARIANT = Columns(Variant, ("image_id", "variant", "size", "width", "height", "sha256", "created"))


@recoverable
async def claim_job(tx: Tx, claimant: str, now: float, lease_until: float) -> Job | None:
    """Take the most urgent job that is due, or one whose lease ran out (its worker
    died, or hung without renewing), and hold it until ``lease_until``; None when
    there is none.  The claim counts as an attempt at once, so a job that takes
    its process down every time still reaches the attempts cap.  With several
    processes on PostgreSQL, ``FOR UPDATE SKIP LOCKED`` lets each job go to
    exactly one.

    A running row without a lease (claimed before migration 004, or by a process
    of the older version during an upgrade) keeps the old rule: free 120 s after
    its claim."""
    rows = await tx.execute(
        "SELECT image_id FROM jobs WHERE (state = ? AND available_at <= ?)"
        " OR (state = ? AND COALESCE(lease_until, claimed_at + 120) <= ?)"
        f" ORDER BY priority DESC, available_at, image_id LIMIT 1{tx.skip_locked}",
        (PENDING, now, RUNNING, now),
    )
    if not rows:
        return None
    image_id = rows[0][0]
    claimed = await tx.execute(
        "UPDATE jobs SET state = ?, claimed_at = ?, claimed_by = ?, lease_until = ?, "
        "attempts = attempts + 1 WHERE image_id = ? RETURNING attempts, outages",
        (RUNNING, now, claimant, lease_until, image_id),
    )
    counts = named(("attempts", "outages"), claimed[0])
    image_rows = await tx.execute(f"SELECT {_IMAGE} FROM images WHERE id = ?", (image_id,))
    return Job(image=_IMAGE.record(image_rows[0]), claimant=claimant, **counts)


#: The job row while one claim still holds it.  A claim is known by its worker and
#: its attempt number: the loops of one process share a worker id, never an attempt.
_HELD = "image_id = ? AND state = ? AND claimed_by = ? AND attempts = ?"


def _held(job: Job) -> tuple:
    return (job.image.id, RUNNING, job.claimant, job.attempts)


@recoverable
async def renew_lease(tx: Tx, job: Job, lease_until: float) -> bool:
    """Extend a claim's lease to ``lease_until``; False, and the row left as it is,
    when the claim is no longer held (its lease ran out and another worker claimed
    the job, or the job is gone)."""
    rows = await tx.execute(
        f"UPDATE jobs SET lease_until = ? WHERE {_HELD} RETURNING image_id", (lease_until, *_held(job))
    )
    return bool(rows)


@recoverable
async def finish_job(tx: Tx, job: Job, variants: list[Variant]) -> bool:
    """Record an image's derived files and drop its job; False if the image went meanwhile.

    LostClaim, and nothing written, when this claim no longer holds the job: the
    worker that holds it now records its own files."""
    image_id = job.image.id
    if not await tx.execute(f"DELETE FROM jobs WHERE {_HELD} RETURNING image_id", _held(job)):
        raise LostClaim(image_id)
    if not await tx.execute("SELECT 1 FROM images WHERE id = ? AND state = ?", (image_id, LIVE)):
        return False
    await tx.execute("DELETE FROM variants WHERE image_id = ?", (image_id,))
    for v in variants:
        await tx.execute(
            f"INSERT INTO variants ({_VARIANT}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (image_id, v.variant, v.size, v.width, v.height, v.sha256, v.created),
        )
    return True


@recoverable
async def retry_job(tx: Tx, job: Job, available_at: float, outage: bool = False) -> None:
    """Give a job back after a failure; it is due again at ``available_at``.

    ``outage``: storage or the database was unavailable, which says nothing about
    the image, so this attempt does not count against the attempts cap.
    LostClaim, and nothing written, when this claim no longer holds the job."""
    rows = await tx.execute(
        "UPDATE jobs SET state = ?, available_at = ?, claimed_at = NULL, claimed_by = NULL, "
        f"lease_until = NULL, outages = outages + ? WHERE {_HELD} RETURNING image_id",
        (PENDING, available_at, 1 if outage else 0, *_held(job)),
    )
    if not rows:
        raise LostClaim(job.image.id)


async def prioritize_job(tx: Tx, image_id: int) -> bool:
    """Move an image's job to the front of the queue; False if it has none."""
    rows = await tx.execute(
        f"UPDATE jobs SET priority = 1, available_at = {tx.least}(available_at, created) "
        "WHERE image_id = ? RETURNING image_id",
        (image_id,),
    )
    return bool(rows)


async def release_jobs_of(tx: Tx, claimants: list[str]) -> int:
    """Make jobs claimed by workers known to be dead due again at once, without
    waiting for their leases to run out (the attempt still counts)."""
    released = 0
    for claimant in claimants:
        rows = await tx.execute(
            "UPDATE jobs SET state = ?, claimed_at = NULL, claimed_by = NULL, lease_until = NULL "
            "WHERE state = ? AND claimed_by = ? RETURNING image_id",
            (PENDING, RUNNING, claimant),
        )
        released += len(rows)
    return released


@readonly
async def running_claimants(tx: Tx) -> list[str]:
    """The workers holding running jobs."""
    rows = await tx.execute("SELECT DISTINCT claimed_by FROM jobs WHERE state = ?", (RUNNING,))
    return [r[0] for r in rows if r[0]]


@single_read
async def get_variant(tx: Tx, image_id: int, variant: str) -> Variant | None:
    rows = await tx.execute(
        f"SELECT {_VARIANT} FROM variants WHERE image_id = ? AND variant = ?", (image_id, variant)
    )
    return _VARIANT.record(rows[0]) if rows else None


@single_read
async def count_jobs(tx: Tx) -> int:
    """Derived-file jobs waiting or running (the metrics' queue length)."""
    return (await tx.execute("SELECT COUNT(*) FROM jobs"))[0][0]


@single_read
async def has_job(tx: Tx, image_id: int) -> bool:
    return bool(await tx.execute("SELECT 1 FROM jobs WHERE image_id = ?", (image_id,)))


@readonly
async def pending_images(tx: Tx, image_ids: list[int]) -> set[int]:
    """Which of these images still wait for their derived files."""
    if not image_ids:
        return set()
    marks = ", ".join("?" for _ in image_ids)
    rows = await tx.execute(f"SELECT image_id FROM jobs WHERE image_id IN ({marks})", image_ids)
    return {r[0] for r in rows}


# ------------------------------------------------------------- upload grants

_GRANT = Columns(Grant, ("id", "account", "filename", "size_limit", "keep_name", "name", "expire", "created",
                          "expires", "state", "put_attempts", "staged_attempt", "staged_size", "staged_sha256"),
                 flags=("keep_name",))


async def create_grant(
    tx: Tx, grant_id: str, account: str, digest: str, filename: str, size_limit: int, keep_name: bool,
    name: str | None, expire: str | None, now: float, expires: float,
) -> Grant:
    """Record a presigned upload; AccountGone if the account was removed meanwhile."""
    await _lock_account(tx, account)
    rows = await tx.execute(
        "INSERT INTO upload_grants (id, account, completion_digest, filename, size_limit, keep_name, name, "
        f"expire, created, expires, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {_GRANT}",
        (grant_id, account, digest, filename, size_limit, keep_name, name, expire, now, expires, GRANT_OPEN),
    )
    return _GRANT.record(rows[0])


async def begin_grant_put(tx: Tx, grant_id: str, now: float, max_attempts: int) -> int | None:
    """Count one PUT attempt of an open, unexpired grant; its number (each attempt
    stages under its own key, recorded here before any byte reaches storage, so
    the sweep knows every key an attempt may have left).  None when the grant is
    unknown, expired, already staged or out of attempts."""
    rows = await tx.execute(
        "UPDATE upload_grants SET put_attempts = put_attempts + 1 "
        "WHERE id = ? AND state = ? AND expires > ? AND put_attempts < ? RETURNING put_attempts",
        (grant_id, GRANT_OPEN, now, max_attempts),
    )
    return rows[0][0] if rows else None


async def stage_grant(tx: Tx, grant_id: str, attempt: int, size: int, sha256: str, now: float) -> bool:
    """Record that attempt ``attempt`` staged the grant's bytes; False (nothing
    changed) when another attempt staged first or the grant expired or went."""
    rows = await tx.execute(
        "UPDATE upload_grants SET state = ?, staged_attempt = ?, staged_size = ?, staged_sha256 = ? "
        "WHERE id = ? AND state = ? AND expires > ? RETURNING id",
        (GRANT_STAGED, attempt, size, sha256, grant_id, GRANT_OPEN, now),
    )
    return bool(rows)


async def claim_grant(
    tx: Tx, digest: str, account: str, claim: str, now: float, claim_until: float,
) -> tuple[str, Grant | None]:
    """Take the grant with this completion digest for one completion, until
    ``claim_until``.  ``("claimed", grant)``, or the reason it cannot be taken:
    ``missing`` (unknown, expired, or spent), ``other_account``, ``not_staged`` (no
    PUT has brought its bytes yet), ``busy`` (another completion holds it).  A
    claim whose holder died is free again after ``claim_until``; the image commit
    spends the grant only under the claim that took it (``spend_grant``)."""
    rows = await tx.execute(
        f"SELECT {_GRANT}, claim_until FROM upload_grants WHERE completion_digest = ?", (digest,)
    )
    if not rows:
        return "missing", None
    grant, held_until = _GRANT.record(rows[0][:-1]), rows[0][-1]
    if grant.expires <= now or grant.state == GRANT_SPENT:
        return "missing", None
    if grant.account != account:
        return "other_account", None
    if grant.state == GRANT_OPEN:
        return "not_staged", None
    if grant.state == GRANT_COMPLETING and held_until is not None and held_until > now:
        return "busy", None
    taken = await tx.execute(
        f"UPDATE upload_grants SET state = ?, claim = ?, claim_until = ? WHERE id = ? AND expires > ? AND "
        f"(state = ? OR (state = ? AND claim_until <= ?)) RETURNING {_GRANT}",
        (GRANT_COMPLETING, claim, claim_until, grant.id, now, GRANT_STAGED, GRANT_COMPLETING, now),
    )
    if not taken:
        return "busy", None
    return "claimed", _GRANT.record(taken[0])


async def spend_grant(tx: Tx, grant_id: str, claim: str) -> None:
    """The grant is used up (its image is committed in this very transaction, or its
    bytes were refused); NotHeld unless this claim still holds it."""
    rows = await tx.execute(
        "UPDATE upload_grants SET state = ?, claim = NULL, claim_until = NULL "
        "WHERE id = ? AND state = ? AND claim = ? RETURNING id",
        (GRANT_SPENT, grant_id, GRANT_COMPLETING, claim),
    )
    if not rows:
        raise NotHeld(grant_id)


async def release_grant(tx: Tx, grant_id: str, claim: str) -> bool:
    """Give a claimed grant back (its completion failed for a reason that may pass:
    an outage): it is staged again, for the client to retry."""
    rows = await tx.execute(
        "UPDATE upload_grants SET state = ?, claim = NULL, claim_until = NULL "
        "WHERE id = ? AND state = ? AND claim = ? RETURNING id",
        (GRANT_STAGED, grant_id, GRANT_COMPLETING, claim),
    )
    return bool(rows)


@readonly
async def sweepable_grants(tx: Tx, now: float, expired_before: float, limit: int) -> list[Grant]:
    """Grants whose staged objects and row must go: spent ones, and those that expired
    before ``expired_before`` (a grace after their expiry, for a PUT still under
    way) unless a completion's claim still holds them."""
    rows = await tx.execute(
        f"SELECT {_GRANT} FROM upload_grants WHERE state = ? OR (expires <= ? AND "
        "(state <> ? OR claim_until IS NULL OR claim_until <= ?)) ORDER BY expires LIMIT ?",
        (GRANT_SPENT, expired_before, GRANT_COMPLETING, now, limit),
    )
    return [_GRANT.record(r) for r in rows]


async def remove_grant(tx: Tx, grant_id: str) -> None:
    """Drop a grant's row once its staged objects are gone."""
    await tx.execute("DELETE FROM upload_grants WHERE id = ?", (grant_id,))


@single_read
async def get_grant(tx: Tx, grant_id: str) -> Grant | None:
    rows = await tx.execute(f"SELECT {_GRANT} FROM upload_grants WHERE id = ?", (grant_id,))
    return _GRANT.record(rows[0]) if rows else None


# ------------------------------------------------------------------ settings


@single_read
async def get_setting(tx: Tx, key: str) -> str | None:
    rows = await tx.execute("SELECT value FROM settings WHERE key = ?", (key,))
    return rows[0][0] if rows else None


async def setting_or_insert(tx: Tx, key: str, value: str) -> str:
    """The setting ``key``, stored as ``value`` first if it has none (several
    processes racing agree on whichever was inserted first)."""
    await tx.execute(
        "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING", (key, value)
    )
    return (await tx.execute("SELECT value FROM settings WHERE key = ?", (key,)))[0][0]


async def create_first_account(
    tx: Tx, setting: str, code: str, name: str, password_hash: str, now: float, quota_bytes: int | None = None,
) -> Account | None:
    """Use the one-time setup code: create the first (admin) account and void the code.

    None, and nothing changed, unless the code stored under ``setting`` equals
    ``code`` and there is no account yet.
    """
    rows = await tx.execute("SELECT value FROM settings WHERE key = ?", (setting,))
    if not rows or not hmac.compare_digest(rows[0][0].encode(), code.encode("utf-8", "replace")):
        return None
    if (await tx.execute("SELECT COUNT(*) FROM accounts"))[0][0]:
        return None
    if not await tx.execute("DELETE FROM settings WHERE key = ? RETURNING key", (setting,)):
        return None  # a concurrent submission used the code first
    return await create_account(tx, name, password_hash, True, now, quota_bytes)


# ------------------------------------------------------------------ sessions

_SESSION = Columns(Session, ("sessions.digest", "sessions.account", "accounts.is_admin", "sessions.created",
                             "sessions.expires"), flags=("is_admin",))


async def create_session(tx: Tx, digest: str, account: str, now: float, expires: float) -> None:
    await tx.execute(
        "INSERT INTO sessions (digest, account, created, expires) VALUES (?, ?, ?, ?)",
        (digest, account, now, expires),
    )


@readonly
async def find_session(tx: Tx, digest: str, now: float) -> Session | None:
    """The unexpired session with this digest, if its account still exists."""
    rows = await tx.execute(
        f"SELECT {_SESSION} FROM sessions JOIN accounts ON accounts.name = sessions.account "
        "WHERE sessions.digest = ? AND sessions.expires > ?",
        (digest, now),
    )
    return _SESSION.record(rows[0]) if rows else None


async def extend_session(tx: Tx, digest: str, expires: float) -> None:
    await tx.execute("UPDATE sessions SET expires = ? WHERE digest = ?", (expires, digest))


async def delete_session(tx: Tx, digest: str) -> None:
    await tx.execute("DELETE FROM sessions WHERE digest = ?", (digest,))


async def delete_other_sessions(tx: Tx, account: str, keep_digest: str) -> int:
    """End every session of ``account`` but one (after a password change)."""
    rows = await tx.execute(
        "DELETE FROM sessions WHERE account = ? AND digest <> ? RETURNING digest", (account, keep_digest)
    )
    return len(rows)


async def delete_expired_sessions(tx: Tx, now: float) -> int:
    rows = await tx.execute("DELETE FROM sessions WHERE expires <= ? RETURNING digest", (now,))
    return len(rows)


# ------------------------------------------------------- shared limits (009)
#
# Token buckets kept as the time each is full again (``tat``, the generic cell
# rate algorithm): a bucket of ``count`` requests per ``period`` has ``interval =
# period / count`` and ``tolerance = (count - 1) * interval``; a request at ``now``
# is admitted when ``tat <= now + tolerance`` and then pushes ``tat`` to
# ``max(tat, now) + interval``.  A row whose ``tat`` has passed holds a full bucket.
# ``imgshare.ratelimit`` does the same sums in memory.


@one_statement
async def take_token(tx: Tx, key: str, now: float, interval: float, tolerance: float) -> tuple[bool, float]:
    """Take one request from the bucket ``key``, in one statement: (taken, the
    bucket's ``tat`` after it).  A refused request changes nothing."""
    g = tx.greatest
    rows = await tx.execute(
        "INSERT INTO rate_buckets (key, tat, taken) VALUES (?, ?, 1) ON CONFLICT (key) DO UPDATE SET "
        "taken = CASE WHEN rate_buckets.tat <= ? THEN 1 ELSE 0 END, "
        f"tat = CASE WHEN rate_buckets.tat <= ? THEN {g}(rate_buckets.tat, ?) + ? ELSE rate_buckets.tat END "
        "RETURNING taken, tat",
        (key, now + interval, now + tolerance, now + tolerance, now, interval),
    )
    taken, tat = rows[0]
    return bool(taken), tat


async def take_tokens(tx: Tx, buckets: Sequence[tuple[str, float, float]], now: float) -> float:
    """Take one request from each bucket ``(key, interval, tolerance)``, all or
    nothing: 0 when taken, else the seconds until every one of them admits one
    (nothing taken).  The rows stay locked until the transaction ends (an upsert
    locks even a row it creates), so concurrent calls cannot overrun a bucket;
    they lock in key order, so they never deadlock."""
    found = []
    for key, interval, tolerance in sorted(buckets):
        rows = await tx.execute(
            "INSERT INTO rate_buckets (key, tat, taken) VALUES (?, ?, 0) "
            "ON CONFLICT (key) DO UPDATE SET taken = rate_buckets.taken RETURNING tat",
            (key, now),
        )
        found.append((key, max(rows[0][0], now), interval, tolerance))
    wait = max((tat - now - tolerance for _, tat, _, tolerance in found), default=0.0)
    if wait > 0:
        return wait
    for key, tat, interval, _ in found:
        await tx.execute("UPDATE rate_buckets SET tat = ?, taken = 1 WHERE key = ?", (tat + interval, key))
    return 0.0


async def give_back_tokens(tx: Tx, buckets: Sequence[tuple[str, float]]) -> None:
    """Give one request back to each bucket ``(key, interval)`` that exists (a bucket
    pushed below full by it is simply full: ``tat`` in the past)."""
    for key, interval in sorted(buckets):
        await tx.execute("UPDATE rate_buckets SET tat = tat - ? WHERE key = ?", (interval, key))


@one_statement
async def forget_bucket(tx: Tx, key: str) -> None:
    """Refill the bucket ``key`` at once."""
    await tx.execute("DELETE FROM rate_buckets WHERE key = ?", (key,))


@single_read
async def bucket_time(tx: Tx, key: str) -> float | None:
    """The ``tat`` of the bucket ``key``; None without a row (a full bucket)."""
    rows = await tx.execute("SELECT tat FROM rate_buckets WHERE key = ?", (key,))
    return rows[0][0] if rows else None


@single_read
async def known_since(tx: Tx, account: str, address: str) -> float | None:
    """When ``address`` (a client address group) last logged in to ``account``."""
    rows = await tx.execute("SELECT seen FROM login_known WHERE account = ? AND address = ?", (account, address))
    return rows[0][0] if rows else None


async def remember_login(tx: Tx, account: str, address: str, now: float, keep: int) -> None:
    """``address`` logged in to ``account`` at ``now``; only the ``keep`` most recent
    addresses of the account are kept."""
    await tx.execute(
        "INSERT INTO login_known (account, address, seen) VALUES (?, ?, ?) "
        "ON CONFLICT (account, address) DO UPDATE SET seen = excluded.seen",
        (account, address, now),
    )
    await tx.execute(
        "DELETE FROM login_known WHERE account = ? AND address NOT IN "
        "(SELECT address FROM login_known WHERE account = ? ORDER BY seen DESC, address LIMIT ?)",
        (account, account, keep),
    )


async def remember_gather_error(
    tx: Tx, digest: str, expires: float, kind: str, status: int, message: str
) -> None:
    """Keep an img_gather.php failure for the URL whose SHA-256 is ``digest``."""
    await tx.execute(
        "INSERT INTO gather_errors (digest, expires, kind, status, message) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (digest) DO UPDATE SET expires = excluded.expires, kind = excluded.kind, "
        "status = excluded.status, message = excluded.message",
        (digest, expires, kind, status, message),
    )


@single_read
async def find_gather_error(tx: Tx, digest: str, now: float) -> tuple[str, int, str] | None:
    """The failure remembered for ``digest`` and not expired: (kind, status, message)."""
    rows = await tx.execute(
        "SELECT kind, status, message FROM gather_errors WHERE digest = ? AND expires > ?", (digest, now)
    )
    return tuple(rows[0]) if rows else None


async def prune_shared_limits(tx: Tx, now: float, known_before: float) -> int:
    """Drop what holds no information any more: full buckets, logins older than
    ``known_before``, expired gather errors.  Returns the number of rows dropped."""
    dropped = len(await tx.execute("DELETE FROM rate_buckets WHERE tat <= ? RETURNING key", (now,)))
    dropped += len(await tx.execute("DELETE FROM login_known WHERE seen <= ? RETURNING account", (known_before,)))
    dropped += len(await tx.execute("DELETE FROM gather_errors WHERE expires <= ? RETURNING digest", (now,)))
    return dropped
