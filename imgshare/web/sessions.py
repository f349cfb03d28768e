"""Session cookies and CSRF tokens for the pages (SPEC section 3): the HTTP side
of ``imgshare.sessions``.

A session's id travels in an ``HttpOnly``, ``SameSite=Lax`` cookie (``Secure``
over TLS or when the public URL is https); ``imgshare.sessions.Sessions`` keeps
the rows.

Every POST form carries a CSRF token, read from the body only (a token in the
query string counts for nothing: URLs leak into logs, history and Referer):

- with a session, ``HMAC(session id, "csrf")``: bound to the session and
  worthless without its cookie, and nothing to store;
- before login (the login, setup and register forms), a signed double submit:
  a random pre-session cookie, and in the form ``HMAC(server secret, cookie)``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Any

import attrs

from imgshare.domain import errors
from imgshare.domain.records import Session
from imgshare.sessions import SESSION_SECONDS, Sessions
from imgshare.web.forms import Form
from imgshare.web.http import set_account

SESSION_COOKIE = b"imgshare_session"
PRE_COOKIE = b"imgshare_pre"

_COOKIE_RE = re.compile(r"^[A-Za-z0-9_-]{20,64}$")
_VISITOR_KEY = "imgshare_visitor"


@attrs.frozen
class Visitor:
    """A logged-in browser: who it is and the CSRF token its forms must carry."""

    account: str
    is_admin: bool
    csrf: str
    session: Session


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
class SessionCookies:
    """Session cookies and CSRF tokens over the session service."""

    sessions: Sessions
    public_url: str

    def _secure(self, request: Any) -> bool:
        return bool(request.isSecure()) or self.public_url.startswith("https://")

    def _set_cookie(self, request: Any, name: bytes, value: str, max_age: int | None) -> None:
        request.addCookie(
            name, value.encode("ascii"), path=b"/", httpOnly=True, sameSite="lax",
            secure=self._secure(request), max_age=None if max_age is None else str(max_age),
        )

    # --------------------------------------------------------------- sessions

    async def visitor(self, request: Any) -> Visitor | None:
        """The logged-in visitor making ``request``, or None.  Only the session cookie
        counts: API tokens never open the pages."""
        if hasattr(request, _VISITOR_KEY):
            return getattr(request, _VISITOR_KEY)
        found = None
        session_id = _cookie(request, SESSION_COOKIE)
        if session_id is not None:
            live = await self.sessions.find(session_id)
            if live is not None:
                session, extended = live
                if extended:
                    self._set_cookie(request, SESSION_COOKIE, session_id, SESSION_SECONDS)
                found = Visitor(session.account, session.is_admin, _csrf_for(session_id), session)
                set_account(request, session.account)
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
        session_id = await self.sessions.create(account)
        set_account(request, account)
        self._set_cookie(request, SESSION_COOKIE, session_id, SESSION_SECONDS)

    async def end(self, request: Any) -> None:
        """Log out: the session row goes and the cookie is cleared."""
        session_id = _cookie(request, SESSION_COOKIE)
        if session_id is not None:
            await self.sessions.delete(session_id)
            self._set_cookie(request, SESSION_COOKIE, "", 0)
        if hasattr(request, _VISITOR_KEY):
            delattr(request, _VISITOR_KEY)

    async def end_others(self, visitor: Visitor) -> None:
        """End every other session of the visitor's account (after a password change)."""
        await self.sessions.delete_others(visitor.session)

    @staticmethod
    def check_csrf(visitor: Visitor, form: Form) -> None:
        """CsrfRejected unless the form's body carries the visitor's CSRF token."""
        submitted = form.get_from_body("csrf")
        if not submitted or not hmac.compare_digest(submitted.encode(), visitor.csrf.encode()):
            raise CsrfRejected("This form has expired. Reload the page and try again.")

    # ------------------------------------------------------- before logging in

    async def pre_csrf(self, request: Any) -> str:
        """The CSRF token for a form shown before login (the pre-session cookie is set
        when the browser has none)."""
        value = _cookie(request, PRE_COOKIE)
        if value is None:
            value = secrets.token_urlsafe(24)
            self._set_cookie(request, PRE_COOKIE, value, None)
        secret = await self.sessions.server_secret()
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
        secret = await self.sessions.server_secret()
        expected = hmac.new(secret, b"pre " + value.encode("ascii"), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(submitted.encode(), expected.encode()):
            raise CsrfRejected("This form has expired. Reload the page and try again.")
