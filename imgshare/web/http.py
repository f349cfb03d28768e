"""Request helpers shared by the API, the file routes and the pages: headers and
query values as text, the client's address, and responses in the caller's format."""

from __future__ import annotations

from typing import Any

from imgshare.domain import output

FORMAT_KEY = "imgshare_format"


def header(request: Any, name: bytes) -> str | None:
    """A request header as text (latin-1, as HTTP defines), or None."""
    value = request.getHeader(name)
    return value.decode("latin-1") if isinstance(value, bytes) else value


def query(request: Any, name: str) -> str | None:
    """The first value of a query-string parameter, as text, or None."""
    values = (request.args or {}).get(name.encode())
    return values[0].decode("utf-8", "replace") if values else None


def client_ip(request: Any) -> str:
    """The client's address (the TCP peer)."""
    return getattr(request.getClientAddress(), "host", "unknown")


def set_account(request: Any, account: str) -> None:
    """The account ``request`` acts as, once authenticated: the access log's user field."""
    request.imgshare_account = account


def set_format(request: Any, fmt: str) -> None:
    """Remember the output format the caller asked for (for error responses too)."""
    setattr(request, FORMAT_KEY, fmt)


def response_format(request: Any) -> str:
    """The output format remembered by ``set_format`` (``json`` by default)."""
    return getattr(request, FORMAT_KEY, "json")


def respond(request: Any, status: int, data: dict) -> bytes:
    """Render ``data`` in the request's format with ``status``."""
    body, content_type = output.render(data, response_format(request))
    request.setResponseCode(status)
    for header in (b"content-range", b"etag", b"last-modified"):
        request.responseHeaders.removeHeader(header)
    request.setHeader(b"Content-Type", content_type.encode())
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"Cache-Control", b"no-store")
    request.setHeader(b"Content-Length", str(len(body)).encode())
    return body
