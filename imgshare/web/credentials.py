"""Where an API credential is read from (PEERS section 0.1), for every API family.

The first non-empty one wins: the ``X-API-Key`` header; ``Authorization: Bearer
<t>`` (the scheme in any case); the ``key`` field (body, then query); the
``token`` field (body, then query).  The value is an ordinary API token.
"""

from __future__ import annotations

from typing import Any

from imgshare.web.forms import Form
from imgshare.web.http import header, query, set_account

#: The form fields a credential may come in, in the order they count.
FIELDS = ("key", "token")


def header_credential(request: Any) -> str | None:
    """The token from ``X-API-Key`` or ``Authorization: Bearer``, if any."""
    key = header(request, b"x-api-key")
    if key and key.strip():
        return key.strip()
    authorization = header(request, b"authorization") or ""
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def credential(request: Any, form: Form, fields: tuple[str, ...] = FIELDS) -> str | None:
    """The request's credential, headers first, then ``fields`` (each: body, then query)."""
    found = header_credential(request)
    if found:
        return found
    for name in fields:
        for value in (form.get_from_body(name), query(request, name)):
            if value and value.strip():
                return value.strip()
    return None


async def authenticated(library: Any, request: Any, secret: str | None) -> Any:
    """``library.authenticate(secret)``; the token's account is then the request's (for
    the access log)."""
    token = await library.authenticate(secret)
    set_account(request, token.account)
    return token
