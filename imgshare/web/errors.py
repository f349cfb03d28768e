"""One place that turns errors into responses, in the caller's format."""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure
from werkzeug.exceptions import HTTPException

from imgshare.domain import errors, output

log = Logger()

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


def set_format(request: Any, fmt: str) -> None:
    """Remember the output format the caller asked for (for error responses too)."""
    setattr(request, FORMAT_KEY, fmt)


def respond(request: Any, status: int, data: dict) -> bytes:
    """Render ``data`` in the request's format with ``status``."""
    fmt = getattr(request, FORMAT_KEY, "json")
    body, content_type = output.render(data, fmt)
    request.setResponseCode(status)
    for header in (b"content-range", b"etag", b"last-modified"):
        request.responseHeaders.removeHeader(header)
    request.setHeader(b"Content-Type", content_type.encode())
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"Cache-Control", b"no-store")
    request.setHeader(b"Content-Length", str(len(body)).encode())
    return body


def render_failure(request: Any, failure: Failure) -> bytes:
    """The response for any exception a route raised."""
    error = failure.value
    if isinstance(error, errors.ApiError):
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            request.setHeader(b"Retry-After", str(retry_after).encode())
        if isinstance(error, errors.MethodNotAllowed) and getattr(error, "allow", None):
            request.setHeader(b"Allow", error.allow.encode())
        return respond(request, error.status, output.error_body(error.message))
    if isinstance(error, HTTPException):  # Klein's routing: unknown path or method
        return respond(request, error.code or 400, output.error_body(error.name.lower()))
    log.failure("unexpected error answering {uri}", failure, uri=request.uri)
    return respond(request, 500, output.error_body("internal error"))


def require_method(request: Any, *methods: bytes) -> None:
    """Raise 405 (with ``Allow``) unless the request uses one of ``methods``."""
    if request.method not in methods:
        error = errors.MethodNotAllowed(f"use {' or '.join(m.decode() for m in methods)}")
        error.allow = ", ".join(m.decode() for m in methods)
        raise error
