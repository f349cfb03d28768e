"""The account page (SPEC section 9), under ``/account``: the password change,
and for administrators the list of accounts, new accounts, a new password for
another account, administrator rights given or taken, and removal."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure

from imgshare.accounts import check_new_password
from imgshare.domain import errors, lifetime, output, quota, words
from imgshare.domain.records import Usage
from imgshare.web.errors import set_error_headers
from imgshare.web.http import query
from imgshare.web.pages.base import NOTICES, PageArea, redirect
from imgshare.web.sessions import Visitor
from imgshare.web.views import (
    AccountBody,
    AccountView,
    ConfirmBody,
    MeterView,
    ResetBody,
    UsageView,
)

log = Logger()

OWN_PASSWORD = "Change your own password with the form on the account page (it asks for the current one)."
OWN_ROLE = "You cannot change your own role here: another administrator can, or the imgshare command."
#: The share of a limit past which /account warns (``low`` of the meter), and past which it alarms.
NEAR_SHARE, ALARM_SHARE = 0.75, 0.9


def usage_view(usage: Usage) -> UsageView:
    """The visitor's usage as /account shows it: a sentence in words, a meter for each limit
    the account has, and a hint when it is nearly or entirely full."""
    count = quota.images_in_words(usage.images)
    stored = words.size_in_words(usage.bytes)
    if usage.quota_bytes is None and usage.quota_images is None:
        return UsageView(f"You have {count}, using {stored}. Your account has no quota.")
    meters, shares = [], []
    parts = [f"You have {count}"]
    if usage.quota_bytes is not None:
        left = max(0, usage.quota_bytes - usage.bytes)
        parts.append(f"using {stored} of your {words.size_in_words(usage.quota_bytes)} quota "
                     f"({quota.percent_used(usage)}%); {words.size_in_words(left)} left")
        meters.append(_meter("Storage used", usage.bytes, usage.quota_bytes,
                             f"{stored} of {words.size_in_words(usage.quota_bytes)} ({quota.percent_used(usage)}%)"))
        shares.append(usage.bytes / usage.quota_bytes)
    if usage.quota_images is not None:
        parts.append(f"at most {quota.images_in_words(usage.quota_images)}")
        meters.append(_meter("Images", usage.images, usage.quota_images,
                             f"{usage.images} of {quota.images_in_words(usage.quota_images)}"))
        shares.append(usage.images / usage.quota_images)
    full = quota.refusal(usage, None) is not None
    if full:
        state, hint = "full", ("Your quota is full: uploads are refused until you delete images "
                               "or an administrator raises it.")
    elif max(shares) >= ALARM_SHARE:
        state, hint = "near", "Your quota is nearly full: delete images you no longer need to make room."
    else:
        state, hint = "ok", ""
    return UsageView(", ".join(parts) + ".", tuple(meters), hint, state)


def _meter(label: str, value: int, maximum: int, text: str) -> MeterView:
    return MeterView(label, value, maximum, int(maximum * NEAR_SHARE), int(maximum * ALARM_SHARE), text)


def quota_field(quota_bytes: int | None) -> str:
    """A storage limit as the quota form shows it, exact in the largest unit dividing it
    (``10MiB``, ``500MB``, ``1234B``); "" for none."""
    if quota_bytes is None:
        return ""
    binary = lifetime.format_size(quota_bytes)
    if binary.endswith("iB"):
        return binary
    for unit, factor in (("GB", 1000**3), ("MB", 1000**2), ("KB", 1000)):
        if quota_bytes % factor == 0:
            return f"{quota_bytes // factor}{unit}"
    return binary


@attrs.define
class AccountPages(PageArea):
    """Routes of /account, /account/password, /account/create, /account/reset,
    /account/admin and /account/remove."""

    app: ClassVar[Klein] = Klein()

    @app.route("/account", methods=["GET"])
    async def account(self, request: Any) -> bytes:
        visitor = await self.visitor(request)
        return await self._account_page(request, visitor, notice=NOTICES.get(query(request, "done")))

    async def _account_page(self, request: Any, visitor: Visitor, *, notice: str | None = None,
                            problem: str | None = None, status: int = 200, new_name: str = "") -> bytes:
        now = self.library.now()
        views = []
        if visitor.is_admin:
            usage = await self.accounts.usage()
            views = [
                AccountView(a.name, "administrator" if a.is_admin else "user",
                            words.since_in_words(a.created, now), output.iso_time(a.created),
                            a.name == visitor.account, a.is_admin, *_usage_cells(usage.get(a.name)),
                            created_date=words.date_in_words(a.created))
                for a in await self.accounts.every()
            ]
        strip = await self.library.strip_location_default(visitor.account)
        own = await self.library.usage(visitor.account)
        body = AccountBody(visitor.csrf, visitor.account, visitor.is_admin, views, new_name, strip,
                           usage=usage_view(own))
        return await self.page(request, "Account", body, visitor, current="/account", notice=notice,
                               problem=problem, status=status)

    @app.route("/account/password", methods=["POST"])
    async def change_password(self, request: Any) -> bytes:
        visitor, form = await self.post(request)
        try:
            account = await self.check_password(request, visitor.account, form.get("current") or "",
                                                session=True)
        except errors.RateLimited as e:
            set_error_headers(request, e)
            return await self._account_page(request, visitor, problem=e.message, status=429)
        if account is None:
            return await self._account_page(request, visitor, problem="The current password is wrong.",
                                            status=400)
        password = form.get("password") or ""
        try:
            check_new_password(password, form.get("repeat") or "", visitor.account)
            await self.accounts.set_password(visitor.account, password)  # refuses the password it has now
        except errors.BadRequest as e:
            return await self._account_page(request, visitor, problem=e.message, status=400)
        await self.sessions.end_others(visitor)
        log.info("{account} changed their password", account=visitor.account)
        return redirect(request, "/account?done=password")

    @app.route("/account/location", methods=["POST"])
    async def set_location_default(self, request: Any) -> bytes:
        """The account's default for location metadata at upload: ``strip_location=1``
        removes it, ``0`` keeps it."""
        visitor, form = await self.post(request)
        strip = output.parse_switch("strip_location", form.get("strip_location"))
        if strip is None:
            raise errors.BadRequest("Say strip_location=1 or strip_location=0.")
        await self.library.set_strip_location_default(visitor.account, strip)
        log.info("{account} set uploads to {what} location metadata", account=visitor.account,
                 what="remove" if strip else "keep")
        return redirect(request, "/account?done=location-" + ("strip" if strip else "keep"))

    def _require_admin(self, visitor: Visitor) -> None:
        if not visitor.is_admin:
            raise errors.Forbidden("Only administrators can manage accounts.")

    @app.route("/account/create", methods=["POST"])
    async def create_account(self, request: Any) -> bytes:
        visitor, form = await self.post(request)
        self._require_admin(visitor)
        name, password = (form.get("name") or "").strip(), form.get("password") or ""
        try:
            check_new_password(password, form.get("repeat") or "", name)
            account = await self.accounts.create(name, password, is_admin=form.get("admin") == "1")
        except errors.ApiError as e:
            if e.status not in (400, 409):
                raise
            return await self._account_page(request, visitor, problem=e.message, status=400, new_name=name)
        log.info("{admin} created the account {name}", admin=visitor.account, name=account.name)
        return redirect(request, "/account?done=account-created")

    async def _other_account(self, visitor: Visitor, name: str, own: str) -> Any:
        """The account ``name`` an administrator acts on: another one than their own
        (BadRequest saying ``own`` for that)."""
        if name == visitor.account:
            raise errors.BadRequest(own)
        account = await self.accounts.get(name) if name else None
        if account is None:
            raise errors.NotFound("No such account.")
        return account

    @app.route("/account/reset", methods=["GET"])
    async def reset_form(self, request: Any) -> bytes:
        visitor = await self.visitor(request)
        self._require_admin(visitor)
        account = await self._other_account(visitor, (query(request, "name") or "").strip(), OWN_PASSWORD)
        return await self._reset_page(request, visitor, account.name)

    async def _reset_page(self, request: Any, visitor: Visitor, name: str, problem: str | None = None,
                          status: int = 200) -> bytes:
        return await self.page(request, f"A new password for {name}", ResetBody(visitor.csrf, name), visitor,
                               current="/account", problem=problem, status=status, narrow=True)

    @app.route("/account/reset", methods=["POST"])
    async def reset_password(self, request: Any) -> bytes:
        """An administrator sets another account's password: its sessions end, its tokens stay."""
        visitor, form = await self.post(request)
        self._require_admin(visitor)
        account = await self._other_account(visitor, (form.get("name") or "").strip(), OWN_PASSWORD)
        password = form.get("password") or ""
        try:
            check_new_password(password, form.get("repeat") or "", account.name)
        except errors.BadRequest as e:
            return await self._reset_page(request, visitor, account.name, e.message, 400)
        ended = await self.accounts.reset_password(account.name, password)
        log.info("{admin} set a new password for {name}; {ended} of its sessions ended",
                 admin=visitor.account, name=account.name, ended=ended)
        return redirect(request, "/account?done=password-reset")

    @app.route("/account/admin", methods=["POST"])
    async def set_admin(self, request: Any) -> bytes:
        """Give (``admin=1``) or take (``admin=0``) another account's administrator rights, once confirmed."""
        visitor, form = await self.post(request)
        self._require_admin(visitor)
        account = await self._other_account(visitor, (form.get("name") or "").strip(), OWN_ROLE)
        if form.get("admin") not in ("0", "1"):
            raise errors.BadRequest("Say admin=1 or admin=0.")
        wanted = form.get("admin") == "1"
        if form.get("confirm") != "1":
            if wanted:
                question = (f"Make {account.name} an administrator? It can then create, change and remove "
                            "every account.")
            else:
                question = f"Remove the administrator rights of {account.name}? It stays a plain user."
            body = ConfirmBody(question, "/account/admin", {"name": account.name, "admin": form.get("admin")},
                               visitor.csrf, "Make admin" if wanted else "Remove admin", "/account")
            return await self.page(request, "Change this account's role?", body, visitor, current="/account",
                                   narrow=True)
        await self.accounts.set_admin(account.name, wanted)
        log.info("{admin} " + ("made {name} an administrator" if wanted else "took the administrator rights "
                               "of {name}"), admin=visitor.account, name=account.name)
        return redirect(request, "/account?done=" + ("admin-on" if wanted else "admin-off"))

    @app.route("/account/quota", methods=["POST"])
    async def set_quota(self, request: Any) -> bytes:
        """An administrator sets an account's quota (its own too): ``quota``, a size such as
        500MB, and ``images``, a number; empty (or ``none``) for no limit."""
        visitor, form = await self.post(request)
        self._require_admin(visitor)
        name = (form.get("name") or "").strip()
        if not name or await self.accounts.get(name) is None:
            raise errors.NotFound("No such account.")
        try:
            quota_bytes = quota.parse_quota_bytes(form.get("quota") or "none")
            quota_images = quota.parse_quota_images(form.get("images") or "none")
        except ValueError as e:
            problem = f"The quota of {name} is unchanged: {str(e)[0].lower()}{str(e)[1:]}."
            return await self._account_page(request, visitor, problem=problem, status=400)
        usage = await self.accounts.set_quota(name, quota_bytes, quota_images)
        log.info("{admin} set the quota of {name} to {limits}", admin=visitor.account, name=name,
                 limits=quota.quota_in_words(usage))
        return redirect(request, "/account?done=quota")

    @app.route("/account/remove", methods=["POST"])
    async def remove_account(self, request: Any) -> bytes:
        visitor, form = await self.post(request)
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
            return await self.page(request, "Remove this account?", body, visitor, current="/account",
                                   narrow=True)
        await self.accounts.remove(name)
        log.info("{admin} removed the account {name}", admin=visitor.account, name=name)
        return redirect(request, "/account?done=account-removed")

    @app.handle_errors(Exception)
    async def failed(self, request: Any, failure: Failure) -> bytes:
        return await self.render_failure(request, failure)


def _usage_cells(usage: Usage | None) -> tuple[str, str, str]:
    """An account's row cells: its usage in words and its limits as the quota form shows them."""
    if usage is None:  # removed between the two reads
        return "", "", ""
    images = "" if usage.quota_images is None else str(usage.quota_images)
    return quota.usage_in_words(usage), quota_field(usage.quota_bytes), images
