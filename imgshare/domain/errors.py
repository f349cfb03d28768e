"""Domain errors: each carries the HTTP status the API answers with."""


class ApiError(Exception):
    """A request that cannot be served; ``status`` is the HTTP status code."""

    status = 400

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class BadRequest(ApiError):
    """A missing or malformed parameter or body (400)."""

    status = 400


class BadImage(ApiError):
    """The image header cannot be read (400)."""

    status = 400


class Unauthorized(ApiError):
    """A missing, unknown or expired token (401)."""

    status = 401


class Forbidden(ApiError):
    """Not the caller's file, a forbidden address, universe_delete (403)."""

    status = 403


class NotFound(ApiError):
    """No such file (404)."""

    status = 404


class MethodNotAllowed(ApiError):
    """Wrong HTTP method (405)."""

    status = 405


class TooLarge(ApiError):
    """Body, file or pixel count above the limit (413)."""

    status = 413


class UnsupportedType(ApiError):
    """Not JPEG, PNG, BMP or WEBP (415)."""

    status = 415


class RateLimited(ApiError):
    """Too many requests (429)."""

    status = 429

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


class GatherFailed(ApiError):
    """The gather source failed (502)."""

    status = 502


class Unavailable(ApiError):
    """Storage or database cannot be reached, or no name could be reserved (503).

    Not to be confused with ``imgshare.storage.StorageUnavailable``, the storage
    backends' own error, which the library translates into this one."""

    status = 503
