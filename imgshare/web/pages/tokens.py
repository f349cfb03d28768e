"""API tokens in the browser (SPEC section 9), under ``/tokens``: the list, new
tokens, deletion and the ShareX uploader file."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure

from imgshare import auth
from imgshare.domain import errors, output, sharex, words
from imgshare.web.http import query
from imgshare.web.pages.base import NOTICES, PageArea, redirect, sentence
from imgshare.web.sessions import Visitor
from imgshare.web.views import (
    Choice,
    ConfirmBody,
    FreshToken,
    TokensBody,
    TokenView,
    set_page_headers,
)

log = Logger()

TOKEN_LIFETIMES = (
    ("never", "Never"), ("1h", "In 1 hour"), ("1d", "In 1 day"), ("7d", "In 7 days"),
    ("30d", "In 30 days"), ("90d", "In 90 days"), ("365d", "In 1 year"),
)


@attrs.define
class TokenPages(PageArea):
    """Routes of /tokens, /tokens/delete and /tokens/sxcu."""

    app: ClassVar[Klein] = Klein()

    @app.route("/tokens", methods=["GET"])
    async def tokens(self, request: Any) -> bytes:
        visitor = await self.visitor(request)
        return await self._tokens_page(request, visitor, notice=NOTICES.get(query(request, "done")))

    async def _tokens_page(self, request: Any, visitor: Visitor, *, fresh: FreshToken | None = None,
                           notice: str | None = None, problem: str | None = None, status: int = 200,
                           label: str = "", choice: str = "never", custom: str = "") -> bytes:
        now = self.library.now()
        views = [
            TokenView(
                id=t.id, label=t.label, created=words.since_in_words(t.created, now),
                created_iso=output.iso_time(t.created), expires=words.until_in_words(t.expires, now),
                expires_iso="" if t.expires is None else output.iso_time(t.expires),
                last_used=words.since_in_words(t.last_used, now), created_date=words.date_in_words(t.created),
                expires_date=words.date_in_words(t.expires), last_used_date=words.date_in_words(t.last_used),
            )
            for t in await self.accounts.tokens(visitor.account)
        ]
        lifetimes = [Choice(v, label_, v == choice) for v, label_ in TOKEN_LIFETIMES]
        body = TokensBody(visitor.csrf, views, lifetimes, fresh, label=label, custom=custom)
        return await self.page(request, "API tokens", body, visitor, current="/tokens", notice=notice,
                               problem=problem, status=status)

    @app.route("/tokens", methods=["POST"])
    async def create_token(self, request: Any) -> bytes:
        visitor, form = await self.post(request)
        label = form.get("label") or ""
        choice = form.get("expires") or "never"
        custom = (form.get("expires_custom") or "").strip()
        try:
            secret, token = await self.accounts.create_token(visitor.account, label, custom or choice)
        except errors.BadRequest as e:
            return await self._tokens_page(request, visitor, problem=sentence(e.message), status=400,
                                           label=label, choice=choice, custom=custom)
        log.info("token {id} created for {account} in the browser", id=token.id, account=visitor.account)
        upload_url = f"{self.config.public_url}/api/v1/img_upload.php"
        fresh = FreshToken(secret, f'curl -H "X-API-Key: {secret}" -F file=@photo.jpg {upload_url}',
                           chevereto_url=f"{self.config.public_url}/api/1/upload")
        return await self._tokens_page(request, visitor, fresh=fresh)

    @app.route("/tokens/delete", methods=["POST"])
    async def delete_token(self, request: Any) -> bytes:
        visitor, form = await self.post(request)
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
            return await self.page(request, "Delete this token?", body, visitor, current="/tokens",
                                   narrow=True)
        await self.accounts.delete_token(visitor.account, token.id)
        return redirect(request, "/tokens?done=token-deleted")

    @app.route("/tokens/sxcu", methods=["POST"])
    async def sharex_file(self, request: Any) -> bytes:
        """The ShareX uploader file of the form's ``flavour`` (native when absent) for the
        token in the form (built, never stored)."""
        visitor, form = await self.post(request)
        token = (form.get("token") or "").strip()
        if not auth.looks_like_token(token):
            raise errors.BadRequest("That is not an API token.")
        flavour = (form.get("flavour") or sharex.FLAVOURS[0]).strip()
        if flavour not in sharex.FLAVOURS:
            raise errors.BadRequest("No such ShareX uploader: the choices are "
                                    + ", ".join(sharex.FLAVOURS) + ".")
        set_page_headers(request)
        request.setHeader(b"Content-Type", b"application/octet-stream")
        filename = sharex.file_name(self.config.public_url, flavour)
        request.setHeader(b"Content-Disposition", f'attachment; filename="{filename}"'.encode())
        return sharex.uploader_file(self.config.public_url, token, flavour)

    @app.handle_errors(Exception)
    async def failed(self, request: Any, failure: Failure) -> bytes:
        return await self.render_failure(request, failure)
