"""What every area of the browser pages shares: its collaborators, form parsing,
the visitor and the CSRF check, page rendering, and the error pages.

Each area (``auth``, ``images``, ``tokens``, ``account``, ``static``) is a
``PageArea`` with a Klein app of its own, mounted by ``imgshare.web.root`` on
its first path segment; its routes name the methods they answer (``methods=``)
and its unknown paths and wrong methods come here, to ``render_failure``.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import attrs
from twisted.python.failure import Failure
from twisted.web.template import tags

from imgshare.accounts import Accounts
from imgshare.domain import errors, output
from imgshare.domain.records import Account
from imgshare.library import ImageLibrary
from imgshare.ratelimit import LoginThrottle
from imgshare.web.errors import describe_failure, routing_error
from imgshare.web.forms import Form, read_form
from imgshare.web.http import client_ip, header
from imgshare.web.sessions import SessionCookies, Visitor
from imgshare.web.views import Layout, MessageBody, render, set_page_headers

#: Where ``next`` may send a browser after logging in.
NEXT_PAGES = ("/images", "/tokens", "/account")

NOTICES: dict[str, Any] = {
    "welcome": ["Welcome! Upload images below, or create an API token for scripts and ShareX on the ",
                tags.a("Tokens page", href="/tokens"), "."],
    "deleted": "The image was deleted. Every version of it stopped working.",
    "token-deleted": "The token was deleted. Scripts using it stopped working.",
    "password": "Your password was changed. Your other browsers were logged out.",
    "account-created": "The account was created.",
    "account-removed": "The account was removed. Its images are being deleted.",
    "password-reset": "The new password is set. That account's browsers were logged out; its tokens still work.",
    "admin-on": "The account is now an administrator.",
    "admin-off": "The account is now a plain user.",
    "quota": "The quota is set. Uploads past it are refused; what the account holds already stays.",
    "logout": "You are logged out.",
    "location-strip": "Saved: uploads now remove location (GPS) metadata unless told otherwise.",
    "location-keep": "Saved: uploads now keep location (GPS) metadata unless told otherwise.",
}

STATUS_TITLES = {
    400: "Something is not right", 401: "Please log in", 403: "Not allowed", 404: "Not found",
    405: "Not allowed", 409: "Already taken", 413: "Too large", 415: "Not an image we take",
    429: "Too many attempts", 503: "Please try again shortly",
}


class LoginRequired(errors.ApiError):
    """A page that needs a session, asked for without one (a redirect to /login)."""

    status = 401


def wants_json(request: Any) -> bool:
    """Whether the page's script asked for JSON (``Accept: application/json``)."""
    return "application/json" in (header(request, b"accept") or "")


def redirect(request: Any, location: str) -> bytes:
    """303 See Other to a path on this site."""
    set_page_headers(request)
    request.setResponseCode(303)
    request.setHeader(b"Location", location.encode("ascii"))
    return b""


def json_response(request: Any, status: int, data: dict) -> bytes:
    """``data`` as JSON, for the pages' scripts."""
    set_page_headers(request)
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps(data).encode() + b"\n"


def sentence(message: str) -> str:
    """A message from the library as a sentence: capital first letter, final full stop."""
    message = message.strip()
    if not message:
        return message
    message = message[0].upper() + message[1:]
    return message if message[-1] in ".!?" else message + "."


@attrs.define
class PageArea:
    """One area of the browser pages over its injected collaborators."""

    library: ImageLibrary
    io: Any  # Runner: form parsing
    accounts: Accounts
    sessions: SessionCookies
    throttle: LoginThrottle

    @property
    def config(self) -> Any:
        return self.library.config

    @property
    def registration_open(self) -> bool:
        """``--registration open``; even then nobody registers before the first account exists."""
        return self.config.registration == "open"

    async def registration_offered(self) -> bool:
        """Whether the pages offer registration: open, and the first account (an admin) exists."""
        if not self.registration_open:
            return False
        try:
            return await self.accounts.has_accounts(cached=True)
        except errors.Unavailable:
            return False  # an error page during an outage offers nothing

    async def visitor(self, request: Any) -> Visitor:
        """The logged-in visitor, or LoginRequired (a redirect to the login page)."""
        visitor = await self.sessions.visitor(request)
        if visitor is None:
            raise LoginRequired("Please log in.")
        return visitor

    async def form(self, request: Any, max_files: int = 0) -> Form:
        """The request's form, parsed off the reactor."""
        return await read_form(
            request, self.io, self.config.spool_dir, self.config.max_size, max_files=max_files
        )

    async def post(self, request: Any) -> tuple[Visitor, Form]:
        """A logged-in POST: the visitor, then the form, whose CSRF token must match."""
        visitor = await self.visitor(request)
        form = await self.form(request)
        self.sessions.check_csrf(visitor, form)
        return visitor, form

    async def page(
        self, request: Any, title: str, body: Any, visitor: Visitor | None, *, current: str = "",
        notice: Any = None, problem: str | None = None, status: int = 200, narrow: bool = False,
        meta: Any = (),
    ) -> bytes:
        """``body`` in the site's layout, rendered with ``status``; ``meta`` are extra
        ``<meta>`` tags (attribute, key, content)."""
        page = Layout(title, body, visitor, current=current, notice=notice, problem=problem,
                      registration=await self.registration_offered(), narrow=narrow, meta=meta)
        return await render(request, page, status)

    async def check_password(self, request: Any, name: str, password: str, *,
                             session: bool = False) -> Account | None:
        """``Accounts.verify`` under the login throttle: RateLimited (429) before any
        scrypt work when a limit bites; only a wrong password spends."""
        attempt = await self.throttle.begin(name, client_ip(request), session=session)
        try:
            account = await self.accounts.verify(name, password)
        except BaseException:
            await attempt.abandoned()
            raise
        if account is None:
            attempt.failed()
        else:
            await attempt.succeeded()
        return account

    async def render_failure(self, request: Any, failure: Failure) -> bytes:
        """The answer to any error: a redirect to log in, JSON for the pages' scripts,
        else an HTML page; status, message and headers from ``web.errors``."""
        error = routing_error(failure.value)
        if isinstance(error, LoginRequired):
            if wants_json(request):
                return json_response(request, 401, output.error_body("your session has ended: log in again"))
            path = request.path.decode("latin-1")
            return redirect(request, "/login?" + urlencode({"next": path}) if path in NEXT_PAGES else "/login")
        if error is not failure.value:
            failure = Failure(error)
        status, message = describe_failure(
            request, failure,
            lambda e: "There is no page at this address." if e.code == 404 else "That does not work here.",
            "Something went wrong on the server. Please try again.",
        )
        if wants_json(request):
            return json_response(request, status, output.error_body(message))
        visitor = self.sessions.known_visitor(request)
        body = MessageBody(sentence(message), "/images" if visitor else "/",
                           "Back to your images" if visitor else "Go to the start page")
        title = STATUS_TITLES.get(status, "Something went wrong")
        return await self.page(request, title, body, visitor, status=status, narrow=True)
