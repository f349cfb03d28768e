"""The start page and the forms before and around a session: the first-start
setup link, logging in and out, and registration (SPEC section 9).

Mounted for ``/``, ``/setup``, ``/login``, ``/logout`` and ``/register``, and
for every path no other application claims (their 404 page)."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure

from imgshare.accounts import check_account_name, check_new_password
from imgshare.domain import errors, naming
from imgshare.web.errors import set_error_headers
from imgshare.web.http import client_ip, query
from imgshare.web.pages.base import NEXT_PAGES, NOTICES, PageArea, redirect
from imgshare.web.views import LoginBody, NewAccountBody

log = Logger()

SETUP_LINK_USED = "This setup link is not valid, or it was used already. Log in instead."
REGISTRATION_CLOSED = "Registration is closed on this server. Ask its administrator for an account."
REGISTRATION_NOT_YET = ("Registration opens once this server's administrator has set it up: "
                        "the first account comes from the setup link.")


@attrs.define
class AuthPages(PageArea):
    """Routes of the start page, /setup, /login, /logout and /register."""

    app: ClassVar[Klein] = Klein()

    @app.route("/", methods=["GET"])
    async def home(self, request: Any) -> bytes:
        visitor = await self.sessions.visitor(request)
        return redirect(request, "/images" if visitor else "/login")

    # ------------------------------------------------------------ first start

    @app.route("/setup", methods=["GET"])
    async def setup(self, request: Any) -> bytes:
        code = query(request, "code") or ""
        if not await self.accounts.setup_code_valid(code):
            raise errors.NotFound(SETUP_LINK_USED)
        return await self._setup_page(request, code)

    async def _setup_page(self, request: Any, code: str, name: str = "", problem: str | None = None,
                          status: int = 200) -> bytes:
        body = NewAccountBody(
            "/setup", await self.sessions.pre_csrf(request),
            "Choose the name and password of the first account. It will be an administrator, "
            "and this link stops working once it exists.",
            "Create the account", name=name, code=code,
        )
        return await self.page(request, "Set up IMGSHARE", body, None, problem=problem, status=status,
                               narrow=True)

    @app.route("/setup", methods=["POST"])
    async def setup_submit(self, request: Any) -> bytes:
        form = await self.form(request)
        await self.sessions.check_pre_csrf(request, form)
        await self.throttle.check_address(client_ip(request))
        code, name = form.get("code") or "", (form.get("name") or "").strip()
        try:
            check_account_name(name)
            check_new_password(form.get("password") or "", form.get("repeat") or "", name)
        except errors.BadRequest as e:
            if not await self.accounts.setup_code_valid(code):
                raise errors.NotFound("This setup link is not valid, or it was used already.") from None
            return await self._setup_page(request, code, name, e.message, 400)
        account = await self.accounts.create_first(code, name, form.get("password") or "")
        if account is None:
            raise errors.NotFound(SETUP_LINK_USED)
        log.info("first account {name} created through the setup link", name=account.name)
        await self.sessions.begin(request, account.name)
        await self.throttle.remember(account.name, client_ip(request))
        return redirect(request, "/images?done=welcome")

    # ------------------------------------------------------------ logging in

    @app.route("/login", methods=["GET"])
    async def login(self, request: Any) -> bytes:
        if await self.sessions.visitor(request) is not None:
            return redirect(request, "/images")
        return await self._login_page(request, notice=NOTICES.get(query(request, "done")),
                                      next_path=query(request, "next") or "")

    async def _login_page(self, request: Any, name: str = "", next_path: str = "", *,
                          notice: str | None = None, problem: str | None = None, status: int = 200) -> bytes:
        body = LoginBody(
            await self.sessions.pre_csrf(request), name,
            next_path if next_path in NEXT_PAGES else "",
            no_accounts=not await self.accounts.has_accounts(), registration=await self.registration_offered(),
        )
        return await self.page(request, "Log in", body, None, current="/login", notice=notice,
                               problem=problem, status=status, narrow=True)

    @app.route("/login", methods=["POST"])
    async def login_submit(self, request: Any) -> bytes:
        form = await self.form(request)
        await self.sessions.check_pre_csrf(request, form)
        name = (form.get("name") or "").strip().lower()
        next_path = form.get("next") or ""
        try:
            account = await self.check_password(request, name[:64], form.get("password") or "")
        except errors.RateLimited as e:
            set_error_headers(request, e)
            return await self._login_page(request, name, next_path, problem=e.message, status=429)
        if account is None:
            # An unknown name is not logged: it is often a password typed into the wrong field.
            known = naming.is_valid_account_name(name, allow_reserved=True) and await self.accounts.get(name)
            log.info("failed login for {name} from {address}", name=name if known else "an unknown account name",
                     address=client_ip(request))
            return await self._login_page(
                request, name, next_path, problem="Wrong account name or password.", status=400
            )
        await self.sessions.begin(request, account.name)
        return redirect(request, next_path if next_path in NEXT_PAGES else "/images")

    @app.route("/logout", methods=["POST"])
    async def logout(self, request: Any) -> bytes:
        await self.post(request)
        await self.sessions.end(request)
        return redirect(request, "/login?done=logout")

    # ----------------------------------------------------------- registering

    async def _check_registration(self) -> None:
        """NotFound when registration is closed; Forbidden while no account exists yet
        (so that a stranger cannot take a fresh server before its setup link is used)."""
        if not self.registration_open:
            raise errors.NotFound(REGISTRATION_CLOSED)
        if not await self.accounts.has_accounts(cached=True):
            raise errors.Forbidden(REGISTRATION_NOT_YET)

    @app.route("/register", methods=["GET"])
    async def register(self, request: Any) -> bytes:
        await self._check_registration()
        return await self._register_page(request)

    async def _register_page(self, request: Any, name: str = "", problem: str | None = None,
                             status: int = 200) -> bytes:
        body = NewAccountBody("/register", await self.sessions.pre_csrf(request), "",
                              "Create my account", name=name)
        return await self.page(request, "Register", body, None, current="/register", problem=problem,
                               status=status, narrow=True)

    @app.route("/register", methods=["POST"])
    async def register_submit(self, request: Any) -> bytes:
        await self._check_registration()
        form = await self.form(request)
        await self.sessions.check_pre_csrf(request, form)
        await self.throttle.check_address(client_ip(request))
        name, password = (form.get("name") or "").strip(), form.get("password") or ""
        try:
            check_new_password(password, form.get("repeat") or "", name)
            # Atomic with the check that an account exists (a cached answer is not enough).
            account = await self.accounts.register(name, password)
        except errors.ApiError as e:
            if e.status not in (400, 409):
                raise
            return await self._register_page(request, name, e.message, 400)
        if account is None:
            raise errors.Forbidden(REGISTRATION_NOT_YET)
        log.info("account {name} registered", name=account.name)
        await self.sessions.begin(request, account.name)
        await self.throttle.remember(account.name, client_ip(request))
        return redirect(request, "/images?done=welcome")

    @app.handle_errors(Exception)
    async def failed(self, request: Any, failure: Failure) -> bytes:
        return await self.render_failure(request, failure)
