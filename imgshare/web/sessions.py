"""Browser sessions and CSRF tokens for the pages (SPEC section 3).

A session is a random id in an ``HttpOnly``, ``SameSite=Lax`` cookie
(``Secure`` over TLS or when the public URL is https); the database keeps only
its SHA-256, its account and its expiry.  Sessions last ``SESSION_SECONDS``
after the last use (extended at most once per ``EXTEND_AFTER`` seconds);
logout deletes the row and the expiry service removes expired ones.

Every POST form carries a CSRF token, read from the body only (a token in the
query string counts for nothing: URLs leak into logs, history and Referer):

- with a session, ``HMAC(session id, "csrf")``: bound to the session and
  worthless without its cookie, and nothing to store;
- before login (the login, setup and register forms), a signed double submit:
  a random pre-session cookie, and in the form ``HMAC(server secret, cookie)``.
  The server secret is made once and kept in the settings table, so every
  process behind a load balancer agrees on it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Any

import attrs

from imgshare import db
from imgshare.domain import errors
from imgshare.domain.records import Session
from imgshare.web.forms import Form

SESSION_COOKIE = b"imgshare_session"
PRE_COOKIE = b"imgshare_pre"
#: A session ends this long after its last use.
SESSION_SECONDS = 7 * 86400
#: A session's expiry is pushed back at most this often (one write per hour of use).
EXTEND_AFTER = 3600
SECRET_SETTING = "page_secret"

_COOKIE_RE = re.compile(r"^[A-Za-z0-9_-]{20,64}$")
_VISITOR_KEY = "imgshare_visitor"


@attrs.frozen
class Visitor:
    """A logged-in browser: who it is and the CSRF token its forms must carry."""

    account: str
    is_admin: bool
    csrf: str
    session: Session


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("ascii")).hexdigest()


def _csrf_for(session_id: str) -> str:
    return hmac.new(session_id.encode("ascii"), b"imgshare csrf", hashlib.sha256).hexdigest()


def _cookie(request: Any, name: bytes) -> str | None:
    value = request.getCookie(name)
    if not value:
        return None
    text = value.decode("latin-1")
    return text if _COOKIE_RE.match(text) else None


class CsrfRejected(errors.Forbidden):
    """A POST without the right CSRF token (403)."""


@attrs.define
class Sessions:
    """Session cookies and rows, and CSRF tokens, over an injected database and clock."""

    database: Any  # IDatabase
    clock: Any  # IReactorTime
    public_url: str
    _secret: bytes | None = None

    def _secure(self, request: Any) -> bool:
        return bool(request.isSecure()) or self.public_url.startswith("https://")

    def _set_cookie(self, request: Any, name: bytes, value: str, max_age: int | None) -> None:
        request.addCookie(
            name, value.encode("ascii"), path=b"/", httpOnly=True, sameSite="lax",
            secure=self._secure(request), max_age=None if max_age is None else str(max_age),
        )

    async def _db(self, operation: Any, *args: Any) -> Any:
        try:
            return await self.database.run(operation, *args)
        except db.DatabaseUnavailable as e:
            raise errors.Unavailable("the database is unavailable") from e

    # --------------------------------------------------------------- sessions

    async def visitor(self, request: Any) -> Visitor | None:
        """The logged-in visitor making ``request``, or None.  Only the session cookie
        counts: API tokens never open the pages."""
        if hasattr(request, _VISITOR_KEY):
            return getattr(request, _VISITOR_KEY)
        found = None
        session_id = _cookie(request, SESSION_COOKIE)
        if session_id is not None:
            now = self.clock.seconds()
            session = await self._db(db.find_session, _digest(session_id), now)
            if session is not None:
                if session.expires - now < SESSION_SECONDS - EXTEND_AFTER:
                    await self._db(db.extend_session, session.digest, now + SESSION_SECONDS)
                    self._set_cookie(request, SESSION_COOKIE, session_id, SESSION_SECONDS)
                found = Visitor(session.account, session.is_admin, _csrf_for(session_id), session)
        setattr(request, _VISITOR_KEY, found)
        return found

    @staticmethod
    def known_visitor(request: Any) -> Visitor | None:
        """The visitor already looked up for ``request`` (no database round trip)."""
        return getattr(request, _VISITOR_KEY, None)

    async def account_of(self, request: Any) -> str | None:
        """The account whose session makes ``request`` (for the private thumbnails)."""
        visitor = await self.visitor(request)
        return None if visitor is None else visitor.account

    async def begin(self, request: Any, account: str) -> None:
        """Log ``account`` in: a fresh session id (never one the browser brought)."""
        await self.end(request)
        session_id = secrets.token_urlsafe(32)
        now = self.clock.seconds()
        await self._db(db.create_session, _digest(session_id), account, now, now + SESSION_SECONDS)
        self._set_cookie(request, SESSION_COOKIE, session_id, SESSION_SECONDS)

    async def end(self, request: Any) -> None:
        """Log out: the session row goes and the cookie is cleared."""
        session_id = _cookie(request, SESSION_COOKIE)
        if session_id is not None:
            await self._db(db.delete_session, _digest(session_id))
            self._set_cookie(request, SESSION_COOKIE, "", 0)
        if hasattr(request, _VISITOR_KEY):
            delattr(request, _VISITOR_KEY)

    async def end_others(self, visitor: Visitor) -> None:
        """End every other session of the visitor's account (after a password change)."""
        await self._db(db.delete_other_sessions, visitor.account, visitor.session.digest)

    @staticmethod
    def check_csrf(visitor: Visitor, form: Form) -> None:
        """CsrfRejected unless the form's body carries the visitor's CSRF token."""
        submitted = form.get_from_body("csrf")
        if not submitted or not hmac.compare_digest(submitted.encode(), visitor.csrf.encode()):
            raise CsrfRejected("This form has expired. Reload the page and try again.")

    # ------------------------------------------------------- before logging in

    async def _server_secret(self) -> bytes:
        if self._secret is None:
            value = await self._db(db.setting_or_insert, SECRET_SETTING, secrets.token_hex(32))
            self._secret = value.encode("ascii")
        return self._secret

    async def pre_csrf(self, request: Any) -> str:
        """The CSRF token for a form shown before login (the pre-session cookie is set
        when the browser has none)."""
        value = _cookie(request, PRE_COOKIE)
        if value is None:
            value = secrets.token_urlsafe(24)
            self._set_cookie(request, PRE_COOKIE, value, None)
        secret = await self._server_secret()
        return hmac.new(secret, b"pre " + value.encode("ascii"), hashlib.sha256).hexdigest()

    async def check_pre_csrf(self, request: Any, form: Form) -> None:
        """CsrfRejected unless the form's body carries the signature of the browser's
        pre-session cookie."""
        submitted = form.get_from_body("csrf")
        value = _cookie(request, PRE_COOKIE)
        if value is None or not submitted:
            raise CsrfRejected(
                "This form has expired, or your browser refuses cookies. Reload the page and try again."
            )
        secret = await self._server_secret()
        expected = hmac.new(secret, b"pre " + value.encode("ascii"), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(submitted.encode(), expected.encode()):
            raise CsrfRejected("This form has expired. Reload the page and try again.")
