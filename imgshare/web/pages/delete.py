"""Per-image secret delete links (PEERS section 3), ``/delete/<account>/<file>/<secret>``.

The secret (made at upload, stored only as its SHA-256) is the credential: no
session, no API token, and it works after the uploading token is gone.

- ``GET``/``HEAD``: a confirmation page that never deletes (link unfurlers,
  scanners and prefetchers GET links), with one "Delete permanently" button;
- ``POST`` (that button): deletes, with SPEC section 4's semantics, and says so;
- ``DELETE``: deletes and answers JSON (``{"status":"ok","deleted":NAME}``).

Every failure (wrong secret, unknown image, deleted, expired, an image from
before delete links, any other path under ``/delete/``) is one identical 404
per answer type (HTML, or JSON for ``DELETE``), whoever asks.  Every request
spends from a per-address rate limit (429) before anything is looked up.
Every answer carries ``Cache-Control: no-store``, ``Referrer-Policy:
no-referrer`` (the secret never leaves in a Referer) and ``X-Robots-Tag:
noindex, nofollow``; the pages' CSP forbids framing.

CSRF: the button's form carries the signed double-submit token of the forms
shown before login (``SessionCookies.pre_csrf``), so it needs no session.  The
secret in the path already keeps out anyone who does not hold the link; the
token adds that a POST comes from the confirmation page itself (a cross-site
form cannot read or send the ``SameSite=Lax`` pre-session cookie).
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
from klein import Klein
from twisted.python.failure import Failure

from imgshare.derive import fit_size
from imgshare.domain import errors, naming, output, words
from imgshare.ratelimit import RateLimiter, address_group
from imgshare.web.errors import describe_failure, routing_error
from imgshare.web.http import client_ip
from imgshare.web.pages.base import PageArea, json_response
from imgshare.web.views import DeleteLinkBody, DeleteLinkView, MessageBody

#: Headers on every answer under /delete/ (on top of the pages' own).
LINK_HEADERS = {
    b"Cache-Control": b"no-store",
    b"Referrer-Policy": b"no-referrer",
    b"X-Robots-Tag": b"noindex, nofollow",
}
NOT_FOUND = ("This delete link does not work: the image may be deleted or expired already, "
             "or the link is not complete.")
NOT_FOUND_JSON = "no such delete link"
ROUTE = "/delete/<account>/<name>/<secret>"


def _link_headers(request: Any) -> None:
    for name, value in LINK_HEADERS.items():
        request.setHeader(name, value)


@attrs.define
class DeleteLinks(PageArea):
    """The routes of /delete/<account>/<file>/<secret>."""

    #: Requests per client address (an IPv6 one by its /64).
    limiter: RateLimiter = attrs.field(kw_only=True)

    app: ClassVar[Klein] = Klein()

    async def _linked(self, request: Any, account: str, name: str, secret: str) -> Any:
        await self.limiter.check(address_group(client_ip(request)))
        image = await self.library.linked_image(account, name, secret)
        if image is None:
            raise errors.NotFound(NOT_FOUND)
        return image

    @app.route(ROUTE, methods=["GET", "HEAD"])
    async def confirm(self, request: Any, account: str, name: str, secret: str) -> bytes:
        image = await self._linked(request, account, name, secret)
        now = self.library.now()
        preview = fit_size((image.width, image.height), naming.VARIANT_BOXES["qvga"])
        made = (await self.library.made_variants(image)).get("qvga")
        if made is not None:
            preview = (made.width, made.height)
        view = DeleteLinkView(
            name=image.name, preview="/img/" + naming.storage_key(image.account, image.name, "qvga"),
            preview_width=preview[0], preview_height=preview[1],
            type=image.mime.split("/")[-1].upper(), size=words.size_in_words(image.size),
            dimensions=f"{image.width} × {image.height}",
            uploaded=words.since_in_words(image.uploaded, now), uploaded_iso=output.iso_time(image.uploaded),
            expires=words.until_in_words(image.expires, now),
            expires_iso="" if image.expires is None else output.iso_time(image.expires),
            uploaded_date=words.date_in_words(image.uploaded), expires_date=words.date_in_words(image.expires),
            csrf=await self.sessions.pre_csrf(request),
        )
        body = await self.page(request, "Delete this image?", DeleteLinkBody(view), None, narrow=True)
        _link_headers(request)
        return body

    @app.route(ROUTE, methods=["POST"])
    async def delete_by_form(self, request: Any, account: str, name: str, secret: str) -> bytes:
        await self._linked(request, account, name, secret)
        form = await self.form(request)
        try:
            await self.sessions.check_pre_csrf(request, form)
        finally:
            form.discard()
        image = await self.library.delete_linked(account, name, secret)
        message = MessageBody(f"{image.name} was deleted. Its address and every resized copy stopped working.")
        body = await self.page(request, "Image deleted", message, None, narrow=True)
        _link_headers(request)
        return body

    @app.route(ROUTE, methods=["DELETE"])
    async def delete_by_api(self, request: Any, account: str, name: str, secret: str) -> bytes:
        await self._linked(request, account, name, secret)
        image = await self.library.delete_linked(account, name, secret)
        body = json_response(request, 200, {"status": "ok", "deleted": image.name})
        _link_headers(request)
        return body

    @app.handle_errors(Exception)
    async def failed(self, request: Any, failure: Failure) -> bytes:
        """One constant 404 for every failure of a link; other errors as the pages answer them."""
        error = routing_error(failure.value)
        if isinstance(error, errors.NotFound) or getattr(error, "code", None) == 404:
            if request.method == b"DELETE":
                body = json_response(request, 404, output.error_body(NOT_FOUND_JSON))
            else:
                body = await self.page(request, "Not found", MessageBody(NOT_FOUND), None, status=404,
                                       narrow=True)
        elif request.method == b"DELETE":
            status, message = describe_failure(request, Failure(error), lambda e: "use GET, POST or DELETE",
                                               "something went wrong on the server")
            body = json_response(request, status, output.error_body(message))
        else:
            body = await self.render_failure(request, failure)
        _link_headers(request)
        return body
