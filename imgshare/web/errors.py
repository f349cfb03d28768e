"""One place that turns errors into responses: the status, message and headers of
any exception a route raised, rendered as JSON or text for the API and the file
routes (``render_failure``); the pages render the same answer as HTML."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import MethodNotAllowed as RoutingMethodNotAllowed

from imgshare.domain import errors, output
from imgshare.web.http import respond
from imgshare.web.redact import redact_uri

log = Logger()


def set_error_headers(request: Any, error: errors.ApiError) -> None:
    """``Retry-After`` for a refusal that names a wait, ``Allow`` for a wrong method."""
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        request.setHeader(b"Retry-After", str(retry_after).encode())
    if isinstance(error, errors.MethodNotAllowed) and getattr(error, "allow", None):
        request.setHeader(b"Allow", error.allow.encode())


def describe_failure(
    request: Any, failure: Failure, routing_message: Callable[[HTTPException], str], internal_message: str,
) -> tuple[int, str]:
    """The status and message answering ``failure`` (its headers set on ``request``).

    A domain error keeps its own; Klein's routing errors (unknown path or method)
    say ``routing_message(error)``; anything else is logged and is a 500 saying
    ``internal_message``."""
    error = failure.value
    if isinstance(error, errors.ApiError):
        set_error_headers(request, error)
        return error.status, error.message
    if isinstance(error, HTTPException):
        return error.code or 400, routing_message(error)
    log.failure("unexpected error answering {uri}", failure, uri=redact_uri(request.uri).decode("latin-1"))
    return 500, internal_message


def render_failure(request: Any, failure: Failure) -> bytes:
    """The response for any exception a route raised, in the request's format."""
    status, message = describe_failure(request, failure, lambda e: e.name.lower(), "internal error")
    return respond(request, status, output.error_body(message))


#: The order methods are named in (``Allow: GET, HEAD, POST``).
METHOD_ORDER = ("GET", "HEAD", "POST")


def method_not_allowed(*methods: str) -> errors.MethodNotAllowed:
    """The 405 naming ``methods`` (in its message and its ``Allow`` header)."""
    error = errors.MethodNotAllowed(f"use {' or '.join(methods)}")
    error.allow = ", ".join(methods)
    return error


def require_method(request: Any, *methods: bytes) -> None:
    """Raise 405 (with ``Allow``) unless the request uses one of ``methods``."""
    if request.method not in methods:
        raise method_not_allowed(*(m.decode() for m in methods))


def routing_error(error: Exception) -> Exception:
    """Klein's routing 405 (a route's ``methods=``) as the 405 ``require_method`` raises:
    the same message and ``Allow`` header; any other error as it is."""
    if isinstance(error, RoutingMethodNotAllowed) and error.valid_methods:
        known = [m for m in METHOD_ORDER if m in error.valid_methods]
        return method_not_allowed(*known, *sorted(set(error.valid_methods) - set(known)))
    return error
