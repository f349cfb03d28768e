"""Browser sessions as the database keeps them (SPEC section 3).

A session is known by a random id that only the browser holds (in a cookie,
see ``imgshare.web.sessions``); the database keeps its SHA-256, its account
and its expiry.  Sessions last ``SESSION_SECONDS`` after the last use
(extended at most once per ``EXTEND_AFTER`` seconds); logout deletes the row
and the expiry service removes expired ones.  The server secret that signs the
forms shown before login is made once and kept in the settings table, so every
process behind a load balancer agrees on it.

No HTTP here: the web layer calls it, it calls the Database.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import attrs

from imgshare import db
from imgshare.domain.records import Session
from imgshare.gateway import run_query

#: A session ends this long after its last use.
SESSION_SECONDS = 7 * 86400
#: A session's expiry is pushed back at most this often (one write per hour of use).
EXTEND_AFTER = 3600
SECRET_SETTING = "page_secret"


def digest(session_id: str) -> str:
    """What the database keeps of a session id."""
    return hashlib.sha256(session_id.encode("ascii")).hexdigest()


@attrs.define
class Sessions:
    """Session rows and the pages' server secret, over an injected database and clock."""

    database: Any  # IDatabase
    clock: Any  # IReactorTime
    _secret: bytes | None = None

    async def _db(self, operation: Any, *args: Any) -> Any:
        return await run_query(self.database, operation, *args)

    async def find(self, session_id: str) -> tuple[Session, bool] | None:
        """The live session with this id and whether its expiry was just pushed back
        (then the cookie should be renewed too), or None."""
        now = self.clock.seconds()
        session = await self._db(db.find_session, digest(session_id), now)
        if session is None:
            return None
        if session.expires - now < SESSION_SECONDS - EXTEND_AFTER:
            await self._db(db.extend_session, session.digest, now + SESSION_SECONDS)
            return session, True
        return session, False

    async def create(self, account: str) -> str:
        """A fresh session for ``account``; return its id (for the cookie)."""
        session_id = secrets.token_urlsafe(32)
        now = self.clock.seconds()
        await self._db(db.create_session, digest(session_id), account, now, now + SESSION_SECONDS)
        return session_id

    async def delete(self, session_id: str) -> None:
        """End the session with this id (if there is one)."""
        await self._db(db.delete_session, digest(session_id))

    async def delete_others(self, session: Session) -> None:
        """End every session of ``session``'s account but this one."""
        await self._db(db.delete_other_sessions, session.account, session.digest)

    async def server_secret(self) -> bytes:
        """The secret signing forms shown before login (made on first use, then shared)."""
        if self._secret is None:
            value = await self._db(db.setting_or_insert, SECRET_SETTING, secrets.token_hex(32))
            self._secret = value.encode("ascii")
        return self._secret
