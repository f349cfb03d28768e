"""The browser pages (SPEC section 9), one module per area: ``auth`` (the start
page, setup, login, logout, register), ``images``, ``tokens``, ``account`` and
``static`` (their CSS and JavaScript), ``viewer`` (an image's public page, ``/i/``) and
``delete`` (secret delete links, ``/delete/``), on the shared ``base``.

Every page works without JavaScript.  Only a session cookie opens them (API
tokens never do); every POST carries a CSRF token; destructive actions ask
for confirmation on a page of their own unless the form says ``confirm=1``
(the JavaScript adds it after a ``confirm()`` dialog).
"""

from __future__ import annotations

from typing import Any

import attrs

from imgshare.web.pages.account import AccountPages
from imgshare.web.pages.auth import AuthPages
from imgshare.web.pages.delete import DeleteLinks
from imgshare.web.pages.images import ImagePages
from imgshare.web.pages.static import StaticFiles
from imgshare.web.pages.tokens import TokenPages
from imgshare.web.pages.viewer import ViewerPages


@attrs.frozen
class Pages:
    """The areas of the browser pages; ``imgshare.web.root`` mounts them."""

    auth: AuthPages
    images: ImagePages
    tokens: TokenPages
    account: AccountPages
    static: StaticFiles
    viewer: ViewerPages
    delete: DeleteLinks

    def apps(self) -> list[Any]:
        """Every area's Klein application."""
        return [self.auth.app, self.images.app, self.tokens.app, self.account.app, self.static.app,
                self.viewer.app, self.delete.app]

    def mounts(self) -> tuple[dict[bytes, Any], Any]:
        """The resource serving each first path segment, and the one serving every
        other path (the start page, the auth forms, and the 404 page)."""
        auth = self.auth.app.resource()
        segments = {b"setup": auth, b"login": auth, b"logout": auth, b"register": auth,
                    b"images": self.images.app.resource(), b"tokens": self.tokens.app.resource(),
                    b"account": self.account.app.resource(), b"static": self.static.app.resource(),
                    b"i": self.viewer.app.resource(), b"delete": self.delete.app.resource()}
        return segments, auth
