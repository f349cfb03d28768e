"""The browser pages (SPEC section 9): setup, login, logout, register, images,
tokens and account, plus their CSS and JavaScript under ``/static/``.

Every page works without JavaScript.  Only a session cookie opens them (API
tokens never do); every POST carries a CSRF token; destructive actions ask
for confirmation on a page of their own unless the form says ``confirm=1``
(the JavaScript adds it after a ``confirm()`` dialog).  Uploads go through
``ImageLibrary.upload`` exactly as the API's do.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar
from urllib.parse import urlencode

import attrs
from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.template import tags

from imgshare import auth
from imgshare.accounts import Accounts, check_account_name, check_new_password
from imgshare.domain import errors, output, sharex, words
from imgshare.domain.records import Account, Image
from imgshare.library import ImageLibrary
from imgshare.ratelimit import LoginThrottle
from imgshare.web.errors import describe_failure, require_method, set_error_headers
from imgshare.web.forms import Form, read_form
from imgshare.web.http import client_ip, header, query
from imgshare.web.sessions import SessionCookies, Visitor
from imgshare.web.views import (
    AccountBody,
    AccountView,
    Choice,
    ConfirmBody,
    FreshToken,
    ImagesBody,
    ImageView,
    Layout,
    LoginBody,
    MessageBody,
    NewAccountBody,
    TokensBody,
    TokenView,
    UploadedBody,
    UploadResult,
    render,
    set_page_headers,
    static_files,
)

log = Logger()

#: Images per page of the gallery.
PAGE_SIZE = 24
#: Files one upload form may carry (the body limit applies to them together).
MAX_FORM_FILES = 50
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
    "logout": "You are logged out.",
}

UPLOAD_LIFETIMES = (
    ("", "Longest allowed for its size"), ("1h", "1 hour"), ("1d", "1 day"), ("7d", "7 days"),
    ("30d", "30 days"), ("90d", "90 days"), ("365d", "1 year"),
)
TOKEN_LIFETIMES = (
    ("never", "Never"), ("1h", "In 1 hour"), ("1d", "In 1 day"), ("7d", "In 7 days"),
    ("30d", "In 30 days"), ("90d", "In 90 days"), ("365d", "In 1 year"),
)
VERSION_LABELS = (("original", "Original"), ("xga", "XGA"), ("vga", "VGA"), ("qvga", "QVGA"))

STATUS_TITLES = {
    400: "Something is not right", 401: "Please log in", 403: "Not allowed", 404: "Not found",
    405: "Not allowed", 409: "Already taken", 413: "Too large", 415: "Not an image we take",
    429: "Too many attempts", 503: "Please try again shortly",
}


class LoginRequired(errors.ApiError):
    """A page that needs a session, asked for without one (a redirect to /login)."""

    status = 401


def _wants_json(request: Any) -> bool:
    return "application/json" in (header(request, b"accept") or "")


def _redirect(request: Any, location: str) -> bytes:
    """303 See Other to a path on this site."""
    set_page_headers(request)
    request.setResponseCode(303)
    request.setHeader(b"Location", location.encode("ascii"))
    return b""


def _json(request: Any, status: int, data: dict) -> bytes:
    set_page_headers(request)
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps(data).encode() + b"\n"


def _when(ts: float) -> str:
    return output.iso_time(ts)


@attrs.define
class Pages:
    """Routes of the browser pages; mounted by ``imgshare.web.root``."""

    library: ImageLibrary
    io: Any  # Worker: form parsing
    accounts: Accounts
    sessions: SessionCookies
    throttle: LoginThrottle

    app: ClassVar[Klein] = Klein()

    @property
    def config(self) -> Any:
        return self.library.config

    @property
    def registration_open(self) -> bool:
        return self.config.registration == "open"

    # ---------------------------------------------------------------- helpers

    async def _visitor(self, request: Any) -> Visitor:
        visitor = await self.sessions.visitor(request)
        if visitor is None:
            raise LoginRequired("Please log in.")
        return visitor

    async def _form(self, request: Any, max_files: int = 0) -> Form:
        return await read_form(
            request, self.io, self.config.spool_dir, self.config.max_size, max_files=max_files
        )

    async def _post(self, request: Any) -> tuple[Visitor, Form]:
        """A logged-in POST: the visitor, then the form, whose CSRF token must match."""
        visitor = await self._visitor(request)
        form = await self._form(request)
        self.sessions.check_csrf(visitor, form)
        return visitor, form

    async def _page(
        self, request: Any, title: str, body: Any, visitor: Visitor | None, *, current: str = "",
        notice: Any = None, problem: str | None = None, status: int = 200, narrow: bool = False,
    ) -> bytes:
        page = Layout(title, body, visitor, current=current, notice=notice, problem=problem,
                      registration=self.registration_open, narrow=narrow)
        return await render(request, page, status)

    async def _check_password(self, request: Any, name: str, password: str, *,
                              session: bool = False) -> Account | None:
        """``Accounts.verify`` under the login throttle: RateLimited (429) before any
        scrypt work when a limit bites; only a wrong password spends."""
        attempt = self.throttle.begin(name, client_ip(request), session=session)
        try:
            account = await self.accounts.verify(name, password)
        except BaseException:
            attempt.abandoned()
            raise
        if account is None:
            attempt.failed()
        else:
            attempt.succeeded()
        return account

    # ------------------------------------------------------------- start page

    @app.route("/")
    async def home(self, request: Any) -> bytes:
        require_method(request, b"GET", b"HEAD")
        visitor = await self.sessions.visitor(request)
        return _redirect(request, "/images" if visitor else "/login")

    @app.route("/static/<name>")
    def static(self, request: Any, name: str) -> bytes:
        require_method(request, b"GET", b"HEAD")
        found = static_files().get(name)
        if found is None:
            raise errors.NotFound("No such file.")
        request.setHeader(b"Content-Type", found.mime.encode())
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        request.setHeader(b"Cache-Control", b"public, max-age=86400")
        request.setHeader(b"ETag", f'"{found.etag}"'.encode())
        if header(request, b"if-none-match") == f'"{found.etag}"':
            request.setResponseCode(304)
            return b""
        request.setHeader(b"Content-Length", str(len(found.data)).encode())
        return b"" if request.method == b"HEAD" else found.data

    # ------------------------------------------------------------ first start

    @app.route("/setup")
    async def setup(self, request: Any) -> bytes:
        if request.method == b"POST":
            return await self.setup_submit(request)
        require_method(request, b"GET", b"HEAD", b"POST")
        code = query(request, "code") or ""
        if not await self.accounts.setup_code_valid(code):
            raise errors.NotFound("This setup link is not valid, or it was used already. Log in instead.")
        return await self._setup_page(request, code)

    async def _setup_page(self, request: Any, code: str, name: str = "", problem: str | None = None,
                          status: int = 200) -> bytes:
        body = NewAccountBody(
            "/setup", await self.sessions.pre_csrf(request),
            "Choose the name and password of the first account. It will be an administrator, "
            "and this link stops working once it exists.",
            "Create the account", name=name, code=code,
        )
        return await self._page(request, "Set up IMGSHARE", body, None, problem=problem, status=status,
                                narrow=True)

    async def setup_submit(self, request: Any) -> bytes:
        form = await self._form(request)
        await self.sessions.check_pre_csrf(request, form)
        self.throttle.check_address(client_ip(request))
        code, name = form.get("code") or "", (form.get("name") or "").strip()
        try:
            check_account_name(name)
            check_new_password(form.get("password") or "", form.get("repeat") or "")
        except errors.BadRequest as e:
            if not await self.accounts.setup_code_valid(code):
                raise errors.NotFound("This setup link is not valid, or it was used already.") from None
            return await self._setup_page(request, code, name, e.message, 400)
        account = await self.accounts.create_first(code, name, form.get("password") or "")
        if account is None:
            raise errors.NotFound("This setup link is not valid, or it was used already. Log in instead.")
        log.info("first account {name} created through the setup link", name=account.name)
        await self.sessions.begin(request, account.name)
        self.throttle.remember(account.name, client_ip(request))
        return _redirect(request, "/images?done=welcome")

    # ------------------------------------------------------------ logging in

    @app.route("/login")
    async def login(self, request: Any) -> bytes:
        if request.method == b"POST":
            return await self.login_submit(request)
        require_method(request, b"GET", b"HEAD", b"POST")
        if await self.sessions.visitor(request) is not None:
            return _redirect(request, "/images")
        return await self._login_page(request, notice=NOTICES.get(query(request, "done")),
                                      next_path=query(request, "next") or "")

    async def _login_page(self, request: Any, name: str = "", next_path: str = "", *,
                          notice: str | None = None, problem: str | None = None, status: int = 200) -> bytes:
        body = LoginBody(
            await self.sessions.pre_csrf(request), name,
            next_path if next_path in NEXT_PAGES else "",
            no_accounts=not await self.accounts.has_accounts(), registration=self.registration_open,
        )
        return await self._page(request, "Log in", body, None, current="/login", notice=notice,
                                problem=problem, status=status, narrow=True)

    async def login_submit(self, request: Any) -> bytes:
        form = await self._form(request)
        await self.sessions.check_pre_csrf(request, form)
        name = (form.get("name") or "").strip().lower()
        next_path = form.get("next") or ""
        try:
            account = await self._check_password(request, name[:64], form.get("password") or "")
        except errors.RateLimited as e:
            set_error_headers(request, e)
            return await self._login_page(request, name, next_path, problem=e.message, status=429)
        if account is None:
            log.info("failed login for {name!r} from {address}", name=name[:64], address=client_ip(request))
            return await self._login_page(
                request, name, next_path, problem="Wrong account name or password.", status=400
            )
        await self.sessions.begin(request, account.name)
        return _redirect(request, next_path if next_path in NEXT_PAGES else "/images")

    @app.route("/logout")
    async def logout(self, request: Any) -> bytes:
        require_method(request, b"POST")
        await self._post(request)
        await self.sessions.end(request)
        return _redirect(request, "/login?done=logout")

    @app.route("/register")
    async def register(self, request: Any) -> bytes:
        if request.method == b"POST":
            return await self.register_submit(request)
        require_method(request, b"GET", b"HEAD", b"POST")
        if not self.registration_open:
            raise errors.NotFound("Registration is closed on this server. Ask its administrator for an account.")
        return await self._register_page(request)

    async def _register_page(self, request: Any, name: str = "", problem: str | None = None,
                             status: int = 200) -> bytes:
        body = NewAccountBody("/register", await self.sessions.pre_csrf(request), "",
                              "Create my account", name=name)
        return await self._page(request, "Register", body, None, current="/register", problem=problem,
                                status=status, narrow=True)

    async def register_submit(self, request: Any) -> bytes:
        if not self.registration_open:
            raise errors.NotFound("Registration is closed on this server. Ask its administrator for an account.")
        form = await self._form(request)
        await self.sessions.check_pre_csrf(request, form)
        self.throttle.check_address(client_ip(request))
        name, password = (form.get("name") or "").strip(), form.get("password") or ""
        try:
            check_new_password(password, form.get("repeat") or "")
            account = await self.accounts.create(name, password, is_admin=False)
        except errors.ApiError as e:
            if e.status not in (400, 409):
                raise
            return await self._register_page(request, name, e.message, 400)
        log.info("account {name} registered", name=account.name)
        await self.sessions.begin(request, account.name)
        self.throttle.remember(account.name, client_ip(request))
        return _redirect(request, "/images?done=welcome")

    # ---------------------------------------------------------------- images

    @app.route("/images")
    async def images(self, request: Any) -> bytes:
        require_method(request, b"GET", b"HEAD")
        visitor = await self._visitor(request)
        try:
            page = min(max(1, int(query(request, "page") or "1")), 100_000)
        except ValueError:
            page = 1
        now = self.library.now()
        found = await self.library.account_images(visitor.account, (page - 1) * PAGE_SIZE, PAGE_SIZE + 1)
        shown: list[Image] = found[:PAGE_SIZE]
        pending = await self.library.pending_derivations([i.id for i in shown])
        body = ImagesBody(
            visitor.csrf, [self._image_view(i, i.id in pending, now) for i in shown],
            self._upload_lifetimes(), words.tiers_in_words(self.config.tiers),
            self.config.max_size, page,
            newer=(f"/images?page={page - 1}" if page > 2 else "/images") if page > 1 else None,
            older=f"/images?page={page + 1}" if len(found) > PAGE_SIZE else None,
        )
        return await self._page(request, "Images", body, visitor, current="/images",
                                notice=NOTICES.get(query(request, "done")))

    def _upload_lifetimes(self) -> list[Choice]:
        choices = [Choice(value, label) for value, label in UPLOAD_LIFETIMES]
        permanent = [t.max_size for t in self.config.tiers if t.permanent]
        if permanent:
            choices.append(Choice("never", f"Forever (files up to {words.size_in_words(max(permanent))})"))
        return choices

    def _image_view(self, image: Image, pending: bool, now: float) -> ImageView:
        urls = output.image_urls(self.config.public_url, image.account, image.name)
        return ImageView(
            name=image.name, thumb=f"/thumb/{image.account}/{image.stem}.jpg", original=urls["original"],
            versions=tuple((label, urls[key]) for key, label in VERSION_LABELS),
            type=image.mime.split("/")[-1].upper(), dimensions=f"{image.width} × {image.height}",
            size=words.size_in_words(image.size), uploaded=words.since_in_words(image.uploaded, now),
            uploaded_iso=_when(image.uploaded), expires=words.until_in_words(image.expires, now),
            expires_iso="" if image.expires is None else _when(image.expires), pending=pending,
        )

    @app.route("/images/upload")
    async def upload(self, request: Any) -> bytes:
        require_method(request, b"POST")
        visitor = await self._visitor(request)
        form = await self._form(request, max_files=MAX_FORM_FILES)
        try:
            self.sessions.check_csrf(visitor, form)
            chosen = [f for f in form.files if f.filename or f.size]
            if not chosen:
                raise errors.BadRequest("Choose at least one image to upload.")
            keep_name = output.is_true(form.get("keep_name"))
            results = []
            status = 200
            for uploaded in chosen:
                try:
                    image = await self.library.upload(
                        visitor.account, uploaded.path, uploaded.filename, keep_name=keep_name,
                        expire=form.get("expire") or None,
                    )
                except errors.ApiError as e:
                    if status == 200:
                        status = e.status
                    results.append(UploadResult(uploaded.filename, False, _sentence(e.message)))
                    continue
                url = output.image_urls(self.config.public_url, image.account, image.name)["original"]
                results.append(UploadResult(uploaded.filename, True, "stored as", image.name, url))
        finally:
            form.discard()
        if _wants_json(request):
            return _json(request, status, {
                "status": "ok" if status == 200 else "error",
                "error": next((r.message for r in results if not r.ok), None),
                "results": [
                    {"file": r.client, "ok": r.ok, "name": r.name or None, "url": r.url or None,
                     "error": None if r.ok else r.message}
                    for r in results
                ],
            })
        stored = sum(r.ok for r in results)
        title = f"Uploaded {stored} of {len(results)}" if stored < len(results) else (
            "Uploaded" if stored == 1 else f"Uploaded {stored} images")
        return await self._page(request, title, UploadedBody(results), visitor, current="/images",
                                status=status)

    @app.route("/images/delete")
    async def delete(self, request: Any) -> bytes:
        require_method(request, b"POST")
        visitor, form = await self._post(request)
        name = (form.get("name") or "").strip()
        image = await self.library.served_image(visitor.account, name)
        if image is None:
            raise errors.NotFound("You have no image of that name (it may be deleted already).")
        if form.get("confirm") != "1":
            body = ConfirmBody(
                f"Delete {image.name}? Its address and every resized copy stop working at once.",
                "/images/delete", {"name": image.name}, visitor.csrf, "Delete", "/images",
                thumb=f"/thumb/{image.account}/{image.stem}.jpg",
            )
            return await self._page(request, "Delete this image?", body, visitor, current="/images",
                                    narrow=True)
        await self.library.delete(visitor.account, image.name)
        return _redirect(request, "/images?done=deleted")

    # ---------------------------------------------------------------- tokens

    @app.route("/tokens")
    async def tokens(self, request: Any) -> bytes:
        if request.method == b"POST":
            return await self.create_token(request)
        require_method(request, b"GET", b"HEAD", b"POST")
        visitor = await self._visitor(request)
        return await self._tokens_page(request, visitor, notice=NOTICES.get(query(request, "done")))

    async def _tokens_page(self, request: Any, visitor: Visitor, *, fresh: FreshToken | None = None,
                           notice: str | None = None, problem: str | None = None, status: int = 200,
                           label: str = "", choice: str = "never", custom: str = "") -> bytes:
        now = self.library.now()
        views = [
            TokenView(
                id=t.id, label=t.label, created=words.since_in_words(t.created, now),
                created_iso=_when(t.created), expires=words.until_in_words(t.expires, now),
                expires_iso="" if t.expires is None else _when(t.expires),
                last_used=words.since_in_words(t.last_used, now),
            )
            for t in await self.accounts.tokens(visitor.account)
        ]
        lifetimes = [Choice(v, label_, v == choice) for v, label_ in TOKEN_LIFETIMES]
        body = TokensBody(visitor.csrf, views, lifetimes, fresh, label=label, custom=custom)
        return await self._page(request, "API tokens", body, visitor, current="/tokens", notice=notice,
                                problem=problem, status=status)

    async def create_token(self, request: Any) -> bytes:
        visitor, form = await self._post(request)
        label = form.get("label") or ""
        choice = form.get("expires") or "never"
        custom = (form.get("expires_custom") or "").strip()
        try:
            secret, token = await self.accounts.create_token(visitor.account, label, custom or choice)
        except errors.BadRequest as e:
            return await self._tokens_page(request, visitor, problem=_sentence(e.message), status=400,
                                           label=label, choice=choice, custom=custom)
        log.info("token {id} created for {account} in the browser", id=token.id, account=visitor.account)
        upload_url = f"{self.config.public_url}/api/v1/img_upload.php"
        fresh = FreshToken(secret, f'curl -H "X-API-Key: {secret}" -F file=@photo.jpg {upload_url}')
        return await self._tokens_page(request, visitor, fresh=fresh)

    @app.route("/tokens/delete")
    async def delete_token(self, request: Any) -> bytes:
        require_method(request, b"POST")
        visitor, form = await self._post(request)
        try:
            token_id = int(form.get("id") or "")
        except ValueError:
            raise errors.NotFound("No such token.") from None
        token = next((t for t in await self.accounts.tokens(visitor.account) if t.id == token_id), None)
        if token is None:
            raise errors.NotFound("You have no such token (it may be deleted or expired already).")
        if form.get("confirm") != "1":
            label = f"“{token.label}”" if token.label else "without a label"
            body = ConfirmBody(
                f"Delete the token {label}? Scripts using it stop working at once.",
                "/tokens/delete", {"id": str(token.id)}, visitor.csrf, "Delete", "/tokens",
            )
            return await self._page(request, "Delete this token?", body, visitor, current="/tokens",
                                    narrow=True)
        await self.accounts.delete_token(visitor.account, token.id)
        return _redirect(request, "/tokens?done=token-deleted")

    @app.route("/tokens/sxcu")
    async def sharex_file(self, request: Any) -> bytes:
        """The ShareX uploader file for the token in the form (built, never stored)."""
        require_method(request, b"POST")
        visitor, form = await self._post(request)
        token = (form.get("token") or "").strip()
        if not auth.looks_like_token(token):
            raise errors.BadRequest("That is not an API token.")
        set_page_headers(request)
        request.setHeader(b"Content-Type", b"application/octet-stream")
        filename = sharex.file_name(self.config.public_url)
        request.setHeader(b"Content-Disposition", f'attachment; filename="{filename}"'.encode())
        return sharex.uploader_file(self.config.public_url, token)

    # --------------------------------------------------------------- account

    @app.route("/account")
    async def account(self, request: Any) -> bytes:
        require_method(request, b"GET", b"HEAD")
        visitor = await self._visitor(request)
        return await self._account_page(request, visitor, notice=NOTICES.get(query(request, "done")))

    async def _account_page(self, request: Any, visitor: Visitor, *, notice: str | None = None,
                            problem: str | None = None, status: int = 200, new_name: str = "") -> bytes:
        now = self.library.now()
        views = []
        if visitor.is_admin:
            views = [
                AccountView(a.name, "administrator" if a.is_admin else "user",
                            words.since_in_words(a.created, now), _when(a.created), a.name == visitor.account)
                for a in await self.accounts.every()
            ]
        body = AccountBody(visitor.csrf, visitor.account, visitor.is_admin, views, new_name)
        return await self._page(request, "Account", body, visitor, current="/account", notice=notice,
                                problem=problem, status=status)

    @app.route("/account/password")
    async def change_password(self, request: Any) -> bytes:
        require_method(request, b"POST")
        visitor, form = await self._post(request)
        try:
            account = await self._check_password(request, visitor.account, form.get("current") or "",
                                                 session=True)
        except errors.RateLimited as e:
            set_error_headers(request, e)
            return await self._account_page(request, visitor, problem=e.message, status=429)
        if account is None:
            return await self._account_page(request, visitor, problem="The current password is wrong.",
                                            status=400)
        password = form.get("password") or ""
        try:
            check_new_password(password, form.get("repeat") or "")
        except errors.BadRequest as e:
            return await self._account_page(request, visitor, problem=e.message, status=400)
        await self.accounts.set_password(visitor.account, password)
        await self.sessions.end_others(visitor)
        log.info("{account} changed their password", account=visitor.account)
        return _redirect(request, "/account?done=password")

    def _require_admin(self, visitor: Visitor) -> None:
        if not visitor.is_admin:
            raise errors.Forbidden("Only administrators can manage accounts.")

    @app.route("/account/create")
    async def create_account(self, request: Any) -> bytes:
        require_method(request, b"POST")
        visitor, form = await self._post(request)
        self._require_admin(visitor)
        name, password = (form.get("name") or "").strip(), form.get("password") or ""
        try:
            check_new_password(password, form.get("repeat") or "")
            account = await self.accounts.create(name, password, is_admin=form.get("admin") == "1")
        except errors.ApiError as e:
            if e.status not in (400, 409):
                raise
            return await self._account_page(request, visitor, problem=e.message, status=400, new_name=name)
        log.info("{admin} created the account {name}", admin=visitor.account, name=account.name)
        return _redirect(request, "/account?done=account-created")

    @app.route("/account/remove")
    async def remove_account(self, request: Any) -> bytes:
        require_method(request, b"POST")
        visitor, form = await self._post(request)
        self._require_admin(visitor)
        name = (form.get("name") or "").strip()
        if name == visitor.account:
            raise errors.BadRequest("You cannot remove your own account.")
        if name not in {a.name for a in await self.accounts.every()}:
            raise errors.NotFound("No such account.")
        if form.get("confirm") != "1":
            body = ConfirmBody(
                f"Remove the account {name}? Its tokens and sessions stop working at once and "
                "its images are deleted.",
                "/account/remove", {"name": name}, visitor.csrf, "Remove", "/account",
            )
            return await self._page(request, "Remove this account?", body, visitor, current="/account",
                                    narrow=True)
        await self.accounts.remove(name)
        log.info("{admin} removed the account {name}", admin=visitor.account, name=name)
        return _redirect(request, "/account?done=account-removed")

    # ---------------------------------------------------------------- errors

    @app.route("/", branch=True)
    def unknown(self, request: Any) -> bytes:
        raise errors.NotFound("There is no page at this address.")

    @app.handle_errors(Exception)
    async def failed(self, request: Any, failure: Failure) -> bytes:
        error = failure.value
        if isinstance(error, LoginRequired):
            if _wants_json(request):
                return _json(request, 401, output.error_body("your session has ended: log in again"))
            path = request.path.decode("latin-1")
            return _redirect(request, "/login?" + urlencode({"next": path}) if path in NEXT_PAGES else "/login")
        status, message = describe_failure(
            request, failure,
            lambda e: "There is no page at this address." if e.code == 404 else "That does not work here.",
            "Something went wrong on the server. Please try again.",
        )
        if _wants_json(request):
            return _json(request, status, output.error_body(message))
        visitor = self.sessions.known_visitor(request)
        body = MessageBody(_sentence(message), "/images" if visitor else "/",
                           "Back to your images" if visitor else "Go to the start page")
        title = STATUS_TITLES.get(status, "Something went wrong")
        return await self._page(request, title, body, visitor, status=status, narrow=True)


def _sentence(message: str) -> str:
    """A message from the library as a sentence: capital first letter, final full stop."""
    message = message.strip()
    if not message:
        return message
    message = message[0].upper() + message[1:]
    return message if message[-1] in ".!?" else message + "."

